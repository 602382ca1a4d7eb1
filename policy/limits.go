package policy

import "time"

// Demand is what one request asks of one zone: the zone (never nil), and the
// value of its key placeholder for this request ("" for a zone without a
// key). A request is in every zone its handler names, each at most once.
type Demand struct {
	Zone *Zone
	Key  string
	// debt is, for a fleet zone its store admitted, the buckets' debts
	// right after the reservation: what Admission.Status reads.
	debt Debt
}

// Admission is a request admitted by Admit: what it reserved, kept so that
// Settle and Cancel can correct the buckets once the outcome is known. It
// belongs to its request: its methods are not for concurrent use on the same
// Admission. The zero Admission (what a refusal returns) holds nothing, and
// its methods do nothing.
type Admission struct {
	demands   []Demand
	tokens    int64 // tokens the request holds in every zone: the reservation, then the last settlement
	fleet     fleetPath
	at        time.Time // when the fleet store's debts were read
	settled   bool
	cancelled bool
}

// fleetPath is how an admission's fleet zones admitted it.
type fleetPath uint8

const (
	fleetNone  fleetPath = iota // the request is in no fleet zone
	fleetStore                  // the shared store admitted it
	fleetShare                  // the store was unreachable: this instance's shares admitted it
	fleetOpen                   // the store was unreachable, and fleet zones do not limit meanwhile
)

// Refusal tells why Admit turned a request away, for the 429 the gateway
// writes instead of calling upstream.
type Refusal struct {
	// Zone is the name of the zone that refused.
	Zone string
	// Retry is how long until the zone could admit the request without
	// waiting: the source of retry-after-ms and retry-after.
	Retry time.Duration
	// Never means the request asks for more tokens than the zone's whole
	// bucket, so no wait will ever let it through (x-should-retry: false).
	Never bool
	// Unavailable means the zone's shared store cannot be reached and the
	// zones refuse meanwhile (on_unavailable deny): a 503, not a 429.
	Unavailable bool
	// Status is the refusing zone's state for the key, for the dialect's
	// rate-limit headers.
	Status ZoneStatus
}

// unavailableRetry is the retry hint of a refusal for an unreachable store:
// the store is probed more often than that, so a retry after it finds the
// store back if it has returned.
const unavailableRetry = time.Second

// Admit reserves one request and tokens (the estimated input plus the output
// cap, as OpenAI counts max_tokens against TPM up front) in every zone of
// demands at now, and returns the delay the caller must sleep before sending
// the request (0: send now).
//
// A zone lets a request wait for capacity up to its Wait, and no zone up to
// more than maxWait, which the caller derives from its max_wait and the time
// left before its deadline. Because a reservation that must wait is taken at
// once, the buckets themselves order waiting requests by arrival (see
// bucket): a later request never overtakes an earlier one. The delay is the
// longest wait of any zone.
//
// It is all or nothing. The instance zones are reserved first, one by one;
// the fleet zones then go to their store in one call, which decides them all
// atomically. When a zone refuses, the reservations already taken are given
// back at the same instant, so a refused request leaves every bucket as it
// found it. For a moment between the two steps the instance zones look
// fuller than they are; a concurrent request there may see a slightly
// longer wait. A request with more tokens than some zone's capacity is
// refused with Never before any bucket is touched. Every fleet zone of one
// request must share one store.
//
// When the fleet store cannot be reached, the fleet zones do what its
// StoreHealth.OnUnavailable says: limit with this instance's share of each,
// refuse with Unavailable, or admit without limit. An unreachable store
// alone never refuses a request otherwise.
//
// Admit keeps demands in the Admission and writes into it; the caller must
// not change the slice until it has settled or cancelled. With instance
// zones only, it allocates nothing unless it refuses.
func Admit(demands []Demand, tokens int64, maxWait time.Duration, now time.Time) (Admission, time.Duration, *Refusal) {
	tokens = max(tokens, 0)
	maxWait = max(maxWait, 0)
	var shared SharedStore
	t := now.UnixNano()
	for _, d := range demands {
		d.Zone.touch(d.Key, t)
		if !(bucket{capacity: d.Zone.cfg.TPM}).fits(tokens) {
			return Admission{}, 0, &Refusal{Zone: d.Zone.cfg.Name, Never: true, Status: d.Zone.Status(d.Key, now)}
		}
		if d.Zone.shared != nil {
			shared = d.Zone.shared
		}
	}
	delay, refusal := reserveIn(demands, tokens, maxWait, now, instanceStore, 0)
	if refusal != nil {
		return Admission{}, 0, refusal
	}
	a := Admission{demands: demands, tokens: tokens}
	if shared != nil {
		wait, refusal := a.reserveFleet(shared, maxWait, now)
		if refusal != nil {
			giveBackIn(demands, tokens, now, instanceStore, 0)
			return Admission{}, 0, refusal
		}
		delay = max(delay, wait)
	}
	return a, delay, nil
}

// instanceStore picks an instance zone's buckets.
func instanceStore(z *Zone, _ int, _ time.Time) *localStore { return z.store }

// shareStore picks a fleet zone's local share for n live instances.
func shareStore(z *Zone, n int, now time.Time) *localStore {
	if z.shared == nil {
		return nil
	}
	return z.shareFor(n, now)
}

// storePicker chooses the local buckets a demand's zone uses; nil skips the
// demand.
type storePicker func(z *Zone, instances int, now time.Time) *localStore

// reserveIn reserves one request and tokens in the local buckets pick gives
// each demand, all or nothing, and returns the longest wait. A share smaller
// than the request's tokens gives it the whole share: the request fits the
// zone, and an outage of the store must not refuse it for good.
func reserveIn(demands []Demand, tokens int64, maxWait time.Duration, now time.Time, pick storePicker, instances int) (time.Duration, *Refusal) {
	var delay time.Duration
	for i, d := range demands {
		s := pick(d.Zone, instances, now)
		if s == nil {
			continue
		}
		wait, ok := s.Reserve(d.Key, 1, s.clamp(tokens), min(d.Zone.cfg.Wait, maxWait), now)
		if !ok {
			giveBackIn(demands[:i], tokens, now, pick, instances)
			return 0, &Refusal{Zone: d.Zone.cfg.Name, Retry: wait, Status: s.Status(d.Key, now)}
		}
		delay = max(delay, wait)
	}
	return delay, nil
}

// giveBackIn returns what reserveIn took.
func giveBackIn(demands []Demand, tokens int64, now time.Time, pick storePicker, instances int) {
	for _, d := range demands {
		if s := pick(d.Zone, instances, now); s != nil {
			s.Adjust(d.Key, -1, -s.clamp(tokens), now)
		}
	}
}

// reserveFleet reserves the request in its fleet zones: in one call to
// their store, or, when the store cannot be reached, as its fallback says.
func (a *Admission) reserveFleet(s SharedStore, maxWait time.Duration, now time.Time) (time.Duration, *Refusal) {
	h := s.Health()
	if !h.Down {
		cs := a.charges(1, a.tokens, maxWait, true)
		debts := make([]Debt, len(cs))
		wait, refused, err := s.Reserve(cs, debts)
		if err == nil {
			return a.storeDecided(wait, refused, debts, now)
		}
	}
	var wait time.Duration
	switch h.OnUnavailable {
	case FallbackDeny:
		return 0, &Refusal{Zone: a.firstFleetZone().cfg.Name, Retry: unavailableRetry, Unavailable: true}
	case FallbackAllow:
		a.fleet = fleetOpen
	default:
		var refusal *Refusal
		if wait, refusal = reserveIn(a.demands, a.tokens, maxWait, now, shareStore, h.Instances); refusal != nil {
			return 0, refusal
		}
		a.fleet = fleetShare
	}
	// The store counts what this instance let through on its own, once it
	// is back.
	s.Adjust(a.charges(1, a.tokens, 0, false))
	return wait, nil
}

// storeDecided reads the store's answer to a Reserve.
func (a *Admission) storeDecided(wait time.Duration, refused int, debts []Debt, now time.Time) (time.Duration, *Refusal) {
	i := 0
	for j := range a.demands {
		d := &a.demands[j]
		if d.Zone.shared == nil {
			continue
		}
		if i == refused {
			return 0, &Refusal{Zone: d.Zone.cfg.Name, Retry: wait, Status: d.Zone.statusOfDebt(debts[i])}
		}
		d.debt = debts[i]
		i++
	}
	a.fleet, a.at = fleetStore, now
	return wait, nil
}

// charges returns the request's fleet zones as Charges of requests and
// tokens, in the order of its demands.
func (a *Admission) charges(requests, tokens int64, maxWait time.Duration, forReserve bool) []Charge {
	cs := make([]Charge, 0, len(a.demands))
	for _, d := range a.demands {
		if d.Zone.shared != nil {
			cs = append(cs, d.Zone.charge(d.Key, requests, tokens, min(d.Zone.cfg.Wait, maxWait), forReserve))
		}
	}
	return cs
}

// firstFleetZone returns the admission's first fleet zone.
func (a *Admission) firstFleetZone() *Zone {
	for _, d := range a.demands {
		if d.Zone.shared != nil {
			return d.Zone
		}
	}
	return nil
}

// adjust moves every bucket of the admission by requests and tokens: the
// instance zones' at once, the fleet zones' through their store, and their
// local shares too when those admitted the request.
func (a *Admission) adjust(requests, tokens int64, now time.Time) {
	for _, d := range a.demands {
		if d.Zone.store != nil {
			d.Zone.store.Adjust(d.Key, requests, tokens, now)
		}
	}
	if a.fleet == fleetNone {
		return
	}
	if a.fleet == fleetShare {
		for _, d := range a.demands {
			if sh := d.Zone.share.Load(); sh != nil && d.Zone.shared != nil {
				sh.store.Adjust(d.Key, requests, tokens, now)
			}
		}
	}
	a.firstFleetZone().shared.Adjust(a.charges(requests, tokens, 0, false))
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
	a.adjust(-1, -a.tokens, now)
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
	a.adjust(0, delta, now)
}

// Status returns the tightest state across the admission's zones at now, for
// the dialect's rate-limit headers on a successful response: for requests and
// for tokens separately, the zone with the fewest remaining (on a tie, the
// longer reset), since every request costs the same in each zone and the one
// with least left is the one that will refuse first. Dimensions no zone
// limits stay zero. A fleet zone is read as its store reported it at
// admission, refilled since, without another call; one that did not limit
// the request (its store unreachable) is left out.
func (a Admission) Status(now time.Time) ZoneStatus {
	var tight ZoneStatus
	for _, d := range a.demands {
		var zs ZoneStatus
		switch {
		case d.Zone.store != nil:
			zs = d.Zone.store.Status(d.Key, now)
		case a.fleet == fleetStore:
			elapsed := int64(now.Sub(a.at))
			zs = d.Zone.statusOfDebt(Debt{d.debt.Requests - elapsed, d.debt.Tokens - elapsed})
		case a.fleet == fleetShare && d.Zone.share.Load() != nil:
			zs = d.Zone.share.Load().store.Status(d.Key, now)
		default:
			continue
		}
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
