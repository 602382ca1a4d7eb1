package handlers

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// finish ends the call, once, whatever way it ended: the zones settle to
// its usage, and it is recorded in one log line, its metrics and the
// placeholders for access logs. It never logs headers, keys or message
// text.
func (c *call) finish() {
	c.limits.settle(c)
	c.record()
}

// record writes the call's log line, metrics and placeholders.
func (c *call) record() {
	elapsed := time.Since(c.start)
	usage := c.tap.progress.Usage
	status := c.end.status
	failed := c.end.errorType != "" || !successful(status)
	if failed && c.end.errorType == "" {
		c.end.errorType = "upstream_error"
	}

	msg := "api_call_success"
	if failed {
		msg = "api_call_error"
	}
	if ce := c.g.callLoggers[c.api].Check(zapcore.InfoLevel, msg); ce != nil {
		fields := append(c.logFields[:0],
			zap.String("model", c.req.Model),
			zap.String("served_model", c.served),
			zap.Bool("stream", c.req.Stream()),
			zap.Int("status", status),
			zap.Int("attempts", c.attempts),
			zap.Float64("latency_ms", float64(elapsed.Microseconds())/1000),
			zap.Int64("input_tokens", usage.InputTokens),
			zap.Int64("output_tokens", usage.OutputTokens),
			zap.String("stop_reason", usage.StopReason),
		)
		// The official SDKs count their own retries in this header: it
		// tells a client's retries from the gateway's. Only a small count
		// is logged; the header's text is the client's, of any length.
		if n, err := strconv.Atoi(c.r.Header.Get("X-Stainless-Retry-Count")); err == nil && n > 0 && n < 1000 {
			fields = append(fields, zap.Int("client_retry", n))
		}
		if failed {
			fields = append(fields, zap.String("error_type", c.end.errorType))
		}
		ce.Write(fields...)
	}

	dialect, requested, served := c.api.Family(), modelLabel(c.req.Model), modelLabel(c.model)
	requestsTotal.WithLabelValues(dialect, requested, statusLabel(status)).Inc()
	if failed {
		errorsTotal.WithLabelValues(dialect, requested, errorTypeLabel(c.end.errorType)).Inc()
	}
	if usage.InputTokens > 0 {
		tokensTotal.WithLabelValues(served, "input").Add(float64(usage.InputTokens))
	}
	if usage.OutputTokens > 0 {
		tokensTotal.WithLabelValues(served, "output").Add(float64(usage.OutputTokens))
	}
	overhead := elapsed - c.upstreamTime - c.waitTime
	overheadSeconds.WithLabelValues(dialect).Observe(overhead.Seconds())

	if c.attempts == 0 {
		c.publishAttempt() // answered before any attempt
	}
	if repl, ok := c.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.ai_resilience.input_tokens", usage.InputTokens)
		repl.Set("http.ai_resilience.output_tokens", usage.OutputTokens)
	}
}

// publishAttempt sets the placeholders known before a response is written,
// served_model and attempts. Response header directives (`header
// >X-Served-Model {http.ai_resilience.served_model}`) are applied when the
// status is written, before finish runs; the token counts are known only
// once the body has passed, so only finish sets them.
func (c *call) publishAttempt() {
	if repl, ok := c.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.ai_resilience.served_model", c.served)
		repl.Set("http.ai_resilience.attempts", c.attempts)
	}
}

// logRetry writes the warn line for a retry about to wait.
func (c *call) logRetry(wait time.Duration) {
	ce := c.g.Logger.Check(zapcore.WarnLevel, "retrying")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.Int("attempt", c.attempts+1),
		zap.String("model", c.model),
		zap.String("reason", string(c.last.reason)),
		zap.Int64("delay_ms", wait.Milliseconds()),
	}
	if c.last.held {
		fields = append(fields, zap.Int("status", c.aw.failedStatus()))
	} else if c.last.err != nil {
		fields = append(fields, zap.String("error", errorText(c.last.err)))
	}
	ce.Write(fields...)
}

// statusOf returns the status a handler error stands for.
func statusOf(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusInternalServerError
}

// errorText is an error's message for a log line: for the proxy's own
// errors, what went wrong without Caddy's error id and source position.
func errorText(err error) string {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.Err != nil {
		return he.Err.Error()
	}
	return err.Error()
}
