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
	// CircuitClosed lets every request through; outcomes are being counted.
	CircuitClosed CircuitState = iota
	// CircuitOpen refuses requests until the cooldown is over: the model has
	// failed too often to be worth a call.
	CircuitOpen
	// CircuitHalfOpen lets a bounded number of probe requests through after
	// the cooldown and refuses the rest until the probes decide.
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

// Outcome is what one upstream attempt says about its model's health.
// The values are ordered by weight: Worse keeps the heavier one.
type Outcome uint8

const (
	// OutcomeNeutral says nothing about the model's health: a rate limit,
	// an exhausted quota, a request the provider refused as malformed, a
	// client that went away. It releases a probe's place but counts neither
	// way.
	OutcomeNeutral Outcome = iota
	// OutcomeSuccess is an answer: the model is serving.
	OutcomeSuccess
	// OutcomeFailure says the model is unhealthy: an overload, a server
	// error, a connection failure, a timeout, a stream the upstream cut.
	OutcomeFailure
)

// Worse returns the heavier of two outcomes, failure over success over
// neutral, so that an attempt judged twice (a 200 whose stream then fails)
// reports what went wrong.
func (o Outcome) Worse(other Outcome) Outcome {
	return max(o, other)
}

// HealthOutcome judges an attempt by the status the upstream answered with
// (or that an in-band error event stands for; 0 when there was no answer)
// and the reason it failed, if it did. It is the circuit breaker's view of
// an attempt, independent of retry_on: an operator who stops retrying 500s
// has not made them healthy.
//
//   - A connection failure or timeout (ReasonConnection, ReasonTimeout) is a
//     failure whatever the status: the model did not answer, or stopped.
//   - Below 400: success.
//   - 429 is neutral: a rate limit or an exhausted quota belongs to one API
//     key's organisation, not to the model, and pacing and zones handle it;
//     counting it would let one tenant's limits open the circuit for all.
//   - 501 Not Implemented and 505 HTTP Version Not Supported are neutral:
//     they say the request can never succeed there (RFC 9110, 15.6.2 and
//     15.6.6), not that the model is unwell.
//   - Every other 5xx is a failure: 500 api_error, 502 and 504 from a
//     gateway in front of the model, 503 and 529 overloads (Anthropic's
//     overloaded_error, OpenAI's overloaded server_error), and the 52x
//     statuses CDNs use for an unreachable origin.
//   - Every other 4xx is neutral: 408 Request Timeout is about delivering
//     the request (RFC 9110, 15.5.9), 409 Conflict about the request's
//     own state, the rest are the client's mistakes.
func HealthOutcome(status int, reason Reason) Outcome {
	switch {
	case reason == ReasonConnection || reason == ReasonTimeout:
		return OutcomeFailure
	case status <= 0:
		return OutcomeNeutral
	case status < 400:
		return OutcomeSuccess
	case status == 501 || status == 505:
		return OutcomeNeutral
	case status >= 500:
		return OutcomeFailure
	}
	return OutcomeNeutral
}

// Permit is the answer to Allow. An allowed attempt must report its outcome
// with Record exactly once, passing the permit back: the permit names the
// circuit state the attempt started in, and an outcome counts only for that
// state.
type Permit struct {
	// Model is the model the permit is for.
	Model string
	// Generation identifies the circuit state the attempt started in. It
	// changes with every transition, so an outcome reported after one is
	// stale and ignored.
	Generation uint64
	// Allowed reports whether the attempt may go upstream.
	Allowed bool
	// RetryIn, when not allowed, is the longest the model will be refused:
	// the rest of the cooldown or of the probes' allowance.
	RetryIn time.Duration
}

// Transition is a change of one model's circuit state, returned by the
// call that caused it so that the caller can log and count it. Callers
// report transitions after the circuit's lock is released, so two of them
// may be seen out of order; Generation puts them back in order.
type Transition struct {
	Model    string
	From, To CircuitState
	// Generation is that of the state entered.
	Generation uint64
}

// Changed reports whether there was a transition.
func (t Transition) Changed() bool { return t.From != t.To }

// CircuitStatus is one model's circuit as Snapshot reports it.
type CircuitStatus struct {
	Model string
	State CircuitState
	// Until is, when open, the end of the cooldown; when half-open, the
	// time after which probes that have not reported are presumed lost.
	Until time.Time
}

// Circuits is where per-model circuit state lives: in memory for one
// handler (CircuitBreaker), and the same three calls serve a store shared
// across config reloads or across instances. Every method is safe for
// concurrent use.
type Circuits interface {
	// Allow asks whether an attempt for model may go upstream now.
	Allow(model string) (Permit, Transition)
	// Record reports the outcome of an attempt Allow permitted.
	Record(p Permit, o Outcome) Transition
	// Snapshot returns the state of every tracked model.
	Snapshot() []CircuitStatus
}

// CircuitSettings are the rule a CircuitBreaker applies.
type CircuitSettings struct {
	// Failures is how many consecutive failures open a closed circuit
	// (while the failure-rate condition holds).
	Failures int
	// Cooldown is how long an open circuit refuses every request.
	Cooldown time.Duration
	// FailureRate is the share of failures, in percent, among the outcomes
	// in Window that must also be reached before the circuit opens, once
	// there are MinCalls of them.
	FailureRate float64
	// Window is how far back the failure rate looks.
	Window time.Duration
	// MinCalls is how many outcomes the window must hold before the failure
	// rate is judged; below it, consecutive failures alone decide.
	MinCalls int
	// Probes is how many attempts a half-open circuit lets through, and how
	// many of them must succeed to close it.
	Probes int
}

// maxTrackedModels bounds how many models a breaker keeps state for. Model
// names are client input, so without a bound a client could grow the table
// without end. Models beyond it are not tracked and simply allowed: the
// breaker is a cost saving, and failing open keeps traffic flowing.
const maxTrackedModels = 1024

// circuitBuckets is how many slices the failure-rate window is counted in:
// the window slides by a tenth of itself.
const circuitBuckets = 10

// CircuitBreaker keeps one circuit per model in memory (a model overloaded
// says nothing about its siblings behind the same upstream). It is the
// three-state breaker of Nygard's "Release It!", with the opening rule made
// to hold under concurrency and at volume:
//
//   - Closed: the circuit opens when the last Failures outcomes of the model
//     were all failures, and, when the last Window holds at least MinCalls
//     outcomes, at least FailureRate percent of them were failures. The
//     second condition is the failure-rate rule of resilience4j
//     (failureRateThreshold, minimumNumberOfCalls, a time-based sliding
//     window; https://resilience4j.readme.io/docs/circuitbreaker) and of
//     Envoy's outlier detection (failure_percentage_threshold with a
//     request volume; https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier):
//     at volume, a run of a few failures happens by chance to a model that
//     fails one call in seven, and only the rate tells that from an outage.
//     With little traffic, the run alone decides.
//   - Open: every request is refused for the whole Cooldown.
//   - Half-open: up to Probes attempts go through; the first failure opens
//     the circuit again, Probes successes close it. Probes that do not
//     report within a cooldown are presumed lost and others may go.
//
// Only outcomes of attempts that started in the current state count
// (Permit.Generation): when many requests are in flight as a circuit opens,
// their late answers neither close it nor shorten the cooldown, and late
// failures of a closed generation do not reopen it.
//
// Allow on a closed circuit takes no lock and allocates nothing; Record
// takes the model's lock.
type CircuitBreaker struct {
	s      CircuitSettings
	bucket time.Duration // width of one window slice
	now    func() time.Time
	start  time.Time // window slices are counted from here

	models sync.Map // model name → *circuit; read without locking
	mu     sync.Mutex
	n      int // entries in models; guarded by mu, as are inserts and deletes

	// shared is the fleet's store, nil when this instance decides alone
	// (see NewFleetCircuitBreaker), and id names this breaker as the
	// holder of a fleet probe.
	shared CircuitStore
	id     string
	notify atomic.Pointer[func(Transition)]
}

// circuit is one model's state. Its fields change only under mu; word is
// also an atomic so the hot path can see a closed circuit without the lock.
type circuit struct {
	mu sync.Mutex
	// word is generation<<2 | state, read in one load so that a permit's
	// generation always belongs to the state it was given in.
	word atomic.Uint64

	consecutive int // consecutive failures while closed
	window      [circuitBuckets]outcomeBucket
	// until is, when open, the end of the cooldown; when half-open, when
	// unreported probes are presumed lost.
	until    time.Time
	inFlight int  // half-open: probes out
	passed   int  // half-open: probes that succeeded
	dropped  bool // removed from the table to make room; no longer consulted

	// In a fleet: storeGen is the store's generation of the state shown,
	// 0 when this instance decided the state on its own; mine is true
	// when the state is the store's half-open and this breaker holds its
	// probe; claiming is true while a claim of the probe is on its way.
	storeGen uint64
	mine     bool
	claiming bool
}

// outcomeBucket counts one slice of the failure-rate window.
type outcomeBucket struct {
	slot      int64 // which slice since the breaker's start it counts
	succeeded int32
	failed    int32
}

func (c *circuit) load() (gen uint64, state CircuitState) {
	w := c.word.Load()
	return w >> 2, CircuitState(w & 3)
}

// NewCircuitBreaker returns a breaker applying s, with each value at least
// 1 (FailureRate at least 0, Window at least circuitBuckets nanoseconds).
// now is the clock (time.Now when nil), replaceable so tests can drive the
// cooldown.
func NewCircuitBreaker(s CircuitSettings, now func() time.Time) *CircuitBreaker {
	if now == nil {
		now = time.Now
	}
	s.Failures = min(max(s.Failures, 1), 1<<30)
	s.MinCalls = max(s.MinCalls, 1)
	s.Probes = min(max(s.Probes, 1), 1<<30)
	s.FailureRate = max(s.FailureRate, 0)
	s.Window = max(s.Window, circuitBuckets)
	return &CircuitBreaker{s: s, bucket: s.Window / circuitBuckets, now: now, start: now()}
}

// Allow asks whether an attempt for model may go upstream. A closed circuit
// allows. An open one refuses until its cooldown is over; the first caller
// after that turns it half-open, which allows up to Probes attempts at once
// and refuses the rest until they report.
func (cb *CircuitBreaker) Allow(model string) (Permit, Transition) {
	for {
		v, found := cb.models.Load(model)
		if !found {
			// Untracked: a fresh circuit is closed at generation 0.
			return Permit{Model: model, Allowed: true}, Transition{}
		}
		c := v.(*circuit)
		if gen, state := c.load(); state == CircuitClosed {
			return Permit{Model: model, Generation: gen, Allowed: true}, Transition{}
		}
		c.mu.Lock()
		if c.dropped {
			c.mu.Unlock()
			continue
		}
		if cb.fleetDecides() {
			if p, tr, ok := cb.allowShared(model, c); ok {
				c.mu.Unlock()
				return p, tr
			}
		}
		p, tr := cb.allowLocked(model, c)
		c.mu.Unlock()
		return p, tr
	}
}

// allowLocked is Allow for a circuit that was not closed. c.mu is held.
func (cb *CircuitBreaker) allowLocked(model string, c *circuit) (Permit, Transition) {
	gen, state := c.load()
	if state == CircuitClosed {
		return Permit{Model: model, Generation: gen, Allowed: true}, Transition{}
	}
	now := cb.now()
	var tr Transition
	switch {
	case state == CircuitOpen && now.Before(c.until):
		return Permit{Model: model, RetryIn: c.until.Sub(now)}, tr
	case state == CircuitOpen:
		tr = cb.move(model, c, CircuitHalfOpen, now)
	case !now.Before(c.until):
		// Half-open, and the probes out have not reported for a whole
		// cooldown (their clients went away unnoticed): presumed lost. A
		// new generation makes their late reports stale.
		cb.move(model, c, CircuitHalfOpen, now)
	}
	if c.inFlight+c.passed >= cb.s.Probes {
		return Permit{Model: model, RetryIn: c.until.Sub(now)}, tr
	}
	c.inFlight++
	gen, _ = c.load()
	return Permit{Model: model, Generation: gen, Allowed: true}, tr
}

// Record reports the outcome of an attempt that p allowed, and returns the
// transition it caused, if any. An outcome whose attempt started in an
// earlier state of the circuit is ignored.
func (cb *CircuitBreaker) Record(p Permit, o Outcome) Transition {
	if !p.Allowed || cb.fleetDecides() && cb.recordShared(p, o) {
		return Transition{}
	}
	for {
		var c *circuit
		if o != OutcomeNeutral {
			c = cb.track(p.Model)
		} else if v, found := cb.models.Load(p.Model); found {
			c = v.(*circuit)
		}
		if c == nil {
			// A neutral outcome of an untracked model changes nothing;
			// otherwise the table is full of circuits refusing requests.
			return Transition{}
		}
		if gen, _ := c.load(); gen != p.Generation {
			return Transition{} // stale
		}
		c.mu.Lock()
		if c.dropped {
			c.mu.Unlock()
			continue
		}
		tr := cb.recordLocked(p, c, o)
		c.mu.Unlock()
		return tr
	}
}

// recordLocked is Record once the circuit is found. c.mu is held.
func (cb *CircuitBreaker) recordLocked(p Permit, c *circuit, o Outcome) Transition {
	gen, state := c.load()
	if gen != p.Generation {
		return Transition{}
	}
	now := cb.now()
	switch state {
	case CircuitClosed:
		switch o {
		case OutcomeSuccess:
			c.consecutive = 0
			c.slice(cb.slot(now)).succeeded++
		case OutcomeFailure:
			c.consecutive++
			c.slice(cb.slot(now)).failed++
			if c.consecutive >= cb.s.Failures && cb.rateReached(c, now) {
				return cb.move(p.Model, c, CircuitOpen, now)
			}
		}
	case CircuitHalfOpen:
		c.inFlight = max(c.inFlight-1, 0)
		switch o {
		case OutcomeFailure:
			return cb.move(p.Model, c, CircuitOpen, now)
		case OutcomeSuccess:
			if c.passed++; c.passed >= cb.s.Probes {
				return cb.move(p.Model, c, CircuitClosed, now)
			}
		}
	}
	return Transition{}
}

// rateReached reports whether the failure-rate condition holds: the window
// holds fewer than MinCalls outcomes, or enough of them failed. c.mu is held.
func (cb *CircuitBreaker) rateReached(c *circuit, now time.Time) bool {
	slot := cb.slot(now)
	var succeeded, failed int64
	for i := range c.window {
		if b := &c.window[i]; b.slot > slot-circuitBuckets && b.slot <= slot {
			succeeded += int64(b.succeeded)
			failed += int64(b.failed)
		}
	}
	calls := succeeded + failed
	return calls < int64(cb.s.MinCalls) || float64(failed)*100 >= cb.s.FailureRate*float64(calls)
}

// slot returns the window slice now falls in.
func (cb *CircuitBreaker) slot(now time.Time) int64 {
	return int64(now.Sub(cb.start) / cb.bucket)
}

// slice returns the window bucket for slot, cleared if it last counted an
// older one. c.mu is held.
func (c *circuit) slice(slot int64) *outcomeBucket {
	b := &c.window[(slot%circuitBuckets+circuitBuckets)%circuitBuckets]
	if b.slot != slot {
		*b = outcomeBucket{slot: slot}
	}
	return b
}

// move puts c in state to, decided by this breaker, for a cooldown from
// now when it is open or half-open. c.mu is held.
func (cb *CircuitBreaker) move(model string, c *circuit, to CircuitState, now time.Time) Transition {
	return cb.enter(model, c, to, now.Add(cb.s.Cooldown))
}

// enter puts c in state to with a new generation, so that every permit
// given before is stale, and sets up the state: until is the end of the
// cooldown or of the probes' allowance. The state counts as decided here
// until the caller says otherwise. c.mu is held.
func (cb *CircuitBreaker) enter(model string, c *circuit, to CircuitState, until time.Time) Transition {
	gen, from := c.load()
	gen++
	c.word.Store(gen<<2 | uint64(to))
	c.storeGen, c.mine = 0, false
	switch to {
	case CircuitOpen:
		c.until = until
		c.consecutive = 0
	case CircuitHalfOpen:
		c.until = until
		c.inFlight, c.passed = 0, 0
	case CircuitClosed:
		c.consecutive = 0
		c.window = [circuitBuckets]outcomeBucket{}
	}
	return Transition{Model: model, From: from, To: to, Generation: gen}
}

// Snapshot returns the state of every tracked model, in no set order, as
// a request would find it now: an open circuit whose cooldown has ended is
// reported half-open (with no Until), since the next request for its model
// goes through as a probe; the breaker itself moves it only when that
// request comes.
func (cb *CircuitBreaker) Snapshot() []CircuitStatus {
	var out []CircuitStatus
	now := cb.now()
	cb.models.Range(func(k, v any) bool {
		c := v.(*circuit)
		c.mu.Lock()
		_, state := c.load()
		st := CircuitStatus{Model: k.(string), State: state}
		switch {
		case state == CircuitOpen && !now.Before(c.until):
			st.State = CircuitHalfOpen
		case state != CircuitClosed:
			st.Until = c.until
		}
		dropped := c.dropped
		c.mu.Unlock()
		if !dropped {
			out = append(out, st)
		}
		return true
	})
	return out
}

// track returns model's circuit, creating it if needed. When the table is
// full it first drops an entry that carries little: a closed circuit (only
// partial counts are lost), else one whose cooldown or probe allowance is
// over (it would let the next request through anyway). If every entry is
// still refusing requests, it returns nil and the model goes untracked.
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
			if _, state := c.load(); state == CircuitClosed || !closedOnly && !now.Before(c.until) {
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
