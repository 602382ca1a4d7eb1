package handlers

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// maxHolds bounds the pacing holds a gateway keeps: models and credentials
// are client input.
const maxHolds = 4096

// maxHeldModel is the longest model name a hold is kept for; a longer one
// is no real model, and no client string is stored unbounded.
const maxHeldModel = 256

// holdKey is what one upstream rate limit governs: providers limit each
// model, and each API key's organisation, separately.
type holdKey struct {
	model      string
	credential string // credentialHash of the request
}

// paceHolds are the upstream's spent rate limits (pace_upstream): for each
// model and credential, when the limit resets, in Unix nanoseconds.
type paceHolds struct {
	// latest is the latest reset of any hold; once it has passed no hold is
	// live, and requests skip the table and the hashing of their key.
	latest atomic.Int64
	mu     sync.RWMutex
	m      map[holdKey]int64
}

// until returns when k's hold ends, or 0 when it has none. A hold found
// expired is dropped.
func (h *paceHolds) until(k holdKey, now int64) int64 {
	h.mu.RLock()
	t := h.m[k]
	h.mu.RUnlock()
	if t == 0 || t > now {
		return t
	}
	h.mu.Lock()
	if h.m[k] <= now {
		delete(h.m, k)
	}
	h.mu.Unlock()
	return 0
}

// hold records that k's limit is spent until the given time. When the
// table is full, expired holds make room; if none has expired, the new hold
// is not kept, which costs at most the 429s it would have spared.
func (h *paceHolds) hold(k holdKey, until, now int64) {
	if len(k.model) > maxHeldModel {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if prev, found := h.m[k]; found {
		h.m[k] = max(prev, until)
	} else {
		if len(h.m) >= maxHolds {
			for key, t := range h.m {
				if t <= now {
					delete(h.m, key)
				}
			}
		}
		if len(h.m) >= maxHolds {
			return
		}
		if h.m == nil {
			h.m = make(map[holdKey]int64)
		}
		// The model may share memory with a pooled request body.
		h.m[holdKey{model: strings.Clone(k.model), credential: k.credential}] = until
	}
	for {
		prev := h.latest.Load()
		if prev >= until || h.latest.CompareAndSwap(prev, until) {
			return
		}
	}
}

// credentialHash identifies the API key a request carries (X-Api-Key,
// Authorization, or Azure's Api-Key) without keeping it: the upstream's
// rate limits belong to the key's organisation, so pacing is kept per key.
func credentialHash(r *http.Request) string {
	h := r.Header
	return keyHash(h.Get("X-Api-Key") + "\x00" + h.Get("Authorization") + "\x00" + h.Get("Api-Key"))
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
	c.g.holds.hold(holdKey{c.model, credentialHash(c.r)}, now.Add(reset).UnixNano(), now.UnixNano())
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
	if c.g.holds.latest.Load() <= now.UnixNano() {
		return true
	}
	key := holdKey{c.model, credentialHash(c.r)}
	until := c.g.holds.until(key, now.UnixNano())
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
		ce.Write(zap.String("model", c.model), zap.String("key_hash", key.credential), zap.Int64("delay_ms", wait.Milliseconds()))
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
