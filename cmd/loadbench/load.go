package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/proc"
)

// load is what a load generator measured in one turn.
type load struct {
	requests int // answered 200
	errors   int // connection errors, timeouts and other statuses
	firstErr string
	elapsed  time.Duration
	p50, p99 time.Duration
	// ttfb50 and ttfb99 are the time to the first body byte, for streams,
	// from the Go client only.
	ttfb50, ttfb99 time.Duration
}

// loadGen sends one scenario's requests to a site over conns keep-alive
// connections for d.
type loadGen interface {
	name() string
	run(url string, s scenario, script string, conns int, d time.Duration) (load, error)
}

// wrk drives a site with wrk (https://github.com/wg/wrk), one thread per
// load CPU, from a Lua script that sets the request and prints the summary
// in one line.
type wrk struct {
	dir  string
	cpus string
}

func (w *wrk) name() string { return "wrk" }

// wrkDone is the script's summary: answers, then wrk's error counts
// (connect, read, write, status, timeout), duration and latencies in µs.
const wrkDone = `
function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("LOADBENCH %d %d %d %d %d %d %d %d %d\n",
		summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
		summary.duration, latency:percentile(50), latency:percentile(99)))
end
`

func (w *wrk) run(url string, s scenario, script string, conns int, d time.Duration) (load, error) {
	lua, err := w.script(s, script)
	if err != nil {
		return load{}, err
	}
	threads := 1
	if cpus, err := parseCPUList(w.cpus); err == nil && w.cpus != "" {
		threads = max(1, min(len(cpus), conns))
	}
	secs := strconv.Itoa(int(d / time.Second))
	cmd := proc.Command(w.cpus, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", secs+"s",
		"--timeout", "10s", "-s", lua, url+s.api.Path())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return load{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(out)
}

// parseWrk reads the summary line wrkDone prints. wrk counts an answer
// with a status other than 2xx or 3xx both as a request and as an error.
func parseWrk(out []byte) (load, error) {
	for line := range strings.SplitSeq(string(out), "\n") {
		rest, ok := strings.CutPrefix(line, "LOADBENCH ")
		if !ok {
			continue
		}
		var n [9]int64
		f := strings.Fields(rest)
		if len(f) != len(n) {
			return load{}, fmt.Errorf("parsing wrk's summary %q: %d fields", line, len(f))
		}
		for i := range n {
			var err error
			if n[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
				return load{}, fmt.Errorf("parsing wrk's summary %q: %w", line, err)
			}
		}
		l := load{
			requests: int(n[0] - n[4]),
			errors:   int(n[1] + n[2] + n[3] + n[4] + n[5]),
			elapsed:  time.Duration(n[6]) * time.Microsecond,
			p50:      time.Duration(n[7]) * time.Microsecond,
			p99:      time.Duration(n[8]) * time.Microsecond,
		}
		if l.errors > 0 {
			l.firstErr = fmt.Sprintf("wrk: %d connect, %d read, %d write, %d non-2xx, %d timeouts", n[1], n[2], n[3], n[4], n[5])
		}
		return l, nil
	}
	return load{}, fmt.Errorf("wrk printed no summary:\n%s", out)
}

// script writes (once) the Lua script and the body file for a scenario
// and mock script.
func (w *wrk) script(s scenario, script string) (string, error) {
	name := s.name + "-" + strings.NewReplacer(":", "_", "=", "_", ",", "_").Replace(script)
	lua := filepath.Join(w.dir, name+".lua")
	if _, err := os.Stat(lua); err == nil {
		return lua, nil
	}
	body := filepath.Join(w.dir, s.name+".json")
	if err := os.WriteFile(body, s.body, 0o644); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("wrk.method = \"POST\"\n")
	hs := s.headers(script)
	keys := make([]string, 0, len(hs))
	for k := range hs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "wrk.headers[%q] = %q\n", k, hs[k])
	}
	fmt.Fprintf(&b, "local f = assert(io.open(%q, \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()\n", body)
	b.WriteString(wrkDone)
	if err := os.WriteFile(lua, []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	return lua, nil
}

// goClient drives a site from this process, one goroutine per connection,
// each with its own keep-alive connection. It reads every answer whole and
// checks it, and times the first body byte of streams.
type goClient struct {
	client *http.Client
}

func newGoClient() *goClient {
	return &goClient{client: &http.Client{
		Timeout: clientTimeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        8192,
			MaxIdleConnsPerHost: 4096,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		},
	}}
}

func (g *goClient) name() string { return "Go client" }

func (g *goClient) close() { g.client.CloseIdleConnections() }

// worker is what one connection's goroutine measured; each keeps its own,
// so the request loop shares nothing.
type worker struct {
	lat, ttfb []time.Duration
	errors    int
	firstErr  string
}

func (g *goClient) run(url string, s scenario, script string, conns int, d time.Duration) (load, error) {
	ws := make([]worker, conns)
	header := http.Header{}
	for k, v := range s.headers(script) {
		header.Set(k, v)
	}
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range ws {
		w := &ws[i]
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for time.Now().Before(end) {
				lat, ttfb, err := g.one(url+s.api.Path(), header, s, buf)
				if err != nil {
					if w.errors == 0 {
						w.firstErr = err.Error()
					}
					w.errors++
					continue
				}
				w.lat = append(w.lat, lat)
				w.ttfb = append(w.ttfb, ttfb)
			}
		})
	}
	wg.Wait()
	// Requests started before the end finish after it; the time they take
	// counts, so requests/s is requests over the time really spent.
	out := load{elapsed: time.Since(start)}
	var lat, ttfb []time.Duration
	for _, w := range ws {
		lat = append(lat, w.lat...)
		ttfb = append(ttfb, w.ttfb...)
		out.errors += w.errors
		if out.firstErr == "" {
			out.firstErr = w.firstErr
		}
	}
	out.requests = len(lat)
	out.p50, out.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	if s.stream {
		out.ttfb50, out.ttfb99 = percentile(ttfb, 0.50), percentile(ttfb, 0.99)
	}
	return out, nil
}

// check sends one request and reports whether the answer is whole.
func (g *goClient) check(url string, s scenario) error {
	header := http.Header{}
	for k, v := range s.headers(s.script) {
		header.Set(k, v)
	}
	_, _, err := g.one(url+s.api.Path(), header, s, make([]byte, 32<<10))
	return err
}

// one sends one request, reads the whole answer and checks it.
func (g *goClient) one(url string, header http.Header, s scenario, buf []byte) (lat, ttfb time.Duration, err error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(s.body))
	if err != nil {
		return 0, 0, err
	}
	req.Header = header
	start := time.Now()
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var tail [64]byte
	tailLen, n := 0, 0
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			if n == 0 {
				ttfb = time.Since(start)
			}
			n += m
			tailLen = keepTail(&tail, tailLen, buf[:m])
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, 0, fmt.Errorf("reading the answer: %w", rerr)
		}
	}
	lat = time.Since(start)
	switch {
	case resp.StatusCode != http.StatusOK:
		return 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, tail[:tailLen])
	case n == 0:
		return 0, 0, errors.New("empty answer")
	case s.stream && !bytes.Contains(tail[:tailLen], []byte(s.streamEnd)):
		return 0, 0, fmt.Errorf("stream did not end with %q: …%q", s.streamEnd, tail[:tailLen])
	}
	return lat, ttfb, nil
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
