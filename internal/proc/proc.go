// Package proc runs the helper processes of tests and benchmarks: binaries
// of this module built once per run, started as children that die with
// their parent and, when asked, pinned to a set of CPUs, on free loopback
// ports. It does not depend on package testing, so cmd/loadbench shares it
// with the tests.
package proc

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
	"strconv"
	"sync"
)

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Command returns cmd for name and args that the kernel kills when this
// process dies. With cpus (a CPU list as taskset takes it, such as "0" or
// "1-3") the command runs under `taskset -c cpus`, which sets the affinity
// and then executes name in its place, so the process id is name's own and
// every thread it starts inherits the CPU set.
func Command(cpus, name string, args ...string) *exec.Cmd {
	if cpus != "" {
		args = append([]string{"-c", cpus, name}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	DieWithParent(cmd)
	return cmd
}

// PinSelf moves every thread of this process to cpus (taskset -a -p), so a
// load generator in this process stays off the cores it measures. Threads
// started later inherit the set from the thread that starts them.
func PinSelf(cpus string) error {
	out, err := exec.Command("taskset", "-a", "-c", "-p", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pinning this process to CPUs %s: %w: %s", cpus, err, out)
	}
	return nil
}

var built struct {
	mu    sync.Mutex
	paths map[string]string
}

// Build builds a command of this module (pkg such as "./cmd/caddy") with
// the given build tags, once per process, and returns the binary's path.
// The binary goes to a directory named after the checkout, so checkouts
// building side by side do not overwrite each other's, and repeated runs
// reuse one file (go build's cache makes a rebuild of unchanged code a
// link at most).
func Build(pkg, tags string) (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if path, ok := built.paths[pkg+" "+tags]; ok {
		return path, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), "ai-resilience-bin-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("building %s: %w", pkg, err)
	}
	// Build beside the target and rename, so a process never starts a
	// half-written binary.
	path := filepath.Join(dir, filepath.Base(pkg))
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	cmd := exec.Command("go", "build", "-ldflags", "-w -s", "-tags", tags, "-o", tmp, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("building %s: %w", pkg, err)
	}
	if built.paths == nil {
		built.paths = map[string]string{}
	}
	built.paths[pkg+" "+tags] = path
	return path, nil
}

// ModuleRoot returns the checkout's root: two directories above this
// file's.
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("finding the module root: no caller information")
	}
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	return root, nil
}
