package fleet

import "github.com/prometheus/client_golang/prometheus"

// The store's collectors, created once for the process and registered in
// every config load's registry by the app (Caddy makes a new registry per
// load).
var (
	storeHealthy = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "ai_resilience", Name: "fleet_store_healthy",
		Help: "1 while the fleet store answers, 0 while it is considered unreachable and fleet zones follow on_unavailable.",
	})
	liveInstances = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "ai_resilience", Name: "fleet_instances",
		Help: "Live instances of the fleet as the last heartbeat reported them, this one included.",
	})
	roundTrip = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "ai_resilience", Name: "fleet_store_round_trip_seconds",
		Help:    "Time of one admission in the fleet store, from sending the script to reading its answer.",
		Buckets: []float64{5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2},
	})
)

// Collectors returns the store's metrics, for registration in each config
// load's registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{storeHealthy, liveInstances, roundTrip}
}
