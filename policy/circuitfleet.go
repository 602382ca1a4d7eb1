package policy

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// CircuitStore keeps the circuits of a fleet of instances in one place
// (Redis or Valkey), so that one instance's failures open a model's
// circuit for all, and one probe, fleet-wide, decides when it closes. A
// CircuitBreaker with a store shows the store's state from memory: the
// store sends every change to each instance (CircuitBreaker.Apply), so
// asking a circuit costs no call to the store, and outcomes travel to it in
// batches off the request path.
//
// Only the claim of a probe, once per cooldown, waits for the store: the
// request that finds a cooldown over asks whether it may be the probe.
type CircuitStore interface {
	// Health reports the store's state as last observed. While it is down,
	// the breaker decides alone, from the state it last showed.
	Health() StoreHealth
	// Claim asks to probe model, whose cooldown the caller saw over: the
	// store takes the probe for holder when no other holder has it, and
	// returns the circuit as it then stands. An error means the store did
	// not answer.
	Claim(model, holder string, s CircuitSettings) (SharedCircuit, error)
	// Report sends the outcome of an attempt, later and in a batch. It
	// never blocks on the store.
	Report(r CircuitReport)
}

// CircuitReport is one outcome for the fleet's store.
type CircuitReport struct {
	Model string
	// State is the state the attempt started in: closed, or half-open for
	// a probe.
	State CircuitState
	// Generation is the store's generation of a probe's half-open state.
	// An outcome counts only for the state its attempt started in: a
	// probe's only for that probe's generation, a closed-state outcome
	// only while the store's circuit is still closed.
	Generation uint64
	Outcome    Outcome
	// Settings are the reporting breaker's rule, which the store applies:
	// it keeps no settings, so a reload's new ones apply at once.
	Settings CircuitSettings
}

// SharedCircuit is one model's circuit as the fleet's store holds it.
type SharedCircuit struct {
	Model string
	State CircuitState
	// Generation is the store's, which grows with every transition, so
	// that a breaker can tell a newer state from an older one that arrives
	// late.
	Generation uint64
	// Remaining is, when open, what is left of the cooldown; when
	// half-open, what is left of the probe's allowance.
	Remaining time.Duration
	// Holder is, when half-open, the breaker that holds the probe.
	Holder string
}

// claimRetry is the retry hint of a request refused while another request
// of this breaker asks the store for the probe: an answer takes a round
// trip, and the probe's fate is known soon after.
const claimRetry = 100 * time.Millisecond

// NewFleetCircuitBreaker returns a breaker applying s whose circuits are
// shared through store: the store decides transitions from the outcomes of
// every instance, and while it cannot be reached this breaker decides
// alone, as NewCircuitBreaker's would, from the state it last showed.
//
// Differences from one instance's breaker, all bounded by a batch (a few
// milliseconds): the outcomes of several instances are ordered by the
// arrival of their batches, not by their own times, so "the last Failures
// outcomes were failures" holds per batch; the failure-rate window is
// counted on the store's clock at arrival. Half-open lets one breaker
// fleet-wide (the probe's holder) send up to Probes probes.
func NewFleetCircuitBreaker(s CircuitSettings, now func() time.Time, store CircuitStore) *CircuitBreaker {
	cb := NewCircuitBreaker(s, now)
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	cb.shared, cb.id = store, hex.EncodeToString(id)
	return cb
}

// Settings returns the rule the breaker applies, defaults filled in.
func (cb *CircuitBreaker) Settings() CircuitSettings { return cb.s }

// SetNotify sets the function told of the transitions that reach the
// breaker from its store, outside any call of Allow or Record (which return
// their own). It replaces the previous one.
func (cb *CircuitBreaker) SetNotify(f func(Transition)) {
	cb.notify.Store(&f)
}

// fleetDecides reports whether the fleet's store decides transitions now.
func (cb *CircuitBreaker) fleetDecides() bool {
	return cb.shared != nil && !cb.shared.Health().Down
}

// allowShared is Allow for a circuit that was not closed, when the store
// decides. It reports false when the state is this breaker's own (probes
// it let through while the store did not answer) or the store failed to
// answer a claim: the breaker's own rule then decides. c.mu is held; it is
// released while a claim waits for the store.
func (cb *CircuitBreaker) allowShared(model string, c *circuit) (Permit, Transition, bool) {
	p, claim, ok := cb.sharedState(model, c)
	if !claim {
		return p, Transition{}, ok
	}
	c.claiming = true
	c.mu.Unlock()
	sc, err := cb.shared.Claim(model, cb.id, cb.s)
	c.mu.Lock()
	c.claiming = false
	if err != nil {
		return Permit{}, Transition{}, false
	}
	sc.Model = model
	tr := cb.applyLocked(c, sc)
	if p, claim, ok = cb.sharedState(model, c); claim || !ok {
		// The answer showed nothing newer than what was here: refuse,
		// and let the next request ask again.
		p = Permit{Model: model, RetryIn: claimRetry}
	}
	return p, tr, true
}

// sharedState decides what the store's state allows without calling it:
// it returns the permit, or claim when the cooldown or the probe's
// allowance is over, or !ok when the state is the breaker's own. c.mu is
// held.
func (cb *CircuitBreaker) sharedState(model string, c *circuit) (p Permit, claim, ok bool) {
	gen, state := c.load()
	now := cb.now()
	switch {
	case state == CircuitClosed:
		return Permit{Model: model, Generation: gen, Allowed: true}, false, true
	case state == CircuitHalfOpen && c.storeGen == 0:
		return Permit{}, false, false
	case !now.Before(c.until):
		if c.claiming {
			return Permit{Model: model, RetryIn: claimRetry}, false, true
		}
		return Permit{}, true, true
	case state == CircuitHalfOpen && c.mine && c.inFlight+c.passed < cb.s.Probes:
		c.inFlight++
		return Permit{Model: model, Generation: gen, Allowed: true}, false, true
	}
	return Permit{Model: model, RetryIn: c.until.Sub(now)}, false, true
}

// recordShared is Record when the store decides: the outcome goes to the
// store, and a probe's is counted here only to bound the probes. It
// reports false when the state is the breaker's own, whose rule then
// decides.
func (cb *CircuitBreaker) recordShared(p Permit, o Outcome) bool {
	v, found := cb.models.Load(p.Model)
	if !found {
		// Untracked: a fresh circuit, closed at generation 0.
		if p.Generation == 0 && o != OutcomeNeutral {
			cb.shared.Report(CircuitReport{Model: p.Model, State: CircuitClosed, Outcome: o, Settings: cb.s})
		}
		return true
	}
	c := v.(*circuit)
	gen, state := c.load()
	switch {
	case gen != p.Generation:
		return true // stale
	case state == CircuitClosed:
		if o != OutcomeNeutral {
			cb.shared.Report(CircuitReport{Model: p.Model, State: CircuitClosed, Outcome: o, Settings: cb.s})
		}
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen, _ := c.load(); gen != p.Generation || c.dropped {
		return true
	}
	if c.storeGen == 0 {
		return false
	}
	// The store's half-open: this was one of the fleet's probes, the only
	// permits it gives in a state other than closed.
	c.inFlight = max(c.inFlight-1, 0)
	switch o {
	case OutcomeSuccess:
		c.passed++
	case OutcomeFailure:
		// No more probes until the store has reopened the circuit.
		c.passed = cb.s.Probes
	}
	if o != OutcomeNeutral {
		cb.shared.Report(CircuitReport{Model: p.Model, State: CircuitHalfOpen, Generation: c.storeGen, Outcome: o, Settings: cb.s})
	}
	return true
}

// Apply shows the state the store holds for a model, unless the breaker
// already shows a newer one, and tells the notify function of the
// transition. The store calls it for every change, as it learns of it.
func (cb *CircuitBreaker) Apply(sc SharedCircuit) {
	for {
		var c *circuit
		if sc.State == CircuitClosed {
			v, found := cb.models.Load(sc.Model)
			if !found {
				return // untracked is closed already
			}
			c = v.(*circuit)
		} else if c = cb.track(sc.Model); c == nil {
			return
		}
		c.mu.Lock()
		if c.dropped {
			c.mu.Unlock()
			continue
		}
		tr := cb.applyLocked(c, sc)
		c.mu.Unlock()
		if f := cb.notify.Load(); f != nil && tr.Changed() {
			(*f)(tr)
		}
		return
	}
}

// applyLocked shows sc in c unless c shows a newer state of the store's.
// A state this breaker decided on its own gives way to any of the store's.
// Permits stay valid when the state does not change, except in half-open,
// where a new generation is a new probe. c.mu is held.
func (cb *CircuitBreaker) applyLocked(c *circuit, sc SharedCircuit) Transition {
	if sc.Generation < c.storeGen {
		return Transition{}
	}
	if _, state := c.load(); state == CircuitOpen && sc.State == CircuitClosed && cb.now().Before(c.until) {
		// An open circuit closes only through half-open, after its
		// cooldown: a store that says closed before then has lost the
		// circuit (a restart without persistence, a flush). The breaker
		// keeps it, as its own, so that LocalOpens hands it back.
		c.storeGen = 0
		return Transition{}
	}
	var until time.Time
	if sc.State != CircuitClosed {
		until = cb.now().Add(sc.Remaining)
	}
	mine := sc.State == CircuitHalfOpen && sc.Holder == cb.id
	_, from := c.load()
	if sc.Generation == c.storeGen || from == sc.State && from != CircuitHalfOpen {
		if from == sc.State {
			c.until, c.mine, c.storeGen = until, mine, sc.Generation
		}
		return Transition{}
	}
	tr := cb.enter(sc.Model, c, sc.State, until)
	c.storeGen, c.mine = sc.Generation, mine
	return tr
}

// LocalOpens returns the circuits this breaker holds open or half-open on
// its own: decided while its store could not be reached, kept open when
// the store lost them, or disowned (Disown); as open, with what is left of
// their cooldown, so that the store learns of them again.
func (cb *CircuitBreaker) LocalOpens() []SharedCircuit {
	now := cb.now()
	var out []SharedCircuit
	cb.models.Range(func(k, v any) bool {
		c := v.(*circuit)
		c.mu.Lock()
		switch _, state := c.load(); {
		case c.storeGen != 0 || c.dropped:
		case state == CircuitOpen:
			// One whose cooldown is over is handed back too, with a
			// moment left: it still waits for a probe.
			out = append(out, SharedCircuit{Model: k.(string), State: CircuitOpen, Remaining: max(c.until.Sub(now), time.Millisecond)})
		case state == CircuitHalfOpen:
			// Its probes' outcome may never reach a store that has no
			// record of their claim: handed back as open with a moment
			// left, the fleet probes again.
			out = append(out, SharedCircuit{Model: k.(string), State: CircuitOpen, Remaining: time.Millisecond})
		}
		c.mu.Unlock()
		return true
	})
	return out
}

// Disown makes every circuit this breaker shows open or half-open its own,
// as if decided while the store was unreachable: for a store that has lost
// its data, whose word on them no longer stands. LocalOpens then lists
// them for the store.
func (cb *CircuitBreaker) Disown() {
	cb.models.Range(func(_, v any) bool {
		c := v.(*circuit)
		c.mu.Lock()
		if _, state := c.load(); state != CircuitClosed {
			c.storeGen = 0
		}
		c.mu.Unlock()
		return true
	})
}
