package policy

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// newTestZone returns a zone and its local store, failing the test on a bad
// configuration.
func newTestZone(t testing.TB, cfg ZoneConfig) (*Zone, *localStore) {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	z, err := NewZone(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return z, z.store
}

// tracked reports whether the store holds state for key.
func (s *localStore) tracked(key string) bool {
	_, h, sh := s.locate(key, s.epoch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.index[h]
	return ok
}

// len returns how many keys the store tracks.
func (s *localStore) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.slots)
		sh.mu.Unlock()
	}
	return n
}

func TestNewZoneValidation(t *testing.T) {
	bad := []struct {
		cfg  ZoneConfig
		want string
	}{
		{ZoneConfig{RPM: 10}, "needs a name"},
		{ZoneConfig{Name: "org", RPM: -1}, "rpm -1 is negative"},
		{ZoneConfig{Name: "org", TPM: -1}, "tpm -1 is negative"},
		{ZoneConfig{Name: "org"}, "set rpm, tpm or both"},
		{ZoneConfig{Name: "org", RPM: 1, Wait: -time.Second}, "wait -1s is negative"},
		{ZoneConfig{Name: "org", RPM: 1, MaxKeys: -1}, "max keys -1 is negative"},
	}
	for _, c := range bad {
		if _, err := NewZone(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewZone(%+v) = %v, want error containing %q", c.cfg, err, c.want)
		}
	}
	z, err := NewZone(ZoneConfig{Name: "org", TPM: 1000, Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := ZoneConfig{Name: "org", TPM: 1000, Wait: time.Second, MaxKeys: DefaultMaxKeys}
	if z.Config() != want {
		t.Errorf("Config() = %+v, want %+v", z.Config(), want)
	}
}

// TestZoneShards checks that the shards split MaxKeys exactly, so the bound
// is the configured number, and that shards stay near their target size.
func TestZoneShards(t *testing.T) {
	for _, maxKeys := range []int{1, 7, 1023, 1024, 4096, 10_000, DefaultMaxKeys, 1_000_000, 3_333_333, 10_000_000} {
		s := newLocalStore(ZoneConfig{Name: "z", RPM: 1, MaxKeys: maxKeys}, time.Now())
		n := len(s.shards)
		if n&(n-1) != 0 || n > maxShards || uint(64-s.shift) != uint(bitsLen(n)) {
			t.Errorf("MaxKeys %d: %d shards with shift %d", maxKeys, n, s.shift)
		}
		total, lo, hi := 0, maxKeys, 0
		for i := range s.shards {
			total += s.shards[i].max
			lo, hi = min(lo, s.shards[i].max), max(hi, s.shards[i].max)
		}
		if total != maxKeys || hi-lo > 1 {
			t.Errorf("MaxKeys %d: shards hold %d in total, %d..%d each", maxKeys, total, lo, hi)
		}
		if n > 1 && n < maxShards && (lo < shardTarget || hi >= 2*shardTarget+1) {
			t.Errorf("MaxKeys %d: shards of %d..%d keys, want near %d", maxKeys, lo, hi, shardTarget)
		}
	}
}

// bitsLen is log2 of a power of two.
func bitsLen(n int) int {
	l := 0
	for n > 1 {
		n, l = n>>1, l+1
	}
	return l
}

// TestZoneBothBuckets checks that a zone decides its request and token
// buckets together: a request refused by one takes nothing from the other.
func TestZoneBothBuckets(t *testing.T) {
	t0 := time.Now()
	_, s := newTestZone(t, ZoneConfig{RPM: 10, TPM: 1000})
	if _, ok := s.Reserve("", 1, 900, 0, t0); !ok {
		t.Fatal("first request refused")
	}
	wait, ok := s.Reserve("", 1, 200, 0, t0)
	if ok || wait != 6*time.Second { // 100 tokens short at 1000/min
		t.Fatalf("token-short request: wait %v ok %v; want refused, 6s", wait, ok)
	}
	if st := s.Status("", t0); st.RequestsRemaining != 9 || st.TokensRemaining != 100 {
		t.Errorf("after a token refusal: %+v, want 9 requests and 100 tokens left", st)
	}
	for range 9 {
		if _, ok := s.Reserve("", 1, 0, 0, t0); !ok {
			t.Fatal("request within rpm refused")
		}
	}
	if wait, ok := s.Reserve("", 1, 10, 0, t0); ok || wait != 6*time.Second {
		t.Fatalf("request-short request: wait %v ok %v; want refused, 6s", wait, ok)
	}
	if st := s.Status("", t0); st.TokensRemaining != 100 {
		t.Errorf("after a request refusal: %d tokens left, want 100", st.TokensRemaining)
	}
}

func TestZonePerKeyIsolation(t *testing.T) {
	t0 := time.Now()
	_, s := newTestZone(t, ZoneConfig{RPM: 3})
	for range 3 {
		if _, ok := s.Reserve("team-a", 1, 0, 0, t0); !ok {
			t.Fatal("team-a refused within its limit")
		}
	}
	if _, ok := s.Reserve("team-a", 1, 0, 0, t0); ok {
		t.Fatal("team-a admitted past its limit")
	}
	for range 3 {
		if _, ok := s.Reserve("team-b", 1, 0, 0, t0); !ok {
			t.Fatal("team-b suffers from team-a's traffic")
		}
	}
	if st := s.Status("team-c", t0); st.RequestsRemaining != 3 || st.RequestsReset != 0 {
		t.Errorf("untouched key: %+v, want a full bucket", st)
	}
}

// TestZoneEvictsRefilledFirst fills a one-shard zone with keys in debt and
// one that has refilled: a new key takes the refilled one's slot, and every
// key in debt keeps its state.
func TestZoneEvictsRefilledFirst(t *testing.T) {
	t0 := time.Now()
	_, s := newTestZone(t, ZoneConfig{RPM: 60, MaxKeys: 4})
	if len(s.shards) != 1 {
		t.Fatalf("%d shards, want 1", len(s.shards))
	}
	s.Reserve("light", 1, 0, 0, t0) // full again after 1 s
	for _, k := range []string{"heavy-1", "heavy-2", "heavy-3"} {
		for range 30 {
			s.Reserve(k, 1, 0, 0, t0) // full again after 30 s
		}
	}
	at := t0.Add(2 * time.Second)
	s.Reserve("new", 1, 0, 0, at)
	if s.tracked("light") {
		t.Error("the refilled key is still tracked")
	}
	for _, k := range []string{"heavy-1", "heavy-2", "heavy-3", "new"} {
		if !s.tracked(k) {
			t.Errorf("%s was evicted while a refilled key was there", k)
		}
	}
	if st := s.Status("heavy-1", at); st.RequestsRemaining != 32 {
		t.Errorf("heavy-1 lost its state: %d remaining, want 32", st.RequestsRemaining)
	}
	if n := s.len(); n > 4 {
		t.Errorf("%d keys tracked, bound 4", n)
	}
}

// TestZoneSweepFreesAllRefilled checks that one eviction drops every
// refilled key in the shard, so the following inserts need no sweep.
func TestZoneSweepFreesAllRefilled(t *testing.T) {
	t0 := time.Now()
	_, s := newTestZone(t, ZoneConfig{RPM: 60, MaxKeys: 100})
	for i := range 100 {
		s.Reserve(fmt.Sprint("old-", i), 1, 0, 0, t0)
	}
	s.Reserve("new", 1, 0, 0, t0.Add(time.Minute))
	if n := s.len(); n != 1 {
		t.Errorf("%d keys tracked after the sweep, want 1", n)
	}
}

// TestZoneEvictsClosestToFull fills a shard with keys that are all still
// refilling: the new key evicts the one closest to full, never the keys in
// deeper debt.
func TestZoneEvictsClosestToFull(t *testing.T) {
	t0 := time.Now()
	_, s := newTestZone(t, ZoneConfig{RPM: 60, TPM: 6000, MaxKeys: 3})
	s.Reserve("a", 10, 0, 0, t0)   // requests full after 10 s
	s.Reserve("b", 1, 500, 0, t0)  // tokens full after 5 s: closest to full
	s.Reserve("c", 1, 3000, 0, t0) // tokens full after 30 s
	s.Reserve("d", 1, 0, 0, t0.Add(time.Second))
	if s.tracked("b") || !s.tracked("a") || !s.tracked("c") || !s.tracked("d") {
		t.Errorf("tracked a=%v b=%v c=%v d=%v; want b evicted", s.tracked("a"), s.tracked("b"), s.tracked("c"), s.tracked("d"))
	}
}

// TestZoneNoFreshBucketsUnderChurn is the ristretto failure mode (a dropped
// Set hands the key a fresh bucket) turned into a test: however many new
// keys arrive, a key in debt is never handed a fresh bucket while others are
// closer to full.
func TestZoneNoFreshBucketsUnderChurn(t *testing.T) {
	t0 := time.Now()
	_, s := newTestZone(t, ZoneConfig{RPM: 10, MaxKeys: 64})
	for range 10 {
		s.Reserve("abuser", 1, 0, 0, t0)
	}
	for i := range 10_000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		s.Reserve(fmt.Sprint("k", i), 1, 0, 0, now)
		if _, ok := s.Reserve("abuser", 1, 0, 0, now); ok && i < 5000 {
			t.Fatalf("request %d: the abuser got a fresh bucket", i)
		}
	}
	if n := s.len(); n > 64 {
		t.Errorf("%d keys tracked, bound 64", n)
	}
}

// TestZoneMillionKeys configures MaxKeys 1,000,000 and offers more distinct
// keys than that: the store holds almost all of the first million before it
// starts evicting, and never more than the bound, both while every key is
// still refilling (each new key evicts one) and a minute later, when one
// sweep per shard frees the refilled keys at once.
func TestZoneMillionKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("a million keys")
	}
	const bound = 1_000_000
	t0 := time.Now()
	_, s := newTestZone(t, ZoneConfig{RPM: 60, MaxKeys: bound})
	for i := range bound {
		s.Reserve(fmt.Sprint("user-", i), 1, 0, 0, t0)
	}
	held := s.len()
	if held > bound || held < bound*97/100 {
		t.Errorf("after %d keys: %d held, want between 97 %% and 100 %% of %d", bound, held, bound)
	}
	for i := range 50_000 {
		s.Reserve(fmt.Sprint("active-", i), 1, 0, 0, t0)
	}
	if n := s.len(); n > bound {
		t.Errorf("with every key active: %d held, bound %d", n, bound)
	}
	for i := range 50_000 {
		s.Reserve(fmt.Sprint("later-", i), 1, 0, 0, t0.Add(time.Minute))
	}
	if n := s.len(); n > 100_000 {
		t.Errorf("a minute later: %d held; the sweeps should have freed the refilled keys", n)
	}
	t.Logf("%d of the first million keys held before eviction started", held)
}

// TestZoneMemoryPerKey measures the heap one tracked key costs, with a
// million keys in a zone configured for them.
func TestZoneMemoryPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("a million keys")
	}
	perKey := measureMemoryPerKey(t, 1_000_000)
	t.Logf("memory per tracked key: %.1f bytes (1,000,000 keys)", perKey)
	if perKey > 80 {
		t.Errorf("%.1f bytes per key, want at most 80", perKey)
	}
}

// measureMemoryPerKey fills a zone with n distinct keys and returns the heap
// growth per key. The keys themselves are built first and excluded: the store
// keeps only their hashes.
func measureMemoryPerKey(t testing.TB, n int) float64 {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, s := newTestZone(t, ZoneConfig{RPM: 60, TPM: 100_000, MaxKeys: n})
	t0 := time.Now()
	for _, k := range keys {
		s.Reserve(k, 1, 10, 0, t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if held := s.len(); held < n*97/100 {
		t.Fatalf("only %d of %d keys held", held, n)
	}
	runtime.KeepAlive(keys)
	runtime.KeepAlive(s)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(s.len())
}

// TestZoneKeys reports the keys a zone saw lately, by label only, with
// their state, at most recentSlots of them.
func TestZoneKeys(t *testing.T) {
	z, _ := newTestZone(t, ZoneConfig{Name: "per-key", RPM: 10})
	z.LabelKeys(func(k string) string { return "hash-of-" + k[len(k)-1:] })
	now := time.Now()
	for range 3 {
		Admit([]Demand{{Zone: z, Key: "sk-secret-a"}}, 0, 0, now)
	}
	Admit([]Demand{{Zone: z, Key: "sk-secret-b"}}, 0, 0, now)
	got := map[string]int64{}
	for _, k := range z.Keys(now) {
		got[k.Label] = k.Status.RequestsRemaining
	}
	if len(got) != 2 || got["hash-of-a"] != 7 || got["hash-of-b"] != 9 {
		t.Errorf("keys %v", got)
	}
	for i := range 10 * recentSlots {
		Admit([]Demand{{Zone: z, Key: fmt.Sprint("key-", i)}}, 0, 0, now.Add(time.Duration(i)*time.Second))
	}
	if n := len(z.Keys(now)); n > recentSlots || n < recentSlots/2 {
		t.Errorf("%d keys reported, want up to %d", n, recentSlots)
	}
	if unlabelled, _ := newTestZone(t, ZoneConfig{Name: "unlabelled", RPM: 1}); len(unlabelled.Keys(now)) != 0 {
		t.Error("a zone without labels reported keys")
	}
}
