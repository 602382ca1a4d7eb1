package policy

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// scriptedStore is a CircuitStore whose claims answer what the test says
// and whose reports are kept, to test the breaker's side alone (the store's
// side runs against a real Redis in package fleet).
type scriptedStore struct {
	mu      sync.Mutex
	down    bool
	claim   func(model, holder string) (SharedCircuit, error)
	claims  int
	reports []CircuitReport
}

func (s *scriptedStore) Health() StoreHealth {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreHealth{Down: s.down, Instances: 1}
}

func (s *scriptedStore) Claim(model, holder string, _ CircuitSettings) (SharedCircuit, error) {
	s.mu.Lock()
	s.claims++
	f := s.claim
	s.mu.Unlock()
	return f(model, holder)
}

func (s *scriptedStore) Report(r CircuitReport) {
	s.mu.Lock()
	s.reports = append(s.reports, r)
	s.mu.Unlock()
}

func (s *scriptedStore) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// TestFleetBreakerShowsTheStore: a breaker with a store decides nothing on
// its own while the store answers: failures are reported, not counted; the
// store's open state refuses requests with no call; an older state that
// arrives late is ignored; a claim after the cooldown asks the store once,
// and only the holder's breaker probes.
func TestFleetBreakerShowsTheStore(t *testing.T) {
	clock := newManualClock()
	store := &scriptedStore{}
	cb := NewFleetCircuitBreaker(defaultCircuit(2, time.Minute), clock.now, store)
	var notified []Transition
	cb.SetNotify(func(tr Transition) { notified = append(notified, tr) })

	for range 5 {
		p, tr := cb.Allow("m")
		if !p.Allowed || tr.Changed() {
			t.Fatalf("closed circuit: %+v %+v", p, tr)
		}
		if tr := cb.Record(p, OutcomeFailure); tr.Changed() {
			t.Fatalf("the breaker decided on its own: %+v", tr)
		}
	}
	if len(store.reports) != 5 || store.reports[0].State != CircuitClosed || store.reports[0].Outcome != OutcomeFailure {
		t.Fatalf("reports %+v", store.reports)
	}

	cb.Apply(SharedCircuit{Model: "m", State: CircuitOpen, Generation: 10, Remaining: 30 * time.Second})
	if len(notified) != 1 || notified[0].To != CircuitOpen {
		t.Fatalf("notified %+v", notified)
	}
	cb.Apply(SharedCircuit{Model: "m", State: CircuitClosed, Generation: 9}) // late
	p, _ := cb.Allow("m")
	if p.Allowed || p.RetryIn != 30*time.Second || store.claims != 0 {
		t.Fatalf("open circuit: %+v, %d claims", p, store.claims)
	}

	clock.advance(30 * time.Second)
	store.claim = func(model, holder string) (SharedCircuit, error) {
		return SharedCircuit{Model: model, State: CircuitHalfOpen, Generation: 11, Remaining: time.Minute, Holder: "someone else"}, nil
	}
	if p, tr := cb.Allow("m"); p.Allowed || tr.To != CircuitHalfOpen || store.claims != 1 {
		t.Fatalf("claim lost to another holder: %+v %+v, %d claims", p, tr, store.claims)
	}
	if p, _ := cb.Allow("m"); p.Allowed || store.claims != 1 {
		t.Fatalf("while another holds the probe: %+v, %d claims", p, store.claims)
	}

	// The other holder's allowance runs out; this breaker takes the probe.
	clock.advance(time.Minute)
	store.claim = func(model, holder string) (SharedCircuit, error) {
		return SharedCircuit{Model: model, State: CircuitHalfOpen, Generation: 12, Remaining: time.Minute, Holder: holder}, nil
	}
	var probes []Permit
	for range 5 {
		if p, _ := cb.Allow("m"); p.Allowed {
			probes = append(probes, p)
		}
	}
	if len(probes) != 3 || store.claims != 2 {
		t.Fatalf("%d probes with %d claims, want the 3 probes of one claim", len(probes), store.claims)
	}
	store.reports = nil
	cb.Record(probes[0], OutcomeSuccess)
	cb.Record(probes[1], OutcomeFailure)
	if len(store.reports) != 2 || store.reports[1].State != CircuitHalfOpen || store.reports[1].Generation != 12 {
		t.Fatalf("probe reports %+v", store.reports)
	}
	if p, _ := cb.Allow("m"); p.Allowed {
		t.Error("a probe went after one failed, before the store decided")
	}
	cb.Apply(SharedCircuit{Model: "m", State: CircuitOpen, Generation: 13, Remaining: time.Minute})
	store.reports = nil
	cb.Record(probes[2], OutcomeSuccess) // its generation has passed
	if len(store.reports) != 0 {
		t.Errorf("a stale probe was reported: %+v", store.reports)
	}
}

// TestFleetBreakerAlone: when a claim fails the breaker probes on its own;
// while the store is down it applies its own rule from the state it shows,
// and LocalOpens lists what it opened alone, for the store's return.
func TestFleetBreakerAlone(t *testing.T) {
	clock := newManualClock()
	store := &scriptedStore{claim: func(string, string) (SharedCircuit, error) {
		return SharedCircuit{}, errors.New("timeout")
	}}
	cb := NewFleetCircuitBreaker(defaultCircuit(2, time.Minute), clock.now, store)
	cb.Apply(SharedCircuit{Model: "m", State: CircuitOpen, Generation: 10, Remaining: time.Second})
	clock.advance(time.Second)
	p, tr := cb.Allow("m")
	if !p.Allowed || tr.To != CircuitHalfOpen {
		t.Fatalf("a failed claim: %+v %+v, want a probe of this breaker's own", p, tr)
	}
	if tr := cb.Record(p, OutcomeFailure); tr.To != CircuitOpen {
		t.Fatalf("own probe failed: %+v, want open", tr)
	}
	if got := cb.LocalOpens(); len(got) != 1 || got[0].Model != "m" || got[0].Remaining != time.Minute {
		t.Errorf("LocalOpens = %+v", got)
	}

	store.setDown(true)
	for range 2 {
		p, _ := cb.Allow("n")
		cb.Record(p, OutcomeFailure)
	}
	if p, _ := cb.Allow("n"); p.Allowed {
		t.Error("with the store down, two failures did not open the circuit")
	}
	if len(store.reports) != 0 {
		t.Errorf("reports sent to a store that is down: %+v", store.reports)
	}
	if n := len(cb.LocalOpens()); n != 2 {
		t.Errorf("%d local opens, want 2", n)
	}
	// Once the store is back, a circuit opened alone stays open through
	// its cooldown, whatever the store says (it did not know of it), to be
	// handed over; the store's word on it counts from its hand-over on.
	store.setDown(false)
	cb.Apply(SharedCircuit{Model: "n", State: CircuitClosed, Generation: 20})
	if p, _ := cb.Allow("n"); p.Allowed {
		t.Error("the store's closed state ended the cooldown of a circuit opened alone")
	}
	cb.Apply(SharedCircuit{Model: "n", State: CircuitOpen, Generation: 30, Remaining: time.Second})
	clock.advance(time.Second)
	cb.Apply(SharedCircuit{Model: "n", State: CircuitClosed, Generation: 40})
	if p, _ := cb.Allow("n"); !p.Allowed {
		t.Error("after the handed-over cooldown, the store's closed state did not stand")
	}
}

// TestFleetBreakerKeepsAnOpenCircuitTheStoreLost: the store's word that an
// open circuit is closed, before the cooldown has ended, can only mean the
// store lost it (an open circuit closes through half-open, after its
// cooldown): the breaker keeps it open, with no transition, and offers it
// back as its own (LocalOpens). After the cooldown, the store's word
// stands again.
func TestFleetBreakerKeepsAnOpenCircuitTheStoreLost(t *testing.T) {
	clock := newManualClock()
	cb := NewFleetCircuitBreaker(defaultCircuit(2, time.Minute), clock.now, &scriptedStore{})
	var notified []Transition
	cb.SetNotify(func(tr Transition) { notified = append(notified, tr) })
	cb.Apply(SharedCircuit{Model: "m", State: CircuitOpen, Generation: 10, Remaining: time.Minute})
	notified = nil

	clock.advance(30 * time.Second)
	cb.Apply(SharedCircuit{Model: "m", State: CircuitClosed, Generation: 20})
	if p, _ := cb.Allow("m"); p.Allowed || len(notified) != 0 {
		t.Errorf("a closed word in the cooldown: permit %+v, transitions %+v; want still open, none", p, notified)
	}
	if opens := cb.LocalOpens(); len(opens) != 1 || opens[0].Model != "m" || opens[0].Remaining != 30*time.Second {
		t.Errorf("LocalOpens = %+v, want m with its 30s left", opens)
	}
	// The store takes it back (a newer generation): the store's again.
	cb.Apply(SharedCircuit{Model: "m", State: CircuitOpen, Generation: 30, Remaining: 30 * time.Second})
	if opens := cb.LocalOpens(); len(opens) != 0 {
		t.Errorf("LocalOpens after the store took it back = %+v", opens)
	}

	clock.advance(31 * time.Second)
	cb.Apply(SharedCircuit{Model: "m", State: CircuitClosed, Generation: 40})
	if len(notified) != 1 || notified[0].To != CircuitClosed {
		t.Errorf("after the cooldown: transitions %+v, want the store's close", notified)
	}
}

// TestFleetBreakerDisown: for a store that lost its data, every circuit
// the breaker shows open or half-open becomes its own; LocalOpens hands
// back one whose cooldown is over with a moment left, as it still waits
// for a probe, and a half-open one as open with a moment left, to be
// probed again. Closed circuits are not handed back.
func TestFleetBreakerDisown(t *testing.T) {
	clock := newManualClock()
	cb := NewFleetCircuitBreaker(defaultCircuit(2, time.Minute), clock.now, &scriptedStore{})
	cb.Apply(SharedCircuit{Model: "cooling", State: CircuitOpen, Generation: 10, Remaining: time.Hour})
	cb.Apply(SharedCircuit{Model: "waiting", State: CircuitOpen, Generation: 10, Remaining: time.Minute})
	cb.Apply(SharedCircuit{Model: "closed", State: CircuitClosed, Generation: 10})
	cb.Apply(SharedCircuit{Model: "probing", State: CircuitHalfOpen, Generation: 10, Remaining: time.Hour, Holder: "another"})
	clock.advance(2 * time.Minute)
	if opens := cb.LocalOpens(); len(opens) != 0 {
		t.Fatalf("LocalOpens of the store's circuits = %+v, want none", opens)
	}
	cb.Disown()
	got := map[string]time.Duration{}
	for _, o := range cb.LocalOpens() {
		got[o.Model] = o.Remaining
	}
	if len(got) != 3 || got["cooling"] != 58*time.Minute || got["waiting"] != time.Millisecond || got["probing"] != time.Millisecond {
		t.Errorf("LocalOpens after Disown = %v, want cooling with 58m, waiting and probing (as open) with 1ms", got)
	}
}
