package policy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// rndTop returns k-1, the largest value rand.Int64N may return, so Delay
// shows its ceiling minus one nanosecond.
func rndTop(k int64) int64 { return k - 1 }

// rndZero returns 0, the smallest value rand.Int64N may return.
func rndZero(int64) int64 { return 0 }

func TestBackoffDelayCeiling(t *testing.T) {
	b := Backoff{Base: 500 * time.Millisecond, Max: 8 * time.Second}
	tests := []struct {
		n       int
		ceiling time.Duration
	}{
		{-5, 500 * time.Millisecond},
		{-1, 500 * time.Millisecond},
		{0, 500 * time.Millisecond},
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{4, 8 * time.Second},
		{5, 8 * time.Second},
		{30, 8 * time.Second},
		{61, 8 * time.Second},
		{62, 8 * time.Second},
		{63, 8 * time.Second},
		{64, 8 * time.Second},
		{65, 8 * time.Second},
		{1000, 8 * time.Second},
		{math.MaxInt, 8 * time.Second},
	}
	for _, tt := range tests {
		var gotK int64
		got := b.Delay(tt.n, func(k int64) int64 { gotK = k; return k - 1 })
		if time.Duration(gotK) != tt.ceiling {
			t.Errorf("Delay(%d) asked rnd for [0, %v), want [0, %v)", tt.n, time.Duration(gotK), tt.ceiling)
		}
		if got != tt.ceiling-1 {
			t.Errorf("Delay(%d) with top rnd = %v, want %v", tt.n, got, tt.ceiling-1)
		}
		if got := b.Delay(tt.n, rndZero); got != 0 {
			t.Errorf("Delay(%d) with zero rnd = %v, want 0", tt.n, got)
		}
	}
}

func TestBackoffDelayEdges(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		n       int
		ceiling time.Duration // 0: Delay must return 0 without calling rnd
	}{
		{"zero base", Backoff{0, 8 * time.Second}, 3, 0},
		{"negative base", Backoff{-time.Second, 8 * time.Second}, 0, 0},
		{"zero max", Backoff{time.Second, 0}, 0, 0},
		{"negative max", Backoff{time.Second, -time.Second}, 2, 0},
		{"zero value", Backoff{}, 0, 0},
		{"base above max", Backoff{10 * time.Second, 3 * time.Second}, 0, 3 * time.Second},
		{"base above max late", Backoff{10 * time.Second, 3 * time.Second}, 70, 3 * time.Second},
		{"base equals max", Backoff{time.Second, time.Second}, 0, time.Second},
		{"one nanosecond", Backoff{1, 1}, 0, 1},
		{"doubling reaches max exactly", Backoff{time.Second, 4 * time.Second}, 2, 4 * time.Second},
		{"doubling one past max", Backoff{time.Second, 4*time.Second - 1}, 2, 4*time.Second - 1},
		{"max duration base", Backoff{math.MaxInt64, math.MaxInt64}, 0, math.MaxInt64},
		{"max duration cap", Backoff{1, math.MaxInt64}, 62, 1 << 62},
		{"max duration cap at 63", Backoff{1, math.MaxInt64}, 63, math.MaxInt64},
		{"large base shift overflows", Backoff{1 << 40, math.MaxInt64}, 23, 1<<63 - 1},
		{"large base shift fits", Backoff{1 << 40, math.MaxInt64}, 22, 1 << 62},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			got := tt.b.Delay(tt.n, func(k int64) int64 {
				called = true
				if k <= 0 {
					t.Fatalf("rnd called with k = %d; rand.Int64N would panic", k)
				}
				if time.Duration(k) != tt.ceiling {
					t.Errorf("rnd called with k = %v, want %v", time.Duration(k), tt.ceiling)
				}
				return k - 1
			})
			if tt.ceiling == 0 {
				if called || got != 0 {
					t.Errorf("Delay = %v (rnd called: %v), want 0 without calling rnd", got, called)
				}
				return
			}
			if got != tt.ceiling-1 {
				t.Errorf("Delay = %v, want %v", got, tt.ceiling-1)
			}
		})
	}
}

// TestBackoffDelayRandom checks the real generator stays within bounds and
// actually spreads values over the interval: full jitter, not a constant.
func TestBackoffDelayRandom(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: 8 * time.Second}
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 12 {
		ceiling := min(b.Max, b.Base<<n)
		var low, high int
		const draws = 2000
		for range draws {
			d := b.Delay(n, r.Int64N)
			if d < 0 || d >= ceiling {
				t.Fatalf("Delay(%d) = %v, outside [0, %v)", n, d, ceiling)
			}
			if d < ceiling/2 {
				low++
			} else {
				high++
			}
		}
		// A uniform draw lands in each half about 1000 times; 850 is more
		// than six standard deviations away.
		if low < 850 || high < 850 {
			t.Errorf("Delay(%d): %d draws below half the ceiling, %d above; want about even", n, low, high)
		}
	}
}

func TestBackoffDelayNoAlloc(t *testing.T) {
	b := Backoff{Base: 500 * time.Millisecond, Max: 8 * time.Second}
	if a := testing.AllocsPerRun(100, func() { b.Delay(3, rndTop) }); a != 0 {
		t.Errorf("Delay allocates %v times per call, want 0", a)
	}
}
