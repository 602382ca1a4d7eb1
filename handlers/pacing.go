package handlers

import (
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
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
	if !c.g.cfg.paceUpstream {
		return
	}
	now := time.Now()
	reset, ok := c.api.RateLimitReset(c.w.Header(), now)
	if !ok || reset <= 0 {
		return
	}
	// The reset is the upstream's number: a hold longer than a day is held
	// for a day, which max_wait refuses as surely, and the instant cannot
	// wrap into the past.
	until := now.Add(min(reset, maxHold)).UnixNano()
	c.g.Holds.Hold(policy.HoldKey{Model: c.model, Credential: c.g.credentialHash(c.r)}, until, now.UnixNano())
}

// maxHold bounds a pacing hold.
const maxHold = 24 * time.Hour

// pace holds a new request while the upstream has said the rate limit
// governing its model and key is spent, within max_wait and the deadline,
// and refuses it with a 429 when the wait is longer.
func (c *call) pace() *refusal {
	if !c.g.cfg.paceUpstream {
		return nil
	}
	now := time.Now()
	if !c.g.Holds.Any(now.UnixNano()) {
		return nil
	}
	key := policy.HoldKey{Model: c.model, Credential: c.g.credentialHash(c.r)}
	until := c.g.Holds.Until(key, now.UnixNano())
	wait := time.Unix(0, until).Sub(now)
	if until == 0 || wait <= 0 {
		return nil
	}
	if wait > c.g.cfg.maxWait || !now.Add(wait).Before(c.deadline) {
		paceTotal.WithLabelValues(c.api.Family(), "rejected").Inc()
		return &refusal{kind: wire.RequestsLimited, retry: wait, advise: adviseRetry,
			message: "the upstream reports the rate limit for this model and API key spent until it resets in " + wait.Round(time.Millisecond).String() + ", longer than this gateway waits; retry after that"}
	}
	paceTotal.WithLabelValues(c.api.Family(), "held").Inc()
	if ce := c.g.Logger.Check(zapcore.InfoLevel, "pacing upstream"); ce != nil {
		ce.Write(zap.String("model", c.model), zap.String("key_hash", key.Credential), zap.Int64("delay_ms", wait.Milliseconds()))
	}
	if !c.sleep(wait) {
		return &refusal{gone: true}
	}
	return nil
}
