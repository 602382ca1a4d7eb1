package policy

import (
	"fmt"
	"math/rand/v2"
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

// transitionLog records a breaker's reported transitions.
type transitionLog struct {
	mu  sync.Mutex
	got []string
}

func (r *transitionLog) record(model string, from, to CircuitState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%s:%v->%v", model, from, to))
}

// take returns the transitions since the last call.
func (r *transitionLog) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

func TestCircuitBreakerTransitions(t *testing.T) {
	const cooldown = 30 * time.Second
	clock := newManualClock()
	cb := NewCircuitBreaker(3, cooldown, clock.now)
	var tr transitionLog
	cb.OnTransition(tr.record)
	const m = "claude-sonnet-4-5"

	allow := func(wantOK bool, wantIn time.Duration) {
		t.Helper()
		ok, in := cb.Allow(m)
		if ok != wantOK || in != wantIn {
			t.Fatalf("Allow = %v, %v; want %v, %v", ok, in, wantOK, wantIn)
		}
	}
	fail := func(wantOpened bool) {
		t.Helper()
		if opened := cb.Failure(m); opened != wantOpened {
			t.Fatalf("Failure opened = %v, want %v", opened, wantOpened)
		}
	}
	expect := func(want ...string) {
		t.Helper()
		if got := tr.take(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("transitions = %v, want %v", got, want)
		}
	}

	// Closed: failures below the threshold, interrupted by a success, do not
	// add up.
	allow(true, 0)
	fail(false)
	fail(false)
	cb.Success(m)
	fail(false)
	fail(false)
	allow(true, 0)
	expect()

	// The threshold-th consecutive failure opens it for the cooldown.
	fail(true)
	expect(m + ":closed->open")
	allow(false, cooldown)
	clock.advance(10 * time.Second)
	allow(false, 20*time.Second)

	// A late failure while open changes nothing, not even the cooldown.
	fail(false)
	allow(false, 20*time.Second)
	expect()

	// Cooldown over: exactly one probe, the rest refused until it reports.
	clock.advance(20 * time.Second)
	allow(true, 0)
	expect(m + ":open->half_open")
	allow(false, cooldown)
	allow(false, cooldown)

	// A failed probe opens it for another cooldown.
	fail(true)
	expect(m + ":half_open->open")
	allow(false, cooldown)

	// A successful probe closes it, with the count reset.
	clock.advance(cooldown)
	allow(true, 0)
	cb.Success(m)
	expect(m+":open->half_open", m+":half_open->closed")
	allow(true, 0)
	fail(false)
	fail(false)
	allow(true, 0)

	// A probe that never reports does not wedge the circuit: after another
	// cooldown the next caller is the probe.
	fail(true)
	clock.advance(cooldown)
	allow(true, 0)
	expect(m+":closed->open", m+":open->half_open")
	clock.advance(cooldown - time.Second)
	allow(false, time.Second)
	clock.advance(time.Second)
	allow(true, 0)
	allow(false, cooldown)
	expect()
	cb.Success(m)
	expect(m + ":half_open->closed")

	// A late success while open (a request admitted before it opened)
	// shows the model answering and closes it.
	fail(false)
	fail(false)
	fail(true)
	cb.Success(m)
	allow(true, 0)
	expect(m+":closed->open", m+":open->closed")
}

func TestCircuitBreakerPerModel(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(1, time.Minute, clock.now)
	if !cb.Failure("gpt-4o") {
		t.Fatal("threshold 1: the first failure must open")
	}
	if ok, _ := cb.Allow("gpt-4o"); ok {
		t.Error("open model allowed")
	}
	if ok, _ := cb.Allow("gpt-4o-mini"); !ok {
		t.Error("a sibling model is refused because another is open")
	}
	// A threshold below 1 is taken as 1.
	if !NewCircuitBreaker(0, time.Minute, clock.now).Failure("m") {
		t.Error("threshold 0: the first failure must open")
	}
}

func TestCircuitBreakerNil(t *testing.T) {
	var cb *CircuitBreaker
	cb.OnTransition(func(string, CircuitState, CircuitState) { t.Error("transition reported by an off breaker") })
	for range 10 {
		if cb.Failure("m") {
			t.Fatal("nil breaker opened")
		}
	}
	if ok, in := cb.Allow("m"); !ok || in != 0 {
		t.Fatalf("nil breaker: Allow = %v, %v", ok, in)
	}
	cb.Success("m")
}

// TestCircuitBreakerOneProbe races many callers at a circuit whose cooldown
// is over: exactly one may probe.
func TestCircuitBreakerOneProbe(t *testing.T) {
	for round := range 20 {
		clock := newManualClock()
		cb := NewCircuitBreaker(1, time.Second, clock.now)
		cb.Failure("m")
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
				if ok, _ := cb.Allow("m"); ok {
					mu.Lock()
					probes++
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		if probes != 1 {
			t.Fatalf("round %d: %d callers probed, want 1", round, probes)
		}
	}
}

// TestCircuitBreakerConcurrent hammers a few models from many goroutines
// (run with -race) and checks each model's reported transitions form a chain.
func TestCircuitBreakerConcurrent(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(3, 10*time.Millisecond, clock.now)
	var mu sync.Mutex
	last := map[string]CircuitState{}
	cb.OnTransition(func(model string, from, to CircuitState) {
		mu.Lock()
		defer mu.Unlock()
		if last[model] != from {
			t.Errorf("%s: transition from %v, but the last one went to %v", model, from, last[model])
		}
		last[model] = to
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 5000 {
				m := fmt.Sprint("model-", r.IntN(3))
				switch r.IntN(10) {
				case 0:
					clock.advance(time.Millisecond)
				case 1, 2, 3:
					cb.Failure(m)
				case 4:
					cb.Success(m)
				default:
					cb.Allow(m)
				}
			}
		})
	}
	wg.Wait()
}

func TestCircuitBreakerBounded(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(1, time.Hour, clock.now)
	var tr transitionLog
	cb.OnTransition(tr.record)
	for i := range maxTrackedModels {
		if !cb.Failure(fmt.Sprint("junk-", i)) {
			t.Fatalf("junk-%d did not open", i)
		}
	}
	tr.take()

	// Every entry is cooling down: a new model goes untracked and is allowed.
	if cb.Failure("claude-opus-4-1") {
		t.Error("a model beyond the bound was tracked while every entry is open")
	}
	if ok, _ := cb.Allow("claude-opus-4-1"); !ok {
		t.Error("an untracked model was refused")
	}
	if cb.n != maxTrackedModels {
		t.Errorf("tracking %d models, bound %d", cb.n, maxTrackedModels)
	}

	// Once cooldowns are over, a stale entry makes room and says it closed.
	clock.advance(time.Hour)
	if !cb.Failure("claude-opus-4-1") {
		t.Error("no room made from entries whose cooldown is over")
	}
	if got := tr.take(); len(got) != 2 || got[1] != "claude-opus-4-1:closed->open" {
		t.Errorf("transitions = %v, want a dropped entry closing, then the new one opening", got)
	}
	if cb.n != maxTrackedModels {
		t.Errorf("tracking %d models, bound %d", cb.n, maxTrackedModels)
	}

	// Closed entries (a partial count) are dropped before open ones.
	cb = NewCircuitBreaker(2, time.Hour, clock.now)
	cb.Failure("real")
	cb.Failure("real") // open
	for i := range maxTrackedModels - 1 {
		cb.Failure(fmt.Sprint("junk-", i)) // one failure each: closed
	}
	clock.advance(time.Hour) // "real" could be dropped too, but closed ones go first
	cb.Failure("new")
	if _, found := cb.models.Load("real"); !found {
		t.Error("an open entry was dropped while closed ones were available")
	}
	if _, found := cb.models.Load("new"); !found {
		t.Error("the new model was not tracked")
	}
}

func TestCircuitBreakerNoAllocs(t *testing.T) {
	clock := newManualClock()
	cb := NewCircuitBreaker(5, time.Second, clock.now)
	cb.Failure("tracked")
	cb.Success("tracked")
	model := string([]byte("tracked")) // not a constant the compiler can fold
	for name, fn := range map[string]func(){
		"allow_closed":    func() { cb.Allow(model) },
		"allow_untracked": func() { cb.Allow("untracked") },
		"success_healthy": func() { cb.Success(model) },
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

func BenchmarkCircuitBreakerAllowClosed(b *testing.B) {
	cb := NewCircuitBreaker(5, time.Second, nil)
	cb.Failure("claude-sonnet-4-5")
	cb.Success("claude-sonnet-4-5")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cb.Allow("claude-sonnet-4-5")
		}
	})
}
