package airesilience

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-resilience/caddy-ai-resilience/fleet"
	"github.com/ai-resilience/caddy-ai-resilience/handlers"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// The state of the storm guards and of pacing, pooled by settings like the
// zones: Caddy provisions a new config before it cleans up the old one, so
// a reload that keeps a handler's settings finds its circuits, retry budget
// and pacing holds here and keeps them (open circuits stay open, holds
// stay), with or without a fleet store. Handlers with the same settings
// share them, as instances of a fleet share circuits and holds. With a
// store, its name is part of the settings: circuits and holds then live
// in the store, and a reload that changes the store starts them afresh.
var (
	circuits = caddy.NewUsagePool()
	budgets  = caddy.NewUsagePool()
	holds    = caddy.NewUsagePool()
)

// pooledCircuits is a breaker in the pool, with what stops its store from
// updating it.
type pooledCircuits struct {
	*policy.CircuitBreaker
	unwatch func()
}

// Destruct implements caddy.Destructor.
func (p pooledCircuits) Destruct() error {
	if p.unwatch != nil {
		p.unwatch()
	}
	return nil
}

// pooledBudget is a retry budget in the pool; it holds only memory.
type pooledBudget struct{ *policy.RetryBudget }

// Destruct implements caddy.Destructor.
func (pooledBudget) Destruct() error { return nil }

// pooledHolds is a pacing-hold table in the pool, with what stops its
// store from updating it.
type pooledHolds struct {
	*policy.PaceHolds
	unwatch func()
}

// Destruct implements caddy.Destructor.
func (p pooledHolds) Destruct() error {
	if p.unwatch != nil {
		p.unwatch()
	}
	return nil
}

// taken is one value a handler took from a pool, to give back in Cleanup.
type taken struct {
	pool *caddy.UsagePool
	key  string
}

// loadState takes the handler's circuits, retry budget and pacing holds
// from their pools into cfg, creating them when no loaded config has them.
// The retry budget is always this instance's own; circuits and holds are
// the fleet's when the ai_resilience app has a store.
func (h *Handler) loadState(ctx caddy.Context, deps *handlers.Deps) error {
	app, err := fleetApp(ctx)
	if err != nil {
		return err
	}
	var store *fleet.Store
	storeKey := ""
	if app != nil && app.store != nil {
		store, storeKey = app.store, "\x00store="+app.storeKey
		store.SetKeyFingerprint(policy.KeyHash(deps.HashKey, "ai_resilience fleet fingerprint"))
	}
	if !h.CircuitBreaker.Off {
		cb, err := h.loadCircuits(store, storeKey)
		if err != nil {
			return err
		}
		deps.Circuits = cb
	}
	if !h.RetryBudget.Off {
		key := fmt.Sprintf("percent=%v\x00floor=%v", h.RetryBudget.Percent, *h.RetryBudget.MinPerSecond)
		v, err := h.take(budgets, key, func() (caddy.Destructor, error) {
			return pooledBudget{policy.NewRetryBudget(h.RetryBudget.Percent, *h.RetryBudget.MinPerSecond, time.Now)}, nil
		})
		if err != nil {
			return err
		}
		deps.Budget = v.(pooledBudget).RetryBudget
	}
	if *h.PaceUpstream {
		v, err := h.take(holds, "holds"+storeKey, func() (caddy.Destructor, error) {
			if store == nil {
				return pooledHolds{PaceHolds: policy.NewPaceHolds(nil)}, nil
			}
			table := policy.NewPaceHolds(store)
			return pooledHolds{table, store.WatchHolds(table)}, nil
		})
		if err != nil {
			return err
		}
		deps.Holds = v.(pooledHolds).PaceHolds
	}
	return nil
}

// loadCircuits takes the breaker for the handler's circuit settings, and
// has it log the transitions that its store decides with this handler's
// logger (the newest config's, after a reload).
func (h *Handler) loadCircuits(store *fleet.Store, storeKey string) (*policy.CircuitBreaker, error) {
	s := h.CircuitBreaker.Settings()
	v, err := h.take(circuits, fmt.Sprintf("%+v", s)+storeKey, func() (caddy.Destructor, error) {
		if store == nil {
			return pooledCircuits{CircuitBreaker: policy.NewCircuitBreaker(s, time.Now)}, nil
		}
		breaker := policy.NewFleetCircuitBreaker(s, time.Now, store)
		return pooledCircuits{breaker, store.WatchCircuits(breaker)}, nil
	})
	if err != nil {
		return nil, err
	}
	breaker := v.(pooledCircuits).CircuitBreaker
	logger := h.logger
	breaker.SetNotify(func(tr policy.Transition) { handlers.CircuitChanged(logger, tr) })
	return breaker, nil
}

// take loads key from pool, making it with create when no loaded config
// has it, and remembers it to give back in Cleanup.
func (h *Handler) take(pool *caddy.UsagePool, key string, create func() (caddy.Destructor, error)) (any, error) {
	v, _, err := pool.LoadOrNew(key, create)
	if err != nil {
		return nil, err
	}
	h.taken = append(h.taken, taken{pool, key})
	return v, nil
}

// Cleanup gives back what this handler took from the pools.
func (h *Handler) Cleanup() error {
	for _, t := range h.taken {
		_, _ = t.pool.Delete(t.key)
	}
	h.taken = nil
	return nil
}
