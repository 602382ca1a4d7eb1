package policy

import (
	"fmt"
	"strings"
)

// ContextMode is the `context_guard` setting: what the gateway does when a
// request's estimated input plus its output cap exceed the model's context
// window (SPEC "Guards").
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
// uses directly (SPEC "context_guard"). A model the table does not know
// counts as fitting. ok is false when no model in the chain fits; the
// request is then refused with ContextOverflowMessage for model.
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
func ContextOverflowMessage(d Dialect, e Endpoint, model string, input, output, window int64) string {
	capField := "the output cap"
	if fields := OutputCapFields(d, e); len(fields) > 0 {
		capField = fields[0]
	}
	msg := fmt.Sprintf("estimated %d input + %d output > %d window for %s", input, output, window, model)
	if input < window {
		return msg + fmt.Sprintf(": lower %s to at most %d, shorten the conversation, or use a model with a larger context window (the input count is this gateway's estimate)",
			capField, window-input)
	}
	return msg + ": the input alone is over the window; shorten the conversation (older turns, long tool results, large documents) or use a model with a larger context window (the input count is this gateway's estimate)"
}

// turnKind is what a message means for truncation.
type turnKind uint8

const (
	// kindModel is the model's side: an assistant message, or a Responses
	// reasoning item or tool call.
	kindModel turnKind = iota
	// kindUser is a person's message, which opens a turn.
	kindUser
	// kindResult answers a tool call: an Anthropic user message carrying
	// tool_result blocks, a Chat `role: tool` message, a Responses
	// *_output item. It belongs with the call before it.
	kindResult
	// kindPinned is a system or developer message: never dropped.
	kindPinned
)

// turnMsg is one element of the conversation array.
type turnMsg struct {
	raw    string
	kind   turnKind
	tokens int64
}

// Truncate shortens the conversation of an Anthropic Messages, Chat
// Completions or Responses request until EstimateInputTokens of the result
// is at most budget (the window less the output cap). It returns the new
// body, how many messages (or input items) it dropped, and ok=false, with
// the body unchanged, when the request cannot be made to fit.
//
// What is dropped, oldest first: whole earlier turns (a user message and
// everything up to the next one), then, inside the last turn, the oldest
// tool-call rounds between its user message and its final round. What is
// never dropped: the system prompt (Anthropic's top-level `system`, and
// every system or developer message), the last user message, and the last
// round after it. A tool call and its results go together: an Anthropic
// assistant message with tool_use blocks and the next user message with the
// tool_result blocks; a Chat assistant message with tool_calls and the
// `role: tool` messages after it; Responses reasoning and *_call items and
// their *_output items. So the first message left after the system prompt
// is always a user message, and the provider never sees a tool result
// without its call (reference: provider-semantics.md §1.2, §2.2, §2.5).
//
// The array is rebuilt from the raw bytes of the kept elements and spliced
// into the body; nothing else is re-encoded. A Responses request whose input
// is a string, or whose conversation is stored upstream
// (previous_response_id), cannot be shortened here.
func Truncate(d Dialect, e Endpoint, body []byte, budget int64) ([]byte, int, bool) {
	total := EstimateInputTokens(d, e, body)
	if total <= budget {
		return body, 0, true
	}
	key := conversationField(e)
	if key == "" {
		return body, 0, false
	}
	src := bytesView(body)
	it, _ := iterJSON(src)
	arr, arrStart := "", -1
	for arrStart < 0 {
		k, v, start, ok := it.next()
		if !ok {
			return body, 0, false
		}
		if k == key && v[0] == '[' {
			arr, arrStart = v, start
		}
	}
	msgs, ok := readTurns(arr)
	if !ok {
		return body, 0, false
	}
	keep, dropped, fits := planTruncation(msgs, total, budget)
	if !fits {
		return body, 0, false
	}
	out := make([]byte, 0, len(body))
	out = append(out, body[:arrStart]...)
	out = append(out, '[')
	first := true
	for i, m := range msgs {
		if !keep[i] {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		out = append(out, m.raw...)
		first = false
	}
	out = append(out, ']')
	out = append(out, body[arrStart+len(arr):]...)
	return out, dropped, true
}

// readTurns reads the conversation array: each element's raw JSON, kind and
// estimate (the same messageTokens EstimateInputTokens summed). ok is false
// for a malformed array, which is left to the provider to reject.
func readTurns(arr string) ([]turnMsg, bool) {
	it, _ := iterJSON(arr)
	var msgs []turnMsg
	for {
		_, raw, _, ok := it.next()
		if !ok {
			break
		}
		msgs = append(msgs, turnMsg{raw: raw, kind: classifyTurn(raw), tokens: messageTokens(raw)})
	}
	return msgs, !it.err()
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
	prev := turnKind(255)
	for i, m := range msgs {
		switch {
		case m.kind == kindPinned:
			continue
		case len(units) == 0, m.kind == kindUser, m.kind == kindModel && prev != kindModel:
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
	isUser := func(u int) bool { return msgs[units[u]].kind == kindUser }
	drop := func(u int) {
		for i := units[u]; i < end(u); i++ {
			if keep[i] && msgs[i].kind != kindPinned {
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

// classifyTurn tells what a message or input item is by its role, its
// type, and (for an Anthropic user message) whether it carries tool_result
// blocks.
func classifyTurn(raw string) turnKind {
	it, ok := iterJSON(raw)
	if !ok || !it.obj {
		return kindModel
	}
	var role, typ, content string
	for {
		k, v, _, ok := it.next()
		if !ok {
			break
		}
		switch k {
		case "role":
			role, _ = rawString(v)
		case "type":
			typ, _ = rawString(v)
		case "content":
			content = v
		}
	}
	switch role {
	case "system", "developer":
		return kindPinned
	case "tool", "function":
		return kindResult
	case "user":
		if hasToolResult(content) {
			return kindResult
		}
		return kindUser
	case "":
		// Responses items without a role: function_call_output,
		// computer_call_output, mcp_approval_response and the like answer
		// the call before them; the rest are the model's.
		if strings.HasSuffix(typ, "_output") || strings.HasSuffix(typ, "_response") {
			return kindResult
		}
	}
	return kindModel
}

// hasToolResult reports whether an Anthropic content array holds a
// tool_result block.
func hasToolResult(content string) bool {
	it, ok := iterJSON(content)
	if !ok || it.obj {
		return false
	}
	for {
		_, block, _, ok := it.next()
		if !ok {
			return false
		}
		bi, ok := iterJSON(block)
		if !ok || !bi.obj {
			continue
		}
		for {
			k, v, _, ok := bi.next()
			if !ok {
				break
			}
			if k == "type" {
				if t, _ := rawString(v); t == "tool_result" {
					return true
				}
				break
			}
		}
	}
}
