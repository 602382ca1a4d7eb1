package integration

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
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
