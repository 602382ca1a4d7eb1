package mockprovider

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// streamer writes one endpoint's event sequence. The stream driver decides
// how many deltas are sent and whether the closing events follow.
type streamer interface {
	// open writes the events before the first delta.
	open(s *sse) error
	// delta writes one text delta.
	delta(s *sse, text string) error
	// close writes the terminal events after the given number of deltas.
	close(s *sse, deltas int) error
}

// stream answers with a 200 event stream: st's opening events, the step's
// deltas, then st's closing events, unless the step cuts the connection or
// ends the body early.
func (ex *exchange) stream(st streamer) {
	ex.w.Header().Set("Cache-Control", "no-cache")
	ex.writeHeader(http.StatusOK, "text/event-stream; charset=utf-8")
	s := &sse{w: ex.w, rc: http.NewResponseController(ex.w), ctx: ex.r.Context(), interval: ex.step.interval}
	if s.flush() != nil || st.open(s) != nil {
		return
	}
	deltas := ex.step.events
	if stopAt := max(ex.step.cut, ex.step.end); stopAt >= 0 { // at most one is set
		deltas = min(deltas, stopAt)
	}
	for i := range deltas {
		if st.delta(s, ex.piece(i)) != nil {
			return
		}
	}
	switch {
	case ex.step.cut >= 0:
		ex.note = " cut"
		// Everything so far is flushed; aborting now breaks the connection
		// mid-body, which clients see as an unexpected EOF.
		panic(http.ErrAbortHandler)
	case ex.step.end >= 0:
		ex.note = " end"
		return
	}
	_ = st.close(s, deltas)
}

// sse writes server-sent events, flushing each one, with the step's interval
// between events.
type sse struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	ctx      context.Context
	interval time.Duration
	// sent counts the events written so far; the Responses API uses it as
	// the sequence number.
	sent int
	buf  []byte
}

// send writes one event with the JSON of payload as its data. An empty name
// writes a data-only event, as OpenAI Chat Completions streams do.
func (s *sse) send(name string, payload any) error {
	// The wire types in this package always marshal.
	data, _ := json.Marshal(payload)
	return s.write(name, data)
}

// done writes OpenAI's `data: [DONE]` terminator.
func (s *sse) done() error {
	return s.write("", []byte("[DONE]"))
}

// write frames and flushes one event, after the interval if it is not the
// first. It fails once the client has gone away.
func (s *sse) write(name string, data []byte) error {
	if s.sent > 0 {
		if err := sleep(s.ctx, s.interval); err != nil {
			return err
		}
	}
	s.buf = s.buf[:0]
	if name != "" {
		s.buf = append(s.buf, "event: "...)
		s.buf = append(s.buf, name...)
		s.buf = append(s.buf, '\n')
	}
	s.buf = append(s.buf, "data: "...)
	s.buf = append(s.buf, data...)
	s.buf = append(s.buf, "\n\n"...)
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	s.sent++
	return s.flush()
}

// flush sends buffered output to the client. A writer that cannot flush is
// tolerated: the stream still arrives, only later.
func (s *sse) flush() error {
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
