package policy

import "time"

// Backoff is exponential backoff with full jitter, the `backoff <base> [<max>]`
// setting (default 500ms 8s, the same base and cap the official SDKs use: see
// retryDelay in anthropic-sdk-go internal/requestconfig/requestconfig.go).
//
// Full jitter (a uniform wait anywhere below the ceiling) rather than the SDKs'
// "minus up to 25 %" is deliberate: the gateway retries on behalf of many
// clients at once, and spreading their retries over the whole interval is what
// keeps a shared upstream from seeing them arrive in synchronised waves.
type Backoff struct {
	// Base is the ceiling of the first retry's wait; it doubles per retry.
	Base time.Duration
	// Max caps the ceiling, so late retries do not wait unboundedly long.
	Max time.Duration
}

// Delay returns the wait before retry number n (n=0 is the first retry): a
// uniformly random duration in [0, min(Max, Base·2^n)). rnd must return a
// uniform int64 in [0, k) for k > 0; pass math/rand/v2's Int64N, or a fixed
// function in tests.
//
// The ceiling is computed without overflow for any n, so a long retry chain
// simply stays at Max. A non-positive Base or Max gives a ceiling of 0, and
// then the delay is 0 without calling rnd (whose contract forbids k = 0). A
// negative n is treated as 0.
func (b Backoff) Delay(n int, rnd func(int64) int64) time.Duration {
	if b.Base <= 0 || b.Max <= 0 {
		return 0
	}
	n = max(n, 0)
	ceiling := b.Max
	// Base·2^n ≤ Max exactly when Base ≤ ⌊Max/2^n⌋, and then the shift cannot
	// overflow because its result is at most Max. Shifting a positive value
	// right by 63 or more gives 0, so huge n lands on Max.
	if b.Base <= b.Max>>uint(n) {
		ceiling = b.Base << uint(n)
	}
	return time.Duration(rnd(int64(ceiling)))
}
