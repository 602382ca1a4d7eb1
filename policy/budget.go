package policy

import (
	"sync"
	"time"
)

// budgetWindow is how many one-second buckets a RetryBudget remembers: the
// ten seconds of Finagle's default budget TTL, long enough to smooth bursts,
// short enough that an outage's retries stop counting soon after it ends.
const budgetWindow = 10

// RetryBudget is the `retry_budget <percent> [<min_per_second>]` setting (SPEC
// "Retries and fallback"): retries may add at most percent% of the recent
// request volume, plus a small floor, so that when an upstream fails
// everything the gateway sends it about (1 + percent%) times the client
// traffic instead of (retries + 1) times, and an outage cannot turn into a
// retry storm that keeps it down.
//
// This is the retry budget of Finagle (RetryBudget: ttl 10 s, minRetriesPerSec
// 10, percentCanRetry 20 %, the defaults here too) and close in spirit to
// Envoy's retry_budget (budget_percent with min_retry_concurrency), counted
// over time rather than over requests in flight because a gateway in front of
// LLM APIs holds long streams whose count says little about load. Requests
// and retries are counted in a ring of one-second buckets covering the last
// ten seconds; a retry is allowed while the retries in the window are fewer
// than percent% of the requests in the window plus minPerSecond × 10.
//
// A nil *RetryBudget is unlimited. Methods are safe for concurrent use; each
// takes one short mutex hold and allocates nothing.
type RetryBudget struct {
	ratio float64 // share of requests that may be retried: percent / 100
	floor float64 // retries the window always allows: minPerSecond × window
	now   func() time.Time
	start time.Time // buckets are whole seconds since start

	mu   sync.Mutex
	ring [budgetWindow]budgetBucket
}

// budgetBucket counts one second's first attempts and retries.
type budgetBucket struct {
	sec               int64 // seconds since start that the counts belong to
	requests, retries int64
}

// NewRetryBudget returns a budget letting retries reach percent% of recent
// requests (20 means 20 %) plus minPerSecond retries per second on average,
// which keeps retries possible when traffic is too thin for the percentage to
// allow any. Negative values are taken as 0. now is the clock (time.Now when
// nil); time.Now's monotonic reading keeps the window steady across wall
// clock jumps.
func NewRetryBudget(percent, minPerSecond float64, now func() time.Time) *RetryBudget {
	if now == nil {
		now = time.Now
	}
	return &RetryBudget{
		ratio: max(percent, 0) / 100,
		floor: max(minPerSecond, 0) * budgetWindow,
		now:   now,
		start: now(),
	}
}

// Request records a request's first attempt, which earns the budget its
// share of a retry. Call it once per client request that is sent upstream.
func (b *RetryBudget) Request() {
	if b == nil {
		return
	}
	sec := b.second()
	b.mu.Lock()
	b.bucket(sec).requests++
	b.mu.Unlock()
}

// TryRetry takes one retry from the budget and reports whether it could.
// Call it before every attempt after a request's first; when it reports
// false, the failure in hand is returned to the client at once (SPEC: "A
// failure that finds the budget spent is returned at once").
func (b *RetryBudget) TryRetry() bool {
	if b == nil {
		return true
	}
	sec := b.second()
	b.mu.Lock()
	defer b.mu.Unlock()
	var requests, retries int64
	for i := range b.ring {
		if bk := &b.ring[i]; bk.sec > sec-budgetWindow && bk.sec <= sec {
			requests += bk.requests
			retries += bk.retries
		}
	}
	if float64(retries) >= b.ratio*float64(requests)+b.floor {
		return false
	}
	b.bucket(sec).retries++
	return true
}

// second returns the current whole second since the budget was made.
func (b *RetryBudget) second() int64 {
	return int64(b.now().Sub(b.start) / time.Second)
}

// bucket returns the bucket for second sec, clearing it if it last counted
// an older second. b.mu must be held.
func (b *RetryBudget) bucket(sec int64) *budgetBucket {
	bk := &b.ring[(sec%budgetWindow+budgetWindow)%budgetWindow]
	if bk.sec != sec {
		*bk = budgetBucket{sec: sec}
	}
	return bk
}
