package policy

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// manualClock is a settable clock for breaker and budget tests.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
}

func (c *manualClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// defaultCircuit is the module's default rule with a given threshold and
// cooldown.
func defaultCircuit(failures int, cooldown time.Duration) CircuitSettings {
	return CircuitSettings{Failures: failures, Cooldown: cooldown, FailureRate: 50, Window: 10 * time.Second, MinCalls: 20, Probes: 3}
}

// breakerHarness drives one model's circuit and collects its transitions.
type breakerHarness struct {
	t     *testing.T
	cb    *CircuitBreaker
	clock *manualClock
	model string
	got   []string
}

func newBreakerHarness(t *testing.T, s CircuitSettings) *breakerHarness {
	clock := newManualClock()
	return &breakerHarness{t: t, cb: NewCircuitBreaker(s, clock.now), clock: clock, model: "claude-sonnet-4-5"}
}

func (h *breakerHarness) note(tr Transition) {
	if tr.Changed() {
		h.got = append(h.got, fmt.Sprintf("%v->%v", tr.From, tr.To))
	}
}

// allow asks for a permit and checks whether it was given.
func (h *breakerHarness) allow(want bool) Permit {
	h.t.Helper()
	p, tr := h.cb.Allow(h.model)
	h.note(tr)
	if p.Allowed != want {
		h.t.Fatalf("Allow = %v (retry in %v), want %v", p.Allowed, p.RetryIn, want)
	}
	return p
}

// report records an outcome for p.
func (h *breakerHarness) report(p Permit, o Outcome) {
	h.note(h.cb.Record(p, o))
}

// run makes one attempt that ends with o.
func (h *breakerHarness) run(o Outcome) {
	h.t.Helper()
	h.report(h.allow(true), o)
}

// expect checks the transitions since the last call.
func (h *breakerHarness) expect(want ...string) {
	h.t.Helper()
	if fmt.Sprint(h.got) != fmt.Sprint(want) {
		h.t.Fatalf("transitions = %v, want %v", h.got, want)
	}
	h.got = nil
}

func TestHealthOutcome(t *testing.T) {
	for _, tc := range []struct {
		status int
		reason Reason
		want   Outcome
	}{
		{200, "", OutcomeSuccess},
		{204, "", OutcomeSuccess},
		{429, ReasonRateLimited, OutcomeNeutral},
		{529, ReasonOverloaded, OutcomeFailure},
		{503, ReasonOverloaded, OutcomeFailure},
		{500, ReasonServerError, OutcomeFailure},
		{502, ReasonServerError, OutcomeFailure},
		{504, ReasonServerError, OutcomeFailure},
		{520, ReasonServerError, OutcomeFailure},
		{500, "", OutcomeFailure}, // not retried under this retry_on, still unhealthy
		{501, "", OutcomeNeutral},
		{505, "", OutcomeNeutral},
		{408, ReasonRequestTimeout, OutcomeNeutral},
		{409, ReasonConflict, OutcomeNeutral},
		{400, "", OutcomeNeutral},
		{401, "", OutcomeNeutral},
		{404, "", OutcomeNeutral},
		{413, "", OutcomeNeutral},
		{0, ReasonConnection, OutcomeFailure},
		{0, ReasonTimeout, OutcomeFailure},
		{200, ReasonConnection, OutcomeFailure}, // a stream the upstream cut
		{0, "", OutcomeNeutral},
	} {
		if got := HealthOutcome(tc.status, tc.reason); got != tc.want {
			t.Errorf("HealthOutcome(%d, %q) = %d, want %d", tc.status, tc.reason, got, tc.want)
		}
	}
	if OutcomeSuccess.Worse(OutcomeFailure) != OutcomeFailure || OutcomeNeutral.Worse(OutcomeSuccess) != OutcomeSuccess {
		t.Error("Worse does not prefer failure over success over neutral")
	}
}

// TestCircuitConsecutiveFailuresOpen: with little traffic (the window below
// min_calls) the documented rule holds as it reads: that many consecutive
// failures open the circuit; a success between them starts the count
// again; neutral outcomes (rate limits) count neither way.
func TestCircuitConsecutiveFailuresOpen(t *testing.T) {
	h := newBreakerHarness(t, defaultCircuit(3, 30*time.Second))
	h.run(OutcomeFailure)
	h.run(OutcomeFailure)
	h.run(OutcomeSuccess)
	h.run(OutcomeFailure)
	h.run(OutcomeNeutral)
	h.run(OutcomeFailure)
	h.expect()
	h.run(OutcomeFailure)
	h.expect("closed->open")
	p := h.allow(false)
	if p.RetryIn != 30*time.Second {
		t.Errorf("refused with retry in %v, want the cooldown", p.RetryIn)
	}
}

// TestCircuitRateLimitsNeverOpen: any number of 429s (neutral) between or
// instead of failures never opens the circuit.
func TestCircuitRateLimitsNeverOpen(t *testing.T) {
	h := newBreakerHarness(t, defaultCircuit(2, 30*time.Second))
	for range 1000 {
		h.run(HealthOutcome(429, ReasonRateLimited))
	}
	h.run(OutcomeFailure)
	for range 100 {
		h.run(HealthOutcome(429, ReasonRateLimited))
	}
	h.run(OutcomeSuccess)
	h.run(OutcomeFailure)
	h.expect()
}

// TestCircuitFailureRateRule: at volume, a chance run of failures does not
// open the circuit of a model whose failure rate is low; a rate at the
// threshold does.
func TestCircuitFailureRateRule(t *testing.T) {
	h := newBreakerHarness(t, defaultCircuit(5, 30*time.Second))
	// 30 successes, then a run of 10 failures: 10 of 40 is 25 %.
	for range 30 {
		h.run(OutcomeSuccess)
	}
	for range 10 {
		h.run(OutcomeFailure)
	}
	h.expect()
	// It takes 30 failures to 30 successes, 50 %, to open it.
	for range 19 {
		h.run(OutcomeFailure)
	}
	h.expect()
	h.run(OutcomeFailure)
	h.expect("closed->open")

	// The window slides: successes older than it no longer hold the
	// rate down.
	h = newBreakerHarness(t, defaultCircuit(5, 30*time.Second))
	for range 100 {
		h.run(OutcomeSuccess)
	}
	h.clock.advance(10 * time.Second)
	for range 4 {
		h.run(OutcomeFailure)
	}
	h.expect()
	h.run(OutcomeFailure)
	h.expect("closed->open")

	// A zero rate leaves the run alone to decide, at any volume.
	s := defaultCircuit(5, 30*time.Second)
	s.FailureRate = 0
	h = newBreakerHarness(t, s)
	for range 1000 {
		h.run(OutcomeSuccess)
	}
	for range 5 {
		h.run(OutcomeFailure)
	}
	h.expect("closed->open")
}

// TestCircuitRandomMixStaysClosed replays the mix that used to open the
// circuit many times a minute: 30 % 429, 10 % 529, the rest successes.
// Counting only health and judging the rate at volume, it never opens.
func TestCircuitRandomMixStaysClosed(t *testing.T) {
	h := newBreakerHarness(t, defaultCircuit(5, 30*time.Second))
	r := rand.New(rand.NewPCG(9, 9))
	for i := range 100_000 {
		var status int
		switch x := r.Float64(); {
		case x < 0.3:
			status = 429
		case x < 0.4:
			status = 529
		default:
			status = 200
		}
		h.run(HealthOutcome(status, ""))
		if i%100 == 0 {
			h.clock.advance(time.Second) // 100 attempts a second
		}
	}
	h.expect()
}

// TestCircuitCooldownHonoured: an open circuit refuses for its whole
// cooldown. Late outcomes of attempts that started while it was closed,
// successes and failures alike, neither close it nor move the cooldown.
func TestCircuitCooldownHonoured(t *testing.T) {
	const cooldown = 30 * time.Second
	h := newBreakerHarness(t, defaultCircuit(2, cooldown))
	var inFlight []Permit
	for range 10 {
		inFlight = append(inFlight, h.allow(true))
	}
	h.report(inFlight[0], OutcomeFailure)
	h.report(inFlight[1], OutcomeFailure)
	h.expect("closed->open")

	h.clock.advance(time.Second)
	for _, p := range inFlight[2:6] {
		h.report(p, OutcomeSuccess)
	}
	for _, p := range inFlight[6:] {
		h.report(p, OutcomeFailure)
	}
	h.expect()
	if p := h.allow(false); p.RetryIn != cooldown-time.Second {
		t.Fatalf("after late outcomes the circuit refuses for %v more, want %v", p.RetryIn, cooldown-time.Second)
	}
	h.clock.advance(cooldown - time.Second - time.Nanosecond)
	h.allow(false)
	h.clock.advance(time.Nanosecond)
	h.allow(true)
	h.expect("open->half_open")
}

// TestCircuitProbesBounded: after the cooldown a bounded number of probes
// go; the rest are refused until they report; the first failure reopens;
// that many successes close; a neutral probe frees its place; probes that
// never report are presumed lost after a cooldown.
func TestCircuitProbesBounded(t *testing.T) {
	const cooldown = 10 * time.Second
	s := defaultCircuit(1, cooldown)
	s.Probes = 3
	h := newBreakerHarness(t, s)
	h.run(OutcomeFailure)
	h.expect("closed->open")

	// A failed probe reopens at once, for a whole cooldown; the other
	// probes' later successes are stale.
	h.clock.advance(cooldown)
	p1, p2, p3 := h.allow(true), h.allow(true), h.allow(true)
	h.expect("open->half_open")
	h.allow(false)
	h.report(p1, OutcomeFailure)
	h.expect("half_open->open")
	h.report(p2, OutcomeSuccess)
	h.report(p3, OutcomeSuccess)
	h.expect()
	h.allow(false)

	// Three successful probes close it; a neutral one (a rate limit) frees
	// its place for another probe and decides nothing.
	h.clock.advance(cooldown)
	p1, p2, p3 = h.allow(true), h.allow(true), h.allow(true)
	h.expect("open->half_open")
	h.report(p1, OutcomeSuccess)
	h.allow(false) // two out, one passed: all three places taken
	h.report(p2, HealthOutcome(429, ReasonRateLimited))
	p4 := h.allow(true)
	h.report(p3, OutcomeSuccess)
	h.expect()
	h.report(p4, OutcomeSuccess)
	h.expect("half_open->closed")
	h.allow(true)

	// Probes that never report do not wedge the circuit.
	h.run(OutcomeFailure)
	h.clock.advance(cooldown)
	lost := h.allow(true)
	h.allow(true)
	h.allow(true)
	h.expect("closed->open", "open->half_open")
	h.clock.advance(cooldown - time.Second)
	if p := h.allow(false); p.RetryIn != time.Second {
		t.Errorf("with probes out, refused for %v, want until they are presumed lost (1s)", p.RetryIn)
	}
	h.clock.advance(time.Second)
	fresh := h.allow(true)
	h.report(lost, OutcomeFailure) // stale: its generation was given up
	h.expect()
	h.report(fresh, OutcomeFailure)
	h.expect("half_open->open")
}

// TestCircuitClosingResetsCounts: a circuit that closes starts counting
// anew: failures before it opened do not add to failures after it closed.
func TestCircuitClosingResetsCounts(t *testing.T) {
	s := defaultCircuit(3, time.Second)
	s.Probes = 1
	h := newBreakerHarness(t, s)
	stale := h.allow(true)
	for range 3 {
		h.run(OutcomeFailure)
	}
	h.clock.advance(time.Second)
	h.run(OutcomeSuccess)
	h.expect("closed->open", "open->half_open", "half_open->closed")
	h.report(stale, OutcomeFailure)
	h.run(OutcomeFailure)
	h.run(OutcomeFailure)
	h.expect()
	h.run(OutcomeFailure)
	h.expect("closed->open")
}

func TestCircuitPerModel(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(defaultCircuit(1, time.Minute), clock.now)
	p, _ := cb.Allow("gpt-4o")
	if tr := cb.Record(p, OutcomeFailure); tr.To != CircuitOpen || tr.Model != "gpt-4o" {
		t.Fatalf("threshold 1: the first failure gave %+v, want gpt-4o opening", tr)
	}
	if p, _ := cb.Allow("gpt-4o"); p.Allowed {
		t.Error("open model allowed")
	}
	if p, _ := cb.Allow("gpt-4o-mini"); !p.Allowed {
		t.Error("a sibling model is refused because another is open")
	}
	// Values below 1 are taken as 1.
	cb = NewCircuitBreaker(CircuitSettings{Cooldown: time.Minute}, clock.now)
	p, _ = cb.Allow("m")
	if tr := cb.Record(p, OutcomeFailure); tr.To != CircuitOpen {
		t.Error("threshold 0: the first failure must open")
	}
}

func TestCircuitSnapshot(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(defaultCircuit(1, time.Minute), clock.now)
	for _, m := range []string{"a", "b"} {
		p, _ := cb.Allow(m)
		cb.Record(p, OutcomeFailure)
	}
	snapshot := func() map[string]CircuitStatus {
		got := map[string]CircuitStatus{}
		for _, s := range cb.Snapshot() {
			got[s.Model] = s
		}
		return got
	}
	end := clock.now().Add(time.Minute)
	clock.advance(time.Minute - time.Second)
	if got := snapshot(); len(got) != 2 || got["a"].State != CircuitOpen || !got["a"].Until.Equal(end) {
		t.Errorf("in the cooldown: snapshot = %+v, want both open until %v", got, end)
	}
	// Once the cooldown is over, a circuit no request has touched since is
	// reported as the next request finds it: half-open, letting a probe
	// through. One a request has moved is half-open in fact.
	clock.advance(time.Second)
	cb.Allow("b")
	if got := snapshot(); len(got) != 2 || got["a"].State != CircuitHalfOpen || !got["a"].Until.IsZero() || got["b"].State != CircuitHalfOpen {
		t.Errorf("after the cooldown: snapshot = %+v, want both half-open", got)
	}
}

// TestCircuitProbesRace races many callers at a circuit whose cooldown is
// over: exactly Probes of them may probe.
func TestCircuitProbesRace(t *testing.T) {
	for round := range 20 {
		clock := newManualClock()
		cb := NewCircuitBreaker(defaultCircuit(1, time.Second), clock.now)
		p, _ := cb.Allow("m")
		cb.Record(p, OutcomeFailure)
		clock.advance(time.Second)
		var (
			start  = make(chan struct{})
			wg     sync.WaitGroup
			mu     sync.Mutex
			probes int
		)
		for range 32 {
			wg.Go(func() {
				<-start
				if p, _ := cb.Allow("m"); p.Allowed {
					mu.Lock()
					probes++
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		if probes != 3 {
			t.Fatalf("round %d: %d callers probed, want 3", round, probes)
		}
	}
}

// TestCircuitConcurrent hammers a few models from many goroutines (run with
// -race) and checks that each model's reported transitions, put in order
// by generation, form a chain.
func TestCircuitConcurrent(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(defaultCircuit(3, 10*time.Millisecond), clock.now)
	var mu sync.Mutex
	seen := map[string][]Transition{}
	note := func(tr Transition) {
		if tr.Changed() {
			mu.Lock()
			seen[tr.Model] = append(seen[tr.Model], tr)
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 5000 {
				m := fmt.Sprint("model-", r.IntN(3))
				if r.IntN(10) == 0 {
					clock.advance(time.Millisecond)
				}
				p, tr := cb.Allow(m)
				note(tr)
				note(cb.Record(p, Outcome(r.IntN(3))))
			}
		})
	}
	wg.Wait()
	for model, trs := range seen {
		slices.SortFunc(trs, func(a, b Transition) int { return cmp.Compare(a.Generation, b.Generation) })
		last := Transition{To: CircuitClosed}
		for _, tr := range trs {
			if tr.From != last.To || tr.Generation <= last.Generation {
				t.Fatalf("%s: %+v follows %+v", model, tr, last)
			}
			last = tr
		}
		if len(trs) < 10 {
			t.Errorf("%s: only %d transitions; the test exercises little", model, len(trs))
		}
	}
}

func TestCircuitBounded(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(defaultCircuit(1, time.Hour), clock.now)
	fail := func(m string) Transition {
		p, _ := cb.Allow(m)
		return cb.Record(p, OutcomeFailure)
	}
	for i := range maxTrackedModels {
		if fail(fmt.Sprint("junk-", i)).To != CircuitOpen {
			t.Fatalf("junk-%d did not open", i)
		}
	}

	// Every entry is cooling down: a new model goes untracked and is allowed.
	if fail("claude-opus-4-1").Changed() {
		t.Error("a model beyond the bound was tracked while every entry is open")
	}
	if p, _ := cb.Allow("claude-opus-4-1"); !p.Allowed {
		t.Error("an untracked model was refused")
	}
	if cb.n != maxTrackedModels {
		t.Errorf("tracking %d models, bound %d", cb.n, maxTrackedModels)
	}

	// Once cooldowns are over, a stale entry makes room.
	clock.advance(time.Hour)
	if fail("claude-opus-4-1").To != CircuitOpen {
		t.Error("no room made from entries whose cooldown is over")
	}
	if cb.n != maxTrackedModels {
		t.Errorf("tracking %d models, bound %d", cb.n, maxTrackedModels)
	}

	// Closed entries (partial counts) are dropped before open ones.
	cb = NewCircuitBreaker(defaultCircuit(2, time.Hour), clock.now)
	fail("real")
	fail("real") // open
	for i := range maxTrackedModels - 1 {
		fail(fmt.Sprint("junk-", i)) // one failure each: closed
	}
	clock.advance(time.Hour) // "real" could be dropped too, but closed ones go first
	fail("new")
	if _, found := cb.models.Load("real"); !found {
		t.Error("an open entry was dropped while closed ones were available")
	}
	if _, found := cb.models.Load("new"); !found {
		t.Error("the new model was not tracked")
	}
}

func TestCircuitNoAllocs(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(defaultCircuit(5, time.Second), clock.now)
	p, _ := cb.Allow("tracked")
	cb.Record(p, OutcomeFailure)
	model := string([]byte("tracked")) // not a constant the compiler can fold
	for name, fn := range map[string]func(){
		"allow_closed":    func() { cb.Allow(model) },
		"allow_untracked": func() { cb.Allow("untracked") },
		"record_success":  func() { p, _ := cb.Allow(model); cb.Record(p, OutcomeSuccess) },
		"record_neutral":  func() { p, _ := cb.Allow("untracked"); cb.Record(p, OutcomeNeutral) },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations", name, n)
		}
	}
}

func TestCircuitStateString(t *testing.T) {
	for s, want := range map[CircuitState]string{CircuitClosed: "closed", CircuitOpen: "open", CircuitHalfOpen: "half_open"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}

func BenchmarkCircuitAllowRecord(b *testing.B) {
	cb := NewCircuitBreaker(defaultCircuit(5, time.Second), nil)
	p, _ := cb.Allow("claude-sonnet-4-5")
	cb.Record(p, OutcomeFailure)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, _ := cb.Allow("claude-sonnet-4-5")
			cb.Record(p, OutcomeSuccess)
		}
	})
}
