package handlers

import (
	"bytes"
	"io"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// usageStripper passes a Chat Completions event stream to the client event
// by event, leaving out the usage chunk that the gateway asked for on the
// client's behalf, so the client sees exactly the stream it requested. An
// event is passed on once its closing blank line arrives, which is when an
// SSE client could use it anyway.
type usageStripper struct {
	w       io.Writer
	pending []byte // the start of an event whose end has not arrived
}

var dataPrefix = []byte("data:")

// write takes the next bytes of the stream.
func (s *usageStripper) write(p []byte) (int, error) {
	s.pending = append(s.pending, p...)
	rest := s.pending
	for {
		end := eventEnd(rest)
		if end < 0 {
			break
		}
		event := rest[:end]
		rest = rest[end:]
		if isUsageEvent(event) {
			continue
		}
		if _, err := s.w.Write(event); err != nil {
			return len(p), err
		}
	}
	s.pending = append(s.pending[:0], rest...)
	return len(p), nil
}

// flush passes on whatever remains, as the upstream sent it.
func (s *usageStripper) flush() {
	if len(s.pending) > 0 {
		_, _ = s.w.Write(s.pending)
		s.pending = s.pending[:0]
	}
}

// eventEnd returns the length of the first complete event in b, through its
// blank line, or -1 when b holds none.
func eventEnd(b []byte) int {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		lineEnd := i + j + 1
		line := bytes.TrimRight(b[i:i+j], "\r")
		if len(line) == 0 && i > 0 {
			return lineEnd
		}
		i = lineEnd
	}
	return -1
}

// isUsageEvent reports whether an event is the include_usage chunk.
func isUsageEvent(event []byte) bool {
	for line := range bytes.Lines(event) {
		if data, ok := bytes.CutPrefix(line, dataPrefix); ok {
			return policy.IsUsageOnlyChunk(data)
		}
	}
	return false
}
