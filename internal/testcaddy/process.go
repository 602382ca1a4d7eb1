package testcaddy

import (
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/internal/caddyproc"
)

// Caddy's configuration is one per process, so tests of several instances
// (a fleet sharing a store) run several Caddy processes, each from the same
// binary: cmd/caddy, built once per test run.

// Binary builds cmd/caddy (Caddy's standard modules and this module) once
// per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := caddyproc.Binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Instance describes one Caddy process to start.
type Instance = caddyproc.Instance

// Process is a running Caddy process.
type Process struct {
	*Server
	// AdminURL is the admin API's base URL, or empty when it is off.
	AdminURL string

	proc *caddyproc.Process
}

// StartProcesses starts one Caddy process per instance, in parallel, each
// with its own ports, data directory and log file (JSON, info level), and
// waits until every one serves. They stop when the test ends.
func StartProcesses(t testing.TB, instances ...Instance) []*Process {
	t.Helper()
	bin := Binary(t)
	dirs := make([]string, len(instances))
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	started, err := caddyproc.StartAll(bin, dirs, instances...)
	if err != nil {
		t.Fatal(err)
	}
	ps := make([]*Process, len(started))
	for i, p := range started {
		t.Cleanup(p.Stop)
		ps[i] = &Process{Server: &Server{URL: p.URL, LogPath: p.LogPath}, AdminURL: p.AdminURL, proc: p}
	}
	return ps
}

// Stop ends the process as `caddy stop` would (SIGTERM, a graceful
// shutdown), killing it if it does not end in a few seconds.
func (p *Process) Stop() { p.proc.Stop() }

// Output returns what the process wrote to stdout and stderr.
func (p *Process) Output() string { return p.proc.Output() }
