package fleet

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// benchZones are three zones a request is typically in: the organisation,
// its team and its user, sized so that nothing is refused.
var benchZones = []policy.ZoneConfig{
	{Name: "org", RPM: 1 << 40, TPM: 1 << 50},
	{Name: "team", RPM: 1 << 40},
	{Name: "user", TPM: 1 << 50},
}

// benchDemands returns request i's demands in zones: one organisation, 16
// teams, 1024 users.
func benchDemands(zones []*policy.Zone, i int) []policy.Demand {
	return []policy.Demand{
		{Zone: zones[0]},
		{Zone: zones[1], Key: fmt.Sprint("team-", i%16)},
		{Zone: zones[2], Key: fmt.Sprint("user-", i%1024)},
	}
}

// benchAdmit admits b.N requests of 1000 tokens in zones, one at a time,
// and reports the median and 99th percentile of one admission; settle adds
// each request's settlement.
func benchAdmit(b *testing.B, zones []*policy.Zone, settle bool) {
	demands := make([][]policy.Demand, 4096)
	for i := range demands {
		demands[i] = benchDemands(zones, i)
	}
	took := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		a, _, r := policy.Admit(demands[i%len(demands)], 1000, 0, start)
		took = append(took, time.Since(start))
		if r != nil {
			b.Fatal(r)
		}
		if settle {
			a.Settle(800, time.Now())
		}
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkAdmitLocal3Zones is one admission in three instance zones: the
// baseline the fleet store adds its round trip to.
func BenchmarkAdmitLocal3Zones(b *testing.B) {
	zones := make([]*policy.Zone, len(benchZones))
	for i, cfg := range benchZones {
		zones[i] = must(policy.NewZone(cfg))
	}
	benchAdmit(b, zones, false)
}

// benchStore connects a store to a fresh local redis-server and returns the
// three fleet zones.
func benchStore(b *testing.B) (*testredis.Server, *Store, []*policy.Zone) {
	srv := testredis.Start(b)
	s, err := New(Config{URLs: []string{srv.URL}, Prefix: "bench", Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	zones := make([]*policy.Zone, len(benchZones))
	for i, cfg := range benchZones {
		zones[i] = zone(b, s, cfg)
	}
	return srv, s, zones
}

// reportStoreCPU reports the store's CPU time per request, from INFO
// commandstats (scripts run as EVALSHA, or EVAL the first time).
func reportStoreCPU(b *testing.B, srv *testredis.Server) {
	calls, usec := srv.CommandStats("evalsha")
	evals, evalUsec := srv.CommandStats("eval")
	b.ReportMetric(float64(usec+evalUsec)/float64(b.N), "redis-µs/op")
	b.ReportMetric(float64(calls+evals)/float64(b.N), "scripts/op")
}

// BenchmarkAdmitFleet3Zones is one admission in three fleet zones through
// the script, against a redis-server on loopback: one round trip. It also
// reports the server's CPU per admission.
func BenchmarkAdmitFleet3Zones(b *testing.B) {
	srv, _, zones := benchStore(b)
	if err := srv.Do("CONFIG", "RESETSTAT"); err != nil {
		b.Fatal(err)
	}
	benchAdmit(b, zones, false)
	reportStoreCPU(b, srv)
}

// BenchmarkAdmitSettleFleet3Zones adds each request's settlement, which
// travels in batches: the store's CPU per request covers both scripts.
func BenchmarkAdmitSettleFleet3Zones(b *testing.B) {
	srv, s, zones := benchStore(b)
	if err := srv.Do("CONFIG", "RESETSTAT"); err != nil {
		b.Fatal(err)
	}
	benchAdmit(b, zones, true)
	s.flush()
	reportStoreCPU(b, srv)
}

// BenchmarkAdmitFleet3ZonesParallel admits from many goroutines at once,
// as a busy instance does: the store's throughput through the client's
// connection pool.
func BenchmarkAdmitFleet3ZonesParallel(b *testing.B) {
	srv, _, zones := benchStore(b)
	if err := srv.Do("CONFIG", "RESETSTAT"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, _, r := policy.Admit(benchDemands(zones, i), 1000, 0, time.Now()); r != nil {
				b.Error(r)
				return
			}
			i++
		}
	})
	reportStoreCPU(b, srv)
}

// benchViews returns a breaker and a hold table as a request reads them:
// one instance's own, or, with fleet, shown from memory by a store on a
// local redis-server, which receives their outcomes in batches.
func benchViews(b *testing.B, fleet bool) (*policy.CircuitBreaker, *policy.PaceHolds) {
	s := policy.CircuitSettings{Failures: 5, Cooldown: time.Second, FailureRate: 50, Window: 10 * time.Second, MinCalls: 20, Probes: 3}
	if !fleet {
		return policy.NewCircuitBreaker(s, nil), policy.NewPaceHolds(nil)
	}
	_, store, _ := benchStore(b)
	cb := policy.NewFleetCircuitBreaker(s, nil, store)
	b.Cleanup(store.WatchCircuits(cb))
	holds := policy.NewPaceHolds(store)
	b.Cleanup(store.WatchHolds(holds))
	return cb, holds
}

// BenchmarkRequestViews is what a request pays for the circuit and pacing
// state, one instance's or the fleet's: it asks the model's circuit,
// checks for a pacing hold (one is live, for another key, so the table is
// read), and reports a success. The fleet's adds no round trip: its
// outcome joins a batch.
func BenchmarkRequestViews(b *testing.B) {
	for _, fleet := range []bool{false, true} {
		name := "local"
		if fleet {
			name = "fleet"
		}
		b.Run(name, func(b *testing.B) {
			cb, holds := benchViews(b, fleet)
			now := time.Now().UnixNano()
			holds.Hold(policy.HoldKey{Model: "claude-sonnet-4-5", Credential: "another"}, now+int64(time.Hour), now)
			key := policy.HoldKey{Model: "claude-sonnet-4-5", Credential: "0123456789abcdef"}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p, _ := cb.Allow(key.Model)
					t := time.Now().UnixNano()
					if holds.Any(t) && holds.Until(key, t) != 0 {
						b.Error("held")
					}
					cb.Record(p, policy.OutcomeSuccess)
				}
			})
		})
	}
}
