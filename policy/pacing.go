package policy

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxHolds bounds the pacing holds one table keeps: models and credentials
// are client input.
const maxHolds = 4096

// maxHeldModel is the longest model name a hold is kept for; a longer one
// is no real model, and no client string is stored unbounded.
const maxHeldModel = 256

// HoldKey is what one upstream rate limit governs: providers limit each
// model, and each API key's organisation, separately.
type HoldKey struct {
	Model string
	// Credential identifies the API key by its keyed hash, never the key.
	Credential string
}

// Holds are the upstream's spent rate limits (pace_upstream): for each
// model and credential, when the limit resets, in Unix nanoseconds. Every
// method is safe for concurrent use and answers from memory.
type Holds interface {
	// Any reports whether some hold may still be in force at now. When it
	// is false no request is held, and the caller need not hash its
	// credential.
	Any(now int64) bool
	// Until returns when k's hold ends, or 0 when it has none.
	Until(k HoldKey, now int64) int64
	// Hold records that k's limit is spent until the given time.
	Hold(k HoldKey, until, now int64)
}

// HoldStore passes the holds one instance records to the other instances
// of its fleet. ShareHold never blocks on the store.
type HoldStore interface {
	ShareHold(k HoldKey, until int64)
}

// HoldStatus is one live hold, as Snapshot reports it.
type HoldStatus struct {
	HoldKey
	// Until is when the hold ends, in Unix nanoseconds.
	Until int64
}

// PaceHolds is the table of holds of one Caddy instance: bounded, read
// without a lock when no hold is live. With a HoldStore, the holds it
// records are also sent to the fleet, and the fleet's come back through
// Apply, so every instance holds the same model and key.
type PaceHolds struct {
	// latest is the latest end of any hold; once it has passed no hold is
	// live, and requests skip the table.
	latest atomic.Int64
	shared HoldStore // nil: this instance alone
	mu     sync.RWMutex
	m      map[HoldKey]int64
}

// NewPaceHolds returns an empty table, sharing what it records through
// shared when it is not nil.
func NewPaceHolds(shared HoldStore) *PaceHolds {
	return &PaceHolds{shared: shared}
}

// Any implements Holds.
func (h *PaceHolds) Any(now int64) bool {
	return h.latest.Load() > now
}

// Until implements Holds. A hold found expired is dropped.
func (h *PaceHolds) Until(k HoldKey, now int64) int64 {
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

// Hold implements Holds: the hold is kept here, and sent to the fleet.
func (h *PaceHolds) Hold(k HoldKey, until, now int64) {
	if h.Apply(k, until, now) && h.shared != nil {
		h.shared.ShareHold(k, until)
	}
}

// Apply records a hold without sending it to the fleet: one that came
// from the fleet. It reports whether the hold is kept. When the table is
// full, expired holds make room; if none has expired, the new hold is not
// kept, which costs at most the 429s it would have spared.
func (h *PaceHolds) Apply(k HoldKey, until, now int64) bool {
	if len(k.Model) > maxHeldModel || until <= now {
		return false
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
			return false
		}
		if h.m == nil {
			h.m = make(map[HoldKey]int64)
		}
		// The model may share memory with a pooled request body.
		h.m[HoldKey{Model: strings.Clone(k.Model), Credential: k.Credential}] = until
	}
	for {
		prev := h.latest.Load()
		if prev >= until || h.latest.CompareAndSwap(prev, until) {
			return true
		}
	}
}

// Snapshot returns the holds live at now, at most maxHolds, in no set
// order.
func (h *PaceHolds) Snapshot(now time.Time) []HoldStatus {
	t := now.UnixNano()
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []HoldStatus
	for k, until := range h.m {
		if until > t {
			out = append(out, HoldStatus{HoldKey: k, Until: until})
		}
	}
	return out
}

// Interface guard
var _ Holds = (*PaceHolds)(nil)
