// Package testproc helps tests that run other processes: free loopback
// ports for them, failing the test when there is none.
package testproc

import (
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/internal/proc"
)

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
