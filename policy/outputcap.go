package policy

import "fmt"

// The body fields that cap output tokens, per endpoint. Chat Completions has
// two: max_completion_tokens is current and `max_tokens` is deprecated but
// still accepted, so a cap must be enforced on both or a client could slip
// past it with the old name. The first field of each list is the one the
// gateway inserts when a request names none.
var (
	messagesCapFields    = []field{fieldMaxTokens}
	chatCapFields        = []field{fieldMaxCompletionTokens, fieldMaxTokens}
	responsesCapFields   = []field{fieldMaxOutputTokens}
	completionsCapFields = []field{fieldMaxTokens}
)

// capFields returns the body fields that cap output tokens for the
// endpoint: Anthropic Messages `max_tokens`; Chat Completions
// `max_completion_tokens` and the deprecated `max_tokens`; Responses
// `max_output_tokens`; legacy Completions `max_tokens`. Embeddings and
// unknown endpoints have none. The returned slice is shared: do not modify
// it.
func capFields(d Dialect, e Endpoint) []field {
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

// OutputCapFields returns the names of the body fields that cap output
// tokens for the endpoint (see capFields).
func OutputCapFields(d Dialect, e Endpoint) []string {
	fields := capFields(d, e)
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = fieldPaths[f]
	}
	return names
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

// minThinkingBudget is the smallest `thinking.budget_tokens` Anthropic
// accepts; the budget must also stay below max_tokens
// (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking).
const minThinkingBudget = 1024

// ApplyOutputCap enforces the output-cap guard on the request and returns
// the effective output cap, whether it changed the body, and a RequestError
// when the request must be refused.
//
// Every cap field the endpoint uses is checked, by value in any JSON number
// form. A value above the ceiling is clamped to it (or, in CapReject mode,
// refused); a value above modelMax, the model's own max_output from the
// model table, is always clamped, since the provider would reject it. A
// body that names no cap (or names it as null) gets rule.Default in the
// endpoint's preferred field, itself clamped. A value the gateway writes is
// an integer. The effective cap is the largest value left in the body, or 0
// when the body names none: the context guard and the rate limiter then
// fall back to the model's max_output.
//
// A cap the gateway lowers or sets must leave the request valid: an
// Anthropic `thinking.budget_tokens` must stay below max_tokens and at
// least 1024, so it is lowered with the cap, and when no budget fits the
// request is refused with both numbers. A request that is invalid as it
// came is left for the validator or the provider to answer, as is a body
// that is not a JSON object or a cap that is not a number.
func (r *Request) ApplyOutputCap(rule OutputCapRule, modelMax int64) (effective int64, changed bool, _ *RequestError) {
	fields := capFields(r.d, r.e)
	if len(fields) == 0 || !r.object {
		return 0, false, nil
	}
	limit := rule.Ceiling
	if modelMax > 0 && (limit <= 0 || modelMax < limit) {
		limit = modelMax
	}
	named := false
	for _, f := range fields {
		raw := r.raw(f)
		if raw == nil || string(raw) == "null" {
			continue
		}
		named = true
		n, ok := numberValue(raw)
		if !ok {
			continue
		}
		if rule.Mode == CapReject && rule.Ceiling > 0 && n > rule.Ceiling {
			p := fieldPaths[f]
			return 0, changed, &RequestError{Param: p, Message: fmt.Sprintf("%s is %s, above the %d output tokens this gateway allows per request; send %s of at most %d (or ask the gateway's operator to raise its max_tokens limit)",
				p, raw, rule.Ceiling, p, rule.Ceiling)}
		}
		if limit > 0 && n > limit {
			r.setInt(f, limit)
			n, changed = limit, true
		}
		effective = max(effective, n)
	}
	if !named && rule.Default > 0 {
		n := rule.Default
		if limit > 0 {
			n = min(n, limit)
		}
		if r.setInt(fields[0], n) {
			effective, changed = n, true
		}
	}
	if changed {
		if err := r.fitThinking(effective); err != nil {
			return 0, changed, err
		}
	}
	return effective, changed, nil
}

// fitThinking keeps an Anthropic thinking budget below an output cap the
// gateway has just lowered or set to maxTokens.
func (r *Request) fitThinking(maxTokens int64) *RequestError {
	if r.d != Anthropic || string(r.raw(fieldThinkingType)) != `"enabled"` {
		return nil
	}
	budget, ok := numberValue(r.raw(fieldThinkingBudget))
	if !ok || budget < maxTokens {
		return nil
	}
	if maxTokens-1 < minThinkingBudget {
		return &RequestError{Param: "thinking.budget_tokens", Message: fmt.Sprintf(
			"this gateway limits max_tokens to %d for this request, but thinking.budget_tokens is %d, and a thinking budget must be below max_tokens and at least %d; "+
				"turn thinking off, or ask the gateway's operator for a max_tokens limit above %d", maxTokens, budget, minThinkingBudget, minThinkingBudget)}
	}
	r.setInt(fieldThinkingBudget, maxTokens-1)
	return nil
}
