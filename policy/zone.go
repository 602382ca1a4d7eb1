package policy

import (
	"errors"
	"fmt"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxKeys is how many keys a zone tracks when its configuration names
// no bound: enough for every team, user or API key of a large organisation,
// and small enough that a client inventing a new key per request cannot
// exhaust memory: about 6 MB when full, at some 64 bytes per key (measured in
// zone_test.go).
const DefaultMaxKeys = 100_000

// ZoneConfig is one `limit <zone> { key; rpm; tpm; wait }` block as the
// store needs it. The key placeholder itself stays with the caller: it
// resolves it per request and passes the value in a Demand, "" for a zone
// without a key, which then has one bucket pair for everyone.
type ZoneConfig struct {
	// Name is the zone's name; handlers naming the same zone share it.
	Name string
	// RPM is the request bucket's capacity, refilled over a minute. 0 means
	// requests are not limited.
	RPM int64
	// TPM is the token bucket's capacity, refilled over a minute. 0 means
	// tokens are not limited.
	TPM int64
	// Wait is how long a request may queue for capacity; 0 refuses at once.
	Wait time.Duration
	// MaxKeys bounds how many keys the zone tracks; 0 means DefaultMaxKeys.
	MaxKeys int
}

// ZoneStatus describes a zone's buckets for one key the way the APIs'
// rate-limit headers describe limits, so a refusal or an answer can carry
// it as they are: a limit of 0 means the zone does not limit that
// dimension; remaining is never negative, even while queued requests hold
// the bucket below zero; a reset is the time until the bucket is full again.
type ZoneStatus = wire.RateLimits

// Zone is a named limit: a request bucket and a token bucket per key. An
// instance zone keeps its buckets in this Caddy instance's memory; a fleet
// zone keeps them in a SharedStore that every instance of the fleet reaches,
// so that the fleet admits what one bucket allows. A Zone is safe for
// concurrent use; every handler that names the zone should share one, so
// that their requests count together.
type Zone struct {
	cfg ZoneConfig
	// store holds an instance zone's buckets; nil in a fleet zone.
	store *localStore
	// shared holds a fleet zone's buckets; nil in an instance zone.
	shared SharedStore
	// share holds a fleet zone's buckets while its store is unreachable:
	// this instance's part of each, the capacity divided by the live
	// instances it last saw.
	share atomic.Pointer[share]
	// recent are keys the zone saw lately, for reports of its state, as
	// label names them; nil label remembers none.
	recent recentKeys
	label  func(key string) string
}

// share is a fleet zone's local stand-in, sized for a number of instances.
type share struct {
	instances int
	store     *localStore
}

// NewZone checks cfg and returns an instance zone with an empty local
// store: every key starts with full buckets, as a new API key does at the
// provider.
func NewZone(cfg ZoneConfig) (*Zone, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	return &Zone{cfg: cfg, store: newLocalStore(cfg, time.Now()), recent: newRecentKeys()}, nil
}

// NewSharedZone checks cfg and returns a fleet zone whose buckets live in
// shared. Keys the store has not seen start full.
func NewSharedZone(cfg ZoneConfig, shared SharedStore) (*Zone, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	return &Zone{cfg: cfg, shared: shared, recent: newRecentKeys()}, nil
}

// Check reports settings a zone cannot have.
func (cfg ZoneConfig) Check() error {
	_, err := cfg.check()
	return err
}

// check validates cfg and fills in its defaults.
func (cfg ZoneConfig) check() (ZoneConfig, error) {
	if cfg.Name == "" {
		return cfg, errors.New("limit: a zone needs a name")
	}
	switch {
	case cfg.RPM < 0:
		return cfg, fmt.Errorf("limit %s: rpm %d is negative; use 0 to leave requests unlimited", cfg.Name, cfg.RPM)
	case cfg.TPM < 0:
		return cfg, fmt.Errorf("limit %s: tpm %d is negative; use 0 to leave tokens unlimited", cfg.Name, cfg.TPM)
	case cfg.RPM == 0 && cfg.TPM == 0:
		return cfg, fmt.Errorf("limit %s sets neither rpm nor tpm: set rpm, tpm or both, otherwise the zone limits nothing", cfg.Name)
	case cfg.Wait < 0:
		return cfg, fmt.Errorf("limit %s: wait %v is negative; use 0 to refuse at once", cfg.Name, cfg.Wait)
	case cfg.MaxKeys < 0:
		return cfg, fmt.Errorf("limit %s: max keys %d is negative; use 0 for the default of %d", cfg.Name, cfg.MaxKeys, DefaultMaxKeys)
	case int64(cfg.MaxKeys) > maxMaxKeys:
		return cfg, fmt.Errorf("limit %s: max keys %d is more than the %d a zone can track", cfg.Name, cfg.MaxKeys, maxMaxKeys)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	return cfg, nil
}

// Shared reports whether the zone's buckets live in a fleet's store.
func (z *Zone) Shared() bool { return z.shared != nil }

// LabelKeys has the zone remember the keys it sees lately, for Keys, named
// by label (KeyHash, say), which must not reveal a key. It is set once,
// before the zone is used.
func (z *Zone) LabelKeys(label func(key string) string) *Zone {
	z.label = label
	return z
}

// Config returns the zone's configuration with defaults filled in. A config
// reload can compare it with the new settings and keep the zone, and with it
// every bucket, when they are equal.
func (z *Zone) Config() ZoneConfig { return z.cfg }

// shareFor returns the fleet zone's local share for n live instances: its
// capacities divided by n (at least one request or token, so that a share
// never stops limiting), with buckets that start full at now. The share is
// kept while n stays the same, across outages, since what it holds is this
// instance's own recent traffic.
func (z *Zone) shareFor(n int, now time.Time) *localStore {
	n = max(n, 1)
	for {
		old := z.share.Load()
		if old != nil && old.instances == n {
			return old.store
		}
		cfg := z.cfg
		cfg.RPM, cfg.TPM = part(cfg.RPM, n), part(cfg.TPM, n)
		s := &share{instances: n, store: newLocalStore(cfg, now)}
		if z.share.CompareAndSwap(old, s) {
			return s.store
		}
	}
}

// part is one of n equal parts of a capacity, at least 1 when it limits.
func part(capacity int64, n int) int64 {
	if capacity == 0 {
		return 0
	}
	return max(capacity/int64(n), 1)
}

// statusOfDebt reads the zone's buckets from their debts.
func (z *Zone) statusOfDebt(d Debt) ZoneStatus {
	zs := ZoneStatus{RequestsLimit: z.cfg.RPM, TokensLimit: z.cfg.TPM}
	zs.RequestsRemaining, zs.RequestsReset = bucket{z.cfg.RPM}.statusOfDebt(d.Requests)
	zs.TokensRemaining, zs.TokensReset = bucket{z.cfg.TPM}.statusOfDebt(d.Tokens)
	return zs
}

// charge is what requests and tokens cost in the zone's buckets, as a
// Charge for a SharedStore: spans of refill time, negative to give back.
// With forReserve, a dimension the zone does not limit is Unlimited, so the
// store neither takes from it nor waits for it.
func (z *Zone) charge(key string, requests, tokens int64, bound time.Duration, forReserve bool) Charge {
	r, t := bucket{z.cfg.RPM}, bucket{z.cfg.TPM}
	c := Charge{Zone: z.cfg.Name, Key: key, Requests: r.signedSpan(requests), Tokens: t.signedSpan(tokens), Bound: bound}
	if forReserve && r.capacity == 0 {
		c.Requests = Unlimited
	}
	if forReserve && t.capacity == 0 {
		c.Tokens = Unlimited
	}
	return c
}

// recentSlots is how many keys a zone remembers for reports of its state,
// which bounds what a report shows of one zone.
const recentSlots = 128

// recentHold is how long a key keeps its place among a zone's recent keys
// after it was last seen: a key seen since keeps it, and a busy zone's
// places stay with its active keys rather than turning over at every
// request.
const recentHold = time.Second

// recentKeys remembers keys a zone saw lately, without keeping any key: a
// fixed table of places, a key's place chosen by its hash, each holding
// the key's label and what the zone's store needs to read its buckets.
// Seeing a key already in its place costs a hash and an atomic read.
type recentKeys struct {
	seed   maphash.Seed
	places *[recentSlots]atomic.Pointer[recentKey]
}

// recentKey is one remembered key.
type recentKey struct {
	hash  uint64 // the key's hash under recentKeys.seed
	label string // Zone.label(key)
	local uint64 // an instance zone's hash of the key in its store
	name  string // a fleet zone's name of the key in its store
	seen  atomic.Int64
}

func newRecentKeys() recentKeys {
	return recentKeys{seed: maphash.MakeSeed(), places: new([recentSlots]atomic.Pointer[recentKey])}
}

// touch notes that key was seen at now (Unix ns). A key whose place holds
// another key seen within recentHold is not remembered.
func (z *Zone) touch(key string, now int64) {
	if z.label == nil {
		return
	}
	h := maphash.String(z.recent.seed, key)
	place := &z.recent.places[h%recentSlots]
	if e := place.Load(); e != nil {
		seen := e.seen.Load()
		if e.hash == h {
			if now-seen > int64(recentHold)/4 {
				// Rarely, so a hot key's place is not written at every
				// request from every core.
				e.seen.Store(now)
			}
			return
		}
		if now-seen < int64(recentHold) {
			return
		}
	}
	e := &recentKey{hash: h, label: z.label(key)}
	if z.store != nil {
		e.local = maphash.String(z.store.seed, key)
	} else {
		e.name = z.shared.KeyName(key)
	}
	e.seen.Store(now)
	place.Store(e)
}

// KeyStatus is the state of one key of a zone, as Keys reports it.
type KeyStatus struct {
	// Label is the key's label, "" for a zone without a key.
	Label  string
	Status ZoneStatus
}

// Keys reports the state of the keys the zone saw lately (at most
// recentSlots of them) at now, with no key in clear. A fleet zone reads
// them from its store in one call; when the store cannot answer, it shows
// the zone's limits with nothing known to be taken.
func (z *Zone) Keys(now time.Time) []KeyStatus {
	var recent []*recentKey
	for i := range z.recent.places {
		if e := z.recent.places[i].Load(); e != nil {
			recent = append(recent, e)
		}
	}
	out := make([]KeyStatus, len(recent))
	if z.store != nil {
		for i, e := range recent {
			out[i] = KeyStatus{Label: e.label, Status: z.store.statusOf(e.local, now)}
		}
		return out
	}
	names := make([]string, len(recent))
	for i, e := range recent {
		names[i] = e.name
	}
	debts := make([]Debt, len(recent))
	if z.shared.Health().Down || z.shared.Peek(z.cfg.Name, names, debts) != nil {
		clear(debts)
	}
	for i, e := range recent {
		out[i] = KeyStatus{Label: e.label, Status: z.statusOfDebt(debts[i])}
	}
	return out
}

// Status reads key's buckets at now: for a refusal's rate-limit headers,
// and for whoever reports the zone's state. A fleet zone reads its store
// once; when the store cannot answer, the status shows the zone's limits
// with nothing known to be taken.
func (z *Zone) Status(key string, now time.Time) ZoneStatus {
	if z.shared == nil {
		return z.store.Status(key, now)
	}
	if z.shared.Health().Down {
		return z.statusOfDebt(Debt{})
	}
	cs := []Charge{{Zone: z.cfg.Name, Key: key, Requests: Unlimited, Tokens: Unlimited}}
	debts := make([]Debt, 1)
	if _, _, err := z.shared.Reserve(cs, debts); err != nil {
		return z.statusOfDebt(Debt{})
	}
	return z.statusOfDebt(debts[0])
}

// Sizing of the local store's shards. A shard is one mutex over one map, so
// more shards mean less contention and shorter eviction sweeps; larger ones
// fill more evenly (a shard's share of random keys varies by about its square
// root, and a full shard evicts even while others have room). Shards of 512
// to 1023 keys keep that spread near 1 % (a million random keys in a zone
// bounded at a million: 98.7 % held before the first eviction) and a sweep
// under a microsecond.
const (
	shardTarget = 512
	maxShards   = 1 << 12
	// maxMaxKeys keeps a shard's slot positions within int32: four billion
	// keys, some 270 GB, far beyond any sensible bound.
	maxMaxKeys = int64(1) << 32
)

// localStore holds the buckets of one zone in one Caddy instance: a bounded map from key
// to the key's two full instants, split into shards.
//
// Keys are stored as 64-bit hashes (hash/maphash, seeded per store): a key
// costs about 64 bytes whatever its length (24 in its slot, the rest in the
// index map; measured in zone_test.go), nothing in the store holds a pointer
// for the garbage collector to scan, and the store never keeps a key, which
// may be a credential, in memory. Two keys share buckets only if their hashes
// collide; the chance that any two of a million keys do is about 3·10⁻⁸, with
// a seed an attacker cannot know, and the shared bucket then limits both,
// which errs on the safe side.
//
// The bound is exact: each shard holds at most its share of MaxKeys, and a
// new key always gets a slot, evicting under the same lock if the shard is
// full. This is what ristretto cannot promise: its Set may be dropped, and a
// key whose limiter was never stored gets a fresh full bucket on every request
// (Set is buffered and subject to TinyLFU admission: see Cache.Set in
// github.com/dgraph-io/ristretto/v2). Here a key loses its state only by
// eviction, and eviction is lossless first: a bucket pair that has refilled
// completely equals a new one, so a full shard first drops every such pair.
// Only when none has refilled, that is when the whole shard was active within
// about a minute, does it drop the pair closest to full. An evicted key that comes
// back starts full; that is the only way a key can gain capacity, and the
// gain is bounded by the rule above: at most the smallest deficit in the
// shard, taken only when every other key there is still refilling. Least
// recently used, the rule of a cache, would instead drop a key deep in debt
// that paused, and hand the heaviest user a full bucket when it returns.
type localStore struct {
	requests, tokens bucket
	epoch            time.Time // the zone clock's zero; its monotonic reading keeps buckets steady across wall-clock jumps
	seed             maphash.Seed
	shift            uint // a key's shard is the top bits of its hash: hash >> shift
	shards           []shard
}

// shard is one lock's worth of keys. The states live in a dense slice, which
// an eviction sweep reads thirty times faster than it could iterate a map,
// and the map only finds a key's slot.
type shard struct {
	mu    sync.Mutex
	index map[uint64]int32 // key hash → position in slots; allocated on first use, so an idle shard costs only this struct
	slots []slot
	max   int // this shard's share of MaxKeys
}

// slot is one tracked key.
type slot struct {
	hash uint64
	keyState
}

// keyState is a key's two buckets: the instants, in nanoseconds on the zone
// clock, when they are full again. A key absent from its shard has both full.
type keyState struct {
	requests, tokens int64
}

// newLocalStore returns an empty store for cfg, whose clock starts at epoch.
// Shards are a power of two (at most maxShards), sized near shardTarget, and
// split MaxKeys exactly: the first MaxKeys mod shards of them hold one more.
func newLocalStore(cfg ZoneConfig, epoch time.Time) *localStore {
	n, shift := 1, uint(64)
	for n*2 <= cfg.MaxKeys/shardTarget && n < maxShards {
		n, shift = n*2, shift-1
	}
	s := &localStore{
		requests: bucket{capacity: cfg.RPM},
		tokens:   bucket{capacity: cfg.TPM},
		epoch:    epoch,
		seed:     maphash.MakeSeed(),
		shift:    shift,
		shards:   make([]shard, n),
	}
	for i := range s.shards {
		s.shards[i].max = cfg.MaxKeys / n
		if i < cfg.MaxKeys%n {
			s.shards[i].max++
		}
	}
	return s
}

// locate returns the nanoseconds on the zone clock at now, and the hash and
// shard of key.
func (s *localStore) locate(key string, now time.Time) (t int64, h uint64, sh *shard) {
	h = maphash.String(s.seed, key)
	return int64(now.Sub(s.epoch)), h, &s.shards[h>>s.shift]
}

// Reserve takes requests and tokens from key's buckets at now when the
// caller would have to wait at most maxWait for them, and returns that wait
// with ok. When the wait would be longer it takes nothing and returns the
// wait the request would have needed (the time until enough has refilled)
// with !ok. Callers never ask for more than a bucket's capacity: Admit
// refuses those for good before asking. Both buckets are decided together: the wait is
// the longer of the two, and neither is charged unless both are.
func (s *localStore) Reserve(key string, requests, tokens int64, maxWait time.Duration, now time.Time) (time.Duration, bool) {
	t, h, sh := s.locate(key, now)
	sh.mu.Lock()
	i, st := sh.get(h, t)
	r, rw := s.requests.reserve(st.requests, t, requests)
	k, kw := s.tokens.reserve(st.tokens, t, tokens)
	wait := time.Duration(max(rw, kw))
	if wait > maxWait {
		sh.mu.Unlock()
		return wait, false
	}
	sh.put(h, i, keyState{r, k}, t)
	sh.mu.Unlock()
	return wait, true
}

// Adjust charges key's buckets (positive counts) or gives back to them
// (negative counts) at now, without any bound: settlement and cancellation
// report what already happened. Giving back never fills a bucket above its
// capacity; charging may take it below zero.
func (s *localStore) Adjust(key string, requests, tokens int64, now time.Time) {
	t, h, sh := s.locate(key, now)
	sh.mu.Lock()
	i, st := sh.get(h, t)
	if i < 0 && requests <= 0 && tokens <= 0 {
		// An untracked key is full; giving back cannot change it.
		sh.mu.Unlock()
		return
	}
	st.requests = s.requests.adjust(st.requests, t, requests)
	st.tokens = s.tokens.adjust(st.tokens, t, tokens)
	sh.put(h, i, st, t)
	sh.mu.Unlock()
}

// Status reads key's buckets at now.
func (s *localStore) Status(key string, now time.Time) ZoneStatus {
	_, h, _ := s.locate(key, now)
	return s.statusOf(h, now)
}

// statusOf reads the buckets of the key whose hash is h at now.
func (s *localStore) statusOf(h uint64, now time.Time) ZoneStatus {
	t, sh := int64(now.Sub(s.epoch)), &s.shards[h>>s.shift]
	sh.mu.Lock()
	_, st := sh.get(h, t)
	sh.mu.Unlock()
	zs := ZoneStatus{RequestsLimit: s.requests.capacity, TokensLimit: s.tokens.capacity}
	zs.RequestsRemaining, zs.RequestsReset = s.requests.status(st.requests, t)
	zs.TokensRemaining, zs.TokensReset = s.tokens.status(st.tokens, t)
	return zs
}

// clamp bounds a reservation of tokens to the token bucket's capacity, for a
// share smaller than the zone.
func (s *localStore) clamp(tokens int64) int64 {
	if c := s.tokens.capacity; c > 0 {
		return min(tokens, c)
	}
	return tokens
}

// get returns the slot position and state of hash h, or -1 and two full
// buckets at t when the shard does not track it. The caller holds sh.mu.
func (sh *shard) get(h uint64, t int64) (int32, keyState) {
	if i, ok := sh.index[h]; ok {
		return i, sh.slots[i].keyState
	}
	return -1, keyState{t, t}
}

// put stores st for hash h at slot position i, or in a new slot when i is -1.
// A new key gets its slot at once, evicting first if the shard is full, so no
// write is ever lost. The slice grows by doubling up to the shard's bound and
// never past it. The caller holds sh.mu.
func (sh *shard) put(h uint64, i int32, st keyState, t int64) {
	if i >= 0 {
		sh.slots[i].keyState = st
		return
	}
	if sh.index == nil {
		sh.index = make(map[uint64]int32)
	}
	if len(sh.slots) >= sh.max {
		sh.evict(t)
	}
	if len(sh.slots) == cap(sh.slots) {
		grown := make([]slot, len(sh.slots), min(max(2*cap(sh.slots), 8), sh.max))
		copy(grown, sh.slots)
		sh.slots = grown
	}
	sh.index[h] = int32(len(sh.slots))
	sh.slots = append(sh.slots, slot{h, st})
}

// evict makes room in a full shard at t: it drops every key whose buckets
// have both refilled, and when there is none, the key closest to full (see
// localStore). One pass over the shard does both, and a pass that frees many
// refilled keys pays for the inserts that follow it. The caller holds sh.mu.
func (sh *shard) evict(t int64) {
	closest, soonest := 0, int64(math.MaxInt64)
	freed := false
	for i := 0; i < len(sh.slots); {
		full := max(sh.slots[i].requests, sh.slots[i].tokens)
		if full <= t {
			sh.remove(i)
			freed = true
			continue // the last slot moved into i
		}
		if full < soonest {
			closest, soonest = i, full
		}
		i++
	}
	if !freed {
		sh.remove(closest)
	}
}

// remove drops the slot at position i, moving the last slot into its place.
// The caller holds sh.mu.
func (sh *shard) remove(i int) {
	delete(sh.index, sh.slots[i].hash)
	last := len(sh.slots) - 1
	if i != last {
		sh.slots[i] = sh.slots[last]
		sh.index[sh.slots[i].hash] = int32(i)
	}
	sh.slots = sh.slots[:last]
}
