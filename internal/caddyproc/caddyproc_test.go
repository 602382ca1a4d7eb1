package caddyproc

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestStartPinned starts one Caddy process pinned to one CPU, with its
// admin API: it serves its site, the kernel holds it to that CPU (and the
// Go runtime sizes GOMAXPROCS to it), and Stop ends it.
func TestStartPinned(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("pins with taskset and reads /proc")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("taskset is not installed")
	}
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	cpu := runtime.NumCPU() - 1
	p, err := Start(bin, t.TempDir(), Instance{Site: `	respond "pinned"`, Admin: true, CPUs: fmt.Sprint(cpu)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	client := &http.Client{Timeout: 10 * time.Second}
	if body := get(t, client, p.URL); body != "pinned" {
		t.Errorf("site answered %q", body)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Cpus_allowed_list:\t%d\n", cpu); !strings.Contains(string(status), want) {
		t.Errorf("process %d is not pinned to CPU %d:\n%s", p.Pid(), cpu, status)
	}
	if metrics := get(t, client, p.AdminURL+"/metrics"); !strings.Contains(metrics, "\ngo_sched_gomaxprocs_threads 1\n") {
		t.Errorf("GOMAXPROCS is not 1 in the admin API's metrics")
	}
	p.Stop()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/status", p.Pid())); err == nil {
		t.Errorf("process %d still runs after Stop", p.Pid())
	}
}

func get(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}
