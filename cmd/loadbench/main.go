// Command loadbench measures what ai_resilience costs a real Caddy: one
// in-process Caddy serves two sites on loopback, both proxying to the same
// in-process mock provider,
//
//	bare:    reverse_proxy UPSTREAM
//	guarded: route { ai_resilience; reverse_proxy UPSTREAM }
//
// and a keep-alive client drives each in turn. Every scenario runs in two
// phases: a load phase with -concurrency workers, which saturates the machine
// and gives the throughput ratio, and a latency phase with
// -latency-concurrency workers (default 1), in which nothing queues, so the
// added p50/p99 and time to first byte are the gateway's own cost rather than
// the throughput difference multiplied by the queue length. Each phase warms
// both sites up, then runs rounds in which the two sites take turns every
// -slice in ABBA order (bare, guarded, guarded, bare, …), so that background
// load and slow drift weigh on both alike; the report gives the median over
// rounds of requests/s, p50 and p99 latency and, for streams, time to first
// body byte, with the median guarded/bare ratio and added latency of the
// round pairs. Streams are sent back to back in the load phase (the worst
// case for per-event cost) and paced in the latency phase, so that the time
// to first byte is the proxy's and not the scheduler's (see pacedStream).
// The targets are reported, not asserted: it exits 0 whenever the
// measurement ran.
//
//	go run ./cmd/loadbench                       # json1k, json100k, stream: 3 rounds of 3s
//	go run ./cmd/loadbench -scenarios json1k -rounds 5 -duration 5s
//	go run ./cmd/loadbench -scenarios stream_openai -cpuprofile /tmp/lb.prof
//
// Everything listens on 127.0.0.1 only, and every loop ends by itself: each
// round by its duration, each request by the client timeout.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	// The modules the two sites use, as a `caddy` binary built with this
	// module has them.
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/logging"

	_ "github.com/ai-resilience/caddy-ai-resilience"
	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

// options are the command-line settings.
type options struct {
	duration    time.Duration
	slice       time.Duration
	warmup      time.Duration
	rounds      int
	concurrency int
	latencyConc int
	cpuProfile  string
	scenarios   []scenario
}

func parseFlags() (options, error) {
	var o options
	var names string
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measured time per site in one round")
	flag.DurationVar(&o.slice, "slice", 500*time.Millisecond, "within a round, the sites take turns (ABBA) this long each")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "warm-up per site before each scenario's rounds (not measured)")
	flag.IntVar(&o.rounds, "rounds", 3, "measured rounds per site and scenario; the median is reported")
	flag.IntVar(&o.concurrency, "concurrency", 16, "client workers in the load phase, each with its own keep-alive connection")
	flag.IntVar(&o.latencyConc, "latency-concurrency", 1, "client workers in the latency phase; 0 skips it")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (client, Caddy and mock) to this file")
	flag.StringVar(&guardOptions, "options", "", "subdirectives for the guarded site's ai_resilience block, e.g. 'limit org { rpm 1000000 tpm 1000000000 }'")
	flag.StringVar(&names, "scenarios", "json1k,json100k,stream", "comma-separated scenarios, of: "+strings.Join(scenarioNames(), ", "))
	flag.Parse()
	switch {
	case o.duration <= 0 || o.duration > 10*time.Minute:
		return o, fmt.Errorf("-duration %s: use a duration above 0 and at most 10m", o.duration)
	case o.slice <= 0 || o.slice > o.duration:
		return o, fmt.Errorf("-slice %s: use a duration above 0 and at most -duration", o.slice)
	case o.warmup < 0 || o.warmup > 10*time.Minute:
		return o, fmt.Errorf("-warmup %s: use a duration from 0 to 10m", o.warmup)
	case o.rounds < 1 || o.rounds > 50:
		return o, fmt.Errorf("-rounds %d: use 1 to 50", o.rounds)
	case o.concurrency < 1 || o.concurrency > 1024:
		return o, fmt.Errorf("-concurrency %d: use 1 to 1024", o.concurrency)
	case o.latencyConc < 0 || o.latencyConc > 1024:
		return o, fmt.Errorf("-latency-concurrency %d: use 0 to 1024", o.latencyConc)
	}
	for _, n := range strings.Split(names, ",") {
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
	if len(o.scenarios) == 0 {
		return o, errors.New("-scenarios names no scenario")
	}
	return o, nil
}

// scenario is one kind of request and the targets it is judged by.
type scenario struct {
	name   string
	desc   string
	path   string
	body   []byte
	script string // X-Mock-Script: how the mock answers
	// latencyScript, when set, replaces script in the latency phase.
	latencyScript string
	// streamEnd, for a stream, is how its last event ends when complete;
	// a stream the gateway had to cut ends with its in-band error instead.
	streamEnd []byte
	stream    bool

	// Targets; zero means none.
	minRatio   float64       // guarded/bare requests per second
	maxAddP50  time.Duration // added p50 latency
	maxAddTTFB time.Duration // added p50 time to first byte (streams)
}

// pacedStream is the stream of the latency phase. Back to back, the mock
// writes all 200 events in about a millisecond while the client waits for a
// CPU, so its first read holds many events and the time to first byte
// measures the scheduler, not the proxy. With a pause between events (the
// mock sleeps 100µs, which the runtime rounds up to about 1ms) the first
// event is read on its own; 20 deltas keep enough streams per round, and the
// time to first byte does not depend on what follows it.
const pacedStream = "200:events=20:interval=100us"

var scenarios = []scenario{
	{
		name: "json1k", desc: "anthropic /v1/messages, 1 KB request, ~1 KB JSON answer",
		path: "/v1/messages", body: messagesBody(1<<10, false), script: "200:bytes=1000",
		minRatio: 0.97, maxAddP50: 25 * time.Microsecond,
	},
	{
		name: "json100k", desc: "anthropic /v1/messages, 100 KB request, ~1 KB JSON answer",
		path: "/v1/messages", body: messagesBody(100<<10, false), script: "200:bytes=1000",
		maxAddP50: 150 * time.Microsecond,
	},
	{
		name: "stream", desc: "anthropic /v1/messages, 1 KB request, 200-delta event stream",
		path: "/v1/messages", body: messagesBody(1<<10, true), script: "200:events=200",
		latencyScript: pacedStream,
		stream:        true, streamEnd: []byte("event: message_stop\n"),
		maxAddTTFB: time.Millisecond,
	},
	{
		// Not in the default run: the same stream in the OpenAI Chat
		// dialect, whose every chunk the gateway parses as JSON.
		name: "stream_openai", desc: "openai /v1/chat/completions, 1 KB request, 200-chunk event stream with usage",
		path: "/v1/chat/completions", body: chatBody(1 << 10), script: "200:events=200",
		latencyScript: pacedStream,
		stream:        true, streamEnd: []byte("data: [DONE]\n"),
		maxAddTTFB: time.Millisecond,
	},
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

func findScenario(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.name == name {
			return s, true
		}
	}
	return scenario{}, false
}

// messagesBody returns an Anthropic Messages request of about size bytes,
// model first as the SDKs write it.
func messagesBody(size int, stream bool) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"claude-sonnet-4-5","max_tokens":1024,`)
	if stream {
		b.WriteString(`"stream":true,`)
	}
	b.WriteString(`"system":"You are a helpful assistant.","messages":[`)
	const word = "lorem ipsum dolor sit amet "
	for b.Len() < size-200 {
		n := min(40, (size-200-b.Len())/len(word)/2+1)
		text := strings.Repeat(word, n)
		fmt.Fprintf(&b, `{"role":"user","content":[{"type":"text","text":"%s"}]},{"role":"assistant","content":[{"type":"text","text":"%s"}]},`, text, text)
	}
	b.WriteString(`{"role":"user","content":"Summarise the above."}]}`)
	return []byte(b.String())
}

// chatBody returns a streaming OpenAI Chat Completions request of about
// size bytes that asks for usage in the stream.
func chatBody(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-4o","max_completion_tokens":1024,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant."},`)
	const word = "lorem ipsum dolor sit amet "
	for b.Len() < size-100 {
		n := min(40, (size-100-b.Len())/len(word)/2+1)
		text := strings.Repeat(word, n)
		fmt.Fprintf(&b, `{"role":"user","content":"%s"},{"role":"assistant","content":"%s"},`, text, text)
	}
	b.WriteString(`{"role":"user","content":"Summarise the above."}]}`)
	return []byte(b.String())
}

func run() error {
	o, err := parseFlags()
	if err != nil {
		return err
	}

	upstream, stopUpstream, err := startMock()
	if err != nil {
		return err
	}
	defer stopUpstream()

	bare, guarded, err := startCaddy(upstream)
	if err != nil {
		return err
	}
	defer func() {
		if err := caddy.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "loadbench: stopping caddy:", err)
		}
	}()

	client := newClient(o.concurrency)
	defer client.CloseIdleConnections()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("creating the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	printHeader(o, upstream, bare, guarded)
	var results []result
	for _, s := range o.scenarios {
		fmt.Printf("running %-8s (%s) ...\n", s.name, s.desc)
		res, err := measure(client, o, s, bare, guarded)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", s.name, err)
		}
		printRounds(res)
		results = append(results, res)
	}
	printSummary(o, results)
	return nil
}

// startMock serves the mock provider on a loopback port.
func startMock() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listening for the mock provider: %w", err)
	}
	srv := &http.Server{
		Handler:           mockprovider.New(mockprovider.Options{NoRecord: true}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// guardOptions is the -options flag: what the guarded site's ai_resilience
// block holds besides the defaults.
var guardOptions string

// startCaddy loads one Caddy config with the bare and the guarded site, the
// way `caddy run` would from this Caddyfile, and waits until both listen.
func startCaddy(upstream string) (bareURL, guardedURL string, err error) {
	barePort, err := freePort()
	if err != nil {
		return "", "", err
	}
	guardedPort, err := freePort()
	if err != nil {
		return "", "", err
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	grace_period 2s
	servers {
		protocols h1
	}
	log {
		output stderr
		level WARN
	}
}

http://127.0.0.1:%d {
	reverse_proxy %s
}

http://127.0.0.1:%d {
	route {
		ai_resilience {
			%s
		}
		reverse_proxy %s
	}
}
`, barePort, upstream, guardedPort, guardOptions, upstream)
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return "", "", errors.New("the caddyfile adapter is not registered")
	}
	cfg, _, err := adapter.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return "", "", fmt.Errorf("adapting the Caddyfile: %w\n%s", err, caddyfile)
	}
	if err := caddy.Load(cfg, true); err != nil {
		return "", "", fmt.Errorf("loading the config: %w\n%s", err, cfg)
	}
	for _, port := range []int{barePort, guardedPort} {
		if err := waitListening(fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			_ = caddy.Stop()
			return "", "", err
		}
	}
	return fmt.Sprintf("http://127.0.0.1:%d", barePort), fmt.Sprintf("http://127.0.0.1:%d", guardedPort), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string) error {
	for range 100 {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("caddy did not start listening on %s", addr)
}

// newClient returns a keep-alive HTTP/1.1 client with an idle connection
// for every worker on each site.
func newClient(concurrency int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        4 * concurrency,
			MaxIdleConnsPerHost: 2 * concurrency,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		},
	}
}

// sample is what one site did in one round.
type sample struct {
	requests int
	errors   int
	firstErr string
	elapsed  time.Duration
	rps      float64
	p50, p99 time.Duration
	ttfb50   time.Duration
	ttfb99   time.Duration
	// firstRead is the median size of the first read of a stream's body:
	// about one event when every event is flushed on its own.
	firstRead int
}

// phase is one scenario's rounds at one concurrency.
type phase struct {
	concurrency   int
	bare, guarded []sample
}

// result is one scenario's phases: load, then (if run) latency.
type result struct {
	s       scenario
	load    phase
	latency *phase
}

// measure runs the scenario's load phase and its latency phase.
func measure(client *http.Client, o options, s scenario, bareURL, guardedURL string) (result, error) {
	res := result{s: s}
	var err error
	if res.load, err = runPhase(client, o, s, o.concurrency, bareURL, guardedURL); err != nil {
		return res, err
	}
	if o.latencyConc > 0 {
		ls := s
		if s.latencyScript != "" {
			ls.script = s.latencyScript
		}
		lp, err := runPhase(client, o, ls, o.latencyConc, bareURL, guardedURL)
		if err != nil {
			return res, err
		}
		res.latency = &lp
	}
	return res, nil
}

// runPhase warms both sites up and runs the interleaved rounds.
func runPhase(client *http.Client, o options, s scenario, conc int, bareURL, guardedURL string) (phase, error) {
	p := phase{concurrency: conc}
	if o.warmup > 0 {
		bare, guarded := newSite(bareURL, conc), newSite(guardedURL, conc)
		interleave(client, s, o.warmup, o.slice, bare, guarded, false)
		for _, w := range []*site{bare, guarded} {
			if r := w.summary(s); r.requests == 0 {
				return p, fmt.Errorf("warm-up of %s got no answer: %s", w.url, r.firstErr)
			}
		}
	}
	for round := range o.rounds {
		bare, guarded := newSite(bareURL, conc), newSite(guardedURL, conc)
		interleave(client, s, o.duration, o.slice, bare, guarded, round%2 == 1)
		p.bare = append(p.bare, bare.summary(s))
		p.guarded = append(p.guarded, guarded.summary(s))
	}
	return p, nil
}

// interleave drives each site for d in total, alternating between them
// every slice in ABBA order, so that whatever else the machine is doing
// at the time weighs on both sites alike.
func interleave(client *http.Client, s scenario, d, slice time.Duration, a, b *site, bFirst bool) {
	for i := 0; a.elapsed < d || b.elapsed < d; i++ {
		first, second := a, b
		if (i%2 == 1) != bFirst {
			first, second = b, a
		}
		for _, w := range []*site{first, second} {
			if left := d - w.elapsed; left > 0 {
				w.run(client, s, min(slice, left))
			}
		}
	}
}

// site collects one site's measurements over one round or warm-up.
type site struct {
	url     string
	workers []workerStats
	elapsed time.Duration
}

// workerStats is what one client worker measured; each worker keeps its own,
// so the request loop shares nothing.
type workerStats struct {
	lat, ttfb []time.Duration
	firstRead []int
	errors    int
	firstErr  string
}

func newSite(url string, concurrency int) *site {
	return &site{url: url, workers: make([]workerStats, concurrency)}
}

// run sends requests from every worker for d, each worker one at a time.
func (st *site) run(client *http.Client, s scenario, d time.Duration) {
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range st.workers {
		w := &st.workers[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			header := http.Header{
				"Content-Type":  {"application/json"},
				"User-Agent":    {"loadbench"},
				"X-Mock-Script": {s.script},
			}
			if strings.HasPrefix(s.path, "/v1/messages") {
				header["Anthropic-Version"] = []string{"2023-06-01"}
				header["X-Api-Key"] = []string{"sk-ant-loadbench-not-a-real-key"}
			} else {
				header["Authorization"] = []string{"Bearer sk-loadbench-not-a-real-key"}
			}
			for time.Now().Before(end) {
				lat, ttfb, first, err := one(client, st.url+s.path, header, s, buf)
				if err != nil {
					if w.errors == 0 {
						w.firstErr = err.Error()
					}
					w.errors++
					continue
				}
				w.lat = append(w.lat, lat)
				if s.stream {
					w.ttfb = append(w.ttfb, ttfb)
					w.firstRead = append(w.firstRead, first)
				}
			}
		}()
	}
	wg.Wait()
	// Requests started before the end finish after it; the time they
	// take counts, so requests/s is requests over the time really spent.
	st.elapsed += time.Since(start)
}

// summary reduces the site's measurements to one sample.
func (st *site) summary(s scenario) sample {
	out := sample{elapsed: st.elapsed}
	var lat, ttfb []time.Duration
	var first []int
	for _, w := range st.workers {
		lat = append(lat, w.lat...)
		ttfb = append(ttfb, w.ttfb...)
		first = append(first, w.firstRead...)
		out.errors += w.errors
		if out.firstErr == "" {
			out.firstErr = w.firstErr
		}
	}
	out.requests = len(lat)
	if out.elapsed > 0 {
		out.rps = float64(out.requests) / out.elapsed.Seconds()
	}
	out.p50, out.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	if s.stream {
		out.ttfb50, out.ttfb99 = percentile(ttfb, 0.50), percentile(ttfb, 0.99)
		if len(first) > 0 {
			slices.Sort(first)
			out.firstRead = first[len(first)/2]
		}
	}
	return out
}

// one sends one request, reads the whole answer and checks it.
func one(client *http.Client, url string, header http.Header, s scenario, buf []byte) (lat, ttfb time.Duration, first int, err error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(s.body))
	if err != nil {
		return 0, 0, 0, err
	}
	req.Header = header
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	var tail [64]byte
	tailLen, n := 0, 0
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			if n == 0 {
				ttfb = time.Since(start)
				first = m
			}
			n += m
			tailLen = keepTail(&tail, tailLen, buf[:m])
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, 0, 0, fmt.Errorf("reading the answer: %w", rerr)
		}
	}
	lat = time.Since(start)
	switch {
	case resp.StatusCode != http.StatusOK:
		return 0, 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, tail[:tailLen])
	case n == 0:
		return 0, 0, 0, errors.New("empty answer")
	case s.stream && !bytes.Contains(tail[:tailLen], s.streamEnd):
		return 0, 0, 0, fmt.Errorf("stream did not end with %q: …%q", s.streamEnd, tail[:tailLen])
	}
	return lat, ttfb, first, nil
}

// keepTail keeps the last len(tail) bytes seen.
func keepTail(tail *[64]byte, have int, p []byte) int {
	if len(p) >= len(tail) {
		copy(tail[:], p[len(p)-len(tail):])
		return len(tail)
	}
	if have+len(p) > len(tail) {
		drop := have + len(p) - len(tail)
		copy(tail[:], tail[drop:have])
		have -= drop
	}
	copy(tail[have:], p)
	return have + len(p)
}

// percentile returns the nearest-rank q-quantile; it sorts d.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
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

// medianOf applies f to every round and returns the median.
func medianOf(samples []sample, f func(sample) float64) float64 {
	v := make([]float64, len(samples))
	for i, s := range samples {
		v[i] = f(s)
	}
	return median(v)
}

// pairedMedian is the median over rounds of f(guarded, bare).
func pairedMedian(p phase, f func(g, b sample) float64) float64 {
	v := make([]float64, len(p.bare))
	for i := range p.bare {
		v[i] = f(p.guarded[i], p.bare[i])
	}
	return median(v)
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

func printHeader(o options, upstream, bare, guarded string) {
	fmt.Printf("loadbench: Caddy %s with and without ai_resilience, %s/%s, %s\n", caddyVersion(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("  CPUs %d, GOMAXPROCS %d: load generator, Caddy and the mock provider share them in ONE process\n", runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Printf("  (and their GC), so absolute numbers are lower than a dedicated proxy host's; compare the ratios.\n")
	fmt.Printf("  system load average at start: %s (other processes on this machine skew every number)\n", loadAverage())
	fmt.Printf("  mock upstream http://%s   bare %s   guarded %s (route { ai_resilience; reverse_proxy })\n", upstream, bare, guarded)
	fmt.Printf("  per scenario: load phase with %d workers, latency phase with %d worker(s); keep-alive connections;\n", o.concurrency, o.latencyConc)
	fmt.Printf("  per phase: warm-up %s per site, then %d rounds of %s per site, the sites taking turns every %s (ABBA order)\n\n", o.warmup, o.rounds, o.duration, o.slice)
}

func caddyVersion() string {
	_, full := caddy.Version()
	if v, _, ok := strings.Cut(full, " "); ok {
		return v
	}
	return full
}

func printRounds(r result) {
	phases := []*phase{&r.load}
	if r.latency != nil {
		phases = append(phases, r.latency)
	}
	fmt.Printf("  upstream answers (X-Mock-Script): %d workers %q", r.load.concurrency, r.s.script)
	if r.latency != nil {
		script := r.s.script
		if r.s.latencyScript != "" {
			script = r.s.latencyScript
		}
		fmt.Printf(", %d worker(s) %q", r.latency.concurrency, script)
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  workers\tround\tsite\treq/s\tp50\tp99\tttfb p50\t1st read\terrors\t\n")
	for _, p := range phases {
		for i := range p.bare {
			for _, site := range []struct {
				name string
				s    sample
			}{{"bare", p.bare[i]}, {"guarded", p.guarded[i]}} {
				ttfb, first := "-", "-"
				if r.s.stream {
					ttfb, first = us(site.s.ttfb50), fmt.Sprintf("%dB", site.s.firstRead)
				}
				fmt.Fprintf(tw, "  %d\t%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t\n", p.concurrency, i+1, site.name, site.s.rps, us(site.s.p50), us(site.s.p99), ttfb, first, site.s.errors)
			}
		}
	}
	tw.Flush()
	for _, p := range phases {
		for i := range p.bare {
			for _, s := range []sample{p.bare[i], p.guarded[i]} {
				if s.errors > 0 {
					fmt.Printf("  %d workers, round %d: %d errors, first: %s\n", p.concurrency, i+1, s.errors, s.firstErr)
				}
			}
		}
	}
	fmt.Println()
}

func printSummary(o options, results []result) {
	fmt.Printf("summary: median of %d rounds; \"guarded vs bare\" is the median of the per-round pairs\n", o.rounds)
	fmt.Printf("  throughput is judged with %d workers (saturated); added latency and ttfb with %d worker(s) (nothing queues):\n", o.concurrency, o.latencyConc)
	fmt.Printf("  at saturation added latency is ~ workers x added CPU per request / cores, so it is shown but not judged.\n")
	fmt.Printf("  streams in the latency phase are paced (%q), so their p50/p99 are mostly the pacing; their ttfb is the point.\n\n", pacedStream)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tworkers\tmetric\tbare\tguarded\tguarded vs bare\ttarget\t\n")
	for _, r := range results {
		lp := r.load
		rpsB := medianOf(lp.bare, func(s sample) float64 { return s.rps })
		rpsG := medianOf(lp.guarded, func(s sample) float64 { return s.rps })
		ratio := pairedMedian(lp, func(g, b sample) float64 { return g.rps / b.rps })
		fmt.Fprintf(tw, "%s\t%d\treq/s\t%.0f\t%.0f\tratio %.3f\t%s\t\n", r.s.name, lp.concurrency, rpsB, rpsG, ratio, target(r.s.minRatio > 0, ratio >= r.s.minRatio, fmt.Sprintf("≥ %.2f", r.s.minRatio)))
		latencyRow(tw, r.s, lp, "p50", func(s sample) time.Duration { return s.p50 }, 0)
		latencyRow(tw, r.s, lp, "p99", func(s sample) time.Duration { return s.p99 }, 0)
		if r.s.stream {
			latencyRow(tw, r.s, lp, "ttfb p50", func(s sample) time.Duration { return s.ttfb50 }, 0)
		}
		if p := r.latency; p != nil {
			rpsB := medianOf(p.bare, func(s sample) float64 { return s.rps })
			rpsG := medianOf(p.guarded, func(s sample) float64 { return s.rps })
			ratio := pairedMedian(*p, func(g, b sample) float64 { return g.rps / b.rps })
			fmt.Fprintf(tw, "%s\t%d\treq/s\t%.0f\t%.0f\tratio %.3f\t\t\n", r.s.name, p.concurrency, rpsB, rpsG, ratio)
			latencyRow(tw, r.s, *p, "p50", func(s sample) time.Duration { return s.p50 }, r.s.maxAddP50)
			latencyRow(tw, r.s, *p, "p99", func(s sample) time.Duration { return s.p99 }, 0)
			if r.s.stream {
				latencyRow(tw, r.s, *p, "ttfb p50", func(s sample) time.Duration { return s.ttfb50 }, r.s.maxAddTTFB)
				latencyRow(tw, r.s, *p, "ttfb p99", func(s sample) time.Duration { return s.ttfb99 }, 0)
			}
		}
		errs := 0
		for _, p := range []*phase{&r.load, r.latency} {
			if p == nil {
				continue
			}
			for i := range p.bare {
				errs += p.bare[i].errors + p.guarded[i].errors
			}
		}
		if errs > 0 {
			fmt.Fprintf(tw, "%s\t\terrors\t\t\t%d failed requests (see rounds above)\t\t\n", r.s.name, errs)
		}
	}
	tw.Flush()
	fmt.Printf("\nsystem load average at end: %s\n", loadAverage())
	fmt.Println("targets are reported, not asserted; a MISS on a busy machine may be noise: rerun with more -rounds.")
}

func latencyRow(tw io.Writer, s scenario, p phase, name string, f func(sample) time.Duration, limit time.Duration) {
	b := time.Duration(medianOf(p.bare, func(s sample) float64 { return float64(f(s)) }))
	g := time.Duration(medianOf(p.guarded, func(s sample) float64 { return float64(f(s)) }))
	added := time.Duration(pairedMedian(p, func(gs, bs sample) float64 { return float64(f(gs) - f(bs)) }))
	fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", s.name, p.concurrency, name, us(b), us(g), signed(added),
		target(limit > 0, added <= limit, "added ≤ "+us(limit)))
}

func target(has, ok bool, text string) string {
	switch {
	case !has:
		return ""
	case ok:
		return text + "  ok"
	default:
		return text + "  MISS"
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
