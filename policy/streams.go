package policy

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
)

// JSONKind is the kind of a JSON value read from a stream event.
type JSONKind uint8

// The kinds of JSON value; JSONAbsent is a member the data does not have.
const (
	JSONAbsent JSONKind = iota
	JSONNull
	JSONFalse
	JSONTrue
	JSONNumber
	JSONString
	JSONObject
	JSONArray
)

// MaxStreamText is the longest string or number, as JSON text, that the
// gateway keeps from a stream event (and the longest event name). Every
// type, code and stop reason the providers send is far shorter; a longer
// value is known by its kind alone, so an upstream cannot make the gateway
// keep, or log, an unbounded string.
const MaxStreamText = 256

// JSONValue is one value read from an event's data.
type JSONValue struct {
	Kind JSONKind
	// Text is a string's decoded text or a number's JSON text, when its
	// JSON text is at most MaxStreamText bytes; nil otherwise.
	Text []byte
	// Len is an array's number of elements.
	Len int
}

// Int returns a number as an integer (a fraction is truncated), or 0 for
// anything else.
func (v JSONValue) Int() int64 {
	if v.Kind != JSONNumber {
		return 0
	}
	if n, err := strconv.ParseInt(bytesView(v.Text), 10, 64); err == nil {
		return n
	}
	f, err := strconv.ParseFloat(bytesView(v.Text), 64)
	if err != nil || f != f {
		return 0
	}
	return int64(max(min(f, 1<<62), -1<<62))
}

// String returns a string's text, or "" for anything else.
func (v JSONValue) String() string {
	if v.Kind != JSONString {
		return ""
	}
	return string(v.Text)
}

// StreamEvent is what the gateway reads of one server-sent event: never a
// copy of its data, only its name, the start of its data and the few
// members its API's rules ask for (StreamFields).
type StreamEvent struct {
	// Named reports an `event:` field with a non-empty value. Name is that
	// value, or nil when it is longer than MaxStreamText.
	Named bool
	Name  []byte
	// JSON reports that the data is exactly one JSON value (RFC 8259).
	JSON bool
	// Fields holds the value at each path of StreamFields, all absent
	// unless JSON is true.
	Fields []JSONValue
	// Head is the start of the data, up to 8 bytes.
	Head []byte
	// Unread reports an event whose data was passed over, unread, because
	// its name said nothing in it was needed (StreamReadsData), and whose
	// name a later `event:` field then changed to one whose data is.
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
	if v := ev.Fields[typeField]; v.Kind == JSONString {
		return v.Text
	}
	return nil
}

// StreamProgress follows the events of one streamed response: the usage it
// reports, whether it reached its proper end, and any error it carried.
type StreamProgress struct {
	Usage
	// Done is true once the stream's proper end passed: anthropic
	// message_stop, openai chat `data: [DONE]`, a Responses API
	// response.completed, response.incomplete or response.failed, or an
	// in-band error event (which the client sees as the stream's end).
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
	// Quota reports an OpenAI error saying the account's quota is spent,
	// which waiting does not cure.
	Quota bool
	// Event is the index of the error event: 0 when it was the first.
	Event int
}

// Observe takes one dispatched server-sent event.
func (s *StreamProgress) Observe(d Dialect, e Endpoint, ev *StreamEvent) {
	if s.Lost {
		return
	}
	if ev.Unread {
		s.Lost = true
		return
	}
	streamAPIFor(d, e).observe(s, ev)
	s.Events++
}

// StreamReadsData reports whether an event with the given `event:` name
// has anything in its data that the API's rules read. Most events of a
// long stream (text deltas) do not, so their data need not be parsed.
func StreamReadsData(d Dialect, e Endpoint, name []byte) bool {
	return streamAPIFor(d, e).readsData(name)
}

// StreamFields returns the JSON paths the gateway reads from each event's
// data in the API's streams, dotted, a numeric step indexing an array.
// StreamEvent.Fields holds their values in this order.
func StreamFields(d Dialect, e Endpoint) []string {
	return streamAPIFor(d, e).fields()
}

// IsUsageOnlyEvent reports whether an event of the API's stream is the
// usage chunk that Chat Completions' include_usage adds (empty choices
// and a usage object), which the gateway strips when it asked for it on
// the client's behalf.
func IsUsageOnlyEvent(d Dialect, e Endpoint, ev *StreamEvent) bool {
	if _, ok := streamAPIFor(d, e).(chatStream); !ok || !ev.JSON {
		return false
	}
	choices := ev.Fields[chatChoices]
	return choices.Kind == JSONArray && choices.Len == 0 && ev.Fields[chatUsage].Kind == JSONObject
}

// streamAPI is one wire API's knowledge of its event stream: which members
// of an event it reads, and what the event means for the stream's usage,
// its end and its errors. Each API's catalogue lives in its own type.
type streamAPI interface {
	fields() []string
	observe(s *StreamProgress, ev *StreamEvent)
	// cutIndex is the API's place in streamCutEvents.
	cutIndex() int
	// readsData reports whether an event of that name needs its data read.
	readsData(name []byte) bool
}

// streamAPIFor returns the stream rules of an API. Legacy Completions
// streams end and report usage the way Chat Completions streams do.
func streamAPIFor(d Dialect, e Endpoint) streamAPI {
	switch {
	case d == Anthropic:
		return anthropicStream{}
	case e == Responses:
		return responsesStream{}
	default:
		return chatStream{}
	}
}

// fail records an in-band error event, which ends the stream, unless one
// came before. names are the error's type and code, as streamErrorOf takes
// them.
func (s *StreamProgress) fail(d Dialect, names ...string) {
	s.Done = true
	if s.Err.Status != 0 {
		return
	}
	s.Err = streamErrorOf(d, names...)
	s.Err.Event = s.Events
}

// anthropicStream is the Messages stream
// (platform.claude.com/docs/en/build-with-claude/streaming): input tokens
// arrive in message_start, the cumulative output count and the stop reason
// in message_delta, message_stop ends it, and `event: error` carries an
// error in the shape of an error response.
type anthropicStream struct{}

// The fields an Anthropic event is read for, in anthropicFields order.
const (
	anthropicType = iota
	anthropicStartInput
	anthropicStartCacheWrite
	anthropicStartCacheRead
	anthropicStartOutput
	anthropicDeltaInput
	anthropicDeltaCacheWrite
	anthropicDeltaCacheRead
	anthropicDeltaOutput
	anthropicStopReason
	anthropicErrorType
)

var anthropicFields = []string{
	anthropicType:            "type",
	anthropicStartInput:      "message.usage.input_tokens",
	anthropicStartCacheWrite: "message.usage.cache_creation_input_tokens",
	anthropicStartCacheRead:  "message.usage.cache_read_input_tokens",
	anthropicStartOutput:     "message.usage.output_tokens",
	anthropicDeltaInput:      "usage.input_tokens",
	anthropicDeltaCacheWrite: "usage.cache_creation_input_tokens",
	anthropicDeltaCacheRead:  "usage.cache_read_input_tokens",
	anthropicDeltaOutput:     "usage.output_tokens",
	anthropicStopReason:      "delta.stop_reason",
	anthropicErrorType:       "error.type",
}

func (anthropicStream) fields() []string { return anthropicFields }
func (anthropicStream) cutIndex() int    { return 0 }

// An Anthropic event's name is its type; only these carry usage or an
// error type.
func (anthropicStream) readsData(name []byte) bool {
	switch string(name) {
	case "message_start", "message_delta", "error":
		return true
	}
	return false
}

func (anthropicStream) observe(s *StreamProgress, ev *StreamEvent) {
	f := ev.Fields
	switch string(ev.Type(anthropicType)) {
	case "message_start":
		s.addAnthropicUsage(f[anthropicStartInput : anthropicStartOutput+1])
	case "message_delta":
		s.addAnthropicUsage(f[anthropicDeltaInput : anthropicDeltaOutput+1])
		if r := f[anthropicStopReason]; r.Kind == JSONString && len(r.Text) > 0 {
			s.StopReason = string(r.Text)
		}
	case "message_stop":
		s.Done = true
	case "content_block_start", "content_block_delta", "content_block_stop", "ping":
	case "error":
		s.fail(Anthropic, f[anthropicErrorType].String())
	default:
		return
	}
	s.Followed = true
}

// addAnthropicUsage sets the counts of a usage object given as input,
// cache write, cache read and output tokens. Every count is a
// whole-message total, so present fields overwrite rather than add.
func (s *StreamProgress) addAnthropicUsage(u []JSONValue) {
	if u[0].Kind == JSONNumber {
		// Upstream numbers: the sum saturates rather than wrapping.
		s.InputTokens = SaturatingAdd(SaturatingAdd(u[0].Int(), u[1].Int()), u[2].Int())
	}
	if u[3].Kind == JSONNumber {
		s.OutputTokens = u[3].Int()
	}
}

// chatStream is the Chat Completions (and legacy Completions) stream
// (platform.openai.com/docs/guides/streaming-responses?api-mode=chat): data-only
// chunks, the finish reason in the last choice chunk, usage in a final
// chunk with empty choices when include_usage is set, `data: [DONE]` at
// the end, and a chunk with an `error` object for an error.
type chatStream struct{}

// The fields a chat chunk is read for, in chatFields order.
const (
	chatError = iota
	chatErrorType
	chatErrorCode
	chatUsage
	chatPromptTokens
	chatCompletionTokens
	chatChoices
	chatFinishReason
)

var chatFields = []string{
	chatError:            "error",
	chatErrorType:        "error.type",
	chatErrorCode:        "error.code",
	chatUsage:            "usage",
	chatPromptTokens:     "usage.prompt_tokens",
	chatCompletionTokens: "usage.completion_tokens",
	chatChoices:          "choices",
	chatFinishReason:     "choices.0.finish_reason",
}

func (chatStream) fields() []string { return chatFields }
func (chatStream) cutIndex() int    { return 1 }

// Chat chunks are judged by their data alone, whatever their name.
func (chatStream) readsData([]byte) bool { return true }

// doneMarker starts the data of the last event of a chat stream; the
// official SDKs end the stream on any data that starts with it.
var doneMarker = []byte("[DONE]")

func (chatStream) observe(s *StreamProgress, ev *StreamEvent) {
	if bytes.HasPrefix(ev.Head, doneMarker) {
		s.Done, s.Followed = true, true
		return
	}
	f := ev.Fields
	if !ev.JSON {
		return
	}
	if f[chatError].Kind == JSONObject {
		s.Followed = true
		s.fail(OpenAI, f[chatErrorType].String(), f[chatErrorCode].String())
		return
	}
	if f[chatChoices].Kind != JSONArray && f[chatUsage].Kind != JSONObject {
		return
	}
	s.Followed = true
	if f[chatUsage].Kind == JSONObject {
		s.InputTokens, s.OutputTokens = f[chatPromptTokens].Int(), f[chatCompletionTokens].Int()
	}
	if r := f[chatFinishReason]; r.Kind == JSONString && len(r.Text) > 0 {
		s.StopReason = string(r.Text)
	}
}

// responsesStream is the Responses API stream
// (platform.openai.com/docs/guides/streaming-responses?api-mode=responses): typed
// events, no [DONE]; response.completed, response.incomplete or
// response.failed ends it with the final response and its usage, and an
// `error` event reports an error.
type responsesStream struct{}

// The fields a Responses event is read for, in responsesFields order.
const (
	responsesType = iota
	responsesInput
	responsesOutput
	responsesStatus
	responsesIncomplete
	responsesFailCode
	responsesCode
	responsesErrorType
	responsesErrorCode
)

var responsesFields = []string{
	responsesType:       "type",
	responsesInput:      "response.usage.input_tokens",
	responsesOutput:     "response.usage.output_tokens",
	responsesStatus:     "response.status",
	responsesIncomplete: "response.incomplete_details.reason",
	responsesFailCode:   "response.error.code",
	responsesCode:       "code",
	responsesErrorType:  "error.type",
	responsesErrorCode:  "error.code",
}

func (responsesStream) fields() []string { return responsesFields }
func (responsesStream) cutIndex() int    { return 2 }

// A named Responses event's type is its name; only the ends and errors
// carry what the gateway reads.
func (responsesStream) readsData(name []byte) bool {
	switch string(name) {
	case "response.completed", "response.incomplete", "response.failed", "error":
		return true
	}
	return false
}

func (responsesStream) observe(s *StreamProgress, ev *StreamEvent) {
	f := ev.Fields
	typ := ev.Type(responsesType)
	switch string(typ) {
	case "response.completed", "response.incomplete", "response.failed":
		s.InputTokens, s.OutputTokens = f[responsesInput].Int(), f[responsesOutput].Int()
		s.StopReason = responsesStop(f[responsesStatus].String(), f[responsesIncomplete].String())
		s.Done = true
		if string(typ) == "response.failed" {
			s.fail(OpenAI, f[responsesFailCode].String(), "response_failed")
		}
	case "error":
		// The documented event has a top-level code; some compatible
		// servers nest an error object instead.
		s.fail(OpenAI, f[responsesCode].String(), f[responsesErrorType].String(), f[responsesErrorCode].String())
	default:
		if !bytes.HasPrefix(typ, []byte("response.")) {
			return
		}
	}
	s.Followed = true
}

// streamErrorStatuses maps the error types and codes of in-band error
// events to the HTTP status the same error has as a response: Anthropic's
// documented types (platform.claude.com/docs/en/api/errors) and OpenAI's
// types and codes (platform.openai.com/docs/guides/error-codes).
// Overloads are dialect-specific (529 for Anthropic, 503 for OpenAI) and
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
// load: 529 on Anthropic's API, 503 on OpenAI's.
var overloadTypes = [...]string{"overloaded_error", "overloaded", "server_overloaded", "engine_overloaded"}

// streamErrorOf describes an in-band error from the names it carries, most
// telling first (an error type, or an OpenAI code): the first present one
// is logged, the first the tables know decides the status. An error they
// do not know stands for 500, the status both providers give an
// unexpected error.
func streamErrorOf(d Dialect, names ...string) StreamError {
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
			e.Status = http.StatusServiceUnavailable
			if d == Anthropic {
				e.Status = 529
			}
			return e
		}
		if status, ok := streamErrorStatuses[n]; ok {
			e.Status = status
			return e
		}
	}
	return e
}
