// Package testcaddy runs a real Caddy, in process, from a Caddyfile, for
// integration tests: the real Caddyfile adapter, the real reverse_proxy and
// this module, loaded the way `caddy run` loads them. Caddy's configuration
// is process-wide, so tests using it must not run in parallel.
package testcaddy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	// The modules a gateway Caddyfile uses.
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/gzip"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/zstd"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/logging"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	_ "github.com/caddyserver/caddy/v2/modules/logging"
	_ "github.com/caddyserver/caddy/v2/modules/metrics"

	_ "github.com/ai-resilience/caddy-ai-resilience"
	"github.com/ai-resilience/caddy-ai-resilience/internal/caddyproc"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testproc"
)

// Server is a running Caddy.
type Server struct {
	// URL is the base URL of the site, e.g. http://127.0.0.1:40123.
	URL string
	// LogPath is the file Caddy's JSON logs go to.
	LogPath string
	// config is the JSON config the server runs, for Reload.
	config []byte
}

// Adapt turns a Caddyfile into Caddy's JSON config.
func Adapt(caddyfile string) ([]byte, []caddyconfig.Warning, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	return adapter.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
}

// Start runs Caddy with a site block on a free loopback port. site is the
// site block's body (the directives inside `http://127.0.0.1:PORT { … }`);
// the global options turn off the admin API and send logs, as JSON at
// debug level, to a file the test can read, with the filter the README
// recommends so that Caddy's own request dumps hold no API key. Caddy stops when the test ends.
func Start(t testing.TB, site string) *Server {
	t.Helper()
	return StartGlobal(t, "", site)
}

// StartGlobal is Start with more global options: global holds lines for
// the global options block, such as an `ai_resilience { … }` option.
func StartGlobal(t testing.TB, global, site string) *Server {
	t.Helper()
	port := testproc.FreePort(t)
	logPath := filepath.Join(t.TempDir(), "caddy.log")
	caddyfile := caddyproc.Caddyfile(`	admin off
`+global, t.TempDir(), logPath, "DEBUG", port, site)
	cfg, _, err := Adapt(caddyfile)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Logf("stopping caddy: %v", err)
		}
	})
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), LogPath: logPath, config: cfg}
	s.waitReady(t)
	return s
}

// Reload loads the server's config again, as `caddy reload` does with an
// unchanged Caddyfile: Caddy provisions a new config, then cleans up the
// old one.
func (s *Server) Reload(t testing.TB) {
	t.Helper()
	if err := caddy.Load(s.config, true); err != nil {
		t.Fatalf("reloading config: %v", err)
	}
}

// waitReady waits until the listener accepts connections.
func (s *Server) waitReady(t testing.TB) {
	t.Helper()
	addr := strings.TrimPrefix(s.URL, "http://")
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("caddy did not start listening on %s", addr)
}

// Logs returns the log entries written so far whose logger is name (all
// entries when name is empty), each decoded from its JSON line.
func (s *Server) Logs(t testing.TB, name string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatalf("reading caddy log: %v", err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var entry map[string]any
		if json.Unmarshal(sc.Bytes(), &entry) != nil {
			continue
		}
		if name == "" || entry["logger"] == name {
			out = append(out, entry)
		}
	}
	return out
}

// RawLogs returns the whole log file.
func (s *Server) RawLogs(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatalf("reading caddy log: %v", err)
	}
	return string(raw)
}

// Client is an HTTP client for tests, with a bound on every request.
var Client = &http.Client{Timeout: 30 * time.Second}
