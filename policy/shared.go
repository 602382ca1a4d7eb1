package policy

import (
	"fmt"
	"time"
)

// SharedStore holds the buckets of fleet zones for every Caddy instance that
// reaches it (Redis or Valkey), so that a fleet admits what one bucket
// allows. It speaks in spans of refill time rather than requests and tokens:
// the zones turn counts into spans with their current capacities, so the
// store keeps no settings and a reload's new capacities apply at once, and
// the store applies ShiftDebt and WaitOf, the rule every store shares.
//
// All of a request's fleet zones go to the store in one Reserve, which the
// store decides atomically on its own clock; settlements and cancellations
// go through Adjust, which the store may delay and merge. A store must be
// safe for concurrent use.
type SharedStore interface {
	// Reserve takes every charge in cs together when none would leave the
	// request waiting longer than its Bound: it returns the longest wait
	// and -1. Otherwise it takes nothing and returns the index of the first
	// charge that would wait too long, with that wait. Either way debts[i]
	// receives the debts of cs[i]'s buckets: after the reservation, or as
	// they stand when refused. A charge whose spans are both Unlimited or
	// zero takes nothing and only reads. An error means the store did not
	// answer; what it took, if anything, is unknown.
	Reserve(cs []Charge, debts []Debt) (wait time.Duration, refused int, err error)
	// Adjust moves buckets by cs without any bound, later and off the
	// request path: settlements, cancellations, and what an instance
	// admitted on its own while the store was unreachable. It never blocks
	// on the store.
	Adjust(cs []Charge)
	// Health reports the store's state as last observed.
	Health() StoreHealth
	// KeyName returns the name the store gives the buckets of a key value
	// (a hash: no value reaches the store), for Peek.
	KeyName(key string) string
	// Peek reads, in one call and without taking anything, the debts of
	// zone's buckets for keys named by KeyName into debts.
	Peek(zone string, names []string, debts []Debt) error
}

// Charge is what one request asks of one fleet zone's two buckets.
type Charge struct {
	// Zone is the zone's name and Key its key value for the request ("" for
	// a zone without a key). The store names the buckets after both,
	// hashing the key, which may be a credential.
	Zone, Key string
	// Requests and Tokens are how far each bucket's full instant moves, in
	// nanoseconds: positive to take, negative to give back. In Reserve,
	// Unlimited marks a bucket the zone does not limit.
	Requests, Tokens int64
	// Bound is the longest the request may wait in this zone (Reserve
	// only).
	Bound time.Duration
}

// Unlimited marks, in a Charge for Reserve, a bucket that its zone does not
// limit: the store neither takes from it nor waits for it.
const Unlimited = -1

// Debt is the state of a zone's two buckets for one key: how long each
// takes to be full again, in nanoseconds (zero or less when full).
type Debt struct {
	Requests, Tokens int64
}

// StoreHealth is a SharedStore's state as the request path needs it.
type StoreHealth struct {
	// Down is true while the store is considered unreachable: after
	// consecutive errors or timeouts, until a probe succeeds.
	Down bool
	// OnUnavailable is what fleet zones do while the store is down, or when
	// a call to it fails.
	OnUnavailable Fallback
	// Instances is the number of live instances the store reported last
	// (at least 1): each one's share of a zone while the store is down.
	Instances int
}

// Fallback is what fleet zones do when their store cannot be reached.
type Fallback uint8

const (
	// FallbackLocal limits each instance alone to its share of every zone
	// (the capacity divided by the live instances it last saw), and hands
	// what it admitted back to the store when it returns.
	FallbackLocal Fallback = iota
	// FallbackDeny refuses fleet-limited requests with a 503 until the
	// store returns.
	FallbackDeny
	// FallbackAllow stops limiting fleet zones until the store returns.
	FallbackAllow
)

// ParseFallback reads `local`, `deny` or `allow`.
func ParseFallback(s string) (Fallback, error) {
	switch s {
	case "local":
		return FallbackLocal, nil
	case "deny":
		return FallbackDeny, nil
	case "allow":
		return FallbackAllow, nil
	}
	return 0, fmt.Errorf("on_unavailable must be local, deny or allow, not %q", s)
}

// String returns the fallback's configuration word.
func (f Fallback) String() string {
	switch f {
	case FallbackDeny:
		return "deny"
	case FallbackAllow:
		return "allow"
	}
	return "local"
}
