package wire

import (
	"net/http"
	"slices"

	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
)

// StreamEvent is what the gateway reads of one server-sent event: never a
// copy of its data, only its name, the start of its data and the few
// members its API's rules ask for (StreamPaths).
type StreamEvent struct {
	// Named reports an `event:` field with a non-empty value. Name is that
	// value, or nil when it is longer than jsonread.MaxText.
	Named bool
	Name  []byte
	// JSON reports that the data is exactly one JSON value (RFC 8259).
	JSON bool
	// Fields holds the value at each of the API's StreamPaths, all absent
	// unless JSON is true.
	Fields []jsonread.Value
	// Head is the start of the data, up to 8 bytes.
	Head []byte
	// Unread reports an event whose data was passed over, unread, because
	// its name said nothing in it was needed (ReadsData), and whose name a
	// later `event:` field then changed to one whose data is.
	Unread bool
}

// Type returns the event's type: its `event:` field or, when it has none,
// the `type` member of its JSON data, which is how OpenAI-compatible
// upstreams often send Responses events. typeField is where the API's
// rules read `type`.
func (ev *StreamEvent) Type(typeField int) []byte {
	if ev.Named {
		return ev.Name
	}
	if v := ev.Fields[typeField]; v.Kind == jsonread.String {
		return v.Text
	}
	return nil
}

// StreamProgress follows the events of one streamed response: the usage it
// reports, whether it reached its proper end, and any error it carried.
type StreamProgress struct {
	Usage
	// Done is true once the stream's proper end passed, or an in-band error
	// event (which the client sees as the stream's end).
	Done bool
	// Events counts the events seen.
	Events int
	// Followed is true once an event of the API's own catalogue passed. A
	// stream whose events are all foreign is not one the gateway can judge,
	// so it is passed on as it is.
	Followed bool
	// Err is the first in-band error event, if any.
	Err StreamError
	// Lost is true once an event passed that the gateway could not read
	// (StreamEvent.Unread): from then on the stream is passed on as it
	// is, neither judged complete nor broken.
	Lost bool
}

// StreamError is an error event inside a successful stream.
type StreamError struct {
	// Type is the error's type or code, for logs ("stream_error" when the
	// event names none).
	Type string
	// Status is the HTTP status the same error has as a response, or 0
	// when there was no error event.
	Status int
	// Quota reports an error saying the account's quota is spent, which
	// waiting does not cure.
	Quota bool
	// Event is the index of the error event: 0 when it was the first.
	Event int
}

// Observe takes one dispatched event through the API's rules.
func (s *StreamProgress) Observe(api API, ev *StreamEvent) {
	if s.Lost {
		return
	}
	if ev.Unread {
		s.Lost = true
		return
	}
	api.Observe(s, ev)
	s.Events++
}

// fail records an in-band error event, which ends the stream, unless one
// came before. overload is the status the API gives an overload; names are
// the error's type and code, as streamErrorOf takes them.
func (s *StreamProgress) fail(overload int, names ...string) {
	s.Done = true
	if s.Err.Status != 0 {
		return
	}
	s.Err = streamErrorOf(overload, names...)
	s.Err.Event = s.Events
}

// Incomplete reports whether a stream that has ended lacks its proper end,
// so that the gateway must say so in-band. A stream with events, none of
// them of its API's catalogue, is one the gateway cannot judge: it is left
// as it came, as is one with an event the gateway could not read.
func (s *StreamProgress) Incomplete() bool {
	return !s.Done && !s.Lost && (s.Followed || s.Events == 0)
}

// StreamCut is why the gateway ends a stream that lacks its proper end.
type StreamCut uint8

const (
	// CutIncomplete is a stream the upstream ended, or broke off, before
	// its proper end.
	CutIncomplete StreamCut = iota
	// CutIdle is a stream the upstream left silent for longer than
	// idle_timeout.
	CutIdle
	numCuts
)

// The messages tell a person what happened to the answer.
var cutMessages = [numCuts]string{
	CutIncomplete: "the upstream stream ended before its final event, so this answer is incomplete; send the request again",
	CutIdle:       "the upstream sent nothing for longer than the gateway's idle_timeout, so this answer is incomplete; send the request again",
}

// streamErrorStatuses maps the error types and codes of in-band error
// events to the HTTP status the same error has as a response: Anthropic's
// documented types (https://docs.anthropic.com/en/api/errors) and OpenAI's
// types and codes (https://platform.openai.com/docs/guides/error-codes).
// Overloads differ by API (529 for Anthropic, 503 for OpenAI) and are
// handled apart.
var streamErrorStatuses = map[string]int{
	"invalid_request_error":   400,
	"invalid_prompt":          400,
	"context_length_exceeded": 400,
	"authentication_error":    401,
	"invalid_api_key":         401,
	"billing_error":           402,
	"permission_error":        403,
	"not_found_error":         404,
	"model_not_found":         404,
	"conflict_error":          409,
	"request_too_large":       413,
	"rate_limit_error":        429,
	"rate_limit_exceeded":     429,
	"requests":                429,
	"tokens":                  429,
	"api_error":               500,
	"server_error":            500,
	"timeout_error":           504,
	"timeout":                 504,
}

// overloadTypes are the error types that say the provider is shedding
// load.
var overloadTypes = [...]string{"overloaded_error", "overloaded", "server_overloaded", "engine_overloaded"}

// quotaCodes are the OpenAI error codes that mean the account is out of
// money or quota rather than momentarily over its rate
// (https://platform.openai.com/docs/guides/error-codes): waiting does not
// help with any of them.
var quotaCodes = [...]string{
	"insufficient_quota",
	"credit_balance_exhausted",
	"organization_spend_limit_exceeded",
	"project_spend_limit_exceeded",
	"organization_usage_limit_exceeded",
}

// streamErrorOf describes an in-band error from the names it carries, most
// telling first (an error type, or an OpenAI code): the first present one
// is logged, the first the tables know decides the status. An error they
// do not know stands for 500, the status both providers give an
// unexpected error.
func streamErrorOf(overload int, names ...string) StreamError {
	e := StreamError{Type: "stream_error", Status: http.StatusInternalServerError}
	for _, n := range names {
		if n != "" {
			e.Type = n
			break
		}
	}
	for _, n := range names {
		if slices.Contains(quotaCodes[:], n) {
			e.Status, e.Quota = http.StatusTooManyRequests, true
			return e
		}
	}
	for _, n := range names {
		if slices.Contains(overloadTypes[:], n) {
			e.Status = overload
			return e
		}
		if status, ok := streamErrorStatuses[n]; ok {
			e.Status = status
			return e
		}
	}
	return e
}
