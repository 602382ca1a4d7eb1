package policy

import (
	"bytes"
	"math"
	"strings"

	"github.com/tidwall/gjson"
)

// Usage is what a response says about tokens and how the answer ended.
type Usage struct {
	// InputTokens is the whole prompt as billed: for Anthropic that is
	// input_tokens + cache_creation_input_tokens + cache_read_input_tokens
	// (reference: provider-semantics.md §1.3).
	InputTokens int64
	// OutputTokens is the completion as billed.
	OutputTokens int64
	// StopReason is the provider's stop_reason, finish_reason or status.
	StopReason string
}

// UsageFromBody reads usage from a complete, non-streamed JSON response,
// in one walk over its top level without copying the body.
func UsageFromBody(d Dialect, e Endpoint, body []byte) Usage {
	var u Usage
	var status, incomplete string
	gjson.Parse(bytesView(body)).ForEach(func(key, value gjson.Result) bool {
		switch key.Str {
		case "usage":
			switch {
			case d == Anthropic:
				u.addAnthropic(value)
			case e == Responses:
				u.InputTokens, u.OutputTokens = tokenCount(gjson.Get(value.Raw, "input_tokens")), tokenCount(gjson.Get(value.Raw, "output_tokens"))
			default: // chat completions, completions, embeddings
				u.InputTokens, u.OutputTokens = tokenCount(gjson.Get(value.Raw, "prompt_tokens")), tokenCount(gjson.Get(value.Raw, "completion_tokens"))
			}
		case "stop_reason":
			u.StopReason = value.Str
		case "choices":
			u.StopReason = gjson.Get(value.Raw, "0.finish_reason").Str
		case "status":
			status = value.Str
		case "incomplete_details":
			incomplete = gjson.Get(value.Raw, "reason").Str
		}
		return true
	})
	if e == Responses && d == OpenAI {
		u.StopReason = responsesStop(status, incomplete)
	}
	u.StopReason = strings.Clone(u.StopReason) // the body buffer is pooled
	return u
}

// addAnthropic sets the counts an Anthropic usage object carries. Every
// count is a whole-message total, so present fields overwrite rather than
// add (reference §1.6: message_delta usage is cumulative).
func (u *Usage) addAnthropic(usage gjson.Result) {
	if !usage.IsObject() {
		return
	}
	var input, cached int64
	var hasInput bool
	usage.ForEach(func(key, value gjson.Result) bool {
		switch key.Str {
		case "input_tokens":
			input, hasInput = tokenCount(value), true
		case "cache_creation_input_tokens", "cache_read_input_tokens":
			cached = SaturatingAdd(cached, tokenCount(value))
		case "output_tokens":
			u.OutputTokens = tokenCount(value)
		}
		return true
	})
	if hasInput {
		u.InputTokens = SaturatingAdd(input, cached)
	}
}

// tokenCount reads a usage count from the upstream, saturated: a count
// beyond int64 (gjson would convert it to a negative number) is the largest
// one, and a negative count is none, so sums of counts and the metrics fed
// by them never go backwards.
func tokenCount(v gjson.Result) int64 {
	if v.Type == gjson.Number && v.Num >= math.MaxInt64 {
		return math.MaxInt64
	}
	return max(v.Int(), 0)
}

// responsesStop names how a Responses API answer ended: its status, or the
// reason it is incomplete (for example max_output_tokens).
func responsesStop(status, incompleteReason string) string {
	if status == "incomplete" && incompleteReason != "" {
		return incompleteReason
	}
	return status
}

// StreamProgress follows the events of one streamed response: the usage it
// reports and whether it reached its proper end.
type StreamProgress struct {
	Usage
	// Done is true once the stream's terminal event passed: anthropic
	// message_stop, openai chat `data: [DONE]`, a Responses API
	// response.completed/incomplete/failed, or an in-band error event from the
	// upstream (which the client already sees as an error).
	Done bool
}

// doneMarker is the last data line of OpenAI Chat and Completions streams.
var doneMarker = []byte("[DONE]")

// Observe takes one server-sent event: its `event:` name (possibly empty)
// and its `data:` payload.
func (s *StreamProgress) Observe(d Dialect, e Endpoint, event, data []byte) {
	switch {
	case d == Anthropic:
		s.observeAnthropic(event, data)
	case e == Responses:
		s.observeResponses(event, data)
	default:
		s.observeChat(data)
	}
}

// observeAnthropic follows the Messages stream (reference §1.6): input
// tokens arrive in message_start, the cumulative output count and the stop
// reason in message_delta, and message_stop ends it.
func (s *StreamProgress) observeAnthropic(event, data []byte) {
	switch string(event) {
	case "message_start":
		s.addAnthropic(gjson.GetBytes(data, "message.usage"))
	case "message_delta":
		r := gjson.GetManyBytes(data, "usage", "delta.stop_reason")
		s.addAnthropic(r[0])
		if r[1].Str != "" {
			s.StopReason = r[1].Str
		}
	case "message_stop", "error":
		s.Done = true
	}
}

// observeResponses follows a Responses API stream, which has no [DONE]: it
// ends with response.completed, response.incomplete or response.failed,
// each carrying the final response with its usage.
func (s *StreamProgress) observeResponses(event, data []byte) {
	switch string(event) {
	case "response.completed", "response.incomplete", "response.failed":
		r := gjson.GetManyBytes(data, "response.usage.input_tokens", "response.usage.output_tokens", "response.status", "response.incomplete_details.reason")
		s.InputTokens, s.OutputTokens = tokenCount(r[0]), tokenCount(r[1])
		s.StopReason = responsesStop(r[2].Str, r[3].Str)
		s.Done = true
	case "error":
		s.Done = true
	}
}

// observeChat follows Chat Completions and legacy Completions streams: usage
// comes in a final chunk (when stream_options.include_usage is set), the
// finish reason in the last choice chunk, and `data: [DONE]` ends it. Every
// chunk passes here, so it is one walk over the chunk's top level with no
// copy unless a finish reason is kept.
func (s *StreamProgress) observeChat(data []byte) {
	if bytes.Equal(bytes.TrimSpace(data), doneMarker) {
		s.Done = true
		return
	}
	gjson.Parse(bytesView(data)).ForEach(func(key, value gjson.Result) bool {
		switch key.Str {
		case "usage":
			if value.IsObject() {
				s.InputTokens = tokenCount(gjson.Get(value.Raw, "prompt_tokens"))
				s.OutputTokens = tokenCount(gjson.Get(value.Raw, "completion_tokens"))
			}
		case "choices":
			if fr := gjson.Get(value.Raw, "0.finish_reason"); fr.Str != "" {
				s.StopReason = strings.Clone(fr.Str)
			}
		case "error":
			if value.IsObject() {
				s.Done = true
			}
		}
		return true
	})
}
