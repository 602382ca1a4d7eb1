// Package airesilience is a Caddy HTTP handler, `ai_resilience`, that makes
// every call through a `reverse_proxy` to an LLM provider (Anthropic
// Messages, OpenAI Chat Completions and Responses, and compatible APIs)
// resilient and bounded: retries with backoff that honour the provider's
// wait hints, fallback models, deadlines, and streams that never pass off a
// cut answer as a whole one.
package airesilience

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/handlers"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler makes LLM API calls through the next handler (a reverse_proxy to
// the provider) resilient: it retries what is worth retrying, waits as long
// as the provider asks within bounds, falls back to other models, and
// answers every error of its own in the provider's error shape. It belongs
// in the same `route` or `handle` block as the reverse_proxy it guards.
//
// Requests are recognised by their cleaned path (dot segments removed,
// repeated slashes folded): `/v1/messages` is Anthropic;
// `/v1/chat/completions`, `/v1/responses`, `/v1/completions` and
// `/v1/embeddings` are OpenAI. Anything else passes through untouched.
//
// Whatever the other settings, a request body is read whole (decoded from
// gzip or deflate) and refused with a 400 when it is shorter than it
// declares, names a member the gateway reads or rewrites twice, or names a
// model longer than 256 bytes; output caps are judged by value in any JSON
// number form.
//
// Placeholder | Description
// ------------|-------------
// `{http.ai_resilience.served_model}` | The model that answered (the requested one, or a fallback).
// `{http.ai_resilience.attempts}` | How many upstream attempts the request took.
// `{http.ai_resilience.input_tokens}` | Input tokens the upstream reported.
// `{http.ai_resilience.output_tokens}` | Output tokens the upstream reported.
type Handler struct {
	handlers.Config

	gateway *handlers.Gateway
	logger  *zap.Logger
	taken   []taken // zones and state taken from their pools, to give back

	// noStore is set by the Caddyfile adapter when the Caddyfile has no
	// fleet store (no `ai_resilience { redis … }` global option), so that
	// `scope fleet` is refused at its line.
	noStore bool
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_resilience",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, prepares the request path, takes the handler's
// zones and state from their pools, and registers metrics.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.Config.Provision(); err != nil {
		return err
	}
	deps := handlers.Deps{Logger: h.logger, HashKey: loadHashKey(ctx, h.logger)}
	var err error
	if deps.Limits, err = h.loadLimits(ctx); err != nil {
		return err
	}
	if err = h.loadState(ctx, &deps); err != nil {
		return err
	}
	h.gateway = handlers.New(&h.Config, deps)
	registerMetrics(ctx.GetMetricsRegistry(), h.logger, handlers.Collectors())
	return nil
}

// registerMetrics adds collectors to this config load's registry. Caddy
// makes a new registry per load and several modules share the collectors,
// so "already registered" is expected; any other failure disables metrics
// but not the module (as caddy-ratelimit does).
func registerMetrics(reg *prometheus.Registry, logger *zap.Logger, collectors []prometheus.Collector) {
	if reg == nil {
		return
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				logger.Warn("registering metrics", zap.Error(err))
			}
		}
	}
}

// Validate rejects settings that cannot work together.
func (h *Handler) Validate() error { return h.Config.Validate() }

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return h.gateway.ServeHTTP(w, r, next)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
