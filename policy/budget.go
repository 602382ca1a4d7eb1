package policy

import (
	"strings"
	"sync"
	"time"
)

// budgetWindow is how many one-second buckets a RetryBudget remembers: the
// ten seconds of Finagle's default budget TTL, long enough to smooth bursts,
// short enough that an outage's retries stop counting soon after it ends.
const budgetWindow = 10

// maxBudgetModels bounds how many models a RetryBudget keeps apart. Model
// names are client input; models beyond the bound share one more budget.
const maxBudgetModels = 256

// RetryBudget is the `retry_budget <percent> [<min_per_second>]` setting: it
// bounds the retries the gateway schedules on its own, so that when a model
// fails everything the gateway sends it about (1 + percent%) times the
// traffic instead of (retries + 1) times, and an outage cannot turn into a
// retry storm that keeps it down.
//
// The rule is Finagle's RetryBudget (https://twitter.github.io/finagle/guide/Clients.html#retries:
// ttl 10 s, minRetriesPerSec 10, percentCanRetry 20 %, the defaults here
// too), close in spirit to Envoy's retry budgets (budget_percent with a
// min_retry_concurrency floor; https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/circuit_breaker.proto),
// counted over time rather than over requests in flight because a gateway
// in front of LLM APIs holds long streams whose count says little about
// load. For each model, over the last ten seconds:
//
//   - the volume is the attempts that are not the gateway's own retries:
//     first attempts (Request) and retries that waited for the upstream's
//     explicit hint (Paced);
//   - an own retry or fallback (TryRetry) is allowed while the own retries
//     in the window are fewer than percent% of the volume plus
//     minPerSecond × 10.
//
// A retry the upstream paced with retry-after, retry-after-ms or a
// rate-limit reset is never refused: the upstream chose when it comes, and
// it is what pacing, not a storm guard, is for. It counts in the volume
// because it is traffic the upstream accepted.
//
// The budget is kept per model: a model's own failures can spend only what
// its own traffic earned (and its floor), so an overloaded model does not
// starve the retries of the healthy ones behind the same route. Tenants of
// one model share its budget, as they share its health; what is specific to
// a tenant, its rate limits, comes with hints and is not refused.
//
// A nil *RetryBudget is unlimited. Methods are safe for concurrent use and
// allocate nothing once a model is known.
type RetryBudget struct {
	ratio float64 // share of the volume that may be retried: percent / 100
	floor float64 // own retries the window always allows: minPerSecond × window
	now   func() time.Time
	start time.Time // buckets are whole seconds since start

	mu       sync.RWMutex
	models   map[string]*modelBudget // guarded by mu
	overflow modelBudget             // the models beyond maxBudgetModels
}

// modelBudget is one model's window.
type modelBudget struct {
	mu   sync.Mutex
	ring [budgetWindow]budgetBucket
}

// budgetBucket counts one second's volume and own retries.
type budgetBucket struct {
	sec             int64 // seconds since start that the counts belong to
	volume, retries int64
}

// NewRetryBudget returns a budget letting each model's own retries reach
// percent% of its recent volume (20 means 20 %) plus minPerSecond retries
// per second on average, which keeps retries possible when traffic is too
// thin for the percentage to allow any. Negative values are taken as 0. now
// is the clock (time.Now when nil); time.Now's monotonic reading keeps the
// window steady across wall clock jumps.
func NewRetryBudget(percent, minPerSecond float64, now func() time.Time) *RetryBudget {
	if now == nil {
		now = time.Now
	}
	return &RetryBudget{
		ratio:  max(percent, 0) / 100,
		floor:  max(minPerSecond, 0) * budgetWindow,
		now:    now,
		start:  now(),
		models: make(map[string]*modelBudget),
	}
}

// Request records a first attempt on model: a client request's, or a
// fallback's on the model it falls back to.
func (b *RetryBudget) Request(model string) {
	b.deposit(model)
}

// Paced records a retry on model that waited for the upstream's explicit
// hint. It is never refused; it adds to the volume.
func (b *RetryBudget) Paced(model string) {
	b.deposit(model)
}

func (b *RetryBudget) deposit(model string) {
	if b == nil {
		return
	}
	sec := b.second()
	mb := b.model(model)
	mb.mu.Lock()
	mb.bucket(sec).volume++
	mb.mu.Unlock()
}

// TryRetry takes one own retry (or fallback) of a failure of model from the
// budget and reports whether it could. When it reports false, the failure
// in hand is returned to the client at once.
func (b *RetryBudget) TryRetry(model string) bool {
	if b == nil {
		return true
	}
	sec := b.second()
	mb := b.model(model)
	mb.mu.Lock()
	defer mb.mu.Unlock()
	volume, retries := mb.sums(sec)
	if float64(retries) >= b.ratio*float64(volume)+b.floor {
		return false
	}
	mb.bucket(sec).retries++
	return true
}

// second returns the current whole second since the budget was made.
func (b *RetryBudget) second() int64 {
	return int64(b.now().Sub(b.start) / time.Second)
}

// model returns model's window, making one when there is room, else the
// shared overflow window.
func (b *RetryBudget) model(model string) *modelBudget {
	b.mu.RLock()
	mb, found := b.models[model]
	b.mu.RUnlock()
	if found {
		return mb
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if mb, found := b.models[model]; found {
		return mb
	}
	if len(b.models) >= maxBudgetModels && !b.dropIdle() {
		return &b.overflow
	}
	mb = new(modelBudget)
	// The name may share memory with a pooled request body.
	b.models[strings.Clone(model)] = mb
	return mb
}

// dropIdle forgets one model whose window is empty (nothing for ten
// seconds: it holds nothing worth keeping) and reports whether it found
// one. b.mu is held for writing.
func (b *RetryBudget) dropIdle() bool {
	sec := b.second()
	for name, mb := range b.models {
		mb.mu.Lock()
		volume, retries := mb.sums(sec)
		mb.mu.Unlock()
		if volume == 0 && retries == 0 {
			delete(b.models, name)
			return true
		}
	}
	return false
}

// sums returns the volume and own retries of the window ending at second
// sec. mb.mu is held.
func (mb *modelBudget) sums(sec int64) (volume, retries int64) {
	for i := range mb.ring {
		if bk := &mb.ring[i]; bk.sec > sec-budgetWindow && bk.sec <= sec {
			volume += bk.volume
			retries += bk.retries
		}
	}
	return volume, retries
}

// bucket returns the bucket for second sec, clearing it if it last counted
// an older second. mb.mu is held.
func (mb *modelBudget) bucket(sec int64) *budgetBucket {
	bk := &mb.ring[(sec%budgetWindow+budgetWindow)%budgetWindow]
	if bk.sec != sec {
		*bk = budgetBucket{sec: sec}
	}
	return bk
}
