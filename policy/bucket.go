package policy

import (
	"math/bits"
	"time"
)

// Token buckets for the `limit` zones.
//
// `rpm` and `tpm` are token buckets like the providers' own: the capacity is
// the per-minute number, refilled continuously, a 60th of it each second.
// Anthropic documents its own limits as such a token bucket, replenished
// continuously up to the maximum rather than reset at fixed intervals
// (https://docs.anthropic.com/en/api/rate-limits), and OpenAI's
// x-ratelimit-reset-* headers report the time until the limit is back to its
// initial state (https://platform.openai.com/docs/guides/rate-limits), so a
// zone sized like the provider's limit refuses the requests the provider would.
//
// A bucket's state is a single instant: when it will be full again. This is
// the Generic Cell Rate Algorithm's "theoretical arrival time" (GCRA, as in
// github.com/rwz/redis-gcra and github.com/go-redis/redis_rate) read as a
// token bucket: the level at t is capacity·(1 − (full − t)/period), so taking
// n tokens moves the instant n·period/capacity later, refilling needs no
// write at all, and a full bucket is any instant at or before t. One int64 of
// nanoseconds is a fixed-point level that never drifts (no fractional token
// accumulates per update, unlike a float level with a last-update time such as
// golang.org/x/time/rate's), it is 8 bytes per bucket where a rate.Limiter
// is 80 (a mutex, two floats, an int and two time.Time), and it is the state
// the Redis store of the next issue keeps in its Lua script, so both stores
// agree.
//
// The level may go below zero: a reservation that does not fit yet is still
// taken, and the caller waits until the level is back to zero, deficit/rate.
// A later arrival then finds the instant pushed further and waits behind the
// earlier one: a zone's `wait` queues requests first come, first served, and
// this keeps that queue without any list of waiters.

// limitPeriod is the window of `rpm` and `tpm`: a bucket refills its whole
// capacity in one minute.
const limitPeriod = int64(time.Minute)

// maxDebt bounds how far past now a bucket's full instant may move (about 13
// days of refill). Admission never gets near it, because a reservation fits
// only within its wait bound; it only keeps the arithmetic from overflowing when
// settlement charges usage far above the whole capacity.
const maxDebt = int64(1) << 50

// bucket is the shape of one token bucket: its capacity, shared by every key of
// a zone, so that a tracked key stores nothing but its full instants. A zero
// capacity limits nothing: every operation leaves the state as it is and
// reserve never waits. The state arguments and results are nanoseconds on the
// zone's clock; the methods are pure, and the zone store runs them under the
// lock of the key's shard.
type bucket struct {
	capacity int64
}

// fits reports whether n tokens can ever be reserved: a request larger than the
// whole bucket would wait forever, so the gateway refuses it for good (a 429
// with x-should-retry: false, so SDKs do not retry it) rather than queueing it.
// golang.org/x/time/rate has the same boundary: WaitN fails with "exceeds
// limiter's burst" when n is above the burst.
func (b bucket) fits(n int64) bool {
	return b.capacity == 0 || n <= b.capacity
}

// span returns how long the bucket takes to refill n tokens, in nanoseconds:
// n·period/capacity computed in 128 bits, so no capacity or count overflows.
// It rounds down, so that capacity reservations of one token never take more
// than one period and a burst of N against capacity N admits all N; the error
// is below one nanosecond per reservation. Counts that would take longer than maxDebt
// saturate there.
func (b bucket) span(n int64) int64 {
	if n <= 0 || b.capacity <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(n), uint64(limitPeriod))
	if hi >= uint64(b.capacity) {
		return maxDebt
	}
	q, _ := bits.Div64(hi, lo, uint64(b.capacity))
	return int64(min(q, uint64(maxDebt)))
}

// reserve takes n tokens at t from a bucket full at full. It returns the new
// full instant and how long the caller must wait before the level is back to
// zero (0 when the tokens are there now). It never refuses: the caller
// compares the wait with its bound and keeps the old state to refuse, which
// lets a zone decide its request and token buckets together.
func (b bucket) reserve(full, t, n int64) (next, wait int64) {
	if b.capacity == 0 {
		return full, 0
	}
	debt := ShiftDebt(full-t, b.span(n))
	return t + debt, WaitOf(debt)
}

// adjust charges n tokens (n > 0) or gives back -n (n < 0) to a bucket full
// at full, at t, without any bound: settlement and cancellation report what
// already happened. A bucket never holds more than its capacity, so giving
// back does not move the full instant before t.
func (b bucket) adjust(full, t, n int64) int64 {
	if b.capacity == 0 {
		return full
	}
	return t + ShiftDebt(full-t, b.signedSpan(n))
}

// signedSpan is span for a count of either sign: negative for tokens given
// back.
func (b bucket) signedSpan(n int64) int64 {
	if n < 0 {
		return -b.span(-n)
	}
	return b.span(n)
}

// ShiftDebt is the one rule every store applies to a bucket: given its debt,
// the time until it is full again (zero or less when it is full), and a span
// of refill time to take (positive) or give back (negative), it returns the
// new debt. A full bucket owes nothing however long ago it filled, giving
// back never fills it beyond full, and taking saturates at maxDebt.
//
// The local store runs it under a shard lock; the fleet store runs the same
// rule in its server-side script and in the ledger it keeps while the store
// is unreachable, so that all three agree to the nanosecond.
func ShiftDebt(debt, span int64) int64 {
	return min(max(max(debt, 0)+span, 0), maxDebt)
}

// WaitOf is how long a request that left a bucket with debt must wait
// before the level is back to zero: the debt beyond one whole period.
func WaitOf(debt int64) int64 {
	return max(debt-limitPeriod, 0)
}

// MaxDebt is the longest debt ShiftDebt returns, for stores that must
// mirror it.
const MaxDebt = maxDebt

// LimitPeriod is the refill period of every bucket, for stores that must
// mirror WaitOf.
const LimitPeriod = limitPeriod

// status reads a bucket full at full at instant t: the whole tokens left
// (0 while reservations wait for refill) and the time until it is full again,
// which is what both providers' reset headers report: Anthropic as an RFC 3339
// instant, OpenAI as a duration such as "6m0s".
func (b bucket) status(full, t int64) (remaining int64, reset time.Duration) {
	return b.statusOfDebt(full - t)
}

// statusOfDebt reads a bucket that is full again in debt nanoseconds.
func (b bucket) statusOfDebt(debt int64) (remaining int64, reset time.Duration) {
	if b.capacity == 0 {
		return 0, 0
	}
	switch {
	case debt <= 0:
		return b.capacity, 0
	case debt >= limitPeriod:
		return 0, time.Duration(debt)
	}
	hi, lo := bits.Mul64(uint64(limitPeriod-debt), uint64(b.capacity))
	q, _ := bits.Div64(hi, lo, uint64(limitPeriod))
	return int64(q), time.Duration(debt)
}
