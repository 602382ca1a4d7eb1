package integration

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testproc"
)

var update = flag.Bool("update", false, "rewrite the golden files of examples/")

// TestExamplesAdapt adapts every Caddyfile in examples/ and compares the
// JSON with its golden file (regenerate with `go test ./integration -run
// TestExamplesAdapt -update`), then has Caddy validate it, which provisions
// every module as `caddy validate` does.
func TestExamplesAdapt(t *testing.T) {
	files, err := filepath.Glob("../examples/*.Caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, warnings, err := testcaddy.Adapt(string(src))
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("adapter warning: %s", w.String())
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, cfg, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(file, ".Caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("%s adapts differently from %s; if the change is intended, run with -update\n got:\n%s", file, golden, pretty.Bytes())
			}
			var config caddy.Config
			if err := json.Unmarshal(cfg, &config); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&config); err != nil {
				t.Errorf("caddy validate: %v", err)
			}
		})
	}
}

// exampleFiles lists the Caddyfiles in examples/.
func exampleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../examples/*.Caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	return files
}

// example is a Caddy running an example's configuration.
type example struct {
	url      string
	logDir   string
	prefixes []string // path prefixes to try: the examples' routes differ
}

// startExample runs an example as it ships, but for what a test must
// change: its sites listen on a free loopback port, its reverse_proxy
// upstreams are a mock provider, the admin API is off, storage is a
// temporary directory, and every logger it configures (plus a default
// logger, when it has none) writes at debug level to a file of its own,
// keeping its encoder and filters.
func startExample(t *testing.T, file string) *example {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := testcaddy.Adapt(string(src))
	if err != nil {
		t.Fatalf("adapting %s: %v", file, err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	mock := httptest.NewServer(mockprovider.New(mockprovider.Options{}))
	t.Cleanup(mock.Close)
	ex := &example{logDir: t.TempDir(), prefixes: []string{"", "/anthropic", "/openai"}}

	cfg["admin"] = map[string]any{"disabled": true}
	cfg["storage"] = map[string]any{"module": "file_system", "root": t.TempDir()}
	logging, _ := cfg["logging"].(map[string]any)
	if logging == nil {
		logging = map[string]any{}
		cfg["logging"] = logging
	}
	logs, _ := logging["logs"].(map[string]any)
	if logs == nil {
		logs = map[string]any{}
		logging["logs"] = logs
	}
	if logs["default"] == nil {
		logs["default"] = map[string]any{}
	}
	for name, l := range logs {
		l := l.(map[string]any)
		l["level"] = "DEBUG"
		l["writer"] = map[string]any{"output": "file", "filename": filepath.Join(ex.logDir, name+".log")}
	}
	servers := cfg["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)
	if len(servers) != 1 {
		t.Fatalf("%s has %d servers; the test knows how to run one", file, len(servers))
	}
	for _, s := range servers {
		port := testproc.FreePort(t)
		s.(map[string]any)["listen"] = []any{fmt.Sprintf("127.0.0.1:%d", port)}
		ex.url = fmt.Sprintf("http://127.0.0.1:%d", port)
		pointProxiesAt(s, strings.TrimPrefix(mock.URL, "http://"))
	}
	out, _ := json.Marshal(cfg)
	if err := caddy.Load(out, true); err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return ex
}

// pointProxiesAt sends every reverse_proxy in a config subtree to addr
// over plain HTTP.
func pointProxiesAt(node any, addr string) {
	switch n := node.(type) {
	case map[string]any:
		if n["handler"] == "reverse_proxy" {
			n["upstreams"] = []any{map[string]any{"dial": addr}}
			delete(n, "transport")
		}
		for _, v := range n {
			pointProxiesAt(v, addr)
		}
	case []any:
		for _, v := range n {
			pointProxiesAt(v, addr)
		}
	}
}

// logs returns everything every logger wrote.
func (ex *example) logs(t *testing.T) []byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(ex.logDir, "*.log"))
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}
