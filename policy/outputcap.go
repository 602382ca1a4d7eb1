package policy

import (
	"fmt"
	"math"
	"strconv"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// The body fields that cap output tokens, per endpoint (reference:
// provider-semantics.md §1.2, §2.2, §2.5, §7.7). Chat Completions has two:
// max_completion_tokens is current and `max_tokens` is deprecated but still
// accepted, so a cap must be enforced on both or a client could slip past
// it with the old name. The first field of each list is the one the gateway
// inserts when a request names none.
var (
	messagesCapFields    = []string{"max_tokens"}
	chatCapFields        = []string{"max_completion_tokens", "max_tokens"}
	responsesCapFields   = []string{"max_output_tokens"}
	completionsCapFields = []string{"max_tokens"}
)

// OutputCapFields returns the body fields that cap output tokens for the
// endpoint: Anthropic Messages `max_tokens`; Chat Completions
// `max_completion_tokens` and the deprecated `max_tokens`; Responses
// `max_output_tokens`; legacy Completions `max_tokens`. Embeddings and
// unknown endpoints have none. The returned slice is shared: do not modify
// it.
func OutputCapFields(d Dialect, e Endpoint) []string {
	switch {
	case d == Anthropic && e == Messages:
		return messagesCapFields
	case d == OpenAI && e == ChatCompletions:
		return chatCapFields
	case d == OpenAI && e == Responses:
		return responsesCapFields
	case d == OpenAI && e == Completions:
		return completionsCapFields
	}
	return nil
}

// CapMode is what the `max_tokens <n> [clamp|reject]` guard does with a
// request that asks for more output than the ceiling.
type CapMode uint8

const (
	// CapClamp lowers the request's cap to the ceiling (the default).
	CapClamp CapMode = iota
	// CapReject answers 400 and says how to fix the request.
	CapReject
)

// ParseCapMode parses the optional mode of `max_tokens`: clamp or reject.
// The empty string is clamp.
func ParseCapMode(s string) (CapMode, error) {
	switch s {
	case "", "clamp":
		return CapClamp, nil
	case "reject":
		return CapReject, nil
	}
	return CapClamp, fmt.Errorf("unknown max_tokens mode %q: use clamp or reject", s)
}

// OutputCapRule is the configured output-cap guard (SPEC "Guards").
type OutputCapRule struct {
	// Ceiling is the `max_tokens` limit; 0 means none.
	Ceiling int64
	// Mode says whether a request above Ceiling is clamped or rejected.
	Mode CapMode
	// Default is `default_max_tokens`, set when a request names no cap;
	// 0 means none.
	Default int64
}

// CapError is a request whose output cap is above the configured ceiling
// in CapReject mode. Its message is written for the person who sent the
// request; Field is the JSON field to name as the error's param.
type CapError struct {
	Field string
	Value int64
	Limit int64
}

func (e *CapError) Error() string {
	return fmt.Sprintf("%s is %d, above the %d output tokens this gateway allows per request; send %s of at most %d (or ask the gateway's operator to raise its max_tokens limit)",
		e.Field, e.Value, e.Limit, e.Field, e.Limit)
}

// ApplyOutputCap enforces the output-cap guard on a request body and
// returns the body to send, the effective output cap, and a CapError when
// the request must be refused.
//
// Every cap field the endpoint uses is checked. A value above the ceiling
// is clamped to it (or, in CapReject mode, refused); a value above
// modelMax, the model's own max_output from the model table, is always
// clamped, since the provider would reject it (SPEC "model"). A body that
// names no cap (or names it as null) gets rule.Default in the endpoint's
// preferred field, itself clamped. The effective cap is the largest value
// left in the body, or 0 when the body names none: the context guard and
// the rate limiter then fall back to the model's max_output.
//
// Edits go through sjson, which rewrites only the one value and keeps every
// other byte; when nothing changes the input slice itself is returned. A
// body that is not a JSON object, or a cap that is not an integer, is left
// as it is: the validator or the provider answers those.
func ApplyOutputCap(d Dialect, e Endpoint, body []byte, rule OutputCapRule, modelMax int64) ([]byte, int64, *CapError) {
	fields := OutputCapFields(d, e)
	if len(fields) == 0 || !isJSONObject(body) {
		return body, 0, nil
	}
	limit := rule.Ceiling
	if modelMax > 0 && (limit <= 0 || modelMax < limit) {
		limit = modelMax
	}
	out := body
	var effective int64
	named := false
	for _, field := range fields {
		v := gjson.Get(bytesView(out), field)
		if !v.Exists() || v.Type == gjson.Null {
			continue
		}
		named = true
		n, ok := parseJSONInt(v.Raw)
		if !ok {
			continue
		}
		if rule.Mode == CapReject && rule.Ceiling > 0 && n > rule.Ceiling {
			return body, 0, &CapError{Field: field, Value: n, Limit: rule.Ceiling}
		}
		if limit > 0 && n > limit {
			edited, err := sjson.SetBytes(out, field, limit)
			if err != nil {
				return body, 0, nil
			}
			out, n = edited, limit
		}
		effective = max(effective, n)
	}
	if !named && rule.Default > 0 {
		n := rule.Default
		if limit > 0 && n > limit {
			n = limit
		}
		edited, err := sjson.SetBytes(out, fields[0], n)
		if err != nil {
			return body, 0, nil
		}
		out, effective = edited, n
	}
	return out, effective, nil
}

// isJSONObject reports whether body starts, after whitespace, with '{'.
func isJSONObject(body []byte) bool {
	i := skipSpace(bytesView(body), 0)
	return i < len(body) && body[i] == '{'
}

// parseJSONInt parses a raw JSON number that is an integer (no fraction,
// no exponent). An integer too large for int64 saturates, so it still
// counts as far above any ceiling.
func parseJSONInt(raw string) (int64, bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if digits == "" {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil { // only out of range is left
		if raw[0] == '-' {
			return math.MinInt64, true
		}
		return math.MaxInt64, true
	}
	return n, true
}
