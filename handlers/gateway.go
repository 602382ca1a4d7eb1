// Package handlers is the request path of ai_resilience: it buffers the
// request, runs attempts through the next handler (reverse_proxy), holds back
// the responses it will retry, streams the rest, and records what happened.
// It knows nothing of caddy.Context, so it is tested with httptest alone.
package handlers

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// Config is the prepared, validated configuration of one gateway. Every
// field is set; zero durations mean "off" only where noted.
type Config struct {
	Provider policy.Provider
	// MaxBody is the largest request body buffered, in bytes.
	MaxBody int64
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
	// Circuit skips models that are failing; nil is off.
	Circuit policy.Circuits
	// Budget bounds retries to a share of recent traffic; nil is unlimited.
	Budget *policy.RetryBudget
	Logger *zap.Logger
}

// Gateway serves LLM API requests resiliently in front of the next handler.
type Gateway struct {
	cfg Config
	// holds are the upstream's spent rate limits, by model and credential
	// (pace_upstream).
	holds paceHolds
	// tokenZones is true when a zone limits tokens.
	tokenZones bool
}

// New returns a gateway for a prepared configuration.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Gateway{cfg: cfg, tokenZones: countsTokens(cfg.Limits)}
}

// ServeHTTP handles one request. Requests that are not LLM API calls (by
// path and method) go to next untouched: no buffering, no retries.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	dialect, endpoint := g.cfg.Provider.Detect(r.URL.Path)
	if dialect == policy.Passthrough || r.Method != http.MethodPost {
		return g.passThrough(w, r, next, dialect, endpoint)
	}
	c := newCall(g, w, r, dialect, endpoint)
	defer c.release()

	if err := readBody(c.body, r.Body, r.ContentLength, g.cfg.MaxBody); err != nil {
		if errors.Is(err, errBodyTooLarge) {
			c.reject(policy.BodyTooLarge, "the request body is larger than this gateway's max_body of "+formatBytes(g.cfg.MaxBody)+"; send a smaller request (fewer or smaller images and documents), or raise max_body in the ai_resilience configuration")
			return nil
		}
		if r.Context().Err() != nil {
			return nil // the client left while sending
		}
		c.reject(policy.InvalidRequest, "the request body could not be read: "+err.Error())
		return nil
	}
	return c.run(next)
}

// passThrough sends a request the gateway does not handle to next as it
// is, but for the rate-limit zones, which still count it (SPEC "Dialects":
// anything else passes through untouched, "except that limits still count
// requests"). It reserves no tokens; a refusal is in the OpenAI shape.
func (g *Gateway) passThrough(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, d policy.Dialect, e policy.Endpoint) error {
	if len(g.cfg.Limits) == 0 {
		return next.ServeHTTP(w, r)
	}
	c := newCall(g, w, r, d, e)
	defer c.release()
	if !c.admit() {
		return nil
	}
	return next.ServeHTTP(w, r)
}
