package testcaddy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testproc"
)

// Caddy's configuration is one per process, so tests of several instances
// (a fleet sharing a store) run several Caddy processes, each from the same
// binary: cmd/caddy, built once per test run.

// stopGrace is how long a stopped instance gets to finish before it is
// killed.
const stopGrace = 5 * time.Second

var binary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds cmd/caddy (Caddy's standard modules and this module) once
// per test binary and returns its path. The binary goes to a directory
// named after the checkout, so checkouts building side by side do not
// overwrite each other's, and repeated runs reuse one file.
func Binary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			binary.err = err
			return
		}
		sum := sha256.Sum256([]byte(root))
		dir := filepath.Join(os.TempDir(), "ai-resilience-caddy-"+hex.EncodeToString(sum[:6]))
		if binary.err = os.MkdirAll(dir, 0o755); binary.err != nil {
			return
		}
		// Build beside the target and rename, so a process never starts
		// a half-written binary.
		tmp := filepath.Join(dir, fmt.Sprintf("caddy.%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-ldflags", "-w -s", "-tags", "nobadger,nomysql,nopgx", "-o", tmp, "./cmd/caddy")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("building cmd/caddy: %v\n%s", err, out)
			return
		}
		binary.path = filepath.Join(dir, "caddy")
		binary.err = os.Rename(tmp, binary.path)
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// moduleRoot returns the checkout's root: two directories above this file.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("finding the module root: no caller information")
	}
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	if _, err := os.Stat(filepath.Join(root, "cmd", "caddy", "main.go")); err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	return root, nil
}

// Instance describes one Caddy process to start.
type Instance struct {
	// Global holds lines for the global options block, such as an
	// `ai_resilience { … }` option.
	Global string
	// Site is the body of the one site block, on a free loopback port.
	Site string
	// Admin serves Caddy's admin API on a free loopback port; otherwise it
	// is off.
	Admin bool
	// Storage is a storage directory to share with other instances, as
	// the instances of a fleet share Caddy's storage (and with it the key
	// they hash credentials with); empty gives the instance its own.
	Storage string
}

// Process is a running Caddy process.
type Process struct {
	*Server
	// AdminURL is the admin API's base URL, or empty when it is off.
	AdminURL string

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	done   bool
}

// StartProcesses starts one Caddy process per instance, in parallel, each
// with its own ports, data directory and log file (JSON, info level), and
// waits until every one serves. They stop when the test ends.
func StartProcesses(t testing.TB, instances ...Instance) []*Process {
	t.Helper()
	bin := Binary(t)
	ps := make([]*Process, len(instances))
	errs := make([]error, len(instances))
	var wg sync.WaitGroup
	for i, in := range instances {
		p := newProcess(t, in)
		ps[i] = p
		t.Cleanup(p.Stop)
		wg.Go(func() { errs[i] = p.start(bin) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return ps
}

// newProcess writes an instance's Caddyfile into a fresh directory.
func newProcess(t testing.TB, in Instance) *Process {
	t.Helper()
	dir := t.TempDir()
	port := testproc.FreePort(t)
	admin := "\tadmin off\n"
	p := &Process{dir: dir}
	if in.Admin {
		adminPort := testproc.FreePort(t)
		admin = fmt.Sprintf("\tadmin 127.0.0.1:%d\n", adminPort)
		p.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	}
	logPath := filepath.Join(dir, "caddy.log")
	storage := in.Storage
	if storage == "" {
		storage = filepath.Join(dir, "storage")
	}
	caddyfile := caddyfileFor(admin+in.Global, storage, logPath, "INFO", port, in.Site)
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Server = &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), LogPath: logPath}
	return p
}

// start runs the process and waits until its site accepts connections.
func (p *Process) start(bin string) error {
	out, err := os.Create(filepath.Join(p.dir, "output"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(bin, "run", "--config", filepath.Join(p.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	// Caddy keeps its instance id and certificates in the data directory.
	cmd.Env = append(os.Environ(), "HOME="+p.dir, "XDG_DATA_HOME="+p.dir, "XDG_CONFIG_HOME="+p.dir)
	testproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting caddy: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	addr := strings.TrimPrefix(p.URL, "http://")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			output, _ := os.ReadFile(filepath.Join(p.dir, "output"))
			return fmt.Errorf("caddy on %s exited at start:\n%s", addr, output)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy did not start listening on %s", addr)
		}
	}
}

// Stop ends the process as `caddy stop` would (SIGTERM, a graceful
// shutdown), killing it if it takes longer than stopGrace.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.cmd == nil {
		return
	}
	p.done = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Output returns what the process wrote to stdout and stderr.
func (p *Process) Output() string {
	out, _ := os.ReadFile(filepath.Join(p.dir, "output"))
	return string(out)
}
