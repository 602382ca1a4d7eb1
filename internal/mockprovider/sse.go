package mockprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	// inband writes the API's in-band error event with the given type.
	inband(s *sse, errType string) error
}

// stream answers with a 200 event stream: st's opening events, the step's
// deltas, then st's closing events, unless the step cuts the connection,
// ends the body early, goes silent or sends an in-band error.
func (ex *exchange) stream(st streamer) {
	ex.w.Header().Set("Cache-Control", "no-cache")
	ex.writeHeader(http.StatusOK, "text/event-stream; charset=utf-8")
	s := &sse{w: ex.w, rc: http.NewResponseController(ex.w), ctx: ex.r.Context(), interval: ex.step.interval,
		framing: ex.step.framing, ping: ex.step.ping, anthropic: ex.dialect == anthropicDialect}
	if s.flush() != nil {
		return
	}
	if ex.step.inband != "" && ex.step.at < 0 {
		ex.note = " inband"
		_ = st.inband(s, ex.step.inband)
		return
	}
	if st.open(s) != nil {
		return
	}
	deltas := ex.step.events
	for _, stopAt := range [...]int{ex.step.cut, ex.step.end, ex.step.stall, ex.step.at} {
		if stopAt >= 0 {
			deltas = min(deltas, stopAt)
		}
	}
	for i := range deltas {
		piece := ex.piece(i)
		if i == deltas-1 && ex.step.bytes > len(piece) {
			piece += strings.Repeat(padWord, (ex.step.bytes-len(piece))/len(padWord))
		}
		if st.delta(s, piece) != nil {
			return
		}
	}
	if ex.breakOff(s.silence) {
		return
	}
	switch {
	case ex.step.inband != "":
		ex.note = " inband"
		_ = st.inband(s, ex.step.inband)
		return
	case ex.step.failed != "":
		ex.note = " failed"
		if r, ok := st.(*responsesStream); ok {
			_ = r.fail(s, ex.step.failed, deltas)
		} else {
			_ = st.inband(s, ex.step.failed)
		}
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
	framing  framing
	// ping, when set, keeps a wait from being silent: a ping event
	// (Anthropic) or comment (OpenAI) that often.
	ping      time.Duration
	anthropic bool
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
		if err := s.wait(s.interval); err != nil {
			return err
		}
	}
	eol := s.framing.eol
	s.buf = s.buf[:0]
	if s.framing.comments {
		s.buf = fmt.Appendf(s.buf, ": keep-alive%sid: %d%sretry: 3000%s", eol, s.sent, eol, eol)
	}
	if name != "" && !s.framing.dataOnly {
		s.buf = append(append(append(s.buf, "event: "...), name...), eol...)
	}
	if s.framing.multiline && len(data) > 1 && data[0] == '{' {
		// Data lines join with a line feed, which JSON reads as space.
		s.buf = append(append(s.buf, "data: {"...), eol...)
		data = data[1:]
	}
	s.buf = append(append(append(append(s.buf, "data: "...), data...), eol...), eol...)
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	s.sent++
	return s.flush()
}

// wait sits out d, pinging if the step says so. It fails once the client
// has gone away.
func (s *sse) wait(d time.Duration) error {
	if s.ping <= 0 {
		return sleep(s.ctx, d)
	}
	for d > 0 {
		step := min(d, s.ping)
		if err := sleep(s.ctx, step); err != nil {
			return err
		}
		if d -= step; d > 0 {
			if err := s.pingOnce(); err != nil {
				return err
			}
		}
	}
	return nil
}

// pingOnce writes one keep-alive: Anthropic's ping event, or a comment.
func (s *sse) pingOnce() error {
	eol := s.framing.eol
	ping := ": ping" + eol + eol
	if s.anthropic {
		ping = "event: ping" + eol + `data: {"type": "ping"}` + eol + eol
	}
	if _, err := io.WriteString(s.w, ping); err != nil {
		return err
	}
	return s.flush()
}

// silence holds the stream open, sending nothing but pings, until the
// client goes away.
func (s *sse) silence() {
	if s.ping <= 0 {
		<-s.ctx.Done()
		return
	}
	for s.wait(s.ping) == nil && s.pingOnce() == nil {
	}
}

// flush sends buffered output to the client. A writer that cannot flush is
// tolerated: the stream still arrives, only later.
func (s *sse) flush() error {
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
