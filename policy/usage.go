package policy

import (
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
