package airesilience

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-resilience/caddy-ai-resilience/handlers"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// zones holds the rate-limit zones of every loaded config, by name and
// settings. Caddy provisions a new config before it cleans up the old one,
// so a reload that keeps a zone's settings finds the zone still here and
// keeps its buckets (caddy-modules.md §1.2, the caddy-ratelimit pattern);
// changed settings make a fresh zone.
var zones = caddy.NewUsagePool()

// sharedZone is a zone in the pool.
type sharedZone struct{ *policy.Zone }

// Destruct implements caddy.Destructor; a zone holds only memory.
func (sharedZone) Destruct() error { return nil }

// poolKey names a zone with its settings.
func (z LimitZone) poolKey() string {
	return fmt.Sprintf("%s\x00rpm=%d\x00tpm=%d\x00wait=%s\x00keys=%d", z.Zone, z.RPM, z.TPM, time.Duration(z.Wait), z.MaxKeys)
}

// loadLimits takes this handler's zones from the pool, creating them when
// no loaded config has them yet. Each one taken is given back in Cleanup.
func (h *Handler) loadLimits() ([]handlers.Limit, error) {
	limits := make([]handlers.Limit, 0, len(h.Limit))
	for _, z := range h.Limit {
		key := z.poolKey()
		v, _, err := zones.LoadOrNew(key, func() (caddy.Destructor, error) {
			zone, err := policy.NewZone(policy.ZoneConfig{Name: z.Zone, RPM: z.RPM, TPM: z.TPM, Wait: time.Duration(z.Wait), MaxKeys: z.MaxKeys})
			return sharedZone{zone}, err
		})
		if err != nil {
			return nil, fmt.Errorf("creating rate-limit zone %q: %w", z.Zone, err)
		}
		h.zoneKeys = append(h.zoneKeys, key)
		limits = append(limits, handlers.Limit{Zone: v.(sharedZone).Zone, Key: z.Key})
	}
	return limits, nil
}

// Cleanup gives this handler's zones back to the pool.
func (h *Handler) Cleanup() error {
	for _, key := range h.zoneKeys {
		_, _ = zones.Delete(key)
	}
	h.zoneKeys = nil
	return nil
}
