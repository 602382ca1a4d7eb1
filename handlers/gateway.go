// Package handlers is the request path of ai_resilience: it buffers the
// request, runs attempts through the next handler (reverse_proxy), holds back
// the responses it will retry, streams the rest, and records what happened.
// It knows nothing of caddy.Context, so it is tested with httptest alone.
package handlers

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// Deps are what a gateway takes from outside its configuration: its
// logger, and the state it shares with other handlers and keeps across
// config reloads (rate-limit zones, circuits, retry budget, pacing holds),
// in this instance's memory or in a fleet's store.
type Deps struct {
	Logger *zap.Logger
	// Limits are the rate-limit zones every request must fit.
	Limits []Limit
	// Circuits skip models that are failing; nil is off.
	Circuits policy.Circuits
	// Budget bounds retries to a share of recent traffic; nil is
	// unlimited.
	Budget *policy.RetryBudget
	// Holds are the upstream's spent rate limits, by model and credential
	// (pace_upstream); nil is a table of this gateway's own.
	Holds policy.Holds
	// HashKey keys the hash that stands for keys in logs (and for the
	// longest zone keys in the zones), so that the hash cannot be reversed
	// by guessing and is the same on every instance that shares it.
	HashKey []byte
}

// Gateway serves LLM API requests resiliently in front of the next handler.
type Gateway struct {
	cfg *Config
	Deps
	// tokenZones is true when a zone limits tokens.
	tokenZones bool
	// callLoggers hold, per API, the logger of the per-call line with the
	// fields that never change (provider, endpoint) already encoded, so
	// each line encodes only what varies.
	callLoggers map[wire.API]*zap.Logger
}

// New returns a gateway for a configuration that Provision has prepared.
func New(cfg *Config, deps Deps) *Gateway {
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	if deps.Holds == nil {
		deps.Holds = policy.NewPaceHolds(nil)
	}
	g := &Gateway{cfg: cfg, Deps: deps, tokenZones: countsTokens(deps.Limits), callLoggers: make(map[wire.API]*zap.Logger)}
	for _, api := range wire.All {
		g.callLoggers[api] = deps.Logger.With(zap.String("provider", api.Family()), zap.String("endpoint", api.Name()))
	}
	return g
}

// ServeHTTP handles one request. Requests the gateway does not read (by
// path and method) go to next untouched: no buffering, no retries.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	api := g.cfg.provider.Detect(r.URL.Path)
	if !api.Guarded() || r.Method != http.MethodPost {
		return g.passThrough(w, r, next, api)
	}
	c := g.newCall(w, r, api)
	defer c.release()
	return c.serve(next)
}

// passThrough sends a request the gateway does not read to next as it is,
// but for the rate-limit zones, which still count it. It reserves no
// tokens; a refusal is in the shape the API (or, for an unknown path,
// OpenAI's) uses.
func (g *Gateway) passThrough(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, api wire.API) error {
	if len(g.Limits) == 0 {
		return next.ServeHTTP(w, r)
	}
	c := g.newCall(w, r, api)
	defer c.release()
	if ref := c.limits.admit(c); ref != nil {
		return c.answer(ref)
	}
	return next.ServeHTTP(w, r)
}
