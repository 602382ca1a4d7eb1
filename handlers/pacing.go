package handlers

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
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
	credential string // the request's credentialHash
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
	reset, ok := c.api.RateLimitReset(c.w.Header(), now)
	if !ok || reset <= 0 {
		return
	}
	// The reset is the upstream's number: a hold longer than a day is held
	// for a day, which max_wait refuses as surely, and the instant cannot
	// wrap into the past.
	until := now.Add(min(reset, maxHold)).UnixNano()
	c.g.holds.hold(holdKey{c.model, c.g.credentialHash(c.r)}, until, now.UnixNano())
}

// maxHold bounds a pacing hold.
const maxHold = 24 * time.Hour

// pace holds a new request while the upstream has said the rate limit
// governing its model and key is spent, within max_wait and the deadline,
// and refuses it with a 429 when the wait is longer.
func (c *call) pace() *refusal {
	if !c.g.cfg.PaceUpstream {
		return nil
	}
	now := time.Now()
	if c.g.holds.latest.Load() <= now.UnixNano() {
		return nil
	}
	key := holdKey{c.model, c.g.credentialHash(c.r)}
	until := c.g.holds.until(key, now.UnixNano())
	wait := time.Unix(0, until).Sub(now)
	if until == 0 || wait <= 0 {
		return nil
	}
	if wait > c.g.cfg.MaxWait || !now.Add(wait).Before(c.deadline) {
		paceTotal.WithLabelValues(c.api.Family(), "rejected").Inc()
		return &refusal{kind: wire.RequestsLimited, retry: wait, advise: adviseRetry,
			message: "the upstream reports the rate limit for this model and API key spent until it resets in " + wait.Round(time.Millisecond).String() + ", longer than this gateway waits; retry after that"}
	}
	paceTotal.WithLabelValues(c.api.Family(), "held").Inc()
	if ce := c.g.cfg.Logger.Check(zapcore.InfoLevel, "pacing upstream"); ce != nil {
		ce.Write(zap.String("model", c.model), zap.String("key_hash", key.credential), zap.Int64("delay_ms", wait.Milliseconds()))
	}
	if !c.sleep(wait) {
		return &refusal{gone: true}
	}
	return nil
}
