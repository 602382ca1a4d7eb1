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

// credentialHash identifies the API key a request carries (X-Api-Key,
// Authorization, or Azure's Api-Key) without keeping it: the upstream's
// rate limits belong to the key's organisation, so pacing is kept per key.
func (g *Gateway) credentialHash(r *http.Request) string {
	h := r.Header
	return g.keyHash(h.Get("X-Api-Key") + "\x00" + h.Get("Authorization") + "\x00" + h.Get("Api-Key"))
}

// notePace reads the upstream's rate-limit headers on the attempt's
// response. When a window reports nothing remaining, new requests for the
// same model with the same credential are held until it resets instead of
// being sent into a 429; other models and other keys are not held, since
// the provider limits them separately.
func (c *call) notePace() {
	if !c.g.cfg.PaceUpstream {
		return
	}
	now := time.Now()
	reset, ok := policy.RateLimitReset(c.dialect, c.w.Header(), now)
	if !ok || reset <= 0 {
		return
	}
	// The reset is the upstream's number: the sum saturates rather than
	// wrapping to an instant in the past.
	until := policy.SaturatingAdd(now.UnixNano(), int64(reset))
	c.g.cfg.Holds.Hold(policy.HoldKey{Model: c.model, Credential: c.g.credentialHash(c.r)}, until, now.UnixNano())
}

// awaitUpstream holds a new request while the upstream has said the rate
// limit governing its model and key is spent, within max_wait and the
// deadline. It reports false when it has answered the request itself (a
// 429, or the client left).
func (c *call) awaitUpstream() bool {
	if !c.g.cfg.PaceUpstream {
		return true
	}
	now := time.Now()
	if !c.g.cfg.Holds.Any(now.UnixNano()) {
		return true
	}
	key := policy.HoldKey{Model: c.model, Credential: c.g.credentialHash(c.r)}
	until := c.g.cfg.Holds.Until(key, now.UnixNano())
	wait := time.Unix(0, until).Sub(now)
	if until == 0 || wait <= 0 {
		return true
	}
	if wait > c.g.cfg.MaxWait || !now.Add(wait).Before(c.deadline) {
		c.cancelAdmission() // it never goes upstream, so it takes no place in the zones
		paceTotal.WithLabelValues(c.dialect.String(), "rejected").Inc()
		c.writeRateLimited(policy.RequestsLimited, "the upstream reports the rate limit for this model and API key spent until it resets in "+wait.Round(time.Millisecond).String()+", longer than this gateway waits; retry after that", wait, true)
		return false
	}
	paceTotal.WithLabelValues(c.dialect.String(), "held").Inc()
	if ce := c.g.cfg.Logger.Check(zapcore.InfoLevel, "pacing upstream"); ce != nil {
		ce.Write(zap.String("model", c.model), zap.String("key_hash", key.Credential), zap.Int64("delay_ms", wait.Milliseconds()))
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
