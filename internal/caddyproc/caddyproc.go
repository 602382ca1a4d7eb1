// Package caddyproc starts Caddy processes from cmd/caddy (Caddy's standard
// modules and this module), each from a Caddyfile with one site on a free
// loopback port: for the tests of several instances (Caddy's configuration
// is one per process) and for cmd/loadbench, which pins each process to its
// own CPUs and reads its CPU time.
package caddyproc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/proc"
)

// stopGrace is how long a stopped instance gets to finish before it is
// killed.
const stopGrace = 5 * time.Second

// startTimeout bounds how long a process may take to serve.
const startTimeout = 30 * time.Second

// Binary builds cmd/caddy once per process and returns its path. The tags
// leave out storage drivers nobody here uses, which shortens the build.
func Binary() (string, error) {
	return proc.Build("./cmd/caddy", "nobadger,nomysql,nopgx")
}

// Caddyfile returns a Caddyfile for tests and benchmarks: the global
// options (global, then no automatic HTTPS, no saved config, storage in
// storageDir, and JSON logs at level to logPath, with the filter the
// README recommends so that no API key reaches them) and one site on a
// loopback port.
func Caddyfile(global, storageDir, logPath, level string, port int, site string) string {
	return fmt.Sprintf(`{
%s
	auto_https off
	persist_config off
	storage file_system %s
	log {
		output file %s
		format filter {
			request>headers>X-Api-Key delete
			request>headers>Api-Key delete
			request>headers>Authorization delete
		}
		level %s
	}
}

http://127.0.0.1:%d {
%s
}
`, global, storageDir, logPath, level, port, site)
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
	// CPUs, when set, pins the process to these CPUs (a list as taskset
	// takes it, such as "0" or "2-3").
	CPUs string
	// Env holds extra environment variables, such as GOGC=200.
	Env []string
	// Storage is a storage directory to share with other instances, as
	// the instances of a fleet share Caddy's storage (and with it the key
	// they hash credentials with); empty gives the instance its own.
	Storage string
}

// Process is a running Caddy process.
type Process struct {
	// URL is the base URL of the site, e.g. http://127.0.0.1:40123.
	URL string
	// LogPath is the file Caddy's JSON logs (info level) go to.
	LogPath string
	// AdminURL is the admin API's base URL, or empty when it is off.
	AdminURL string

	dir   string
	mu    sync.Mutex
	child *proc.Child
	done  bool
}

// Start writes an instance's Caddyfile into dir, which then holds
// everything the process writes (data, logs, its output), runs it from bin
// (see Binary) on free loopback ports and waits until it serves. A process
// that does not serve is stopped. A free port is free only when it is
// chosen: another process (tests of other packages run in parallel) may
// take it before Caddy binds it, so a start that fails on a port in use is
// tried again on new ports.
func Start(bin, dir string, in Instance) (*Process, error) {
	var err error
	for range startAttempts {
		var p *Process
		if p, err = newProcess(dir, in); err != nil {
			return nil, err
		}
		if err = p.start(bin, in); err == nil {
			return p, nil
		}
		p.Stop()
		if !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
	return nil, err
}

// startAttempts bounds the starts of one instance on ports taken by others.
const startAttempts = 3

// startedLine is what Caddy logs once its configuration is loaded and its
// listeners are bound.
const startedLine = "serving initial configuration"

// newProcess writes the instance's Caddyfile.
func newProcess(dir string, in Instance) (*Process, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	admin := "\tadmin off\n"
	p := &Process{dir: dir}
	if in.Admin {
		adminPort, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		admin = fmt.Sprintf("\tadmin 127.0.0.1:%d\n", adminPort)
		p.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	}
	p.LogPath = filepath.Join(dir, "caddy.log")
	storage := in.Storage
	if storage == "" {
		storage = filepath.Join(dir, "storage")
	}
	caddyfile := Caddyfile(admin+in.Global, storage, p.LogPath, "INFO", port, in.Site)
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(caddyfile), 0o644); err != nil {
		return nil, fmt.Errorf("writing the Caddyfile: %w", err)
	}
	p.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	return p, nil
}

// start runs the process and waits until it has said it serves and its
// site accepts connections: a connection alone could reach another process
// that took the port.
func (p *Process) start(bin string, in Instance) error {
	_ = os.Remove(p.LogPath) // a failed start's, in the same directory
	out, err := os.Create(filepath.Join(p.dir, "output"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := proc.Command(in.CPUs, bin, "run", "--config", filepath.Join(p.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	// Caddy keeps its instance id and certificates in the data directory.
	cmd.Env = append(os.Environ(), "HOME="+p.dir, "XDG_DATA_HOME="+p.dir, "XDG_CONFIG_HOME="+p.dir)
	cmd.Env = append(cmd.Env, in.Env...)
	child, err := proc.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting caddy: %w", err)
	}
	p.mu.Lock()
	p.child = child
	p.mu.Unlock()
	addr := strings.TrimPrefix(p.URL, "http://")
	for deadline := time.Now().Add(startTimeout); ; {
		if p.said(startedLine) {
			if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-child.Exited():
			return fmt.Errorf("caddy on %s exited at start:\n%s", addr, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy did not start listening on %s", addr)
		}
	}
}

// Pid returns the process id, or 0 before Start.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.child == nil {
		return 0
	}
	return p.child.Pid()
}

// Stop ends the process as `caddy stop` would (SIGTERM, a graceful
// shutdown), killing it if it takes longer than stopGrace.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.child == nil {
		return
	}
	p.done = true
	p.child.Stop(stopGrace)
}

// said reports whether the process has written line to its output or its
// log file.
func (p *Process) said(line string) bool {
	log, _ := os.ReadFile(p.LogPath)
	return strings.Contains(p.Output(), line) || bytes.Contains(log, []byte(line))
}

// Output returns what the process wrote to stdout and stderr.
func (p *Process) Output() string {
	out, _ := os.ReadFile(filepath.Join(p.dir, "output"))
	return string(out)
}

// StartAll starts one process per instance, in parallel, each in its own
// directory of dirs, and waits until every one serves. When one fails, it
// stops the others and returns the errors.
func StartAll(bin string, dirs []string, instances ...Instance) ([]*Process, error) {
	if len(dirs) != len(instances) {
		return nil, errors.New("starting caddy: one directory per instance is needed")
	}
	ps := make([]*Process, len(instances))
	errs := make([]error, len(instances))
	var wg sync.WaitGroup
	for i, in := range instances {
		wg.Go(func() { ps[i], errs[i] = Start(bin, dirs[i], in) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, p := range ps {
			if p != nil {
				p.Stop()
			}
		}
		return nil, err
	}
	return ps, nil
}
