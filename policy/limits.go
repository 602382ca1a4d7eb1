package policy

import "time"

// Demand is what one request asks of one zone: the zone (never nil), and the
// value of its key placeholder for this request ("" for a zone without a
// key). A request is in every zone its handler names, each at most once.
type Demand struct {
	Zone *Zone
	Key  string
}

// Admission is a request admitted by Admit: what it reserved, kept so that
// Settle and Cancel can correct the buckets once the outcome is known. It
// belongs to its request: its methods are not for concurrent use on the same
// Admission. The zero Admission (what a refusal returns) holds nothing, and
// its methods do nothing.
type Admission struct {
	demands   []Demand
	tokens    int64 // tokens the request holds in every zone: the reservation, then the last settlement
	settled   bool
	cancelled bool
}

// Refusal tells why Admit turned a request away, for the 429 the gateway
// writes instead of calling upstream (SPEC "Limits").
type Refusal struct {
	// Zone is the name of the zone that refused.
	Zone string
	// Retry is how long until the zone could admit the request without
	// waiting: the source of retry-after-ms and retry-after.
	Retry time.Duration
	// Never means the request asks for more tokens than the zone's whole
	// bucket, so no wait will ever let it through (x-should-retry: false).
	Never bool
	// Status is the refusing zone's state for the key, for the dialect's
	// rate-limit headers.
	Status ZoneStatus
}

// Admit reserves one request and tokens (the estimated input plus the output
// cap, SPEC "Limits") in every zone of demands at now, and returns the delay
// the caller must sleep before sending the request (0: send now).
//
// A zone lets a request wait for capacity up to its Wait, and no zone up to
// more than maxWait, which the caller derives from its max_wait and the time
// left before its deadline. Because a reservation that must wait is taken at
// once, the buckets themselves order waiting requests by arrival (see
// bucket): a later request never overtakes an earlier one. The delay is the
// longest wait of any zone.
//
// It is all or nothing: when a zone refuses, the reservations already taken in
// the zones before it are given back at the same instant, so a refused
// request leaves every bucket as it found it. For a moment between the two
// steps those zones look fuller than they are; a concurrent request there may
// see a slightly longer wait. This is what makes the rule hold for zones kept
// in different stores (one local, one in Redis), where no single lock spans
// both. A request with more tokens than some zone's capacity is refused with
// Never before any bucket is touched.
//
// Admit keeps demands in the Admission; the caller must not change the slice
// until it has settled or cancelled. It allocates nothing unless it refuses.
func Admit(demands []Demand, tokens int64, maxWait time.Duration, now time.Time) (Admission, time.Duration, *Refusal) {
	tokens = max(tokens, 0)
	maxWait = max(maxWait, 0)
	for _, d := range demands {
		if !(bucket{capacity: d.Zone.cfg.TPM}).fits(tokens) {
			return Admission{}, 0, &Refusal{Zone: d.Zone.cfg.Name, Never: true, Status: d.Zone.store.Status(d.Key, now)}
		}
	}
	var delay time.Duration
	for i, d := range demands {
		wait, ok := d.Zone.store.Reserve(d.Key, 1, tokens, min(d.Zone.cfg.Wait, maxWait), now)
		if !ok {
			for _, taken := range demands[:i] {
				taken.Zone.store.Adjust(taken.Key, -1, -tokens, now)
			}
			return Admission{}, 0, &Refusal{Zone: d.Zone.cfg.Name, Retry: wait, Status: d.Zone.store.Status(d.Key, now)}
		}
		delay = max(delay, wait)
	}
	return Admission{demands: demands, tokens: tokens}, delay, nil
}

// Cancel gives back everything the admission reserved, for a request that
// never went upstream: its client left while it was queued, or its deadline
// came first. Requests queued behind it keep their place; the capacity goes
// to the next arrivals. It does nothing after Settle or a previous Cancel.
func (a *Admission) Cancel(now time.Time) {
	if a.settled || a.cancelled {
		return
	}
	a.cancelled = true
	for _, d := range a.demands {
		d.Zone.store.Adjust(d.Key, -1, -a.tokens, now)
	}
}

// Settle corrects the token buckets to actualTokens, the usage the request
// really had (input plus output, from the response's usage or from what a
// failed or cut call is known to have used): a reservation above it is
// refunded, and usage above it is charged, which may leave a bucket below
// zero so that later requests wait for the debt. Settle may be called again
// with a newer total, for example as a long stream reports usage; each call
// settles to the total it is given. It does nothing after Cancel.
func (a *Admission) Settle(actualTokens int64, now time.Time) {
	if a.cancelled {
		return
	}
	a.settled = true
	actualTokens = max(actualTokens, 0)
	delta := actualTokens - a.tokens
	if delta == 0 {
		return
	}
	a.tokens = actualTokens
	for _, d := range a.demands {
		d.Zone.store.Adjust(d.Key, 0, delta, now)
	}
}

// Status returns the tightest state across the admission's zones at now, for
// the dialect's rate-limit headers on a successful response: for requests and
// for tokens separately, the zone with the fewest remaining (on a tie, the
// longer reset), since every request costs the same in each zone and the one
// with least left is the one that will refuse first. Dimensions no zone
// limits stay zero.
func (a Admission) Status(now time.Time) ZoneStatus {
	var tight ZoneStatus
	for _, d := range a.demands {
		zs := d.Zone.store.Status(d.Key, now)
		if zs.RequestsLimit > 0 && (tight.RequestsLimit == 0 || zs.RequestsRemaining < tight.RequestsRemaining ||
			zs.RequestsRemaining == tight.RequestsRemaining && zs.RequestsReset > tight.RequestsReset) {
			tight.RequestsLimit, tight.RequestsRemaining, tight.RequestsReset = zs.RequestsLimit, zs.RequestsRemaining, zs.RequestsReset
		}
		if zs.TokensLimit > 0 && (tight.TokensLimit == 0 || zs.TokensRemaining < tight.TokensRemaining ||
			zs.TokensRemaining == tight.TokensRemaining && zs.TokensReset > tight.TokensReset) {
			tight.TokensLimit, tight.TokensRemaining, tight.TokensReset = zs.TokensLimit, zs.TokensRemaining, zs.TokensReset
		}
	}
	return tight
}
