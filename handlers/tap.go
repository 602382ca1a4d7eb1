package handlers

import (
	"bytes"
	"net/http"
	"strings"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// maxTappedBody bounds how much of a JSON response is kept to read its usage
// afterwards; a longer body is passed on whole but its usage goes unread.
const maxTappedBody = 8 << 20

// maxEventData bounds one server-sent event's data. A Responses API
// response.completed event repeats the whole answer, so this is generous.
const maxEventData = 8 << 20

// responseTap watches a response on its way to the client: it reads usage
// and the stop reason, and for streams, whether the terminal event passed.
// It never changes or delays a byte.
type responseTap struct {
	dialect  policy.Dialect
	endpoint policy.Endpoint

	status int
	sse    bool          // the response is a successful text/event-stream
	json   *bytes.Buffer // the JSON body so far (non-stream), pooled

	// SSE parsing state, carried across writes.
	line     []byte // an unfinished line
	event    []byte // the current event's name
	data     []byte // the current event's data lines, joined by \n
	overflow bool   // the current event's data went over maxEventData
	lastCR   bool   // the previous write ended in \r, which may pair with a leading \n

	progress  policy.StreamProgress
	errorType string // the error.type of an error response
}

// start prepares the tap for a response with the given status and headers.
// A successful stream is followed event by event; any other body is kept
// (bounded) to read its usage or its error type when it ends.
func (t *responseTap) start(status int, h http.Header) {
	t.status = status
	if isEventStream(h.Get("Content-Type")) && successful(status) {
		t.sse = true
		return
	}
	t.json = getBuffer()
}

// isEventStream reports whether a Content-Type names server-sent events,
// parameters aside, without mime.ParseMediaType's allocation per response.
func isEventStream(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

func successful(status int) bool { return status >= 200 && status <= 299 }

// write takes the next bytes sent to the client.
func (t *responseTap) write(p []byte) {
	switch {
	case t.sse:
		t.scan(p)
	case t.json != nil && t.json.Len()+len(p) <= maxTappedBody:
		t.json.Write(p)
	case t.json != nil:
		putBuffer(t.json)
		t.json = nil
	}
}

// scan splits p into SSE lines (reference: the WHATWG event-stream format:
// lines end in \n, \r\n or \r; a blank line dispatches the event).
func (t *responseTap) scan(p []byte) {
	if t.lastCR && len(p) > 0 {
		t.lastCR = false
		if p[0] == '\n' {
			p = p[1:]
		}
	}
	for len(p) > 0 {
		i := lineEnd(p)
		if i < 0 {
			t.line = append(t.line, p...)
			return
		}
		var line []byte
		if len(t.line) > 0 {
			t.line = append(t.line, p[:i]...)
			line = t.line
		} else {
			line = p[:i]
		}
		// A \r\n pair is one line end; a \r at the very end of p may be
		// followed by \n in the next write, which must not count as an
		// empty line, so remember it.
		skip := i + 1
		if p[i] == '\r' {
			if skip == len(p) {
				t.lastCR = true
			} else if p[skip] == '\n' {
				skip++
			}
		}
		t.field(line)
		t.line = t.line[:0]
		p = p[skip:]
	}
}

// lineEnd returns the index of the first \n or \r in p, or -1. Streams
// use \n, so the \r search is confined to the text before it; this is
// several times faster than bytes.IndexAny on every event.
func lineEnd(p []byte) int {
	n := bytes.IndexByte(p, '\n')
	scope := p
	if n >= 0 {
		scope = p[:n]
	}
	if r := bytes.IndexByte(scope, '\r'); r >= 0 {
		return r
	}
	return n
}

// field handles one complete line of an event stream.
func (t *responseTap) field(line []byte) {
	if len(line) == 0 {
		t.dispatch()
		return
	}
	name, value, _ := bytes.Cut(line, []byte{':'})
	if len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	switch string(name) {
	case "event":
		t.event = append(t.event[:0], value...)
	case "data":
		if t.overflow || len(t.data)+len(value)+1 > maxEventData {
			t.overflow = true
			return
		}
		if len(t.data) > 0 {
			t.data = append(t.data, '\n')
		}
		t.data = append(t.data, value...)
	}
}

// dispatch ends the current event.
func (t *responseTap) dispatch() {
	if (len(t.data) > 0 || len(t.event) > 0) && !t.overflow {
		t.progress.Observe(t.dialect, t.endpoint, t.event, t.data)
	}
	t.event, t.data, t.overflow = t.event[:0], t.data[:0], false
}

// finish is called when the response body has ended. It dispatches an
// event whose final blank line never came and reads a JSON body's usage.
func (t *responseTap) finish() {
	if t.sse {
		if len(t.line) > 0 {
			t.field(t.line)
			t.line = t.line[:0]
		}
		t.dispatch()
		return
	}
	if t.json == nil {
		return
	}
	if successful(t.status) {
		t.progress.Usage = policy.UsageFromBody(t.dialect, t.endpoint, t.json.Bytes())
	} else {
		t.errorType = policy.UpstreamErrorType(t.json.Bytes())
	}
	putBuffer(t.json)
	t.json = nil
}

// incompleteStream reports whether a successful stream ended without its
// terminal event, so that the gateway must say so in-band.
func (t *responseTap) incompleteStream() bool {
	return t.sse && !t.progress.Done
}

// release returns pooled memory; the tap is reset for the next attempt.
func (t *responseTap) release() {
	putBuffer(t.json)
	*t = responseTap{dialect: t.dialect, endpoint: t.endpoint, line: t.line[:0], event: t.event[:0], data: t.data[:0]}
}
