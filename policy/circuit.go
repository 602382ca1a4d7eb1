package policy

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CircuitState is the state of one model's circuit.
type CircuitState uint8

const (
	// CircuitClosed lets every request through; failures are being counted.
	CircuitClosed CircuitState = iota
	// CircuitOpen refuses requests until the cooldown is over: the model has
	// failed too often in a row to be worth a call.
	CircuitOpen
	// CircuitHalfOpen has let one probe request through after the cooldown
	// and refuses the rest until the probe reports.
	CircuitHalfOpen
)

// String names the state for logs and metric labels.
func (s CircuitState) String() string {
	switch s {
	case CircuitOpen:
		return "open"
	case CircuitHalfOpen:
		return "half_open"
	default:
		return "closed"
	}
}

// maxTrackedModels bounds how many models a breaker keeps state for. Model
// names are client input, so without a bound a client could grow the table
// without end. Models beyond it are not tracked and simply allowed: the
// breaker is a cost saving, and failing open keeps traffic flowing.
const maxTrackedModels = 1024

// CircuitBreaker is the `circuit_breaker <failures> <cooldown>` setting (SPEC
// "Retries and fallback"): after that many consecutive retryable failures of
// one model, requests for it are refused for the cooldown (they go straight
// to the fallback, with no upstream call), then a single probe request decides
// whether it closes again. It is the classic three-state breaker of Nygard's
// "Release It!", kept per model because one model being overloaded says
// nothing about its siblings behind the same upstream.
//
// A nil *CircuitBreaker is the "off" setting: it allows everything and
// records nothing. All methods are safe for concurrent use. Allow on a closed
// circuit and Success on a healthy one take no lock and allocate nothing.
type CircuitBreaker struct {
	threshold    int32
	cooldown     time.Duration
	now          func() time.Time
	onTransition func(model string, from, to CircuitState)

	models sync.Map // model name → *circuit; read without locking
	mu     sync.Mutex
	n      int // entries in models; guarded by mu, as are inserts and deletes
}

// circuit is one model's state. Its fields change only under mu; state and
// failures are also atomics so the hot path can see a healthy circuit without
// taking the lock.
type circuit struct {
	mu       sync.Mutex
	state    atomic.Uint32 // a CircuitState
	failures atomic.Int32  // consecutive failures while closed
	// until is, when open, the end of the cooldown; when half-open, the time
	// after which the probe is presumed lost and another may go.
	until   time.Time
	dropped bool // removed from the table to make room; no longer consulted
}

// NewCircuitBreaker returns a breaker that opens a model's circuit after
// failures consecutive failures and keeps it open for cooldown. A threshold
// below 1 is taken as 1. now is the clock (time.Now when nil), replaceable so
// tests can drive the cooldown.
func NewCircuitBreaker(failures int, cooldown time.Duration, now func() time.Time) *CircuitBreaker {
	if now == nil {
		now = time.Now
	}
	return &CircuitBreaker{threshold: int32(min(max(failures, 1), 1<<30)), cooldown: cooldown, now: now}
}

// OnTransition sets fn to be called on every state change, so the caller can
// log it and count it (issue 4: log and metric every transition). fn runs
// while the model's circuit is locked, which keeps a model's transitions in
// order; it must be quick and must not call the breaker. Set it before the
// breaker is shared.
func (cb *CircuitBreaker) OnTransition(fn func(model string, from, to CircuitState)) {
	if cb != nil {
		cb.onTransition = fn
	}
}

// Allow reports whether a request for model may go upstream. When it may not,
// retryIn is how long until the circuit will let a request through again at
// the latest (the end of the cooldown, or of the probe's allowance), for a
// `retry-after` hint.
//
// A closed circuit allows. An open one refuses until the cooldown is over;
// then exactly one caller is allowed (the probe) and the circuit is half-open.
// While the probe is out, others are refused. A probe that never reports (its
// client went away) does not wedge the circuit: after another cooldown the
// next caller becomes the probe.
func (cb *CircuitBreaker) Allow(model string) (ok bool, retryIn time.Duration) {
	if cb == nil {
		return true, 0
	}
	v, found := cb.models.Load(model)
	if !found {
		return true, 0
	}
	c := v.(*circuit)
	if CircuitState(c.state.Load()) == CircuitClosed {
		return true, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped {
		return true, 0
	}
	state := CircuitState(c.state.Load())
	if state == CircuitClosed {
		return true, 0
	}
	now := cb.now()
	if now.Before(c.until) {
		return false, c.until.Sub(now)
	}
	// The cooldown (or the last probe's allowance) is over: this caller is
	// the probe, and the others wait for its report.
	c.until = now.Add(cb.cooldown)
	if state == CircuitOpen {
		cb.set(model, c, CircuitHalfOpen)
	}
	return true, 0
}

// Success records that a request for model was served. It closes the circuit
// and resets the failure count: in half-open state this is the probe's
// verdict. A late success of a request admitted before the circuit opened
// counts too; it shows the model answering, which is what the probe asks.
func (cb *CircuitBreaker) Success(model string) {
	if cb == nil {
		return
	}
	v, found := cb.models.Load(model)
	if !found {
		return
	}
	c := v.(*circuit)
	if CircuitState(c.state.Load()) == CircuitClosed && c.failures.Load() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped {
		return
	}
	c.failures.Store(0)
	if state := CircuitState(c.state.Load()); state != CircuitClosed {
		cb.set(model, c, CircuitClosed)
	}
}

// Failure records a retryable failure of a request for model (a status in
// retry_on, a connection failure or a timeout) and reports whether it opened
// the circuit. The threshold-th consecutive failure opens a closed circuit; a
// failure in half-open state (the probe's) opens it for another cooldown. A
// failure reported while already open changes nothing: it is a request that
// was admitted before the circuit opened.
//
// Failures that are the client's fault (400, 401, 404…) say nothing about
// the model's health and should be reported as neither.
func (cb *CircuitBreaker) Failure(model string) (opened bool) {
	if cb == nil {
		return false
	}
	for {
		c := cb.track(model)
		if c == nil {
			return false // the table is full of models that cannot be dropped
		}
		c.mu.Lock()
		if c.dropped {
			// Dropped between lookup and lock: record on the new entry.
			c.mu.Unlock()
			continue
		}
		opened = false
		switch CircuitState(c.state.Load()) {
		case CircuitClosed:
			if c.failures.Add(1) >= cb.threshold {
				opened = true
			}
		case CircuitHalfOpen:
			opened = true
		}
		if opened {
			c.failures.Store(0)
			c.until = cb.now().Add(cb.cooldown)
			cb.set(model, c, CircuitOpen)
		}
		c.mu.Unlock()
		return opened
	}
}

// set moves c to state to and reports the transition. c.mu must be held.
func (cb *CircuitBreaker) set(model string, c *circuit, to CircuitState) {
	from := CircuitState(c.state.Swap(uint32(to)))
	if cb.onTransition != nil && from != to {
		cb.onTransition(model, from, to)
	}
}

// track returns model's circuit, creating it if needed. When the table is
// full it first drops an entry that carries little: a closed circuit (only a
// partial failure count is lost), else one whose cooldown or probe allowance
// is over (it would let the next request through anyway). If every entry is
// an open circuit still cooling down, it returns nil and the model goes
// untracked.
func (cb *CircuitBreaker) track(model string) *circuit {
	if v, found := cb.models.Load(model); found {
		return v.(*circuit)
	}
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if v, found := cb.models.Load(model); found {
		return v.(*circuit)
	}
	if cb.n >= maxTrackedModels && !cb.dropOne() {
		return nil
	}
	c := &circuit{}
	// The name may share memory with a pooled request body.
	cb.models.Store(strings.Clone(model), c)
	cb.n++
	return c
}

// dropOne removes one entry that can be spared (see track) and reports
// whether it found one. cb.mu must be held. It walks the table, which only
// happens when the table is full, that is when clients are sending more
// distinct failing model names than any real configuration has.
func (cb *CircuitBreaker) dropOne() bool {
	now := cb.now()
	for _, closedOnly := range []bool{true, false} {
		dropped := false
		cb.models.Range(func(k, v any) bool {
			c := v.(*circuit)
			c.mu.Lock()
			defer c.mu.Unlock()
			state := CircuitState(c.state.Load())
			if state == CircuitClosed || !closedOnly && !now.Before(c.until) {
				// Reported as closing, so a gauge fed by transitions does not
				// keep showing an open circuit that no longer exists.
				cb.set(k.(string), c, CircuitClosed)
				c.dropped = true
				cb.models.Delete(k)
				cb.n--
				dropped = true
			}
			return !dropped
		})
		if dropped {
			return true
		}
	}
	return false
}
