package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

// The storm scenarios: the storm guards (circuit breaker, retry budget) under
// the fault mixes they exist for. In `go test` they run short and assert;
// `make bench-storm` runs them at full length and prints the numbers the
// README reports (-storm.report).
var (
	stormReport   = flag.Bool("storm.report", false, "print the storm scenarios' numbers")
	stormRequests = flag.Int("storm.requests", 400, "requests in the fault-mix scenario")
	stormSeeds    = flag.Int("storm.seeds", 1, "fault-mix runs, with seeds 1 to this")
	stormOutage   = flag.Duration("storm.outage", 2*time.Second, "how long the sustained outage lasts")
)

// stormConcurrency is how many clients send at once in both scenarios.
const stormConcurrency = 32

// stormClient keeps a connection per client, so that a run measures the
// gateway rather than connection setup.
var stormClient = &http.Client{
	Timeout: time.Minute,
	Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2 * stormConcurrency,
		DisableCompression:  true,
	},
}

// stormReply is what one client request got.
type stormReply struct {
	status  int
	model   string // the model that answered, on success
	latency time.Duration
}

// stormErrorPause is how long a client waits after an error before its next
// request, as a client with any backoff at all would: without it, clients
// answered at once by an open circuit would measure only how fast the
// gateway refuses.
const stormErrorPause = 50 * time.Millisecond

// stormLoad sends requests from stormConcurrency clients, each sending its
// next request when the last one is answered (stormErrorPause later after
// an error), until n have been sent (n > 0) or until the time is up.
// Request i is sent to path with the given body and headers.
func stormLoad(t *testing.T, url string, n int, until time.Time, build func(i int) (path, body string, h http.Header)) []stormReply {
	t.Helper()
	var (
		next    atomic.Int64
		mu      sync.Mutex
		replies []stormReply
		wg      sync.WaitGroup
		failed  atomic.Value
	)
	for range stormConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if n > 0 && i >= n || n == 0 && time.Now().After(until) {
					return
				}
				path, body, h := build(i)
				req, err := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
				if err != nil {
					failed.Store(err)
					return
				}
				req.Header = h
				began := time.Now()
				resp, err := stormClient.Do(req)
				if err != nil {
					failed.Store(err)
					return
				}
				raw, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					failed.Store(err)
					return
				}
				r := stormReply{status: resp.StatusCode, latency: time.Since(began)}
				if r.status == http.StatusOK {
					r.model = gjson.GetBytes(raw, "model").Str
				}
				mu.Lock()
				replies = append(replies, r)
				mu.Unlock()
				if n == 0 && r.status != http.StatusOK {
					time.Sleep(stormErrorPause)
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("storm client: %v", err)
	}
	return replies
}

// stormHeader is an Anthropic client's headers, with the mock's request id.
func stormHeader(apiKey, id string) http.Header {
	h := http.Header{
		"Content-Type":      {"application/json"},
		"Anthropic-Version": {"2023-06-01"},
		"X-Api-Key":         {apiKey},
	}
	if id != "" {
		h.Set(mockprovider.ScriptIDHeader, id)
	}
	return h
}

// latencyQuantile returns the nearest-rank q-quantile of the replies'
// latencies.
func latencyQuantile(replies []stormReply, q float64) time.Duration {
	if len(replies) == 0 {
		return 0
	}
	d := make([]time.Duration, len(replies))
	for i, r := range replies {
		d[i] = r.latency
	}
	slices.Sort(d)
	return d[min(max(int(math.Ceil(q*float64(len(d))))-1, 0), len(d)-1)]
}

// report prints a scenario's numbers with -storm.report, and logs them
// otherwise.
func report(t *testing.T, title string, rows [][2]string) {
	t.Helper()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\n", title)
	for _, r := range rows {
		fmt.Fprintf(tw, "  %s\t%s\n", r[0], r[1])
	}
	tw.Flush()
	if *stormReport {
		fmt.Fprint(os.Stdout, b.String())
		return
	}
	t.Log("\n" + b.String())
}

// TestStormFaultMix is the production mix that used to open the circuit and
// spend the retry budget: 30 % 429 with retry-after drawn from 0–1 s, 10 %
// 529, `retries 3`, every other setting default, 32 clients at once. The
// mock's answers are fixed per request (FaultMix.Answer), so what each
// request can get with four attempts is known: the guards must lose none
// of it, and send no more or fewer attempts than the retries need.
func TestStormFaultMix(t *testing.T) {
	for seed := range *stormSeeds {
		t.Run(fmt.Sprint("seed ", seed+1), func(t *testing.T) { stormFaultMix(t, uint64(seed+1)) })
	}
}

func stormFaultMix(t *testing.T, seed uint64) {
	const retries = 3
	mix := mockprovider.FaultMix{RateLimited: 0.3, RetryAfterMax: time.Second, Overloaded: 0.1, Seed: seed}
	g := startGatewayWith(t, setup{options: directives("retries 3"), mock: mockprovider.Options{Mix: &mix}})
	n := *stormRequests
	id := func(i int) string { return fmt.Sprint("storm-mix-", i) }

	// What the mix holds for each request with 1 + retries attempts.
	canSucceed, needAttempts := 0, 0
	for i := range n {
		for k := range retries + 1 {
			needAttempts++
			if status, _ := mix.Answer(id(i), k); status == 0 {
				canSucceed++
				break
			}
		}
	}

	began := time.Now()
	replies := stormLoad(t, g.URL, n, time.Time{}, func(i int) (string, string, http.Header) {
		return "/v1/messages", anthropicJSON("claude-sonnet-4-5", false), stormHeader(testAPIKey, id(i))
	})
	took := time.Since(began)
	ok := 0
	for _, r := range replies {
		if r.status == http.StatusOK {
			ok++
		}
	}
	attempts := len(g.mock.Calls())
	p := mix.RateLimited + mix.Overloaded
	want := 1 - math.Pow(p, retries+1)
	wantAttempts := (1 - math.Pow(p, retries+1)) / (1 - p)
	opened := len(g.logLines(t, "circuit open"))
	refused := len(g.logLines(t, "retry budget spent"))
	report(t, fmt.Sprintf("fault mix, seed %d: %d requests, %d clients, 30%% 429 (retry-after 0-1 s), 10%% 529, retries %d, defaults otherwise", seed, n, stormConcurrency, retries), [][2]string{
		{"client success", fmt.Sprintf("%.1f %% (%d/%d); 1 - p^(retries+1) = %.1f %%; this seed's draws allow %.1f %%", 100*float64(ok)/float64(n), ok, n, 100*want, 100*float64(canSucceed)/float64(n))},
		{"upstream attempts per request", fmt.Sprintf("%.3f; expected (1 - p^4)/(1 - p) = %.3f; this seed's draws need %.3f", float64(attempts)/float64(n), wantAttempts, float64(needAttempts)/float64(n))},
		{"latency p50 / p99 / max", fmt.Sprintf("%v / %v / %v", latencyQuantile(replies, 0.5).Round(time.Millisecond), latencyQuantile(replies, 0.99).Round(time.Millisecond), latencyQuantile(replies, 1).Round(time.Millisecond))},
		{"circuit opened / budget refusals", fmt.Sprintf("%d / %d", opened, refused)},
		{"run time", took.Round(time.Millisecond).String()},
	})

	if len(replies) != n {
		t.Fatalf("%d replies for %d requests", len(replies), n)
	}
	if ok != canSucceed || attempts != needAttempts {
		t.Errorf("%d requests served with %d upstream attempts; the mix's answers allow %d with %d attempts: the guards lost requests or attempts", ok, attempts, canSucceed, needAttempts)
	}
	if opened != 0 || refused != 0 {
		t.Errorf("the circuit opened %d times and the budget refused %d retries under a mix of rate limits and occasional overloads", opened, refused)
	}
}

// stormFloor is the retries the default budget's floor allows over a run of
// d: its ten-second window starts full, then refills at 10 a second.
func stormFloor(d time.Duration) float64 {
	return 10 * (d.Seconds() + 10)
}

// TestStormOutage: a model that answers everything with 529 (or 500) for a
// while, 32 clients at once, default settings. With a fallback, the circuit
// opens within its threshold and the fallback serves every request with no
// call to the failed model for the rest of the cooldown. Without one, the
// circuit and the budget keep the upstream's load within 1.25 × the
// requests plus the budget's floor; with the circuit off, the budget alone
// does.
func TestStormOutage(t *testing.T) {
	const down, up = "storm-down", "storm-up"
	d := *stormOutage
	for _, tc := range []struct {
		name     string
		status   int
		fallback bool
		options  string
	}{
		{"529 with fallback", 529, true, ""},
		{"500 with fallback", 500, true, ""},
		{"529 without fallback", 529, false, ""},
		{"500 without fallback", 500, false, ""},
		{"529 without fallback, circuit off", 529, false, "circuit_breaker off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			options := []string{"retries 3"}
			if tc.fallback {
				options = append(options, "fallback "+down+" "+up)
			}
			if tc.options != "" {
				options = append(options, tc.options)
			}
			g := startGatewayWith(t, setup{
				options: directives(options...),
				mock:    mockprovider.Options{FailModels: map[string]int{down: tc.status}},
				site:    "\tmetrics /metrics",
			})
			// Counted from the metrics, not the log: a long run's debug log
			// rolls over.
			const opened, denied = `caddy_ai_resilience_circuit_transitions_total{model="` + down + `",to="open"}`, `caddy_ai_resilience_retry_budget_denied_total{dialect="anthropic"}`
			before := scrape(t, g.URL+"/metrics")
			replies := stormLoad(t, g.URL, 0, time.Now().Add(d), func(int) (string, string, http.Header) {
				return "/v1/messages", anthropicJSON(down, false), stormHeader(testAPIKey, "")
			})
			after := scrape(t, g.URL+"/metrics")
			opens, refused := after[opened]-before[opened], after[denied]-before[denied]
			calls := g.mock.Calls()
			byModel := map[string]int{}
			for _, c := range calls {
				byModel[c.Model]++
			}
			served := 0
			for _, r := range replies {
				if r.status == http.StatusOK && r.model == up {
					served++
				}
			}
			// The failed model gets a first wave of calls, the circuit opens
			// within it, and then no call until the cooldown (the default
			// 30 s) is over and probes go.
			var first time.Time
			inCooldown := 0
			for _, c := range calls {
				switch {
				case c.Model != down:
				case first.IsZero():
					first = c.At
				case c.At.After(first.Add(time.Second)) && c.At.Before(first.Add(30*time.Second)):
					inCooldown++
				}
			}
			r := float64(len(replies))
			bound := 1.25*r + stormFloor(d)
			report(t, fmt.Sprintf("outage: %s answers %d to everything for %v, %d clients, retries 3, %s", down, tc.status, d, stormConcurrency, tc.name), [][2]string{
				{"client requests", fmt.Sprintf("%d, of which %d served by the fallback", len(replies), served)},
				{"upstream calls", fmt.Sprintf("%d to %s, %d to %s (%.3f per request); bound 1.25 × requests + floor = %.0f", byModel[down], down, byModel[up], up, float64(len(calls))/r, bound)},
				{"circuit opened / calls to it from 1 s to 30 s", fmt.Sprintf("%.0f / %d", opens, inCooldown)},
				{"budget refusals", fmt.Sprintf("%.0f", refused)},
				{"latency p50 / p99", fmt.Sprintf("%v / %v", latencyQuantile(replies, 0.5).Round(time.Millisecond), latencyQuantile(replies, 0.99).Round(time.Millisecond))},
			})

			if tc.fallback {
				if served != len(replies) {
					t.Errorf("the fallback served %d of %d requests, want all", served, len(replies))
				}
				// Only attempts allowed before the circuit opened reach the
				// failed model: at most one wave of clients and the
				// threshold's retries.
				if byModel[down] > stormConcurrency+5 {
					t.Errorf("%s got %d calls, want at most %d (the clients' first wave and the threshold)", down, byModel[down], stormConcurrency+5)
				}
			}
			if float64(len(calls)) > bound {
				t.Errorf("%d upstream calls for %d requests, above 1.25 × requests + the floor (%.0f)", len(calls), len(replies), bound)
			}
			if tc.options == "" && (opens < 1 || inCooldown != 0) {
				t.Errorf("the circuit opened %.0f times and %s got %d calls in the cooldown, want it open and no call", opens, down, inCooldown)
			}
		})
	}
}

// logLines returns the module's log entries with message msg. It reads the
// log file line by line and decodes only the lines that may match, since a
// long storm writes a line per request.
func (g *gateway) logLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	f, err := os.Open(g.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	needle := []byte(`"msg":` + strconv.Quote(msg))
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), needle) {
			continue
		}
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) == nil && e["logger"] == moduleLogger && e["msg"] == msg {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
