package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// saturated is how busy the gateway CPUs must be under load for the
// throughput ratio to be the gateway's cost; below it something else was
// the limit. Busy counts the network processing the kernel does on those
// CPUs, which is not charged to the process.
const saturated = 0.9

// saturated reports whether the gateway CPUs were saturated in most
// rounds, for both sides; unpinned, the gateway's CPUs are not its own and
// it never is.
func (st *stack) saturated(p phaseResult) bool {
	if len(st.gwCPUs) == 0 {
		return false
	}
	return medianOf(p.rounds, func(r round) float64 { return min(r.a.gw.busy(), r.b.gw.busy()) }) >= saturated
}

// ttfbTolerance is how much added time to first byte still counts as none:
// about what one connection's medians vary between rounds.
const ttfbTolerance = 5 * time.Microsecond

func printHeader(o options, st *stack) {
	fmt.Printf("loadbench: %s vs %s, Caddy %s (%s), %s/%s\n", st.a.label, st.b.label, caddyVersion(st.caddyBin), st.caddyBin, runtime.GOOS, runtime.GOARCH)
	fmt.Printf("  machine: %d CPUs, %s; load average %s\n", runtime.NumCPU(), kernel(), loadAverage())
	if o.gatewayCPUs != "" {
		fmt.Printf("  pinned: both Caddy processes on CPU %s (one runs at a time); mock provider, load generator, this process%s on CPU %s\n",
			o.gatewayCPUs, map[bool]string{true: ", redis-server", false: ""}[st.redisURL != ""], o.loadCPUs)
	} else {
		fmt.Println("  NOT pinned: gateway, mock and load generator share the CPUs, which hides part of the gateway's cost")
	}
	fmt.Printf("  load generator: %s", st.gen.name())
	if o.client == "go" {
		fmt.Print(" (wrk not used: it is heavier per request than wrk, so the load side may limit first)")
	}
	fmt.Printf("; time to first byte: Go client, 1 connection, paced stream %q\n", pacedStream)
	fmt.Printf("  mock provider %s", st.mockURL)
	if st.redisURL != "" {
		fmt.Printf("; redis-server %s", st.redisURL)
	}
	fmt.Println()
	for _, sd := range []*side{st.a, st.b} {
		cfg := "reverse_proxy alone"
		if sd.options != "" {
			cfg = "route { ai_resilience { " + oneLine(sd.options) + " }; reverse_proxy }"
		}
		if sd.global != "" {
			cfg += "; global: " + oneLine(sd.global)
		}
		fmt.Printf("  %-8s %s  GOMAXPROCS %s  %s\n", sd.label, sd.p.URL, gomaxprocs(sd.p.AdminURL), cfg)
	}
	fmt.Printf("  per phase: warm-up %s per site, then %d rounds; a round is four turns in ABBA order (BAAB in odd rounds),\n", o.warmup, o.rounds)
	fmt.Printf("  each %s under load (%d connections) and %s at one connection; CPU is the gateway process's own (schedstat)\n", o.duration, o.conns, o.latencyD)
	fmt.Printf("  a round waits (up to %s) for the gateway CPUs to be idle, and is run again (up to %d times) when other work\n", o.quietWait, o.reruns)
	fmt.Printf("  took over %.0f%% of them in one of its turns\n\n", 100*o.noise)
}

// gomaxprocs reads a Caddy process's GOMAXPROCS from its admin API's
// metrics: the Go runtime sizes it from the CPUs the process may use, so
// it shows that the pinning took.
func gomaxprocs(adminURL string) string {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(adminURL + "/metrics")
	if err != nil {
		return "unknown"
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "go_sched_gomaxprocs_threads "); ok {
			return v
		}
	}
	return "unknown"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// caddyVersion asks the binary.
func caddyVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return v
}

func kernel() string {
	raw, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return "Linux " + strings.TrimSpace(string(raw))
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// printRounds prints a phase's rounds, one line per round.
func printRounds(st *stack, s scenario, p phaseResult) {
	a, b := st.a.label, st.b.label
	fmt.Printf("  %s phase: %d connection(s), %s, X-Mock-Script %q, turns of %s; load average %s\n", p.spec.name, p.spec.conns, p.spec.gen.name(), p.spec.script, p.spec.d, loadAverage())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := fmt.Sprintf("  round\torder\t%[1]s req/s\t%[2]s req/s\t%[2]s/%[1]s\t%[1]s CPU µs/req\t%[2]s CPU µs/req\tadded\t%[1]s p50\t%[2]s p50\t%[1]s p99\t%[2]s p99\t", a, b)
	if p.spec.name == "ttfb" {
		head += fmt.Sprintf("%[1]s ttfb p50\t%[2]s ttfb p50\t", a, b)
	}
	head += "gw process\tgw CPUs busy\tload CPUs busy\tother\t\n"
	fmt.Fprint(tw, head)
	cpus := max(len(st.gwCPUs), 1)
	for i, r := range p.rounds {
		mark := ""
		if r.reruns > 0 {
			mark = fmt.Sprintf(" (run %d)", r.reruns+1)
		}
		if r.noisy {
			mark += " noisy"
		}
		fmt.Fprintf(tw, "  %d%s\t%s\t%.0f\t%.0f\t%.3f\t%.1f%s\t%.1f%s\t%+.1f\t%s\t%s\t%s\t%s\t", i+1, mark, r.order,
			r.a.rps(), r.b.rps(), r.b.rps()/r.a.rps(),
			r.a.cpuPerRequest(), coarse(r.a), r.b.cpuPerRequest(), coarse(r.b), r.b.cpuPerRequest()-r.a.cpuPerRequest(),
			us(r.a.p50), us(r.b.p50), us(r.a.p99), us(r.b.p99))
		if p.spec.name == "ttfb" {
			fmt.Fprintf(tw, "%s\t%s\t", us(r.a.ttfb50), us(r.b.ttfb50))
		}
		if len(st.gwCPUs) == 0 {
			fmt.Fprintf(tw, "%.0f%% %.0f%%\t-\t-\t-\t\n", 100*r.a.gwLoad(cpus), 100*r.b.gwLoad(cpus))
			continue
		}
		fmt.Fprintf(tw, "%.0f%% %.0f%%\t%.0f%% %.0f%%\t%.0f%% %.0f%%\t%.0f%%\t\n", 100*r.a.gwLoad(cpus), 100*r.b.gwLoad(cpus),
			100*r.a.gw.busy(), 100*r.b.gw.busy(), 100*r.a.ld.busy(), 100*r.b.ld.busy(), 100*max(r.a.noise, r.b.noise))
	}
	tw.Flush()
	for i, r := range p.rounds {
		for _, x := range []struct {
			label string
			s     sample
		}{{a, r.a}, {b, r.b}} {
			if x.s.errors > 0 {
				fmt.Printf("  round %d, %s: %d failed requests; first: %s\n", i+1, x.label, x.s.errors, x.s.firstErr)
			}
		}
	}
	if p.spec.name == "load" && len(st.gwCPUs) > 0 && !st.saturated(p) {
		fmt.Printf("  note: the gateway CPUs were not saturated (below %.0f%% busy): the load side, or other work, limited first,\n", 100*saturated)
		fmt.Println("  so the throughput ratio understates the cost; CPU µs per request does not, and the summary judges the ratio on it")
	}
	fmt.Println()
}

// coarse marks a CPU figure read in ticks, because a thread had exited.
func coarse(s sample) string {
	if s.coarse {
		return "~"
	}
	return ""
}

// printSummary prints, per scenario and phase, the medians over rounds of
// each side and the median with [min, max] of the per-round comparison.
func printSummary(o options, st *stack, results []result) {
	a, b := st.a.label, st.b.label
	fmt.Printf("summary: medians over %d rounds; \"%s vs %s\" is the median [min, max] of the per-round comparisons\n", o.rounds, b, a)
	fmt.Printf("  load: %d connections, to saturate the gateway's CPUs; latency: %d connection(s), nothing queues; ttfb: paced stream, Go client\n\n", o.conns, o.latConns)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tphase\tmetric\t%s\t%s\t%s vs %s\ttarget\t\n", a, b, b, a)
	for _, r := range results {
		for _, p := range r.phases {
			row := func(metric string, f func(sample) float64, format func(float64) string, rng string, target string) {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.s.name, p.spec.name, metric,
					format(medianOf(p.rounds, func(x round) float64 { return f(x.a) })),
					format(medianOf(p.rounds, func(x round) float64 { return f(x.b) })),
					rng, target)
			}
			ratios := over(p.rounds, func(x round) float64 { return x.b.rps() / x.a.rps() })
			cpuRatios := over(p.rounds, func(x round) float64 { return x.a.cpuPerRequest() / x.b.cpuPerRequest() })
			addedCPU := over(p.rounds, func(x round) float64 { return x.b.cpuPerRequest() - x.a.cpuPerRequest() })
			rps := func(s sample) float64 { return s.rps() }
			cpu := func(s sample) float64 { return s.cpuPerRequest() }
			num := func(format string) func(float64) string {
				return func(v float64) string { return fmt.Sprintf(format, v) }
			}
			switch p.spec.name {
			case "load":
				// The throughput ratio is the gateway's cost only while
				// its CPUs are saturated; otherwise the ratio of CPU per
				// request is what it would be, and the target is judged
				// on that.
				sat := st.saturated(p)
				ratioTarget := fmt.Sprintf("≥ %.2f×", r.s.minRatio)
				row("req/s", rps, num("%.0f"), ratios.format("%.3f", "×"), target(r.s.minRatio > 0 && sat, ratios.median >= r.s.minRatio, ratioTarget))
				row("CPU µs/req", cpu, num("%.1f"), addedCPU.format("%+.1f", " µs"), target(r.s.maxAddCPU > 0, addedCPU.median <= r.s.maxAddCPU, fmt.Sprintf("≤ +%.0f µs", r.s.maxAddCPU)))
				if !sat {
					fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t%s\t%s\t\n", r.s.name, p.spec.name, "req/s from CPU", cpuRatios.format("%.3f", "×"),
						target(r.s.minRatio > 0, cpuRatios.median >= r.s.minRatio, ratioTarget+" (not saturated: judged on CPU)"))
				}
				addedRow(tw, r.s.name, p, "p50", func(s sample) time.Duration { return s.p50 }, "")
				addedRow(tw, r.s.name, p, "p99", func(s sample) time.Duration { return s.p99 }, "")
			case "latency":
				row("CPU µs/req", cpu, num("%.1f"), addedCPU.format("%+.1f", " µs"), "")
				addedRow(tw, r.s.name, p, "p50", func(s sample) time.Duration { return s.p50 }, "")
				addedRow(tw, r.s.name, p, "p99", func(s sample) time.Duration { return s.p99 }, "")
			case "ttfb":
				added := over(p.rounds, func(x round) float64 { return float64(x.b.ttfb50 - x.a.ttfb50) })
				addedRow(tw, r.s.name, p, "ttfb p50", func(s sample) time.Duration { return s.ttfb50 },
					target(r.s.noAddTTFB, time.Duration(added.median) <= ttfbTolerance, "+0 (≤ "+us(ttfbTolerance)+")"))
				addedRow(tw, r.s.name, p, "ttfb p99", func(s sample) time.Duration { return s.ttfb99 }, "")
			}
		}
	}
	tw.Flush()
	fmt.Printf("\nload average at the end: %s\n", loadAverage())
	fmt.Println("targets are reported, not asserted; on a busy machine rerun with more -rounds and longer -duration.")
}

// addedRow prints a latency metric: each side's median and the added time.
func addedRow(tw *tabwriter.Writer, name string, p phaseResult, metric string, f func(sample) time.Duration, target string) {
	added := over(p.rounds, func(x round) float64 { return float64(f(x.b) - f(x.a)) })
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, p.spec.name, metric,
		us(time.Duration(medianOf(p.rounds, func(x round) float64 { return float64(f(x.a)) }))),
		us(time.Duration(medianOf(p.rounds, func(x round) float64 { return float64(f(x.b)) }))),
		added.formatWith(func(v float64) string { return signed(time.Duration(v)) }), target)
}

// spread is the median, min and max of per-round values.
type spread struct{ median, min, max float64 }

func over(rounds []round, f func(round) float64) spread {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = f(r)
	}
	return spread{median: median(v), min: slices.Min(v), max: slices.Max(v)}
}

// format prints the median, min and max with verb, then unit once.
func (s spread) format(verb, unit string) string {
	return s.formatWith(func(v float64) string { return fmt.Sprintf(verb, v) }) + unit
}

func (s spread) formatWith(f func(float64) string) string {
	return fmt.Sprintf("%s [%s, %s]", f(s.median), f(s.min), f(s.max))
}

func medianOf(rounds []round, f func(round) float64) float64 {
	return over(rounds, f).median
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func target(has, ok bool, text string) string {
	switch {
	case !has:
		return ""
	case ok:
		return text + "  met"
	default:
		return text + "  MISSED"
	}
}

// us formats a duration in microseconds, or milliseconds when long.
func us(d time.Duration) string {
	if d >= 10*time.Millisecond || d <= -10*time.Millisecond {
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
}

func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + us(d)
	}
	return us(d)
}
