package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// benchKeys returns n distinct keys and a random visiting order over them,
// built before any timing.
func benchKeys(n int) (keys []string, order []int32) {
	keys = make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("team-", i)
	}
	order = make([]int32, 1<<16)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range order {
		order[i] = int32(rng.IntN(n))
	}
	return keys, order
}

// label names keys in reports as the module does, so that the benchmarks
// include what remembering recent keys costs.
func label(z *Zone) *Zone {
	secret := []byte("bench secret")
	return z.LabelKeys(func(k string) string { return KeyHash(secret, k) })
}

// busyZone is a zone already tracking every one of its keys, with buckets
// large enough never to refuse: the steady state of a busy zone.
type busyZone struct {
	zone  *Zone
	keys  []string
	order []int32
	start time.Time
}

// busyZones caches one busyZone per key count: the benchmark framework runs
// a benchmark function several times, and a million keys take a second to
// set up.
var busyZones = map[int]*busyZone{}

func busy(b *testing.B, n int) *busyZone {
	if bz, ok := busyZones[n]; ok {
		return bz
	}
	keys, order := benchKeys(n)
	z, _ := newTestZone(b, ZoneConfig{RPM: 1 << 30, TPM: 1 << 40, MaxKeys: 2 * n})
	label(z)
	start := time.Now()
	for _, k := range keys {
		a, _, _ := Admit([]Demand{{Zone: z, Key: k}}, 1000, time.Second, start)
		a.Settle(800, start)
	}
	bz := &busyZone{zone: z, keys: keys, order: order, start: start}
	busyZones[n] = bz
	return bz
}

// BenchmarkAdmitSettle is the cost the limiter adds to one request: Admit in
// one zone, then Settle to the real usage, with the key picked at random
// among 1, 10,000 or 1,000,000 tracked keys (MaxKeys is twice their number,
// so nothing is evicted). The clock advances a microsecond per request.
func BenchmarkAdmitSettle(b *testing.B) {
	for _, n := range []int{1, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			bz := busy(b, n)
			now := bz.start
			demands := make([]Demand, 1)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				demands[0] = Demand{Zone: bz.zone, Key: bz.keys[bz.order[i&(len(bz.order)-1)]]}
				a, _, refusal := Admit(demands, 1000, time.Second, now)
				if refusal != nil {
					b.Fatal(refusal)
				}
				a.Settle(800, now)
				now = now.Add(time.Microsecond)
			}
		})
	}
}

// BenchmarkAdmitSettleParallel is BenchmarkAdmitSettle from every core at
// once. With one key every request takes the same shard lock, as it must:
// there is one bucket.
func BenchmarkAdmitSettleParallel(b *testing.B) {
	for _, n := range []int{1, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			bz := busy(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				demands := make([]Demand, 1)
				now := bz.start
				for i := rand.IntN(len(bz.order)); pb.Next(); i++ {
					demands[0] = Demand{Zone: bz.zone, Key: bz.keys[bz.order[i&(len(bz.order)-1)]]}
					a, _, refusal := Admit(demands, 1000, time.Second, now)
					if refusal != nil {
						b.Error(refusal)
						return
					}
					a.Settle(800, now)
					now = now.Add(time.Microsecond)
				}
			})
		})
	}
}

// BenchmarkAdmitSettleTwoZones is the usual multi-zone request: an
// organisation-wide zone without a key and a per-team zone.
func BenchmarkAdmitSettleTwoZones(b *testing.B) {
	keys, order := benchKeys(10_000)
	org, _ := newTestZone(b, ZoneConfig{Name: "org", RPM: 1 << 30, TPM: 1 << 40})
	team, _ := newTestZone(b, ZoneConfig{Name: "team", RPM: 1 << 30, TPM: 1 << 40})
	label(org)
	label(team)
	now := time.Now()
	demands := make([]Demand, 2)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		demands[0] = Demand{Zone: org}
		demands[1] = Demand{Zone: team, Key: keys[order[i&(len(order)-1)]]}
		a, _, refusal := Admit(demands, 1000, time.Second, now)
		if refusal != nil {
			b.Fatal(refusal)
		}
		a.Settle(800, now)
		now = now.Add(time.Microsecond)
	}
}

// BenchmarkAdmitNewKeyFlood is the worst case of the bounded store: a million
// distinct keys against the default bound of 100,000, each key still
// refilling (rpm 60, one request each), so nearly every request is a new key
// in a full shard, and evicts the key closest to full after a sweep of the
// shard.
func BenchmarkAdmitNewKeyFlood(b *testing.B) {
	keys, _ := benchKeys(1_000_000)
	z, _ := newTestZone(b, ZoneConfig{RPM: 60, TPM: 1_000_000})
	label(z)
	now := time.Now()
	demands := make([]Demand, 1)
	for i := range DefaultMaxKeys {
		demands[0] = Demand{Zone: z, Key: keys[i]}
		Admit(demands, 1000, 0, now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		demands[0] = Demand{Zone: z, Key: keys[i%len(keys)]}
		if a, _, refusal := Admit(demands, 1000, 0, now); refusal == nil {
			a.Settle(800, now)
		}
		now = now.Add(time.Microsecond)
	}
}

// BenchmarkAdmissionStatus is the extra cost of rate-limit headers on a
// successful response.
func BenchmarkAdmissionStatus(b *testing.B) {
	z, _ := newTestZone(b, ZoneConfig{RPM: 1 << 30, TPM: 1 << 40})
	now := time.Now()
	a, _, _ := Admit([]Demand{{Zone: z, Key: "team-a"}}, 1000, 0, now)
	var st ZoneStatus
	b.ReportAllocs()
	for b.Loop() {
		st = a.Status(now)
	}
	_ = st
}

// BenchmarkZoneMemoryPerKey reports the heap one tracked key costs, with a
// million keys in a zone bounded at a million (run with -benchtime=1x).
func BenchmarkZoneMemoryPerKey(b *testing.B) {
	var perKey float64
	for b.Loop() {
		perKey = measureMemoryPerKey(b, 1_000_000)
	}
	b.ReportMetric(perKey, "B/key")
}
