package policy

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const budgetModel = "claude-sonnet-4-5"

// TestRetryBudgetSteadyTraffic runs 100 requests a second against a model
// that fails everything, each request wanting two retries of its own: at
// 20 % and a floor of 10/s, about 20 + 10 retries a second get through,
// not 200.
func TestRetryBudgetSteadyTraffic(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 10, clock.now)
	const seconds, warmup = 80, 20
	retries := 0
	for s := range seconds {
		for range 100 {
			b.Request(budgetModel)
			for range 2 {
				if b.TryRetry(budgetModel) && s >= warmup {
					retries++
				}
			}
			clock.advance(10 * time.Millisecond)
		}
	}
	perSecond := float64(retries) / (seconds - warmup)
	if perSecond < 28 || perSecond > 32 {
		t.Errorf("%.1f retries/s pass at 100 req/s, 20%% and floor 10; want about 30", perSecond)
	}
}

// TestRetryBudgetPacedRetriesNeverRefused: retries that wait for the
// upstream's hint pass however many there are, even with the budget spent,
// and they add to the volume that earns own retries.
func TestRetryBudgetPacedRetriesNeverRefused(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 0, clock.now)
	for range 10 {
		b.Request(budgetModel)
	}
	for b.TryRetry(budgetModel) {
	}
	// Spent: 2 own retries for 10 requests. Paced retries are not asked
	// for permission; 40 of them make the volume 50, worth 10 own retries.
	for range 40 {
		b.Paced(budgetModel)
	}
	n := 0
	for b.TryRetry(budgetModel) {
		n++
	}
	if n != 8 {
		t.Errorf("after 40 paced retries, %d more own retries pass, want 8 (20%% of 50, less the 2 taken)", n)
	}
}

// TestRetryBudgetPerModel: one model's failures spend its own budget, not
// another's.
func TestRetryBudgetPerModel(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 1, clock.now)
	for range 100 {
		b.Request("failing")
		b.Request("healthy")
	}
	for b.TryRetry("failing") {
	}
	n := 0
	for b.TryRetry("healthy") {
		n++
	}
	if n != 30 {
		t.Errorf("after another model spent its budget, %d retries pass, want 30 (20%% of 100 plus floor 10)", n)
	}
}

// TestRetryBudgetBoundedModels: model names are client input; beyond the
// bound, models share one more window, and idle ones make room.
func TestRetryBudgetBoundedModels(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(0, 1, clock.now)
	for i := range maxBudgetModels {
		b.Request(fmt.Sprint("m-", i))
	}
	for i := range 20 {
		b.TryRetry(fmt.Sprint("extra-", i))
	}
	if len(b.models) != maxBudgetModels {
		t.Fatalf("%d models kept, bound %d", len(b.models), maxBudgetModels)
	}
	// The extra models shared the overflow window: its floor of 10 is gone.
	if b.TryRetry("extra-99") {
		t.Error("the overflow window allowed more than its floor")
	}
	// Ten seconds later every window is empty and a new model gets its own.
	clock.advance(budgetWindow * time.Second)
	b.Request("late")
	if _, found := b.models["late"]; !found || len(b.models) != maxBudgetModels {
		t.Errorf("no room made from idle models (found %v, %d kept)", found, len(b.models))
	}
}

// TestRetryBudgetFloor checks that with no traffic the floor alone allows
// minPerSecond retries a second on average.
func TestRetryBudgetFloor(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 10, clock.now)
	const seconds = 60
	retries := 0
	for range seconds * 10 {
		for b.TryRetry(budgetModel) {
			retries++
		}
		clock.advance(100 * time.Millisecond)
	}
	if retries != 10*seconds {
		t.Errorf("%d retries in %d s with no traffic, want %d", retries, seconds, 10*seconds)
	}
}

// TestRetryBudgetWindowSlides checks that requests earn retries only while
// they are in the ten-second window, and spent retries come back as they
// leave it.
func TestRetryBudgetWindowSlides(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 1, clock.now)
	for range 100 {
		b.Request(budgetModel)
	}
	take := func() int {
		n := 0
		for b.TryRetry(budgetModel) {
			n++
		}
		return n
	}
	if n := take(); n != 20+10 {
		t.Fatalf("after 100 requests: %d retries, want 20 + floor 10", n)
	}
	clock.advance(9 * time.Second)
	if n := take(); n != 0 {
		t.Fatalf("9 s later, all still in the window: %d retries, want 0", n)
	}
	clock.advance(time.Second)
	// The requests and the retries they paid for have left the window.
	if n := take(); n != 10 {
		t.Fatalf("10 s later: %d retries, want the floor 10", n)
	}
}

// TestRetryBudgetZero checks that a zero budget allows no own retries at
// all, and still lets paced ones through.
func TestRetryBudgetZero(t *testing.T) {
	b := NewRetryBudget(0, 0, newManualClock().now)
	for range 100 {
		b.Request(budgetModel)
		b.Paced(budgetModel)
	}
	if b.TryRetry(budgetModel) {
		t.Error("zero budget allowed a retry")
	}
	if b := NewRetryBudget(-5, -1, nil); b.TryRetry(budgetModel) {
		t.Error("negative budget allowed a retry")
	}
}

func TestRetryBudgetNil(t *testing.T) {
	var b *RetryBudget
	b.Request(budgetModel)
	b.Paced(budgetModel)
	for range 1000 {
		if !b.TryRetry(budgetModel) {
			t.Fatal("nil budget refused a retry")
		}
	}
}

// TestRetryBudgetConcurrent checks under -race that concurrent callers never
// overspend: with the clock still, allowed retries stay within 20 % of the
// requests plus the floor.
func TestRetryBudgetConcurrent(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 1, clock.now)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.Request(budgetModel)
				if b.TryRetry(budgetModel) {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got, limit := allowed.Load(), int64(8000*20/100+10); got > limit || got < limit-1 {
		t.Errorf("%d retries allowed for 8000 requests, want %d", got, limit)
	}
}

func TestRetryBudgetNoAllocs(t *testing.T) {
	b := NewRetryBudget(20, 10, nil)
	model := string([]byte(budgetModel))
	b.Request(model)
	if n := testing.AllocsPerRun(100, func() { b.Request(model); b.Paced(model); b.TryRetry(model) }); n != 0 {
		t.Errorf("%v allocations per request and retry", n)
	}
}

func BenchmarkRetryBudget(b *testing.B) {
	budget := NewRetryBudget(20, 10, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.Request(budgetModel)
			budget.TryRetry(budgetModel)
		}
	})
}
