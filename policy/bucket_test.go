package policy

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

const sec = int64(time.Second)

func TestBucketSpan(t *testing.T) {
	cases := []struct {
		capacity, n, want int64
	}{
		{60, 1, sec},                // rpm 60: one request a second
		{60, 60, limitPeriod},       // the whole bucket refills in a minute
		{6000, 100, sec},            // tpm 6000: 100 tokens a second
		{7, 1, 8_571_428_571},       // 60 s / 7, rounded down
		{1, 1, limitPeriod},         // smallest bucket
		{60, 0, 0},                  // nothing takes no time
		{60, -5, 0},                 // negative counts are nothing
		{0, 100, 0},                 // an unlimited bucket never waits
		{1, math.MaxInt64, maxDebt}, // saturates instead of overflowing
		{math.MaxInt64, math.MaxInt64, limitPeriod},
		{3_000_000_000, 1, 20}, // huge capacities still resolve to nanoseconds
	}
	for _, c := range cases {
		if got := (bucket{c.capacity}).span(c.n); got != c.want {
			t.Errorf("capacity %d: span(%d) = %d, want %d", c.capacity, c.n, got, c.want)
		}
	}
}

// TestBucketBurst sends a burst of 2N single-token reservations at one
// instant: exactly N fit without waiting, whatever N's rounding, and the next
// would wait one token's refill time.
func TestBucketBurst(t *testing.T) {
	for _, n := range []int64{1, 7, 50, 60, 999, 4000, 1_000_000} {
		b := bucket{n}
		full, now := int64(0), int64(0)
		admitted := int64(0)
		for range 2 * n {
			next, wait := b.reserve(full, now, 1)
			if wait > 0 {
				continue
			}
			full = next
			admitted++
		}
		if admitted != n {
			t.Errorf("capacity %d: burst of %d admitted %d", n, 2*n, admitted)
		}
		if _, wait := b.reserve(full, now, 1); wait != b.span(1)-(limitPeriod-full) {
			t.Errorf("capacity %d: next wait %d, want %d", n, wait, b.span(1)-(limitPeriod-full))
		}
	}
}

// TestBucketBurstWithRefill spreads 2N arrivals evenly over 10 s: the bucket
// admits its capacity plus what refills during the burst, a sixth of it.
func TestBucketBurstWithRefill(t *testing.T) {
	const n = 600
	b := bucket{n}
	full, admitted := int64(0), 0
	step := 10 * sec / (2 * n)
	for i := range int64(2 * n) {
		next, wait := b.reserve(full, i*step, 1)
		if wait == 0 {
			full = next
			admitted++
		}
	}
	// Refill during the burst: 10 s at 10 tokens a second.
	if want := n + 100; admitted < want-1 || admitted > want {
		t.Errorf("admitted %d of %d, want %d (capacity %d + refill 100)", admitted, 2*n, want, n)
	}
}

func TestBucketRefillRate(t *testing.T) {
	b := bucket{6000} // 100 tokens a second
	full, _ := b.reserve(0, 0, 6000)
	for s := int64(0); s <= 70; s += 5 {
		rem, reset := b.status(full, s*sec)
		want := min(s*100, 6000)
		if rem != want {
			t.Errorf("after %d s: remaining %d, want %d", s, rem, want)
		}
		if wantReset := time.Duration(max(60-s, 0) * sec); reset != wantReset {
			t.Errorf("after %d s: reset %v, want %v", s, reset, wantReset)
		}
	}
	// Refill is continuous, not per second.
	if rem, _ := b.status(full, 10*time.Millisecond.Nanoseconds()); rem != 1 {
		t.Errorf("after 10 ms: remaining %d, want 1", rem)
	}
}

// TestBucketQueue shows that reservations beyond the level are ordered by
// arrival: each waits one refill longer than the one before.
func TestBucketQueue(t *testing.T) {
	b := bucket{60}
	full, _ := b.reserve(0, 0, 60)
	var last int64
	for i := int64(1); i <= 5; i++ {
		next, wait := b.reserve(full, 0, 1)
		if wait != i*sec || wait <= last {
			t.Fatalf("queued request %d waits %v, want %v", i, time.Duration(wait), time.Duration(i*sec))
		}
		full, last = next, wait
	}
	rem, reset := b.status(full, 0)
	if rem != 0 || reset != 65*time.Second {
		t.Errorf("queued bucket: remaining %d, reset %v; want 0, 65s", rem, reset)
	}
	// Waiting out its turn, the first queued request finds its token there.
	if rem, _ := b.status(full, 6*sec); rem != 1 {
		t.Errorf("after 6 s: remaining %d, want 1", rem)
	}
}

func TestBucketGive(t *testing.T) {
	b := bucket{100}
	full, _ := b.reserve(0, 0, 80)
	if got := b.adjust(full, 0, -30); got != b.span(50) {
		t.Errorf("give 30 of 80: full at %d, want %d", got, b.span(50))
	}
	// Giving back more than was taken stops at capacity.
	if got := b.adjust(full, 0, -1000); got != 0 {
		t.Errorf("give 1000: full at %d, want 0 (now)", got)
	}
	if rem, _ := b.status(b.adjust(full, 0, -1000), 0); rem != 100 {
		t.Errorf("over-give: remaining %d, want capacity 100", rem)
	}
	// A full bucket stays full: the instant never moves before now.
	if got := b.adjust(-5*sec, 3*sec, -10); got != 3*sec {
		t.Errorf("give to a full bucket: %d, want now", got)
	}
	// adjust charges without bound and gives back.
	deep := b.adjust(0, 0, 250)
	if rem, reset := b.status(deep, 0); rem != 0 || reset != 150*time.Second {
		t.Errorf("charged 250 of 100: remaining %d, reset %v; want 0, 2m30s", rem, reset)
	}
	if got := b.adjust(deep, 0, -250); got != 0 {
		t.Errorf("adjust back: %d, want 0", got)
	}
}

func TestBucketFits(t *testing.T) {
	b := bucket{1000}
	if !b.fits(1000) || b.fits(1001) || !b.fits(0) {
		t.Error("fits must accept up to the capacity and nothing more")
	}
	if !(bucket{}).fits(math.MaxInt64) {
		t.Error("an unlimited bucket fits anything")
	}
}

func TestBucketUnlimited(t *testing.T) {
	b := bucket{}
	if next, wait := b.reserve(7, 100, 1<<40); next != 7 || wait != 0 {
		t.Errorf("unlimited reserve = %d, %d; want state kept and no wait", next, wait)
	}
	if b.adjust(7, 100, -5) != 7 || b.adjust(7, 100, 5) != 7 {
		t.Error("unlimited give/adjust must keep the state")
	}
	if rem, reset := b.status(7, 0); rem != 0 || reset != 0 {
		t.Error("unlimited status must be zero")
	}
}

// TestBucketDebtSaturates charges far beyond any capacity: the state stays
// within maxDebt of now instead of overflowing.
func TestBucketDebtSaturates(t *testing.T) {
	b := bucket{1}
	full := int64(0)
	for range 100 {
		full = b.adjust(full, 0, math.MaxInt64)
	}
	if full != maxDebt {
		t.Errorf("full at %d, want %d", full, maxDebt)
	}
	if _, wait := b.reserve(full, 0, 1); wait != maxDebt-limitPeriod {
		t.Errorf("wait %d, want %d", wait, maxDebt-limitPeriod)
	}
}

// FuzzBucket runs a sequence of operations against a bucket and a textbook
// token bucket (a float level refilled at capacity/60 per second, allowed to
// go negative) and checks that they agree within rounding, that the level
// never exceeds the capacity and that nothing panics.
func FuzzBucket(f *testing.F) {
	f.Add(uint32(60), []byte{0, 1, 0, 1, 2, 30, 1, 5, 3, 0, 0})
	f.Add(uint32(1_000_000), []byte{0, 200, 0, 255, 1, 10, 2, 0, 3, 3, 0, 7})
	f.Add(uint32(7), []byte{0, 7, 0, 7, 3, 9, 2, 200, 0, 1})
	f.Fuzz(func(t *testing.T, capacity uint32, ops []byte) {
		if capacity == 0 {
			return
		}
		c := int64(capacity)
		b := bucket{c}
		rate := float64(c) / float64(limitPeriod) // tokens per nanosecond
		var full, now int64
		level := float64(c) // reference level at now
		steps := int64(0)
		for len(ops) >= 3 {
			op, arg := ops[0]%4, int64(binary.LittleEndian.Uint16(ops[1:3]))
			ops = ops[3:]
			steps++
			n := arg * max(c/1000, 1) // up to ~65 × capacity
			switch op {
			case 0: // reserve
				next, wait := b.reserve(full, now, n)
				if next-now >= maxDebt {
					return // beyond the overflow guard the reference model no longer applies
				}
				level -= float64(n)
				want := max(-level/rate, 0)
				if d := math.Abs(float64(wait) - want); d > float64(steps)+1+want*1e-9 {
					t.Fatalf("reserve %d: wait %d, reference %.0f", n, wait, want)
				}
				full = next
			case 1: // give back
				full = b.adjust(full, now, -n)
				level = min(level+float64(n), float64(c))
			case 2: // let time pass: up to ~18 minutes
				dt := arg * 16 * int64(time.Millisecond)
				now += dt
				level = min(level+float64(dt)*rate, float64(c))
			case 3: // charge without bound
				full = b.adjust(full, now, n)
				level -= float64(n)
			}
			if full-now >= maxDebt {
				return
			}
			rem, reset := b.status(full, now)
			if rem < 0 || rem > c || reset < 0 {
				t.Fatalf("status out of range: remaining %d of %d, reset %v", rem, c, reset)
			}
			// The level, from the state, never exceeds the capacity.
			if got := float64(c) - float64(max(full-now, 0))*rate; got > float64(c) {
				t.Fatalf("level %f above capacity %d", got, c)
			}
			ref := math.Floor(max(level, 0))
			if math.Abs(float64(rem)-ref) > 1+float64(c)*1e-9*float64(steps) {
				t.Fatalf("remaining %d, reference %.0f (level %f)", rem, ref, level)
			}
		}
	})
}
