package policy

import (
	"fmt"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// ContextMode is the `context_guard` setting: what the gateway does when a
// request's estimated input plus its output cap exceed the model's context
// window, so that it answers locally what the provider would refuse anyway.
type ContextMode uint8

const (
	// ContextReject answers 400 without calling upstream, unless a model
	// down the request's fallback chain has a window large enough (the
	// default).
	ContextReject ContextMode = iota
	// ContextTruncate drops the oldest turns until the request fits.
	ContextTruncate
	// ContextOff sends every request as it is.
	ContextOff
)

// ParseContextMode parses `context_guard`: reject, truncate or off. The
// empty string is reject.
func ParseContextMode(s string) (ContextMode, error) {
	switch s {
	case "", "reject":
		return ContextReject, nil
	case "truncate":
		return ContextTruncate, nil
	case "off":
		return ContextOff, nil
	}
	return ContextReject, fmt.Errorf("unknown context_guard %q: use reject, truncate or off", s)
}

// FitsContext reports whether input plus output tokens fit a context window.
// A window of 0 is unknown and fits everything: the guard only refuses what
// it knows the provider would refuse.
func FitsContext(input, output, window int64) bool {
	if window <= 0 {
		return true
	}
	return input <= window && output <= window-input
}

// mediaMargin is the tokens FitsByBodySize allows for image and document
// blocks, which the estimator charges a fixed cost (up to 3,000 tokens)
// whatever their size in the body: about twenty images by URL.
const mediaMargin = 32_000

// FitsByBodySize reports whether a body of bodyLen bytes fits the window
// whatever it holds, so the estimate need not be made. The estimator never
// counts more than about 0.53 tokens per byte of text and JSON (measured
// over random text of every character class), so a body no longer than the
// window, less the output cap and a margin for media blocks, fits. Most
// requests are far below their model's window; this spares them a pass over
// the body.
func FitsByBodySize(bodyLen, output, window int64) bool {
	return window <= 0 || bodyLen+mediaMargin <= window-output
}

// ChooseModel returns the model a request should go to under the reject
// guard: model itself when its window holds input+output, else the first
// model down its fallback chain whose window does, which the caller then
// uses directly rather than as a fallback after a failure. A model the
// table does not know counts as fitting. ok is false when no model in the
// chain fits; the request is then refused with ContextOverflowMessage for
// model.
func ChooseModel(model string, fb Fallbacks, input, output int64, table ModelTable) (string, bool) {
	for m := model; ; {
		facts, known := table.Lookup(m)
		if !known || FitsContext(input, output, facts.ContextWindow) {
			return m, true
		}
		next, ok := fb.Next(m)
		if !ok {
			return model, false
		}
		m = next
	}
}

// ContextOverflowMessage is the error text for a request that does not fit
// its model's window: the numbers, in the form `estimated 205000 input +
// 8000 output > 200000 window for claude-opus-4-5`, and what the sender can
// change.
func ContextOverflowMessage(api wire.API, model string, input, output, window int64) string {
	capField := "the output cap"
	if fields := api.CapFields(); len(fields) > 0 {
		capField = fields[0].String()
	}
	msg := fmt.Sprintf("estimated %d input + %d output > %d window for %s", input, output, window, model)
	if input < window {
		return msg + fmt.Sprintf(": lower %s to at most %d, shorten the conversation, or use a model with a larger context window (the input count is this gateway's estimate)",
			capField, window-input)
	}
	return msg + ": the input alone is over the window; shorten the conversation (older turns, long tool results, large documents) or use a model with a larger context window (the input count is this gateway's estimate)"
}

// turnMsg is one element of the conversation array.
type turnMsg struct {
	raw    []byte
	kind   wire.TurnKind
	tokens int64
}

// Truncate shortens the conversation of a request of the API until its
// input estimate (estimate, as the API made it) is at most budget (the
// window less the output cap). It edits r in place and returns how many
// messages (or input items) it dropped, or ok=false, with r unchanged,
// when the request cannot be made to fit.
//
// What is dropped, oldest first: whole earlier turns (a user message and
// everything up to the next one), then, inside the last turn, the oldest
// tool-call rounds between its user message and its final round. What is
// never dropped: the system prompt (a top-level `system` or `instructions`,
// and every system or developer message), the last user message, and the
// last round after it. A tool call and its results go together (the API
// tells which turn answers a call, wire.TurnResult), so the first message
// left after the system prompt is always a user message, and the provider
// never sees a tool result without its call.
//
// The array is rebuilt from the raw bytes of the kept elements and spliced
// into the body; nothing else is re-encoded. A Responses request whose input
// is a string, or whose conversation is stored upstream
// (previous_response_id), cannot be shortened here.
func Truncate(api wire.API, r *body.Request, estimate, budget int64) (dropped int, ok bool) {
	if estimate <= budget {
		return 0, true
	}
	arr := r.Raw(api.Conversation())
	if len(arr) == 0 || arr[0] != '[' {
		return 0, false
	}
	var msgs []turnMsg
	size := 0
	body.Elements(arr, func(raw []byte) bool {
		msgs = append(msgs, turnMsg{raw: raw, kind: api.TurnKind(raw), tokens: tokens.Message(raw)})
		size += len(raw) + 1
		return true
	})
	keep, dropped, fits := planTruncation(msgs, estimate, budget)
	if !fits {
		return 0, false
	}
	out := make([]byte, 0, size+1)
	out = append(out, '[')
	for i, m := range msgs {
		if !keep[i] {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, m.raw...)
	}
	out = append(out, ']')
	r.Replace(api.Conversation(), out)
	return dropped, true
}

// planTruncation decides which messages to keep so that total, less the
// dropped messages' tokens, is at most budget. See Truncate for the order.
func planTruncation(msgs []turnMsg, total, budget int64) (keep []bool, dropped int, fits bool) {
	keep = make([]bool, len(msgs))
	for i := range keep {
		keep[i] = true
	}
	// A unit is what may only be dropped whole: a user message, or a run
	// of model messages with the tool results that follow them.
	var units []int // index of each unit's first message
	prev := wire.TurnKind(255)
	for i, m := range msgs {
		switch {
		case m.kind == wire.TurnPinned:
			continue
		case len(units) == 0, m.kind == wire.TurnUser, m.kind == wire.TurnModel && prev != wire.TurnModel:
			units = append(units, i)
		}
		prev = m.kind
	}
	if len(units) == 0 {
		return keep, 0, false
	}
	end := func(u int) int { // one past the unit's last message
		if u+1 < len(units) {
			return units[u+1]
		}
		return len(msgs)
	}
	isUser := func(u int) bool { return msgs[units[u]].kind == wire.TurnUser }
	drop := func(u int) {
		for i := units[u]; i < end(u); i++ {
			if keep[i] && msgs[i].kind != wire.TurnPinned {
				keep[i] = false
				total -= msgs[i].tokens
				dropped++
			}
		}
	}
	anchor := 0 // the last user message's unit
	for u := range units {
		if isUser(u) {
			anchor = u
		}
	}
	// Whole turns before the last one, stopping only where a user message
	// would come first.
	for u := 0; u < anchor && total > budget; u++ {
		drop(u)
		for u+1 < anchor && !isUser(u+1) {
			u++
			drop(u)
		}
	}
	// Then tool rounds inside the last turn, keeping its final round.
	for u := anchor + 1; u < len(units)-1 && total > budget; u++ {
		drop(u)
	}
	return keep, dropped, total <= budget
}
