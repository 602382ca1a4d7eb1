package handlers

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// notePace reads the upstream's rate-limit headers on a response. When a
// window reports nothing remaining, new requests on this route are held
// until it resets instead of being sent into a 429 (SPEC "pace_upstream").
func (g *Gateway) notePace(d policy.Dialect, h http.Header) {
	if !g.cfg.PaceUpstream {
		return
	}
	now := time.Now()
	reset, ok := policy.RateLimitReset(d, h, now)
	if !ok || reset <= 0 {
		return
	}
	// The reset is the upstream's number: the sum saturates rather than
	// wrapping to an instant in the past.
	until := policy.SaturatingAdd(now.UnixNano(), int64(reset))
	for {
		prev := g.pausedUntil.Load()
		if prev >= until || g.pausedUntil.CompareAndSwap(prev, until) {
			return
		}
	}
}

// awaitUpstream holds a new request while the upstream has said its rate
// limit is spent, within max_wait and the deadline. It reports false when
// it has answered the request itself (a 429, or the client left).
func (c *call) awaitUpstream() bool {
	if !c.g.cfg.PaceUpstream {
		return true
	}
	wait := time.Until(time.Unix(0, c.g.pausedUntil.Load()))
	if wait <= 0 {
		return true
	}
	if wait > c.g.cfg.MaxWait || !time.Now().Add(wait).Before(c.deadline) {
		c.cancelAdmission() // it never goes upstream, so it takes no place in the zones
		paceTotal.WithLabelValues(c.dialect.String(), "rejected").Inc()
		c.writeRateLimited(policy.RequestsLimited, "the upstream reports its rate limit spent until it resets in "+wait.Round(time.Millisecond).String()+", longer than this gateway waits; retry after that", wait, true)
		return false
	}
	paceTotal.WithLabelValues(c.dialect.String(), "held").Inc()
	if ce := c.g.cfg.Logger.Check(zapcore.InfoLevel, "pacing upstream"); ce != nil {
		ce.Write(zap.String("model", c.model), zap.Int64("delay_ms", wait.Milliseconds()))
	}
	if !c.sleep(wait) {
		c.cancelAdmission()
		c.end = ending{errorType: "client_closed", status: statusClientClosed}
		c.finish()
		return false
	}
	return true
}

// maxRetryAfter bounds the wait hints the gateway sends: some SDKs ignore a
// retry-after above 60 s or give up entirely (reference §7.2).
const maxRetryAfter = 60 * time.Second

// writeRateLimited answers 429 in the dialect's shape with the wait hints
// every official SDK reads: retry-after-ms first, then retry-after in whole
// seconds (at least 1, never 0, which some SDKs take as "retry now"), and
// x-should-retry saying whether waiting can help at all (reference §7.2–7.3).
func (c *call) writeRateLimited(kind policy.ErrorKind, msg string, retry time.Duration, shouldRetry bool) {
	h := c.w.Header()
	if shouldRetry {
		retry = min(max(retry, time.Millisecond), maxRetryAfter)
		h.Set("Retry-After-Ms", strconv.FormatInt(max(retry.Milliseconds(), 1), 10))
		h.Set("Retry-After", strconv.FormatInt(max(int64(math.Ceil(retry.Seconds())), 1), 10))
	}
	h.Set("X-Should-Retry", strconv.FormatBool(shouldRetry))
	c.writeError(kind, msg, "")
}
