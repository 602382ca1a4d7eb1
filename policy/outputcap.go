package policy

import (
	"fmt"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

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

// OutputCapRule is the configured output-cap guard: the `max_tokens`
// ceiling and its mode, and `default_max_tokens`.
type OutputCapRule struct {
	// Ceiling is the `max_tokens` limit; 0 means none.
	Ceiling int64
	// Mode says whether a request above Ceiling is clamped or rejected.
	Mode CapMode
	// Default is `default_max_tokens`, set when a request names no cap;
	// 0 means none.
	Default int64
}

// ApplyOutputCap enforces the output-cap guard on a request of the API and
// returns the effective output cap, whether it changed the body, and a
// RequestError when the request must be refused.
//
// Every cap member the API uses is checked, by value in any JSON number
// form. A value above the ceiling is clamped to it (or, in CapReject mode,
// refused); a value above modelMax, the model's own max_output from the
// model table, is always clamped, since the provider would reject it. A
// body that names no cap (or names it as null) gets rule.Default in the
// API's preferred member, itself clamped. A value the gateway writes is an
// integer. The effective cap is the largest value left in the body, or 0
// when the body names none: the context guard and the rate limiter then
// reserve no output.
//
// A cap the gateway lowers or sets must leave the request valid, which the
// API sees to (API.CapLowered: an Anthropic thinking budget is lowered with
// the cap, or the request refused with both numbers). A request that is
// invalid as it came is left for the validator or the provider to answer,
// as is a body that is not a JSON object, but for a cap that is not a
// number while a limit applies: that is refused, since the limit cannot be
// judged on it.
func ApplyOutputCap(api wire.API, r *body.Request, rule OutputCapRule, modelMax int64) (effective int64, changed bool, _ *body.RequestError) {
	fields := api.CapFields()
	if len(fields) == 0 || !r.Object() {
		return 0, false, nil
	}
	limit := rule.Ceiling
	if modelMax > 0 && (limit <= 0 || modelMax < limit) {
		limit = modelMax
	}
	named := false
	for _, f := range fields {
		raw := r.Raw(f)
		if raw == nil || string(raw) == "null" {
			continue
		}
		named = true
		n, ok := body.Number(raw)
		if !ok {
			if limit > 0 {
				// A limit applies, and nothing says how an upstream reads
				// this value: a compatible server may take "99999" as the
				// number. Validation refuses it first when it is on.
				p := f.String()
				return 0, changed, &body.RequestError{Param: p, Message: fmt.Sprintf("%s is %s; this gateway limits output tokens per request, so it must be a whole number of at most %d",
					p, body.Describe(raw), limit)}
			}
			continue
		}
		if rule.Mode == CapReject && rule.Ceiling > 0 && n > rule.Ceiling {
			p := f.String()
			return 0, changed, &body.RequestError{Param: p, Message: fmt.Sprintf("%s is %s, above the %d output tokens this gateway allows per request; send %s of at most %d (or ask the gateway's operator to raise its max_tokens limit)",
				p, raw, rule.Ceiling, p, rule.Ceiling)}
		}
		if limit > 0 && n > limit {
			r.SetInt(f, limit)
			n, changed = limit, true
		}
		effective = max(effective, n)
	}
	if !named && rule.Default > 0 {
		n := rule.Default
		if limit > 0 {
			n = min(n, limit)
		}
		if r.SetInt(fields[0], n) {
			effective, changed = n, true
		}
	}
	if changed {
		if err := api.CapLowered(r, effective); err != nil {
			return 0, changed, err
		}
	}
	return effective, changed, nil
}
