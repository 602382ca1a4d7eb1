package handlers

import (
	"bytes"
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// maxHeldBody bounds a held (retryable) response body, and the start of a
// stream held until its first event. Provider error bodies are a few
// hundred bytes; one larger than this is not an error the gateway can
// judge, so it is passed on and not retried.
const maxHeldBody = 1 << 20

// The states of one attempt's response. An attempt starts pending; the
// upstream's response headers make it held (a retryable failure, kept back
// from the client) or headed (an answer, of which nothing has reached the
// client yet); its first byte, or for a stream its first event, commits it
// (on its way to the client), unless that event is a retryable error,
// which makes it held. The gateway's watchdog may abandon an attempt before
// it commits (attempt_timeout, deadline, idle_timeout); whatever the proxy
// writes after that is dropped.
const (
	statePending int32 = iota
	stateHeld
	stateHeaded
	stateCommitted
	stateAbandoned
)

// attemptWriter is the http.ResponseWriter one attempt's proxy writes to.
//
// Header() is the client's own header map, which reverse_proxy adds the
// upstream's headers to; the call restores it from a snapshot before each
// attempt, because Caddy's recorder shares that map and a discarded 429's
// headers would otherwise leak into the next answer.
type attemptWriter struct {
	rw      http.ResponseWriter
	retryOn policy.RetryOn
	state   atomic.Int32
	dog     *watchdog

	status  int
	verdict policy.Verdict
	// buf is a held response's body, or the start of a stream until its
	// first event; pooled.
	buf *bytes.Buffer
	// charge is the call's share of max_buffered, of which buf takes
	// holding bytes.
	charge  *bufferCharge
	holding int64
	// inband is true when the held failure is an error event that opened
	// a successful stream.
	inband bool
	tap    *responseTap
	// cancel ends the attempt's upstream request.
	cancel context.CancelFunc

	// Silence tracking for idle_timeout, when it is set: when the attempt
	// began, when the upstream last sent a byte (nanoseconds after began),
	// whether the proxy is busy writing to the client (time the upstream
	// is not being read does not count as its silence), and whether the
	// watchdog ended the response for silence.
	idle    bool
	began   time.Time
	last    atomic.Int64
	writing atomic.Bool
	silent  atomic.Bool
}

// reset prepares the writer for a new attempt, whose upstream request
// cancel ends.
func (aw *attemptWriter) reset(cancel context.CancelFunc) {
	aw.charge.give(aw.holding)
	aw.holding = 0
	putBuffer(aw.buf)
	aw.buf, aw.status, aw.verdict, aw.inband, aw.cancel = nil, 0, policy.Verdict{}, false, cancel
	aw.tap.release()
	aw.began = time.Now()
	aw.last.Store(0)
	aw.silent.Store(false)
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
	aw.touch()
	if v := aw.retryOn.Classify(status, aw.rw.Header()); v.Retry {
		if aw.state.CompareAndSwap(statePending, stateHeld) {
			aw.verdict = v
			aw.buf = getBuffer()
		}
	} else if status == http.StatusSwitchingProtocols {
		// An upgrade has no body to wait for: the proxy hijacks the
		// connection next.
		if aw.state.CompareAndSwap(statePending, stateCommitted) {
			aw.rw.WriteHeader(status)
		}
	} else if aw.state.CompareAndSwap(statePending, stateHeaded) {
		aw.tap.start(status, aw.rw.Header())
		if aw.tap.sse {
			aw.buf = getBuffer()
		}
	}
	// The headers are in: attempt_timeout no longer applies and the
	// silence clock starts.
	aw.dog.poke()
}

// Write holds or passes on body bytes according to the attempt's state.
func (aw *attemptWriter) Write(p []byte) (int, error) {
	if aw.state.Load() == statePending {
		aw.WriteHeader(http.StatusOK)
	}
	aw.touch()
	switch aw.state.Load() {
	case stateHeld:
		// A response too large to judge, or one that would pass
		// max_buffered, goes to the client as it is.
		if aw.buf.Len()+len(p) <= maxHeldBody && aw.charge.take(int64(len(p))) {
			aw.holding += int64(len(p))
			if aw.inband {
				_ = aw.tap.pass(p, aw.buf) // buffers do not fail
			} else {
				aw.buf.Write(p)
			}
			return len(p), nil
		}
		if !aw.spill() {
			return len(p), nil
		}
		return aw.send(p)
	case stateHeaded:
		if aw.tap.sse {
			return aw.peek(p)
		}
		if !aw.commit() {
			return len(p), nil
		}
		return aw.send(p)
	case stateCommitted:
		return aw.send(p)
	}
	// Abandoned: the gateway has moved on; swallow the rest quietly so the
	// proxy does not abort the connection of a client that is still served.
	return len(p), nil
}

// send passes bytes on to the client through the tap.
func (aw *attemptWriter) send(p []byte) (int, error) {
	aw.writing.Store(true)
	err := aw.tap.pass(p, aw.rw)
	aw.writing.Store(false)
	aw.touch()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// peek holds the start of a stream until its first event has passed. An
// error event there is a failure like the status it stands for: retried
// and counted, since nothing has reached the client. Any other event
// commits the stream, as does a first event too large to hold.
func (aw *attemptWriter) peek(p []byte) (int, error) {
	_ = aw.tap.pass(p, aw.buf) // buffers do not fail
	// What max_buffered cannot hold goes on at once, as an event too large
	// to hold does.
	fits := aw.charge.take(int64(len(p)))
	if fits {
		aw.holding += int64(len(p))
	}
	progress := &aw.tap.progress
	if progress.Events == 0 && aw.buf.Len() <= maxHeldBody && fits {
		return len(p), nil
	}
	if e := progress.Err; e.Status != 0 && e.Event == 0 && !e.Quota {
		if v := aw.retryOn.Classify(e.Status, nil); v.Retry {
			if aw.state.CompareAndSwap(stateHeaded, stateHeld) {
				aw.verdict, aw.inband = v, true
				aw.cancel() // nothing after the error is of use
			}
			return len(p), nil
		}
	}
	if !aw.commit() {
		return len(p), nil
	}
	held := aw.buf
	aw.buf = nil
	defer putBuffer(held)
	aw.writing.Store(true)
	_, err := aw.rw.Write(held.Bytes())
	aw.writing.Store(false)
	aw.touch()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// commit sends the status and headers of a headed response to the client,
// reporting false when the attempt was abandoned first.
func (aw *attemptWriter) commit() bool {
	if !aw.state.CompareAndSwap(stateHeaded, stateCommitted) {
		return false
	}
	aw.rw.WriteHeader(aw.status)
	return true
}

// spill turns an oversized held response into a committed one, sending what
// was held so far. It reports false when the attempt was abandoned first.
func (aw *attemptWriter) spill() bool {
	if !aw.state.CompareAndSwap(stateHeld, stateCommitted) {
		return false
	}
	aw.verdict = policy.Verdict{}
	aw.rw.WriteHeader(aw.status)
	if aw.inband {
		// The tap has already seen these bytes on their way into buf.
		_, _ = aw.rw.Write(aw.buf.Bytes())
		return true
	}
	aw.tap.start(aw.status, aw.rw.Header())
	_ = aw.tap.pass(aw.buf.Bytes(), aw.rw)
	return true
}

// abandon gives up on the attempt unless its response is already on its way
// to the client. It reports whether the attempt was abandoned, and is safe
// to call from the watchdog's goroutine.
func (aw *attemptWriter) abandon() bool {
	for _, from := range [...]int32{statePending, stateHeld, stateHeaded} {
		if aw.state.CompareAndSwap(from, stateAbandoned) {
			return true
		}
	}
	return false
}

// failedStatus is the status of a held failure: the upstream's, or the
// one an in-band error event stands for.
func (aw *attemptWriter) failedStatus() int {
	if aw.inband {
		return aw.tap.progress.Err.Status
	}
	return aw.status
}

// touch records that the upstream has just sent something.
func (aw *attemptWriter) touch() {
	if aw.idle {
		aw.last.Store(int64(time.Since(aw.began)))
	}
}

// lastByte returns when the upstream last sent something.
func (aw *attemptWriter) lastByte() time.Time {
	return aw.began.Add(time.Duration(aw.last.Load()))
}

// FlushError flushes a committed response; held and pending ones have
// nothing the client may see yet. reverse_proxy flushes through
// http.ResponseController, which looks for this method first.
func (aw *attemptWriter) FlushError() error {
	if aw.state.Load() != stateCommitted {
		return nil
	}
	aw.writing.Store(true)
	err := http.NewResponseController(aw.rw).Flush()
	aw.writing.Store(false)
	aw.touch()
	return err
}

// Flush implements http.Flusher for writers that check for it directly.
func (aw *attemptWriter) Flush() { _ = aw.FlushError() }

// Unwrap lets http.ResponseController reach the client's writer for
// deadlines and protocol upgrades, which never concern a held response.
func (aw *attemptWriter) Unwrap() http.ResponseWriter { return aw.rw }
