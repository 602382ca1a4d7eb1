package integration

// A fleet of Caddy instances sharing one Redis. Caddy's configuration is
// one per process, so each instance is a Caddy process of its own (the
// cmd/caddy binary, built once per test run), all in front of one mock
// provider that counts what each instance let through. The clients are the
// official SDK, its retries off.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
)

// instanceHeader tells the upstream which instance proxied a request.
const instanceHeader = "X-Fleet-Instance"

// countingUpstream is the mock provider, recording when each instance's
// requests arrive.
type countingUpstream struct {
	mock  *mockprovider.Provider
	mu    sync.Mutex
	calls []upstreamCall
}

type upstreamCall struct {
	at       time.Time
	instance int
}

func (u *countingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.Header.Get(instanceHeader))
	u.mu.Lock()
	u.calls = append(u.calls, upstreamCall{time.Now(), n})
	u.mu.Unlock()
	u.mock.ServeHTTP(w, r)
}

// count returns the calls instance made in [from, to); instance -1 counts
// every instance.
func (u *countingUpstream) count(instance int, from, to time.Time) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.calls {
		if (instance < 0 || c.instance == instance) && !c.at.Before(from) && c.at.Before(to) {
			n++
		}
	}
	return n
}

// fleetOf is n Caddy processes in front of one counting upstream.
type fleetOf struct {
	procs    []*testcaddy.Process
	upstream *countingUpstream
}

// startFleet starts n instances, each with the global options and the
// ai_resilience options given, proxying to one upstream. They share Caddy's
// storage, as a fleet does, and with it the key they hash credentials with.
func startFleet(t *testing.T, n int, global, options string) *fleetOf {
	t.Helper()
	return startFleetWith(t, n, global, options, false)
}

// startFleetWith is startFleet, with Caddy's admin API on each instance
// when admin is set.
func startFleetWith(t *testing.T, n int, global, options string, admin bool) *fleetOf {
	t.Helper()
	up := &countingUpstream{mock: mockprovider.New(mockprovider.Options{})}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	storage := t.TempDir()
	instances := make([]testcaddy.Instance, n)
	for i := range instances {
		instances[i] = testcaddy.Instance{Global: global, Admin: admin, Storage: storage, Site: fmt.Sprintf(`	route /v1/* {
		ai_resilience {
%s
		}
		reverse_proxy %s {
			header_up %s %d
		}
	}`, options, srv.URL, instanceHeader, i)}
	}
	return &fleetOf{procs: testcaddy.StartProcesses(t, instances...), upstream: up}
}

// outcome is one request's result as its client saw it.
type outcome struct {
	instance int
	at       time.Time // when the answer came
	status   int       // 200, or the SDK error's status; 0 for no HTTP answer
	err      error     // the SDK's error, if any
	limit    string    // anthropic-ratelimit-requests-limit of a refusal
}

// driver sends requests through every instance of a fleet, from a few
// clients per instance, each pausing between its requests, until stopped.
type driver struct {
	mu       sync.Mutex
	outcomes []outcome
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// drive starts clientsPer official-SDK clients per instance.
func (f *fleetOf) drive(clientsPer int, gap time.Duration) *driver {
	ctx, cancel := context.WithCancel(context.Background())
	d := &driver{cancel: cancel}
	for i, p := range f.procs {
		for range clientsPer {
			client := anthropic.NewClient(
				anthropicoption.WithBaseURL(p.URL),
				anthropicoption.WithAPIKey(testAPIKey),
				anthropicoption.WithMaxRetries(0),
				anthropicoption.WithRequestTimeout(10*time.Second),
			)
			d.wg.Go(func() {
				for ctx.Err() == nil {
					_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"))
					o := outcome{instance: i, at: time.Now(), status: http.StatusOK, err: err}
					var aErr *anthropic.Error
					switch {
					case errors.As(err, &aErr):
						o.status, o.limit = aErr.StatusCode, aErr.Response.Header.Get("Anthropic-Ratelimit-Requests-Limit")
					case err != nil:
						o.status = 0
					}
					d.mu.Lock()
					d.outcomes = append(d.outcomes, o)
					d.mu.Unlock()
					select {
					case <-ctx.Done():
					case <-time.After(gap):
					}
				}
			})
		}
	}
	return d
}

// stop ends the load and returns every outcome.
func (d *driver) stop() []outcome {
	d.cancel()
	d.wg.Wait()
	return d.outcomes
}

// between returns the outcomes answered in [from, to).
func (d *driver) between(from, to time.Time) []outcome {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []outcome
	for _, o := range d.outcomes {
		if !o.at.Before(from) && o.at.Before(to) {
			out = append(out, o)
		}
	}
	return out
}

// checkNoFailures wants every outcome to be a success or a zone's 429:
// nothing may fail because of the store.
func checkNoFailures(t *testing.T, outcomes []outcome) {
	t.Helper()
	failed := 0
	for _, o := range outcomes {
		if o.status != http.StatusOK && o.status != http.StatusTooManyRequests {
			if failed++; failed <= 5 {
				t.Errorf("instance %d at %s: status %d: %v", o.instance, o.at.Format("15:04:05.000"), o.status, o.err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, len(outcomes))
	}
}

// logLines counts each instance's app log lines with message msg.
func (f *fleetOf) logLines(t *testing.T, msg string) []int {
	t.Helper()
	counts := make([]int, len(f.procs))
	for i, p := range f.procs {
		for _, e := range p.Logs(t, appLogger) {
			if e["msg"] == msg {
				counts[i]++
			}
		}
	}
	return counts
}

// awaitLogLines waits up to d until every instance has logged msg n times.
func (f *fleetOf) awaitLogLines(t *testing.T, msg string, n int, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		counts := f.logLines(t, msg)
		all := true
		for _, c := range counts {
			all = all && c >= n
		}
		if all {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("after %v, %q logged per instance: %v; want %d each", d, msg, counts, n)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// fleetLoad is the load of the multi-instance tests: 3 clients per
// instance, each sending a request every 30 ms or so.
const (
	fleetClients = 3
	fleetGap     = 30 * time.Millisecond
)

// TestFleetInstancesShareOneLimit runs three instances against `rpm 30`
// under concurrent load for three seconds: with the fleet store, the
// upstream sees at most 30 plus the refill over the run, fleet-wide. The
// same run with `scope instance` is the control: each instance admits its
// own 30, about three times as many, which shows the test can fail.
func TestFleetInstancesShareOneLimit(t *testing.T) {
	const rpm, run = 30, 3 * time.Second
	srv := testredis.Start(t)
	for _, c := range []struct {
		scope       string
		atLeast     int
		fleetBounds bool
	}{
		{"fleet", rpm, true},
		{"instance", 2 * rpm, false},
	} {
		t.Run(c.scope, func(t *testing.T) {
			f := startFleet(t, 3, fleetGlobal([]string{srv.URL}, "prefix share_"+c.scope, "timeout 1s"),
				limitOptions(limitBlock("org", "rpm "+itoa(rpm), "scope "+c.scope)))
			start := time.Now()
			d := f.drive(fleetClients, fleetGap)
			time.Sleep(run)
			outcomes := d.stop()
			took := time.Since(start)
			checkNoFailures(t, outcomes)
			admitted := f.upstream.count(-1, start, time.Now())
			bound := rpm + limitRefill(rpm, took)
			per := make([]int, len(f.procs))
			for i := range per {
				per[i] = f.upstream.count(i, start, time.Now())
			}
			t.Logf("scope %s: %d requests in %v, %d admitted upstream (per instance %v); the fleet bound is %d", c.scope, len(outcomes), took.Round(time.Millisecond), admitted, per, bound)
			if admitted < c.atLeast {
				t.Errorf("admitted %d, want at least %d", admitted, c.atLeast)
			}
			if c.fleetBounds && admitted > bound {
				t.Errorf("admitted %d across the fleet, above one bucket's %d", admitted, bound)
			}
		})
	}
}

// TestFleetSettlementAcrossInstances reserves a large request on instance A
// (900 output tokens of a 1000-token zone) while the upstream holds it:
// instance B cannot fit the same request, which shows the reservation is
// fleet-wide. When A's response reports its small real usage, A settles,
// and B fits the request within a second. Without settlement it could not:
// the zone refills 1000 tokens a minute, 17 a second.
func TestFleetSettlementAcrossInstances(t *testing.T) {
	srv := testredis.Start(t)
	f := startFleet(t, 2, fleetGlobal([]string{srv.URL}, "prefix settle", "timeout 1s"),
		limitOptions(limitBlock("tokens", "tpm 1000")))
	ctx := context.Background()
	a := anthropic.NewClient(anthropicoption.WithBaseURL(f.procs[0].URL), anthropicoption.WithAPIKey(testAPIKey), anthropicoption.WithMaxRetries(0))
	b := anthropic.NewClient(anthropicoption.WithBaseURL(f.procs[1].URL), anthropicoption.WithAPIKey(testAPIKey), anthropicoption.WithMaxRetries(0))

	held := make(chan error, 1)
	go func() {
		msg, err := a.Messages.New(ctx, haikuWithCap(900), script("200:delay=1s"))
		if err == nil && msg.Usage.InputTokens+msg.Usage.OutputTokens > 100 {
			err = fmt.Errorf("usage %+v: the test needs a small real usage", msg.Usage)
		}
		held <- err
	}()
	for deadline := time.Now().Add(2 * time.Second); f.upstream.count(0, time.Time{}, time.Now().Add(time.Hour)) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("instance A's request never reached the upstream")
		}
	}
	_, err := b.Messages.New(ctx, haikuWithCap(900))
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests || aErr.Response.Header.Get("Anthropic-Ratelimit-Tokens-Limit") != "1000" {
		t.Fatalf("instance B while A holds 900 tokens: %v, want a 429 of the token zone", err)
	}
	if err := <-held; err != nil {
		t.Fatalf("instance A: %v", err)
	}
	settled := time.Now()
	for {
		_, err := b.Messages.New(ctx, haikuWithCap(900))
		if err == nil {
			t.Logf("instance B fit the request %v after A's response", time.Since(settled).Round(time.Millisecond))
			break
		}
		if time.Since(settled) > time.Second {
			t.Fatalf("instance B still refused a second after A settled: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFleetChaos runs three instances under load and takes the store away:
// Redis killed mid-run, then restarted, then paused (CLIENT PAUSE) for
// longer than the store's timeout. No request fails because of it; each
// instance logs one warn line per change of state; while the store is gone
// each admits within its share (30 ÷ 3 instances plus its refill); when it
// returns, the instances hand back what they admitted and limit through the
// store again within a second or two.
func TestFleetChaos(t *testing.T) {
	const rpm, instances = 30, 3
	const share = rpm / instances
	srv := testredis.Start(t)
	f := startFleet(t, instances, fleetGlobal([]string{srv.URL}, "prefix chaos", "timeout 250ms"),
		limitOptions(limitBlock("org", "rpm "+itoa(rpm))))
	// Every instance must count the others before the outage.
	time.Sleep(time.Second)
	d := f.drive(fleetClients, fleetGap)
	defer d.stop()

	time.Sleep(1500 * time.Millisecond)
	killed := time.Now()
	srv.Kill()
	f.awaitLogLines(t, "fleet store unavailable", 1, 2*time.Second)
	time.Sleep(2500 * time.Millisecond)
	restarted := time.Now()
	outage := restarted.Sub(killed)
	total := 0
	for i := range f.procs {
		n := f.upstream.count(i, killed, restarted)
		total += n
		// One request in flight at the kill may arrive just after it.
		if bound := share + limitRefill(share, outage) + 1; n > bound {
			t.Errorf("instance %d admitted %d during the %v outage, above its share's %d", i, n, outage.Round(time.Millisecond), bound)
		}
	}
	t.Logf("outage of %v: %d admitted fleet-wide (share %d per instance)", outage.Round(time.Millisecond), total, share)

	srv.Restart()
	back := f.awaitLogLines(t, "fleet store restored", 1, 3*time.Second)
	t.Logf("every instance restored %v after the restart", back.Round(time.Millisecond))
	// The store came back empty. Had the instances not handed back the
	// outage's traffic before admitting through it again, the fleet would
	// admit the whole bucket (30) at once; with it, about what the bucket
	// had left plus the refill. Every refusal then comes from the store:
	// the fleet zone's limit, not a share's.
	time.Sleep(time.Second)
	window := time.Since(restarted)
	after := f.upstream.count(-1, restarted, time.Now())
	t.Logf("%d admitted in the %v after the restart", after, window.Round(time.Millisecond))
	if bound := max(rpm-total, 0) + limitRefill(rpm, outage+window) + instances; after > bound {
		t.Errorf("%d admitted in the %v after the store returned, above %d: the outage's traffic was not handed back", after, window.Round(time.Millisecond), bound)
	}
	resumed := restarted.Add(back + 100*time.Millisecond)
	refusals := 0
	for _, o := range d.between(resumed, time.Now()) {
		if o.status == http.StatusTooManyRequests {
			refusals++
			if o.limit != itoa(rpm) {
				t.Errorf("instance %d was refused with limit %q after the store returned, want the fleet zone's %d", o.instance, o.limit, rpm)
				break
			}
		}
	}
	if refusals == 0 {
		t.Error("no refusal after the store returned")
	}

	srv.Pause(1500 * time.Millisecond)
	f.awaitLogLines(t, "fleet store unavailable", 2, 2*time.Second)
	f.awaitLogLines(t, "fleet store restored", 2, 4*time.Second)

	checkNoFailures(t, d.stop())
	for _, msg := range []string{"fleet store unavailable", "fleet store restored"} {
		for i, n := range f.logLines(t, msg) {
			if n != 2 {
				t.Errorf("instance %d logged %q %d times, want once per outage (2)", i, msg, n)
			}
		}
	}
	if raw := f.procs[0].RawLogs(t); strings.Contains(raw, testAPIKey) {
		t.Error("an instance logged the API key")
	}
}

// awaitLog waits up to d until instance p has logged msg, and returns when
// it saw the line.
func awaitLog(t *testing.T, p *testcaddy.Process, logger, msg string, d time.Duration) time.Time {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		for _, e := range p.Logs(t, logger) {
			if e["msg"] == msg {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v", p.URL, msg, d)
		}
	}
}

// handlerLogger is the ai_resilience handler's logger.
const handlerLogger = "http.handlers.ai_resilience"

// sdkClient is the official SDK pointed at one instance, its retries off.
func sdkClient(p *testcaddy.Process, opts ...anthropicoption.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]anthropicoption.RequestOption{
		anthropicoption.WithBaseURL(p.URL),
		anthropicoption.WithAPIKey(testAPIKey),
		anthropicoption.WithMaxRetries(0),
		anthropicoption.WithRequestTimeout(10 * time.Second),
	}, opts...)...)
}

// circuitRefusal reports whether err is the gateway's answer for a model
// whose circuit is open.
func circuitRefusal(err error) bool {
	var aErr *anthropic.Error
	return errors.As(err, &aErr) && aErr.StatusCode == 529 && strings.Contains(aErr.RawJSON(), "circuit breaker is open")
}

// TestFleetCircuitAcrossInstances opens a model's circuit with failures
// through instance A: instance B, whose own requests all succeeded, shows it
// open within a second and sends nothing upstream for the model during the
// cooldown. After the cooldown, of 16 requests racing through both
// instances exactly one reaches the upstream, the fleet's one probe; its
// success closes the circuit on both.
func TestFleetCircuitAcrossInstances(t *testing.T) {
	const model, cooldown = "claude-sonnet-4-5", 3 * time.Second
	srv := testredis.Start(t)
	f := startFleet(t, 2, fleetGlobal([]string{srv.URL}, "prefix circuits", "timeout 1s"),
		directives("retries 0", "circuit_breaker 3 3s {", "\tprobes 1", "}"))
	a, b := sdkClient(f.procs[0]), sdkClient(f.procs[1])
	ctx := context.Background()
	if _, err := b.Messages.New(ctx, haiku(model)); err != nil {
		t.Fatalf("B before the failures: %v", err)
	}
	for i := range 3 {
		_, err := a.Messages.New(ctx, haiku(model), script("529"))
		var aErr *anthropic.Error
		if !errors.As(err, &aErr) || aErr.StatusCode != 529 || circuitRefusal(err) {
			t.Fatalf("A, failure %d: %v, want the upstream's 529", i+1, err)
		}
	}
	openedOnA := awaitLog(t, f.procs[0], handlerLogger, "circuit open", 2*time.Second)
	openedOnB := awaitLog(t, f.procs[1], handlerLogger, "circuit open", time.Second)
	t.Logf("B logged the open circuit %v after A", openedOnB.Sub(openedOnA).Round(time.Millisecond))
	before := f.upstream.count(1, time.Time{}, time.Now().Add(time.Hour))
	for i := range 5 {
		if _, err := b.Messages.New(ctx, haiku(model)); !circuitRefusal(err) {
			t.Fatalf("B, request %d during the cooldown: %v, want the open circuit's refusal", i+1, err)
		}
	}
	if n := f.upstream.count(1, time.Time{}, time.Now().Add(time.Hour)) - before; n != 0 {
		t.Errorf("B sent %d requests upstream during the cooldown", n)
	}
	if _, err := b.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
		t.Errorf("B, another model: %v", err)
	}

	time.Sleep(time.Until(openedOnA.Add(cooldown + 200*time.Millisecond)))
	probeStart := time.Now()
	var wg sync.WaitGroup
	var probes, refused atomic.Int32
	for _, c := range []anthropic.Client{a, b} {
		for range 8 {
			wg.Go(func() {
				_, err := c.Messages.New(ctx, haiku(model), script("200:delay=300ms"))
				switch {
				case err == nil:
					probes.Add(1)
				case circuitRefusal(err):
					refused.Add(1)
				default:
					t.Errorf("racing request: %v", err)
				}
			})
		}
	}
	wg.Wait()
	calls := f.upstream.count(-1, probeStart, time.Now().Add(time.Hour))
	if calls != 1 || probes.Load() != 1 || refused.Load() != 15 {
		t.Errorf("after the cooldown: %d upstream calls, %d answered, %d refused; want one probe fleet-wide", calls, probes.Load(), refused.Load())
	}
	awaitLog(t, f.procs[0], handlerLogger, "circuit closed", time.Second)
	awaitLog(t, f.procs[1], handlerLogger, "circuit closed", time.Second)
	for i, c := range []anthropic.Client{a, b} {
		if _, err := c.Messages.New(ctx, haiku(model)); err != nil {
			t.Errorf("instance %d after the probe closed the circuit: %v", i, err)
		}
	}
}

// TestFleetPacingAcrossInstances: the upstream tells instance A that the
// rate limit of one model and API key is spent for 5 s; within a second,
// instance B refuses a request for the same model and key without sending
// it (max_wait is below the reset), and still sends one for another model,
// and one for the same model with another key.
func TestFleetPacingAcrossInstances(t *testing.T) {
	srv := testredis.Start(t)
	f := startFleet(t, 2, fleetGlobal([]string{srv.URL}, "prefix pacing", "timeout 1s"), directives("max_wait 1s"))
	a, b := sdkClient(f.procs[0]), sdkClient(f.procs[1])
	ctx := context.Background()
	if _, err := a.Messages.New(ctx, haiku("claude-haiku-4-5"), script("200:reset=5")); err != nil {
		t.Fatal(err)
	}
	spent := time.Now()
	for {
		_, err := b.Messages.New(ctx, haiku("claude-haiku-4-5"))
		var aErr *anthropic.Error
		if errors.As(err, &aErr) && aErr.StatusCode == http.StatusTooManyRequests && strings.Contains(aErr.RawJSON(), "upstream reports the rate limit") {
			t.Logf("B held the model and key %v after A's response", time.Since(spent).Round(time.Millisecond))
			break
		}
		if err != nil {
			t.Fatalf("B, same model and key: %v", err)
		}
		if time.Since(spent) > time.Second {
			t.Fatal("B still sends the model and key a second after A learnt its limit is spent")
		}
		time.Sleep(50 * time.Millisecond)
	}
	held := time.Now()
	if _, err := b.Messages.New(ctx, haiku("claude-sonnet-4-5")); err != nil {
		t.Errorf("B, another model: %v", err)
	}
	other := sdkClient(f.procs[1], anthropicoption.WithAPIKey("sk-test-another-key"))
	if _, err := other.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
		t.Errorf("B, another API key: %v", err)
	}
	if n := f.upstream.count(1, held, time.Now().Add(time.Hour)); n != 2 {
		t.Errorf("B sent %d requests upstream after the hold, want the 2 not held", n)
	}
}

// stateReply is GET /ai_resilience/state.
type stateReply struct {
	Zones []struct {
		Zone              string `json:"zone"`
		Scope             string `json:"scope"`
		KeyHash           string `json:"key_hash"`
		RequestsRemaining *int64 `json:"requests_remaining"`
		TokensRemaining   *int64 `json:"tokens_remaining"`
	} `json:"zones"`
	Budgets  []any `json:"budgets"`
	Circuits []struct {
		Model string    `json:"model"`
		State string    `json:"state"`
		Until time.Time `json:"until"`
	} `json:"circuits"`
	Pacing []struct {
		Model   string    `json:"model"`
		KeyHash string    `json:"key_hash"`
		Until   time.Time `json:"until"`
	} `json:"pacing"`
	Store struct {
		Kind    string `json:"kind"`
		Healthy *bool  `json:"healthy"`
	} `json:"store"`
	Instances []struct {
		ID   string `json:"id"`
		Self bool   `json:"self"`
	} `json:"instances"`
}

// fetchState reads an instance's state from its admin API, and its raw
// JSON.
func fetchState(t *testing.T, p *testcaddy.Process) (stateReply, string) {
	t.Helper()
	resp, err := testcaddy.Client.Get(p.AdminURL + "/ai_resilience/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("state: status %d, %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	var st stateReply
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("state: %v: %s", err, raw)
	}
	return st, string(raw)
}

// TestFleetAdminState reads GET /ai_resilience/state from Caddy's admin API
// on two instances sharing a store, after instance A spent part of a
// keyed fleet zone and of an instance zone, opened a circuit and learnt of
// a spent upstream limit: A reports its zones' keys with what they have
// left, both report the open circuit and the hold, a healthy Redis and two
// live instances, and no API key in clear. With Redis gone, the store is
// reported unhealthy and the instance alone.
func TestFleetAdminState(t *testing.T) {
	srv := testredis.Start(t)
	f := startFleetWith(t, 2, fleetGlobal([]string{srv.URL}, "prefix admin", "timeout 1s"),
		limitOptions([]string{"retries 0", "max_wait 1s", "circuit_breaker 2 30s"},
			limitBlock("per-key", "key {http.request.header.X-Api-Key}", "rpm 10"),
			limitBlock("local", "rpm 100", "tpm 100000", "scope instance")), true)
	a := sdkClient(f.procs[0])
	ctx := context.Background()
	for range 2 {
		if _, err := a.Messages.New(ctx, haiku("claude-opus-4-1"), script("529")); err == nil {
			t.Fatal("the scripted failure succeeded")
		}
	}
	if _, err := a.Messages.New(ctx, haiku("claude-haiku-4-5"), script("200:reset=30")); err != nil {
		t.Fatal(err)
	}
	awaitLog(t, f.procs[1], handlerLogger, "circuit open", time.Second)
	// The hold reaches B in A's next batch and its announcement, and the
	// instances count each other after a heartbeat: wait for both.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a, _ := fetchState(t, f.procs[0])
		b, _ := fetchState(t, f.procs[1])
		if len(a.Instances) == 2 && len(b.Pacing) == 1 || time.Now().After(deadline) {
			break
		}
	}

	for i, p := range f.procs {
		st, raw := fetchState(t, p)
		if strings.Contains(raw, testAPIKey) {
			t.Errorf("instance %d: the state holds the API key in clear: %s", i, raw)
		}
		if len(st.Circuits) != 1 || st.Circuits[0].Model != "claude-opus-4-1" || st.Circuits[0].State != "open" || time.Until(st.Circuits[0].Until) < 25*time.Second {
			t.Errorf("instance %d: circuits %+v, want claude-opus-4-1 open for about 30 s", i, st.Circuits)
		}
		if len(st.Pacing) != 1 || st.Pacing[0].Model != "claude-haiku-4-5" || len(st.Pacing[0].KeyHash) != 16 || time.Until(st.Pacing[0].Until) < 25*time.Second {
			t.Errorf("instance %d: pacing %+v, want claude-haiku-4-5 held for about 30 s", i, st.Pacing)
		}
		if st.Store.Kind != "redis" || st.Store.Healthy == nil || !*st.Store.Healthy {
			t.Errorf("instance %d: store %+v", i, st.Store)
		}
		selves := 0
		for _, in := range st.Instances {
			if in.Self {
				selves++
			}
		}
		if len(st.Instances) != 2 || selves != 1 {
			t.Errorf("instance %d: instances %+v, want two live, one of them itself", i, st.Instances)
		}
		if st.Budgets == nil || len(st.Budgets) != 0 {
			t.Errorf("instance %d: budgets %v, want an empty list", i, st.Budgets)
		}
		if i == 1 {
			if len(st.Zones) != 0 {
				t.Errorf("B reports zone keys it never saw: %+v", st.Zones)
			}
			continue
		}
		zones := map[string]string{}
		for _, z := range st.Zones {
			switch {
			case z.Zone == "per-key" && z.Scope == "fleet" && len(z.KeyHash) == 16 && z.RequestsRemaining != nil && *z.RequestsRemaining == 7 && z.TokensRemaining == nil:
			case z.Zone == "local" && z.Scope == "instance" && z.KeyHash == "" && z.RequestsRemaining != nil && *z.RequestsRemaining == 97 && z.TokensRemaining != nil:
			default:
				t.Errorf("A: zone entry %+v", z)
			}
			zones[z.Zone] = z.KeyHash
		}
		if len(st.Zones) != 2 || zones["per-key"] == st.Pacing[0].KeyHash {
			t.Errorf("A: zones %+v", st.Zones)
		}
	}

	srv.Kill()
	awaitLog(t, f.procs[0], appLogger, "fleet store unavailable", 3*time.Second)
	st, _ := fetchState(t, f.procs[0])
	if st.Store.Healthy == nil || *st.Store.Healthy || len(st.Instances) != 1 || !st.Instances[0].Self {
		t.Errorf("with Redis gone: store %+v, instances %+v", st.Store, st.Instances)
	}
}

// TestAdminStateCircuitAfterCooldown: the admin endpoint reports a circuit
// as a request would find it. Open during its cooldown; once the cooldown
// is over, half-open with no end, though no request has come to move it:
// the next one goes through as a probe. One instance, no store.
func TestAdminStateCircuitAfterCooldown(t *testing.T) {
	f := startFleetWith(t, 1, "", directives("retries 0", "circuit_breaker 2 1s"), true)
	a := sdkClient(f.procs[0])
	for range 2 {
		if _, err := a.Messages.New(context.Background(), haiku("claude-opus-4-1"), script("529")); err == nil {
			t.Fatal("the scripted failure succeeded")
		}
	}
	st, raw := fetchState(t, f.procs[0])
	if len(st.Circuits) != 1 || st.Circuits[0].State != "open" || st.Circuits[0].Until.IsZero() {
		t.Fatalf("after two failures: circuits %s, want claude-opus-4-1 open with its end", raw)
	}
	time.Sleep(time.Until(st.Circuits[0].Until) + 50*time.Millisecond)
	st, raw = fetchState(t, f.procs[0])
	if len(st.Circuits) != 1 || st.Circuits[0].State != "half_open" || strings.Contains(raw, `"until"`) {
		t.Errorf("after the cooldown: %s, want claude-opus-4-1 half_open with no until", raw)
	}
}
