package policy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRetryBudgetSteadyTraffic runs 100 requests a second against an
// upstream that fails everything, each request wanting two retries: at 20 %
// and a floor of 10/s, about 20 + 10 retries a second get through, not 200.
func TestRetryBudgetSteadyTraffic(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 10, clock.now)
	const seconds, warmup = 80, 20
	retries := 0
	for s := range seconds {
		for range 100 {
			b.Request()
			for range 2 {
				if b.TryRetry() && s >= warmup {
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

// TestRetryBudgetFloor checks that with no traffic the floor alone allows
// minPerSecond retries a second on average.
func TestRetryBudgetFloor(t *testing.T) {
	clock := newManualClock()
	b := NewRetryBudget(20, 10, clock.now)
	const seconds = 60
	retries := 0
	for range seconds * 10 {
		for b.TryRetry() {
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
		b.Request()
	}
	take := func() int {
		n := 0
		for b.TryRetry() {
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

// TestRetryBudgetZero checks that a zero budget allows no retries at all.
func TestRetryBudgetZero(t *testing.T) {
	b := NewRetryBudget(0, 0, newManualClock().now)
	for range 100 {
		b.Request()
	}
	if b.TryRetry() {
		t.Error("zero budget allowed a retry")
	}
	if b := NewRetryBudget(-5, -1, nil); b.TryRetry() {
		t.Error("negative budget allowed a retry")
	}
}

func TestRetryBudgetNil(t *testing.T) {
	var b *RetryBudget
	b.Request()
	for range 1000 {
		if !b.TryRetry() {
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
				b.Request()
				if b.TryRetry() {
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
	if n := testing.AllocsPerRun(100, func() { b.Request(); b.TryRetry() }); n != 0 {
		t.Errorf("%v allocations per request and retry", n)
	}
}

func BenchmarkRetryBudget(b *testing.B) {
	budget := NewRetryBudget(20, 10, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.Request()
			budget.TryRetry()
		}
	})
}
