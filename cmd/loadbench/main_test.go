package main

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBareVsGuarded runs a short comparison end to end, unpinned (the test
// must not move its own process between CPUs), with each load generator
// present: both sites answer every request, and the gateway's CPU per
// request comes from its own accounting.
func TestBareVsGuarded(t *testing.T) {
	t.Run("go", func(t *testing.T) {
		results, err := run([]string{"-client", "go", "-scenarios", "stream", "-rounds", "1",
			"-duration", "300ms", "-latency-duration", "200ms", "-warmup", "0",
			"-connections", "4", "-gateway-cpus", "", "-load-cpus", ""})
		if err != nil {
			t.Fatal(err)
		}
		checkResults(t, results, "load", "latency", "ttfb")
		if p := results[0].phase("ttfb"); p.rounds[0].a.ttfb50 <= 0 || p.rounds[0].b.ttfb50 <= 0 {
			t.Errorf("no time to first byte: %+v", p.rounds[0])
		}
	})
	t.Run("wrk", func(t *testing.T) {
		if _, err := exec.LookPath("wrk"); err != nil {
			t.Skip("wrk is not installed")
		}
		results, err := run([]string{"-client", "wrk", "-scenarios", "json1k", "-rounds", "1",
			"-duration", "1s", "-warmup", "0", "-latency-connections", "0",
			"-connections", "4", "-gateway-cpus", "", "-load-cpus", ""})
		if err != nil {
			t.Fatal(err)
		}
		checkResults(t, results, "load")
	})
}

// TestCompareConfigurations compares two guarded configurations, one with
// a fleet zone in a redis-server the tool starts itself.
func TestCompareConfigurations(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed (CI=true)")
		}
		t.Skip("redis-server is not installed")
	}
	zone := "limit org {\n rpm 1000000000\n tpm 1000000000000\n scope %s\n}"
	results, err := run([]string{"-client", "go", "-scenarios", "json1k", "-rounds", "1",
		"-duration", "300ms", "-warmup", "0", "-connections", "4", "-latency-connections", "0",
		"-gateway-cpus", "", "-load-cpus", "",
		"-baseline", "retries 3\n" + strings.Replace(zone, "%s", "instance", 1),
		"-options", "retries 3\n" + strings.Replace(zone, "%s", "fleet", 1),
		"-global", "ai_resilience {\n redis {redis}\n}"})
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, results, "load")
}

// checkResults checks that every phase named ran, with answers and CPU
// time on both sides and no failed request.
func checkResults(t *testing.T, results []result, phases ...string) {
	t.Helper()
	for _, r := range results {
		for _, name := range phases {
			p := r.phase(name)
			if p == nil || len(p.rounds) != 1 {
				t.Fatalf("%s: phase %s did not run: %+v", r.s.name, name, r.phases)
			}
			for label, s := range map[string]sample{"A": p.rounds[0].a, "B": p.rounds[0].b} {
				if s.requests == 0 || s.errors > 0 || s.cpuPerRequest() <= 0 || s.turns != 2 {
					t.Errorf("%s %s %s: %d requests, %d errors (%s), %.1f CPU µs per request, %d turns",
						r.s.name, name, label, s.requests, s.errors, s.firstErr, s.cpuPerRequest(), s.turns)
				}
			}
		}
	}
}

func TestParseWrk(t *testing.T) {
	out := []byte("Running 2s test @ http://127.0.0.1:1/v1/messages\n  1 threads and 32 connections\nLOADBENCH 1000 0 1 0 10 2 2000000 3200 11050\n")
	l, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if l.requests != 990 || l.errors != 13 || l.elapsed != 2*time.Second || l.p50 != 3200*time.Microsecond || l.p99 != 11050*time.Microsecond || l.firstErr == "" {
		t.Errorf("parseWrk = %+v", l)
	}
	for _, bad := range []string{"no summary\n", "LOADBENCH 1 2 3\n", "LOADBENCH 1 2 3 4 5 6 7 8 x\n"} {
		if _, err := parseWrk([]byte(bad)); err == nil {
			t.Errorf("parseWrk(%q) took it", bad)
		}
	}
}

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"0": {0}, "1-3": {1, 2, 3}, "0,2-3": {0, 2, 3}, " 1 , 4": {1, 4}} {
		if got, err := parseCPUList(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a", "3-1", "-1", "1-"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q) took it", bad)
		}
	}
}

// TestCPUSince checks both ways of counting a process's CPU time: the
// nanosecond sum over threads, and the tick count once a thread is gone.
func TestCPUSince(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	before, err := readProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := readProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	d, precise := after.cpuSince(before)
	if !precise || d < 40*time.Millisecond || d > 5*time.Second {
		t.Errorf("50ms of spinning: %v (precise %v)", d, precise)
	}
	gone := procCPU{tasks: map[string]time.Duration{"no-such-thread": 0}, ticks: after.ticks - 7}
	if d, precise := after.cpuSince(gone); precise || d != 7*tick {
		t.Errorf("after a thread exited: %v (precise %v), want 70ms from ticks", d, precise)
	}
}

func TestSpread(t *testing.T) {
	rounds := []round{{}, {}, {}}
	for i, v := range []float64{3, 1, 2} {
		rounds[i].a.requests = int(v)
	}
	s := over(rounds, func(r round) float64 { return float64(r.a.requests) })
	if s != (spread{median: 2, min: 1, max: 3}) || s.format("%.1f", "×") != "2.0 [1.0, 3.0]×" {
		t.Errorf("spread = %+v %q", s, s.format("%.1f", "×"))
	}
}
