package airesilience

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/handlers"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// zones holds the rate-limit zones of every loaded config, by name and
// settings. Caddy provisions a new config before it cleans up the old one,
// so a reload that keeps a zone's settings finds the zone still here and
// keeps its buckets (a caddy.UsagePool, as mholt/caddy-ratelimit keeps its zones);
// changed settings make a fresh zone.
var zones = caddy.NewUsagePool()

// sharedZone is a zone in the pool.
type sharedZone struct{ *policy.Zone }

// Destruct implements caddy.Destructor; a zone holds only memory.
func (sharedZone) Destruct() error { return nil }

// zonePoolKey names a zone with its settings.
func zonePoolKey(z handlers.LimitZone) string {
	return fmt.Sprintf("%s\x00rpm=%d\x00tpm=%d\x00wait=%s\x00keys=%d", z.Zone, z.RPM, z.TPM, time.Duration(z.Wait), z.MaxKeys)
}

// loadLimits takes this handler's zones from the pool, creating them when
// no loaded config has them yet. Each one taken is given back in Cleanup
// (state.go).
// A fleet zone's name in the pool includes its store's, so a reload that
// changes the store starts the zone afresh there.
func (h *Handler) loadLimits(ctx caddy.Context) ([]handlers.Limit, error) {
	app, err := fleetApp(ctx)
	if err != nil {
		return nil, err
	}
	// Reports of a zone's state name its keys as logs do.
	secret := loadHashKey(ctx, h.logger)
	label := func(key string) string { return policy.KeyHash(secret, key) }
	limits := make([]handlers.Limit, 0, len(h.Limit))
	for _, z := range h.Limit {
		shared, storeKey, err := app.zoneStore(z.Zone, z.Scope)
		if err != nil {
			return nil, err
		}
		key := zonePoolKey(z) + storeKey
		h.warnOtherSettings(z, key)
		v, err := h.take(zones, key, func() (caddy.Destructor, error) {
			cfg := z.Config()
			var zone *policy.Zone
			var err error
			if shared != nil {
				zone, err = policy.NewSharedZone(cfg, shared)
			} else {
				zone, err = policy.NewZone(cfg)
			}
			if err != nil {
				return nil, err
			}
			return sharedZone{zone.LabelKeys(label)}, nil
		})
		if err != nil {
			return nil, fmt.Errorf("creating rate-limit zone %q: %w", z.Zone, err)
		}
		limits = append(limits, handlers.Limit{Zone: v.(sharedZone).Zone, Key: z.Key})
	}
	return limits, nil
}

// warnOtherSettings logs when a zone of the same name is loaded with other
// settings: either a reload changed them (the zone starts afresh), or two
// handlers disagree and so do not share one zone.
func (h *Handler) warnOtherSettings(z handlers.LimitZone, key string) {
	prefix := z.Zone + "\x00"
	zones.Range(func(k, _ any) bool {
		if other := k.(string); other != key && strings.HasPrefix(other, prefix) {
			h.logger.Warn("rate-limit zone loaded with other settings elsewhere; they do not share state",
				zap.String("zone", z.Zone))
			return false
		}
		return true
	})
}
