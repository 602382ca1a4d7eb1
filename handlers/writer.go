package handlers

import (
	"bytes"
	"net/http"
	"sync/atomic"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// maxHeldBody bounds a held (retryable) response body. Provider error
// bodies are a few hundred bytes; one larger than this is not an error the
// gateway can judge, so it is passed on and not retried.
const maxHeldBody = 1 << 20

// The states of one attempt's response. An attempt starts pending; the
// upstream's response headers make it held (a retryable failure, kept back
// from the client) or committed (on its way to the client). The gateway's
// timers may abandon a pending or held attempt (attempt_timeout, deadline);
// whatever the proxy writes after that is dropped.
const (
	statePending int32 = iota
	stateHeld
	stateCommitted
	stateAbandoned
)

// attemptWriter is the http.ResponseWriter one attempt's proxy writes to.
//
// Header() is the client's own header map, which reverse_proxy adds the
// upstream's headers to; the call restores it from a snapshot before each
// attempt, because Caddy's recorder shares that map and a discarded 429's
// headers would otherwise leak into the next answer (caddy-modules.md §0.1).
type attemptWriter struct {
	rw      http.ResponseWriter
	retryOn policy.RetryOn
	state   atomic.Int32

	status  int
	verdict policy.Verdict
	held    *bytes.Buffer // the body of a held response, pooled
	charge  *bufferCharge // the call's share of max_buffered
	holding int64         // of which held takes this many bytes
	tap     *responseTap
	// strip, when set, leaves the usage chunk the gateway asked for out of
	// a successful Chat Completions stream.
	strip *usageStripper
}

// reset prepares the writer for a new attempt.
func (aw *attemptWriter) reset() {
	aw.charge.give(aw.holding)
	aw.holding = 0
	putBuffer(aw.held)
	aw.held, aw.status, aw.verdict = nil, 0, policy.Verdict{}
	aw.tap.release()
	aw.state.Store(statePending)
}

// Header returns the client's header map (see the type's comment).
func (aw *attemptWriter) Header() http.Header { return aw.rw.Header() }

// WriteHeader decides, from the upstream's status and headers, whether this
// response is a retryable failure to hold back or the answer to pass on.
func (aw *attemptWriter) WriteHeader(status int) {
	// Informational responses (103 Early Hints) are not forwarded: an
	// attempt may still be retried, and LLM APIs do not send them.
	if status < 200 && status != http.StatusSwitchingProtocols {
		return
	}
	if aw.state.Load() != statePending {
		return
	}
	aw.status = status
	if v := aw.retryOn.Classify(status, aw.rw.Header()); v.Retry {
		if aw.state.CompareAndSwap(statePending, stateHeld) {
			aw.verdict = v
			aw.held = getBuffer()
		}
		return
	}
	if aw.state.CompareAndSwap(statePending, stateCommitted) {
		aw.commitHeader()
	}
}

// commitHeader sends the status and headers to the client.
func (aw *attemptWriter) commitHeader() {
	aw.rw.WriteHeader(aw.status)
	aw.tap.start(aw.status, aw.rw.Header())
}

// Write holds or passes on body bytes according to the attempt's state.
func (aw *attemptWriter) Write(p []byte) (int, error) {
	if aw.state.Load() == statePending {
		aw.WriteHeader(http.StatusOK)
	}
	switch aw.state.Load() {
	case stateHeld:
		// A response too large to judge, or one that would pass
		// max_buffered, goes to the client as it is.
		if aw.held.Len()+len(p) <= maxHeldBody && aw.charge.take(int64(len(p))) {
			aw.holding += int64(len(p))
			return aw.held.Write(p)
		}
		if !aw.spill() {
			return len(p), nil
		}
		fallthrough
	case stateCommitted:
		aw.tap.write(p)
		if aw.strip != nil && aw.tap.sse {
			return aw.strip.write(p)
		}
		return aw.rw.Write(p)
	}
	// Abandoned: the gateway has moved on; swallow the rest quietly so the
	// proxy does not abort the connection of a client that is still served.
	return len(p), nil
}

// spill turns an oversized held response into a committed one, sending what
// was held so far. It reports false when the attempt was abandoned first.
func (aw *attemptWriter) spill() bool {
	if !aw.state.CompareAndSwap(stateHeld, stateCommitted) {
		return false
	}
	aw.verdict = policy.Verdict{}
	aw.commitHeader()
	aw.tap.write(aw.held.Bytes())
	_, _ = aw.rw.Write(aw.held.Bytes())
	return true
}

// abandon gives up on the attempt unless its response is already on its way
// to the client. It reports whether the attempt was abandoned, and is safe
// to call from a timer goroutine.
func (aw *attemptWriter) abandon() bool {
	return aw.state.CompareAndSwap(statePending, stateAbandoned) ||
		aw.state.CompareAndSwap(stateHeld, stateAbandoned)
}

// FlushError flushes a committed response; held and pending ones have
// nothing the client may see yet. reverse_proxy flushes through
// http.ResponseController, which looks for this method first.
func (aw *attemptWriter) FlushError() error {
	if aw.state.Load() != stateCommitted {
		return nil
	}
	return http.NewResponseController(aw.rw).Flush()
}

// Flush implements http.Flusher for writers that check for it directly.
func (aw *attemptWriter) Flush() { _ = aw.FlushError() }

// Unwrap lets http.ResponseController reach the client's writer for
// deadlines and protocol upgrades, which never concern a held response.
func (aw *attemptWriter) Unwrap() http.ResponseWriter { return aw.rw }
