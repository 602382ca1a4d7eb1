// Package handlers is the request path of ai_resilience: it buffers the
// request, runs attempts through the next handler (reverse_proxy), holds back
// the responses it will retry, streams the rest, and records what happened.
// It knows nothing of caddy.Context, so it is tested with httptest alone.
package handlers

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// Config is the prepared, validated configuration of one gateway. Every
// field is set; zero durations mean "off" only where noted.
type Config struct {
	Provider wire.Provider
	// MaxBody is the largest request body buffered, in bytes.
	MaxBody int64
	// MaxBuffered is the most request and held response bytes the
	// process's gateways keep in memory at once before this one answers
	// that it is overloaded.
	MaxBuffered int64
	// Retries is the number of retries per model after its first attempt.
	Retries int
	Backoff policy.Backoff
	RetryOn policy.RetryOn
	// MaxWait is the longest single wait the gateway sits out.
	MaxWait time.Duration
	// Deadline bounds all attempts, waits and fallbacks of one request.
	Deadline time.Duration
	// AttemptTimeout bounds the wait for one attempt's response headers;
	// zero is off.
	AttemptTimeout time.Duration
	// IdleTimeout bounds the silence of a response once its headers are
	// in; zero is off.
	IdleTimeout time.Duration
	Fallbacks   policy.Fallbacks
	// ClientRetries, when false, marks a failure the gateway already
	// retried with `x-should-retry: false`.
	ClientRetries bool
	// OutputCap is the max_tokens ceiling, its mode and default_max_tokens.
	OutputCap policy.OutputCapRule
	// Models holds context windows and output limits.
	Models policy.ModelTable
	// ContextGuard is what to do with a request over its model's window.
	ContextGuard policy.ContextMode
	// Validate rejects malformed requests locally.
	Validate bool
	// Limits are the rate-limit zones every request must fit.
	Limits []Limit
	// PaceUpstream holds new requests while the upstream reports its rate
	// limit spent.
	PaceUpstream bool
	// Holds are the upstream's spent rate limits, by model and credential
	// (pace_upstream); nil is a table of this gateway's own.
	Holds policy.Holds
	// Circuit skips models that are failing; nil is off.
	Circuit policy.Circuits
	// Budget bounds retries to a share of recent traffic; nil is unlimited.
	Budget *policy.RetryBudget
	// HashKey keys the hash that stands for zone keys in logs (and for the
	// longest zone keys in the zones), so that the hash cannot be reversed
	// by guessing and is the same on every instance that shares it.
	HashKey []byte
	Logger  *zap.Logger
}

// Gateway serves LLM API requests resiliently in front of the next handler.
type Gateway struct {
	cfg Config
	// tokenZones is true when a zone limits tokens.
	tokenZones bool
}

// New returns a gateway for a prepared configuration.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Holds == nil {
		cfg.Holds = policy.NewPaceHolds(nil)
	}
	return &Gateway{cfg: cfg, tokenZones: countsTokens(cfg.Limits)}
}

// ServeHTTP handles one request. Requests the gateway does not read (by
// path and method) go to next untouched: no buffering, no retries.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	api := g.cfg.Provider.Detect(r.URL.Path)
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
	if len(g.cfg.Limits) == 0 {
		return next.ServeHTTP(w, r)
	}
	c := g.newCall(w, r, api)
	defer c.release()
	if ref := c.limits.admit(c); ref != nil {
		return c.answer(ref)
	}
	return next.ServeHTTP(w, r)
}
