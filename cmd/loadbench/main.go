// Command loadbench measures what ai_resilience costs, the way a user sees
// it: two Caddy processes from the same cmd/caddy binary, in front of the
// same mock provider,
//
//	bare:    reverse_proxy MOCK
//	guarded: route { ai_resilience { -options }; reverse_proxy MOCK }
//
// each pinned (taskset) to the gateway CPUs, apart from the mock provider,
// the load generator (wrk, or a Go client where wrk is missing) and this
// process, which are pinned to the load CPUs. The sites take turns in ABBA
// order within each round (bare, guarded, guarded, bare; the next round
// guarded first), the other idle, so that background load and slow drift
// weigh on both alike. For every turn it records the load generator's
// requests/s and latency percentiles, and the gateway process's own CPU
// time (the sum over its threads of /proc/<pid>/task/*/schedstat, in
// nanoseconds) divided by the requests it served: CPU µs per request, which
// does not depend on whether the load saturates the gateway's core. Each
// round gives a guarded/bare throughput ratio and an added CPU µs per
// request; the report gives them per round and as the median with [min, max].
//
// Each scenario runs up to three phases: load (-connections, default 32),
// in which the gateway's core is saturated and the ratio is the throughput
// a user loses; latency (one connection), in which nothing queues, so the
// added p50/p99 is the gateway's own; and, for streams, time to first byte,
// measured by a Go client over one connection with a paced stream (the mock
// pauses between events, so the first read holds the first event alone and
// the time measures the proxy, not the scheduler).
//
// With -baseline the comparison is between two guarded configurations
// (A vs B) instead of bare vs guarded; a configuration string holding
// {redis} starts a redis-server on a free loopback port, pinned with the
// mock, and stands for its URL:
//
//	go run ./cmd/loadbench                                 # 4 scenarios, 3 rounds of 2s turns
//	go run ./cmd/loadbench -scenarios json1k -rounds 7 -duration 5s -profile /tmp/lb
//	go run ./cmd/loadbench -scenarios json1k -baseline "$LOCAL_ZONES" -options "$FLEET_ZONES" \
//	    -global 'ai_resilience {
//	        redis {redis}
//	    }'
//
// Targets are reported, not asserted: it exits 0 whenever the measurement
// ran. Everything listens on 127.0.0.1 only, every turn ends by its
// duration, and every child process dies with this one.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/proc"
)

func main() {
	// -h prints the flags and is no failure.
	if _, err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

// options are the command-line settings.
type options struct {
	scenarios []scenario
	rounds    int
	duration  time.Duration
	latencyD  time.Duration
	warmup    time.Duration
	conns     int
	latConns  int
	ttfb      bool

	gatewayCPUs string
	loadCPUs    string
	client      string

	options        string
	global         string
	baseline       string
	baselineGlobal string

	caddyBin string
	mockBin  string

	noise     float64
	reruns    int
	quietWait time.Duration

	profileDir string
	profileTop int
}

// bare is the -baseline value that means Caddy without the module.
const bare = "bare"

func parseFlags(args []string) (options, error) {
	var o options
	var names string
	gw, load := defaultCPUs()
	fs := flag.NewFlagSet("loadbench", flag.ContinueOnError)
	fs.StringVar(&names, "scenarios", "json1k,json100k,stream,stream_openai", "comma-separated scenarios, of: "+strings.Join(scenarioNames(), ", "))
	fs.IntVar(&o.rounds, "rounds", 3, "measured rounds per phase (each: one ABBA sequence of turns); the median and range over rounds are reported")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "one turn of the load phase (whole seconds with wrk)")
	fs.DurationVar(&o.latencyD, "latency-duration", time.Second, "one turn of the latency and time-to-first-byte phases (whole seconds with wrk)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load on each site before a phase's rounds")
	fs.IntVar(&o.conns, "connections", 32, "keep-alive connections in the load phase")
	fs.IntVar(&o.latConns, "latency-connections", 1, "connections in the latency phase; 0 skips it")
	fs.BoolVar(&o.ttfb, "ttfb", true, "measure time to first byte of streams with a paced stream over one connection")
	fs.StringVar(&o.gatewayCPUs, "gateway-cpus", gw, "CPUs (taskset list) the two Caddy processes are pinned to; empty pins nothing")
	fs.StringVar(&o.loadCPUs, "load-cpus", load, "CPUs (taskset list) for the mock provider, redis-server, the load generator and this process")
	fs.StringVar(&o.client, "client", "", "load generator: wrk or go (default: wrk when installed, else go)")
	fs.StringVar(&o.options, "options", "retries 3", "subdirectives of the guarded site's ai_resilience block (side B)")
	fs.StringVar(&o.global, "global", "", "global options of side B's Caddyfile, e.g. an ai_resilience { redis {redis} } block")
	fs.StringVar(&o.baseline, "baseline", bare, "side A: \""+bare+"\" (reverse_proxy alone) or the subdirectives of a second ai_resilience configuration")
	fs.StringVar(&o.baselineGlobal, "baseline-global", "", "global options of side A's Caddyfile")
	fs.StringVar(&o.caddyBin, "caddy", "", "Caddy binary with this module (default: go build ./cmd/caddy)")
	fs.StringVar(&o.mockBin, "mock", "", "mock provider binary (default: go build ./cmd/mockprovider)")
	fs.Float64Var(&o.noise, "noise", 0.05, "rerun a round when other processes or the hypervisor took more than this share of the gateway CPUs in one of its turns")
	fs.IntVar(&o.reruns, "reruns", 2, "reruns allowed per noisy round; a round still noisy is kept and marked")
	fs.DurationVar(&o.quietWait, "quiet-wait", 30*time.Second, "before each round, wait up to this long for other work to leave the gateway CPUs (0: do not wait)")
	fs.StringVar(&o.profileDir, "profile", "", "directory: fetch a CPU profile of each site's Caddy (admin /debug/pprof/profile) during an extra load turn per scenario, write it there and print the guarded one's top entries")
	fs.IntVar(&o.profileTop, "profile-top", 25, "entries of the profile to print, by flat and by cumulative time")
	if err := fs.Parse(args); err != nil {
		return o, err
	}

	for n := range strings.SplitSeq(names, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		s, ok := findScenario(n)
		if !ok {
			return o, fmt.Errorf("unknown scenario %q: use %s", n, strings.Join(scenarioNames(), ", "))
		}
		o.scenarios = append(o.scenarios, s)
	}
	if o.client == "" {
		o.client = "go"
		if _, err := exec.LookPath("wrk"); err == nil {
			o.client = "wrk"
		}
	}
	return o, o.check()
}

// check reports the first setting out of range.
func (o options) check() error {
	whole := func(d time.Duration) bool { return o.client != "wrk" || d%time.Second == 0 }
	switch {
	case len(o.scenarios) == 0:
		return errors.New("-scenarios names no scenario")
	case o.rounds < 1 || o.rounds > 50:
		return fmt.Errorf("-rounds %d: use 1 to 50", o.rounds)
	case o.duration < 100*time.Millisecond || o.duration > 5*time.Minute || !whole(o.duration):
		return fmt.Errorf("-duration %s: use 100ms to 5m (whole seconds with wrk)", o.duration)
	case o.latencyD < 100*time.Millisecond || o.latencyD > 5*time.Minute || !whole(o.latencyD):
		return fmt.Errorf("-latency-duration %s: use 100ms to 5m (whole seconds with wrk)", o.latencyD)
	case o.warmup < 0 || o.warmup > 5*time.Minute || !whole(o.warmup):
		return fmt.Errorf("-warmup %s: use 0 to 5m (whole seconds with wrk)", o.warmup)
	case o.conns < 1 || o.conns > 4096:
		return fmt.Errorf("-connections %d: use 1 to 4096", o.conns)
	case o.latConns < 0 || o.latConns > 4096:
		return fmt.Errorf("-latency-connections %d: use 0 to 4096", o.latConns)
	case o.client != "wrk" && o.client != "go":
		return fmt.Errorf("-client %q: use wrk or go", o.client)
	case o.noise <= 0 || o.noise > 1:
		return fmt.Errorf("-noise %v: use a share above 0 and at most 1", o.noise)
	case o.reruns < 0 || o.reruns > 10:
		return fmt.Errorf("-reruns %d: use 0 to 10", o.reruns)
	case o.quietWait < 0 || o.quietWait > time.Hour:
		return fmt.Errorf("-quiet-wait %s: use 0 to 1h", o.quietWait)
	case o.profileTop < 1 || o.profileTop > 200:
		return fmt.Errorf("-profile-top %d: use 1 to 200", o.profileTop)
	case strings.TrimSpace(o.baseline) == "":
		return fmt.Errorf("-baseline is empty: use %q or ai_resilience subdirectives", bare)
	case o.baseline == bare && o.baselineGlobal != "":
		return fmt.Errorf("-baseline-global needs a guarded -baseline, not %q", bare)
	case (o.gatewayCPUs == "") != (o.loadCPUs == ""):
		return errors.New("-gateway-cpus and -load-cpus: set both, or neither to pin nothing")
	}
	if o.gatewayCPUs != "" {
		gw, err := parseCPUList(o.gatewayCPUs)
		if err != nil {
			return fmt.Errorf("-gateway-cpus: %w", err)
		}
		load, err := parseCPUList(o.loadCPUs)
		if err != nil {
			return fmt.Errorf("-load-cpus: %w", err)
		}
		for _, c := range gw {
			for _, l := range load {
				if c == l {
					return fmt.Errorf("-gateway-cpus %s and -load-cpus %s share CPU %d: the gateway must have its cores to itself", o.gatewayCPUs, o.loadCPUs, c)
				}
			}
		}
		if _, err := exec.LookPath("taskset"); err != nil {
			return errors.New("taskset is not installed (util-linux): install it, or pass -gateway-cpus '' -load-cpus '' to measure unpinned")
		}
	}
	return nil
}

// defaultCPUs gives the gateway the first CPU and the load the others;
// on one CPU nothing can be kept apart.
func defaultCPUs() (gateway, load string) {
	n := runtime.NumCPU()
	switch {
	case runtime.GOOS != "linux" || n < 2:
		return "", ""
	case n == 2:
		return "0", "1"
	default:
		return "0", fmt.Sprintf("1-%d", n-1)
	}
}

// run measures what args ask for, printing as it goes, and returns the
// results.
func run(args []string) ([]result, error) {
	o, err := parseFlags(args)
	if err != nil {
		return nil, err
	}
	if o.loadCPUs != "" {
		if err := proc.PinSelf(o.loadCPUs); err != nil {
			return nil, err
		}
	}
	st, err := startStack(o)
	if err != nil {
		return nil, err
	}
	defer st.stop()

	printHeader(o, st)
	var results []result
	for _, s := range o.scenarios {
		fmt.Printf("== %s: %s\n", s.name, s.desc)
		res, err := st.measure(s)
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", s.name, err)
		}
		results = append(results, res)
		fmt.Println()
	}
	printSummary(o, st, results)
	return results, nil
}
