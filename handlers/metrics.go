package handlers

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// The collectors are created once for the process and registered in every
// config load's registry by the module: Caddy makes a new registry per load
// (caddy.NewContext makes a fresh prometheus registry), and two handlers
// must not register twice.
var (
	requestsTotal = counter("requests_total",
		"LLM API requests handled, by dialect, requested model and the status the client received.",
		"dialect", "model", "status")
	errorsTotal = counter("errors_total",
		"LLM API requests that ended in an error (each api_call_error log line), by dialect, requested model and error type; a stream that broke off or carried an error event counts here though its status was 200.",
		"dialect", "model", "error_type")
	attemptsTotal = counter("attempts_total",
		"Upstream attempts, first tries and retries, by dialect and the model tried.",
		"dialect", "model")
	retriesTotal = counter("retries_total",
		"Retries of the same model, by dialect, model and the reason the previous attempt failed.",
		"dialect", "model", "reason")
	fallbacksTotal = counter("fallbacks_total",
		"Requests sent on to a fallback model, by the unavailable model and its fallback.",
		"from", "to")
	tokensTotal = counter("tokens_total",
		"Tokens reported by upstream usage, by the model that served and direction (input or output).",
		"model", "direction")
	circuitTransitionsTotal = counter("circuit_transitions_total",
		"Circuit breaker transitions, by model and the state entered (open, half_open, closed).",
		"model", "to")
	retryBudgetDeniedTotal = counter("retry_budget_denied_total",
		"Retries and fallbacks the gateway scheduled on its own that the retry budget refused, by dialect.",
		"dialect")
	guardActionsTotal = counter("guard_actions_total",
		"Requests changed or stopped by a guard, by dialect and action (integrity, invalid, output_cap, max_tokens_rejected, context_rejected, context_fallback, context_truncated before any upstream call; circuit_open for each attempt an open circuit refused).",
		"dialect", "action")
	limitedTotal = counter("limited_requests_total",
		"Requests meeting rate-limit zones, by zone and outcome (admitted at once, queued, rejected).",
		"zone", "outcome")
	limitTokensTotal = counter("limit_tokens_total",
		"Tokens reserved at admission and settled to real usage, by model and kind (reserved, settled).",
		"model", "kind")
	estimateRatio = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "ai_resilience", Name: "estimate_ratio",
		Help:    "Estimated input tokens divided by the input tokens the upstream reported, by dialect.",
		Buckets: []float64{0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 2, 3},
	}, []string{"dialect"})
	paceTotal = counter("upstream_paced_total",
		"Requests held (or refused) because the upstream reported its rate limit spent, by dialect and outcome (held, rejected).",
		"dialect", "outcome")
	overheadSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "ai_resilience", Name: "overhead_seconds",
		Help:    "Time the gateway itself added to a request: total time less time in the upstream and in backoff waits.",
		Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2},
	}, []string{"dialect"})
)

// counter makes a counter named caddy_ai_resilience_<name>.
func counter(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "caddy", Subsystem: "ai_resilience", Name: name, Help: help}, labels)
}

// Collectors returns the gateway's metrics, for registration in each
// config load's registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		requestsTotal, errorsTotal, attemptsTotal, retriesTotal, fallbacksTotal, tokensTotal,
		circuitTransitionsTotal, retryBudgetDeniedTotal, guardActionsTotal, paceTotal, limitedTotal, limitTokensTotal, estimateRatio, overheadSeconds,
	}
}

// maxModelLabels bounds the model label's values: the model comes from
// client input, and an unbounded label would let clients grow the metrics
// without limit. Models first seen after the bound are counted as "other".
const maxModelLabels = 256

var modelLabels = struct {
	sync.RWMutex
	seen map[string]struct{}
}{seen: make(map[string]struct{})}

// modelLabel returns the metric label for a model name.
func modelLabel(model string) string {
	if model == "" {
		return "none"
	}
	modelLabels.RLock()
	_, ok := modelLabels.seen[model]
	modelLabels.RUnlock()
	if ok {
		return model
	}
	if !plausibleModel(model) {
		return "other"
	}
	modelLabels.Lock()
	defer modelLabels.Unlock()
	if _, ok := modelLabels.seen[model]; !ok {
		if len(modelLabels.seen) >= maxModelLabels {
			return "other"
		}
		modelLabels.seen[model] = struct{}{}
	}
	return model
}

// plausibleModel accepts the characters model ids use across providers
// (claude-opus-4-5-20251101, gpt-5.1, accounts/x/models/y, org/model:tag).
func plausibleModel(s string) bool {
	if len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == '_' || b == ':' || b == '/' || b == '@') {
			return false
		}
	}
	return true
}

// errorTypes are the error_type label values: the gateway's own, and the
// documented error types and codes of both providers. An upstream may send
// any string, so others are counted as "other".
var errorTypes = map[string]bool{
	"client_closed": true, "stream_incomplete": true, "response_incomplete": true, "stream_error": true,
	"upstream_error": true, "handler_error": true, "no_response": true, "connection_error": true,
	"timeout_error": true, "model_unavailable": true, "request_too_large": true,
	"invalid_request_error": true, "context_length_exceeded": true, "rate_limit_error": true,
	"authentication_error": true, "billing_error": true, "permission_error": true, "not_found_error": true,
	"conflict_error": true, "api_error": true, "overloaded_error": true, "server_error": true,
	"insufficient_quota": true, "rate_limit_exceeded": true, "requests": true, "tokens": true,
	"response_failed": true,
}

func errorTypeLabel(t string) string {
	if errorTypes[t] {
		return t
	}
	return "other"
}

// statusLabels holds every status as a string, so labelling allocates nothing.
var statusLabels = func() (l [600]string) {
	for i := range l {
		l[i] = strconv.Itoa(i)
	}
	return l
}()

func statusLabel(status int) string {
	if status < 0 || status >= len(statusLabels) {
		return "other"
	}
	return statusLabels[status]
}
