package handlers

import (
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/ai-resilience/caddy-ai-resilience/handlers/sse"
	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// maxHeldEvent bounds the part of one event held back until the event's
// end; events are a few hundred bytes, and a longer one (a Responses
// API's final event repeats the whole answer) is passed on as it arrives.
const maxHeldEvent = 64 << 10

// responseTap watches a response on its way to the client: it reads usage
// and the stop reason, and for streams, which events passed and whether
// the stream reached its proper end. It passes a stream on whole event by
// whole event, and changes no byte but for the usage chunk it may strip.
type responseTap struct {
	api wire.API

	status int
	sse    bool             // the response is a successful text/event-stream
	json   *jsonread.Reader // the reader of a JSON body (non-stream), pooled
	// jsonType is true when the body says it is JSON, and broken when
	// such a body did not end as whole JSON.
	jsonType, broken bool
	vals             []jsonread.Value // what a JSON body held at the API's paths
	parser           *sse.Parser      // the stream's parser, pooled

	progress  wire.StreamProgress
	errorType string // the error type of an error response

	// strip, when set, leaves out of a stream the usage chunk that the
	// gateway asked for on the client's behalf, so the client sees
	// exactly the stream it requested.
	strip   bool
	hold    []byte // the current event's bytes from earlier writes
	passing bool   // the current event outgrew hold and is passed on as it comes
	// The last write ended with the CR of a blank line, whose LF may start
	// the next: endCR says whether that event was kept or dropped, for
	// its LF to share its fate.
	endCR, droppedCR bool
	cur              []byte    // the bytes being passed
	from             int       // the start of cur's bytes not yet passed on or dropped
	dst              io.Writer // where they go
	werr             error     // the first error writing to dst
}

// parsers and readers recycle stream parsers and JSON readers, whose
// buffers are a few kilobytes.
var (
	parsers = sync.Pool{New: func() any { return new(sse.Parser) }}
	readers = sync.Pool{New: func() any { return new(jsonread.Reader) }}
)

// start prepares the tap for a response with the given status and headers.
// A successful stream is followed event by event; any other body is read
// as it passes, for its usage or its error type.
func (t *responseTap) start(status int, h http.Header) {
	t.status = status
	if isEventStream(h.Get("Content-Type")) && successful(status) {
		t.sse = true
		t.parser = parsers.Get().(*sse.Parser)
		t.parser.Reset(t.api)
		return
	}
	t.json = readers.Get().(*jsonread.Reader)
	t.json.Reset(t.api.BodyPaths())
	t.jsonType = isJSON(h.Get("Content-Type"))
}

// values reads the JSON body's values when it was one JSON value, or
// reports false.
func (t *responseTap) values() ([]jsonread.Value, bool) {
	if t.json == nil || !t.json.End() {
		return nil, false
	}
	t.vals = t.json.Values(t.vals[:0])
	return t.vals, true
}

// readError reads a whole held error body for its error type, and reports
// whether it says the account's quota is spent.
func (t *responseTap) readError(b []byte) (quota bool) {
	r := readers.Get().(*jsonread.Reader)
	defer readers.Put(r)
	r.Reset(t.api.BodyPaths())
	r.Feed(b)
	if !r.End() {
		return false
	}
	t.vals = r.Values(t.vals[:0])
	t.errorType, quota = t.api.BodyError(t.vals)
	return quota
}

// isEventStream reports whether a Content-Type names server-sent events,
// parameters aside, without mime.ParseMediaType's allocation per response.
func isEventStream(contentType string) bool { return mediaType(contentType, "text/event-stream") }

// isJSON reports whether a Content-Type names JSON.
func isJSON(contentType string) bool { return mediaType(contentType, "application/json") }

// mediaType reports whether a Content-Type is the media type want.
func mediaType(contentType, want string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), want)
}

func successful(status int) bool { return status >= 200 && status <= 299 }

// pass takes the next bytes of the response and writes them to dst: a JSON
// body as it comes, a stream event by event (less a stripped usage chunk).
func (t *responseTap) pass(p []byte, dst io.Writer) error {
	if t.sse {
		return t.passEvents(p, dst)
	}
	if t.json != nil {
		t.json.Feed(p)
	}
	_, err := dst.Write(p)
	return err
}

// passEvents passes a stream's bytes on whole event by whole event: an
// event's bytes go on once its closing blank line has arrived, which is
// when an SSE client could use it anyway, and what comes after it waits
// (up to maxHeldEvent) for its own. So an upstream that breaks off inside
// an event leaves nothing half-sent for the client's parser to take for an
// event of its own, and the gateway's in-band error follows the last whole
// one. The usage chunk the gateway asked for is left out (strip).
func (t *responseTap) passEvents(p []byte, dst io.Writer) error {
	t.cur, t.from, t.dst, t.werr = p, 0, dst, nil
	if t.endCR && len(p) > 0 {
		t.endCR = false
		if p[0] == '\n' {
			if !t.droppedCR {
				t.emit(p[:1])
			}
			t.from = 1
		}
	}
	t.parser.Feed(p, t)
	rest := p[t.from:]
	switch {
	case t.passing:
		t.emit(rest)
	case len(t.hold)+len(rest) > maxHeldEvent:
		t.emit(t.hold)
		t.emit(rest)
		t.hold, t.passing = t.hold[:0], true
	default:
		t.hold = append(t.hold, rest...)
	}
	t.cur, t.dst = nil, nil
	return t.werr
}

// Boundary takes each blank line of the stream and the event it ended.
func (t *responseTap) Boundary(end int, ev *wire.StreamEvent) {
	drop := false
	if ev != nil {
		t.progress.Observe(t.api, ev)
		drop = t.strip && !t.passing && t.api.UsageOnlyEvent(ev)
	}
	if !drop {
		t.emit(t.hold)
		t.emit(t.cur[t.from:end])
	}
	t.endCR, t.droppedCR = end == len(t.cur) && t.cur[end-1] == '\r', drop
	t.hold, t.from, t.passing = t.hold[:0], end, false
}

// emit writes to the current destination.
func (t *responseTap) emit(b []byte) {
	if len(b) > 0 && t.werr == nil {
		_, t.werr = t.dst.Write(b)
	}
}

// finish is called when the response body has ended: a JSON body's usage
// or error type is read, and whether the body was whole JSON at all.
func (t *responseTap) finish() {
	if t.json == nil {
		return
	}
	v, ok := t.values()
	switch {
	case !ok:
		t.broken = t.jsonType
	case successful(t.status):
		t.progress.Usage = t.api.BodyUsage(v)
	default:
		t.errorType, _ = t.api.BodyError(v)
	}
}

// flush passes on what is held of a stream's event that never ended, as
// it came: a stream that has had its proper end, or that the gateway cannot
// judge, is the upstream's to end.
func (t *responseTap) flush(dst io.Writer) {
	_, _ = dst.Write(t.hold)
	t.hold = t.hold[:0]
}

// cut ends a stream that lacks its proper end with the API's in-band error
// event (why says why it ended): what is held of an unfinished event gives
// way to it, so the client's parser never sees half an event.
func (t *responseTap) cut(dst io.Writer, why wire.StreamCut) {
	t.hold = t.hold[:0]
	if t.passing {
		// Part of an event too long to hold is already out: end it, so
		// that the client's parser is at the start of an event.
		_, _ = dst.Write(t.separator())
	}
	_, _ = dst.Write(t.api.CutEvent(why))
}

// incompleteStream reports whether a successful stream ended without its
// proper end, so that the gateway must say so in-band.
func (t *responseTap) incompleteStream() bool {
	return t.sse && t.progress.Incomplete()
}

// separator returns the line end and blank line that end an event the
// stream stopped inside of: one for the line, one for the event, where
// a last CR that an LF would complete counts as neither.
func (t *responseTap) separator() []byte {
	midLine, midEvent, lastCR := t.parser.Pending()
	n := 0
	for _, b := range [...]bool{lastCR, midLine, midEvent} {
		if b {
			n++ // a CR's LF joins it as one line end; the others end a line
		}
	}
	return blankLines[:n]
}

var blankLines = []byte("\n\n\n")

// release returns pooled memory; the tap is reset for the next attempt.
func (t *responseTap) release() {
	if t.json != nil {
		readers.Put(t.json)
	}
	if t.parser != nil {
		parsers.Put(t.parser)
	}
	*t = responseTap{api: t.api, strip: t.strip, hold: t.hold[:0], vals: t.vals[:0]}
}
