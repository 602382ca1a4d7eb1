package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// testStore is a Store on a real redis-server, with its log lines kept.
type testStore struct {
	*Store
	logs *observer.ObservedLogs
}

// newTestStore connects a store to srv. The timeout is generous, for a
// loaded test machine, except where a test is about timeouts.
func newTestStore(t testing.TB, srv *testredis.Server, fallback policy.Fallback) *testStore {
	return newTestStoreTimeout(t, srv, fallback, 500*time.Millisecond)
}

func newTestStoreTimeout(t testing.TB, srv *testredis.Server, fallback policy.Fallback, timeout time.Duration) *testStore {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	s, err := New(Config{
		URLs:          []string{srv.URL},
		Prefix:        "test" + strings.ReplaceAll(t.Name(), "/", "_"),
		Timeout:       timeout,
		OnUnavailable: fallback,
		Logger:        zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &testStore{Store: s, logs: logs}
}

// zone returns a fleet zone in s, failing the test on a bad configuration.
func zone(t testing.TB, s policy.SharedStore, cfg policy.ZoneConfig) *policy.Zone {
	t.Helper()
	z, err := policy.NewSharedZone(cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// await polls cond every 10 ms until it holds or d has passed.
func await(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
	}
}

// lines counts the store's log lines with message msg.
func (s *testStore) lines(msg string) int {
	return s.logs.FilterMessage(msg).Len()
}

// clocked runs a Store's scripts at once, without batching, and keeps the
// store's clock at the last call, so that a test can replay each operation
// on a local zone at the very instant the store decided it.
type clocked struct {
	s    *Store
	t    testing.TB
	last time.Time
}

func (c *clocked) Reserve(cs []policy.Charge, debts []policy.Debt) (time.Duration, int, error) {
	wait, refused, at, err := c.s.reserve(cs, debts)
	if err != nil {
		c.t.Fatalf("reserve: %v", err)
	}
	c.last = at
	return wait, refused, err
}

func (c *clocked) Adjust(cs []policy.Charge) {
	keys := make([]string, len(cs))
	args := []any{policy.MaxDebt}
	for i, ch := range cs {
		keys[i] = c.s.keys.zone(ch.Zone, HashKey(ch.Key))
		args = append(args, ch.Requests, ch.Tokens)
	}
	at, err := c.s.runAdjust(keys, args)
	if err != nil {
		c.t.Fatalf("adjust: %v", err)
	}
	c.last = at
}

func (c *clocked) Health() policy.StoreHealth { return c.s.Health() }

func (c *clocked) KeyName(key string) string { return c.s.KeyName(key) }

func (c *clocked) Peek(zone string, names []string, debts []policy.Debt) error {
	return c.s.Peek(zone, names, debts)
}

// TestLocalAndFleetAgree runs one random sequence of admissions (bursts,
// queueing, refusals, oversize requests), settlements above and below the
// reservation, cancellations and pauses against a fleet zone in Redis and
// an instance zone in memory, replaying each operation on the local zone at
// the instant the store's clock gave it. Every decision, wait, refusal and
// status must be the same to the nanosecond: the script and the local
// buckets apply one rule.
func TestLocalAndFleetAgree(t *testing.T) {
	srv := testredis.Start(t)
	c := &clocked{s: newTestStoreTimeout(t, srv, policy.FallbackLocal, 10*time.Second).Store, t: t}
	for _, cfg := range []policy.ZoneConfig{
		{Name: "both", RPM: 120, TPM: 60_000, Wait: 700 * time.Millisecond},
		{Name: "requests", RPM: 7},
		{Name: "tokens", TPM: 3_001, Wait: 2 * time.Second},
	} {
		t.Run(cfg.Name, func(t *testing.T) {
			c.t = t
			fz, lz := zone(t, c, cfg), must(policy.NewZone(cfg))
			rng := rand.New(rand.NewPCG(7, uint64(len(cfg.Name))))
			type pair struct{ f, l policy.Admission }
			var open []pair
			key := func() string { return fmt.Sprint("team-", rng.IntN(2)) }
			for i := range 300 {
				k := key()
				switch op := rng.IntN(10); {
				case op < 6:
					tokens := rng.Int64N(cfg.TPM/4 + 50)
					if op == 0 {
						tokens = cfg.TPM + 1 // never fits
					}
					maxWait := time.Duration(rng.IntN(3)) * time.Second
					fa, fd, fr := policy.Admit([]policy.Demand{{Zone: fz, Key: k}}, tokens, maxWait, time.Now())
					la, ld, lr := policy.Admit([]policy.Demand{{Zone: lz, Key: k}}, tokens, maxWait, c.last)
					if fd != ld || (fr == nil) != (lr == nil) || fr != nil && *fr != *lr {
						t.Fatalf("op %d admit %d tokens in %s: fleet delay %v refusal %+v; local delay %v refusal %+v", i, tokens, k, fd, fr, ld, lr)
					}
					if fr == nil {
						open = append(open, pair{fa, la})
					}
				case op < 8 && len(open) > 0:
					j := rng.IntN(len(open))
					actual := rng.Int64N(cfg.TPM/3 + 1)
					open[j].f.Settle(actual, time.Now())
					open[j].l.Settle(actual, c.last)
					open = append(open[:j], open[j+1:]...)
				case op < 9 && len(open) > 0:
					j := rng.IntN(len(open))
					open[j].f.Cancel(time.Now())
					open[j].l.Cancel(c.last)
					open = append(open[:j], open[j+1:]...)
				default:
					time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
				}
				fs := fz.Status(k, time.Now())
				if ls := lz.Status(k, c.last); fs != ls {
					t.Fatalf("op %d: %s fleet %+v, local %+v", i, k, fs, ls)
				}
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestAdmitAllOrNothing puts a request in three fleet zones, one of them
// full: the store takes nothing from the other two, and names the full one
// with its levels, so the 429's headers need no second call.
func TestAdmitAllOrNothing(t *testing.T) {
	srv := testredis.Start(t)
	s := newTestStore(t, srv, policy.FallbackLocal)
	org := zone(t, s, policy.ZoneConfig{Name: "org", RPM: 100, TPM: 100_000})
	team := zone(t, s, policy.ZoneConfig{Name: "team", RPM: 2})
	user := zone(t, s, policy.ZoneConfig{Name: "user", TPM: 10_000})
	demands := func() []policy.Demand {
		return []policy.Demand{{Zone: org}, {Zone: team, Key: "red"}, {Zone: user, Key: "ann"}}
	}
	now := time.Now()
	for range 2 {
		if _, _, r := policy.Admit(demands(), 1000, 0, now); r != nil {
			t.Fatalf("refused: %+v", r)
		}
	}
	before := [2]policy.ZoneStatus{org.Status("", now), user.Status("ann", now)}
	_, _, r := policy.Admit(demands(), 1000, 0, now)
	if r == nil || r.Zone != "team" || r.Never || r.Retry < 29*time.Second || r.Retry > 30*time.Second {
		t.Fatalf("third request: %+v, want refused by team with about 30s to wait", r)
	}
	if r.Status.RequestsLimit != 2 || r.Status.RequestsRemaining != 0 {
		t.Errorf("refusal status %+v, want team's 0 of 2", r.Status)
	}
	after := [2]policy.ZoneStatus{org.Status("", now), user.Status("ann", now)}
	// The zones refill between the reads; nothing may have been taken.
	if after[0].RequestsRemaining < before[0].RequestsRemaining || after[1].TokensRemaining < before[1].TokensRemaining {
		t.Errorf("a refused request took capacity: %+v → %+v", before, after)
	}
	// The store's clock runs on between the calls: allow a little refill.
	if r, k := before[0].RequestsRemaining, before[1].TokensRemaining; r < 98 || r > 99 || k < 8000 || k > 8200 {
		t.Errorf("after two admissions: org %+v, user %+v", before[0], before[1])
	}
}

// TestKeysHashedPrefixedAndExpiring reads the keys an admission wrote: all
// start with the prefix in one hash tag, none contains the key value, and
// each expires when its buckets are full again; a bucket given back to full
// is deleted.
func TestKeysHashedPrefixedAndExpiring(t *testing.T) {
	srv := testredis.Start(t)
	s := newTestStore(t, srv, policy.FallbackLocal)
	const secret = "sk-ant-SECRET-key-value"
	z := zone(t, s, policy.ZoneConfig{Name: "per-key", RPM: 60, TPM: 6000})
	a, _, r := policy.Admit([]policy.Demand{{Zone: z, Key: secret}}, 3000, 0, time.Now())
	if r != nil {
		t.Fatal(r)
	}
	rdb := srv.Client()
	ctx := context.Background()
	var keys []string
	await(t, time.Second, "the zone key and the live instances' key", func() bool {
		keys = rdb.Keys(ctx, "*").Val()
		return len(keys) == 2
	})
	tag := "{" + "test" + t.Name() + "}:"
	for _, k := range keys {
		if !strings.HasPrefix(k, tag) || strings.Contains(k, secret) {
			t.Errorf("key %q: want the prefix %q and no key value", k, tag)
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %q has no TTL (%v)", k, ttl)
		}
	}
	zk := s.keys.zone("per-key", HashKey(secret))
	// 3000 of 6000 tokens take 30 s to refill; one request of 60 takes 1 s.
	if ttl := rdb.PTTL(ctx, zk).Val(); ttl < 29*time.Second || ttl > 30*time.Second {
		t.Errorf("zone key TTL %v, want the 30s until both buckets are full", ttl)
	}
	v := rdb.Get(ctx, zk).Val()
	if strings.Contains(v, secret) {
		t.Errorf("value %q holds the key", v)
	}
	a.Cancel(time.Now())
	await(t, time.Second, "the cancellation to delete the full buckets", func() bool {
		return rdb.Exists(ctx, zk).Val() == 0
	})
}

// TestSettlementBatchedAndNetted settles many admissions of one key at
// once: they reach the store netted, in a few calls rather than one per
// settlement, within milliseconds.
func TestSettlementBatchedAndNetted(t *testing.T) {
	srv := testredis.Start(t)
	s := newTestStore(t, srv, policy.FallbackLocal)
	z := zone(t, s, policy.ZoneConfig{Name: "batch", TPM: 1_000_000})
	var open []policy.Admission
	for range 100 {
		a, _, r := policy.Admit([]policy.Demand{{Zone: z, Key: "k"}}, 5000, 0, time.Now())
		if r != nil {
			t.Fatal(r)
		}
		open = append(open, a)
	}
	if st := z.Status("k", time.Now()); st.TokensRemaining > 510_000 {
		t.Fatalf("after reserving 500000: %+v", st)
	}
	if err := srv.Do("CONFIG", "RESETSTAT"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, a := range open {
		a.Settle(100, time.Now())
	}
	await(t, time.Second, "the settlements", func() bool {
		return z.Status("k", time.Now()).TokensRemaining >= 1_000_000-100*100
	})
	took := time.Since(start)
	calls, _ := srv.CommandStats("evalsha")
	evals, _ := srv.CommandStats("eval")
	// The status reads above are admission calls too; settlements are a
	// handful of batches, not a hundred calls.
	if adjust := calls + evals; adjust > 40 {
		t.Errorf("%d script calls for 100 settlements", adjust)
	}
	t.Logf("100 settlements visible after %v in %d script calls (status reads included)", took, calls+evals)
}

// TestHeartbeatsCountInstances runs three stores, as three instances would:
// each counts three. One that closes leaves at once; one that stops
// beating without leaving (a crashed instance) stops counting after the
// 3 s window.
func TestHeartbeatsCountInstances(t *testing.T) {
	srv := testredis.Start(t)
	prefix := "beats"
	var stores []*Store
	for range 3 {
		s, err := New(Config{URLs: []string{srv.URL}, Prefix: prefix, Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores = append(stores, s)
	}
	count := func(s *Store) func() bool {
		return func() bool { return s.Health().Instances == 3 }
	}
	await(t, 2*time.Second, "three live instances", count(stores[0]))
	_ = stores[2].Close()
	await(t, 2*time.Second, "two live instances after a close", func() bool { return stores[0].Health().Instances == 2 })

	// A crash: the heartbeats stop, nobody leaves.
	stores[1].cancel()
	stores[1].done.Wait()
	start := time.Now()
	await(t, 5*time.Second, "one live instance after a crash", func() bool { return stores[0].Health().Instances == 1 })
	if gone := time.Since(start); gone < 2*time.Second {
		t.Errorf("a silent instance stopped counting after %v, before the 3 s window", gone)
	}
}

// TestOutageLocalShareAndHandBack kills Redis under a fleet zone: requests
// keep being decided, each instance within its share (capacity ÷ live
// instances, the last count seen), one warn line marks the outage; when
// Redis is back, one warn line marks it, and what was admitted during the
// outage is handed back, so the shared bucket shows it.
func TestOutageLocalShareAndHandBack(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestStore(t, srv, policy.FallbackLocal)
	b := newTestStore(t, srv, policy.FallbackLocal) // a second instance, for the count
	await(t, 2*time.Second, "two live instances", func() bool { return a.Health().Instances == 2 })
	_ = b
	z := zone(t, a, policy.ZoneConfig{Name: "org", RPM: 60})

	srv.Kill()
	admitted := 0
	for range 100 {
		_, _, r := policy.Admit([]policy.Demand{{Zone: z}}, 0, 0, time.Now())
		if r == nil {
			admitted++
		} else if r.Unavailable || r.Never {
			t.Fatalf("refusal during the outage: %+v", r)
		}
	}
	if !a.Health().Down {
		t.Fatal("the store is not marked down after 100 failed calls")
	}
	// Until the store was marked down, requests were decided by the share
	// too: 60 ÷ 2 instances.
	if admitted != 30 {
		t.Errorf("admitted %d during the outage, want this instance's share of 30", admitted)
	}
	if n := a.lines("fleet store unavailable"); n != 1 {
		t.Errorf("%d unavailable lines, want 1", n)
	}

	srv.Restart()
	// The line follows the flag, so wait for both.
	await(t, 2*time.Second, "the store restored", func() bool {
		return !a.Health().Down && a.lines("fleet store restored") > 0
	})
	if n := a.lines("fleet store restored"); n != 1 {
		t.Errorf("%d restored lines, want 1", n)
	}
	// The 30 requests admitted alone are now in the shared bucket (less
	// the second or so that refilled).
	await(t, time.Second, "the outage's traffic handed back", func() bool {
		st := z.Status("", time.Now())
		return st.RequestsRemaining <= 36 && st.RequestsRemaining >= 26
	})
	if n := a.lines("fleet store unavailable"); n != 1 {
		t.Errorf("%d unavailable lines after the outage, want 1", n)
	}
}

// TestPauseLongerThanTimeoutIsAnOutage pauses Redis (CLIENT PAUSE) for
// longer than the store's timeout: calls time out, the store is marked
// down, requests are still decided without waiting for it, and it is
// restored once the pause ends.
func TestPauseLongerThanTimeoutIsAnOutage(t *testing.T) {
	srv := testredis.Start(t)
	s := newTestStoreTimeout(t, srv, policy.FallbackLocal, 50*time.Millisecond)
	z := zone(t, s, policy.ZoneConfig{Name: "org", RPM: 6000})
	if _, _, r := policy.Admit([]policy.Demand{{Zone: z}}, 0, 0, time.Now()); r != nil {
		t.Fatal(r)
	}
	srv.Pause(1500 * time.Millisecond)
	var slowest time.Duration
	for range 20 {
		start := time.Now()
		if _, _, r := policy.Admit([]policy.Demand{{Zone: z}}, 0, 0, time.Now()); r != nil {
			t.Fatalf("refused during the pause: %+v", r)
		}
		slowest = max(slowest, time.Since(start))
	}
	if !s.Health().Down || s.lines("fleet store unavailable") != 1 {
		t.Fatalf("after 20 requests in the pause: down %v, %d warn lines", s.Health().Down, s.lines("fleet store unavailable"))
	}
	if slowest > 400*time.Millisecond {
		t.Errorf("a request waited %v for the paused store; the timeout is 50ms", slowest)
	}
	await(t, 3*time.Second, "the store restored after the pause", func() bool {
		return !s.Health().Down && s.lines("fleet store restored") > 0
	})
	if s.lines("fleet store restored") != 1 {
		t.Errorf("%d restored lines", s.lines("fleet store restored"))
	}
}

// TestOnUnavailableDenyAndAllow checks the two other fallbacks: deny
// refuses with Unavailable (a 503), allow admits everything; neither
// touches a share.
func TestOnUnavailableDenyAndAllow(t *testing.T) {
	srv := testredis.Start(t)
	deny := newTestStore(t, srv, policy.FallbackDeny)
	allow := newTestStore(t, srv, policy.FallbackAllow)
	zd := zone(t, deny, policy.ZoneConfig{Name: "d", RPM: 1})
	za := zone(t, allow, policy.ZoneConfig{Name: "a", RPM: 1})
	srv.Kill()
	for i := range 10 {
		if _, _, r := policy.Admit([]policy.Demand{{Zone: zd}}, 0, 0, time.Now()); r == nil || !r.Unavailable || r.Zone != "d" || r.Retry <= 0 {
			t.Fatalf("deny, request %d: %+v", i, r)
		}
		if _, _, r := policy.Admit([]policy.Demand{{Zone: za}}, 0, 0, time.Now()); r != nil {
			t.Fatalf("allow, request %d: %+v", i, r)
		}
	}
}

// TestLocalZonesWithFleetZones mixes an instance zone and a fleet zone in
// one request: a refusal by the fleet zone gives back the instance zone.
func TestLocalZonesWithFleetZones(t *testing.T) {
	srv := testredis.Start(t)
	s := newTestStore(t, srv, policy.FallbackLocal)
	local := must(policy.NewZone(policy.ZoneConfig{Name: "local", RPM: 100}))
	shared := zone(t, s, policy.ZoneConfig{Name: "shared", RPM: 1})
	now := time.Now()
	d := func() []policy.Demand { return []policy.Demand{{Zone: local}, {Zone: shared}} }
	if _, _, r := policy.Admit(d(), 0, 0, now); r != nil {
		t.Fatal(r)
	}
	if _, _, r := policy.Admit(d(), 0, 0, now); r == nil || r.Zone != "shared" {
		t.Fatalf("second request: %+v, want refused by the shared zone", r)
	}
	if st := local.Status("", now); st.RequestsRemaining != 99 {
		t.Errorf("the local zone holds %d of 100 after one admission and one refusal", st.RequestsRemaining)
	}
}

// counting is a Store that counts the admission calls made through it.
type counting struct {
	*Store
	reserves atomic.Int32
}

func (c *counting) Reserve(cs []policy.Charge, debts []policy.Debt) (time.Duration, int, error) {
	c.reserves.Add(1)
	return c.Store.Reserve(cs, debts)
}

// TestAdmissionStatusNeedsNoCall reads an admission's rate-limit state
// after the store admitted it: it comes from the admission's own reply,
// aged by the time since, with no other call to the store.
func TestAdmissionStatusNeedsNoCall(t *testing.T) {
	srv := testredis.Start(t)
	s := &counting{Store: newTestStore(t, srv, policy.FallbackLocal).Store}
	org := zone(t, s, policy.ZoneConfig{Name: "org", RPM: 60})
	team := zone(t, s, policy.ZoneConfig{Name: "team", TPM: 6000})
	now := time.Now()
	a, _, r := policy.Admit([]policy.Demand{{Zone: org}, {Zone: team, Key: "red"}}, 3000, 0, now)
	if r != nil {
		t.Fatal(r)
	}
	if n := s.reserves.Load(); n != 1 {
		t.Fatalf("an admission in two zones made %d calls", n)
	}
	st := a.Status(now.Add(500 * time.Millisecond))
	if st.RequestsLimit != 60 || st.RequestsRemaining != 59 || st.TokensLimit != 6000 || st.TokensRemaining < 3040 || st.TokensRemaining > 3060 {
		t.Errorf("status half a second later: %+v, want 59 of 60 requests and about 3050 of 6000 tokens", st)
	}
	if n := s.reserves.Load(); n != 1 {
		t.Errorf("reading the status made %d more calls", n-1)
	}
}
