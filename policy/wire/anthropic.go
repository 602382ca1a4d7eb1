package wire

import (
	"fmt"
	"net/http"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
)

// anthropicFamily names the Anthropic family in logs and metrics.
const anthropicFamily = "anthropic"

// messages is the Anthropic Messages API, POST /v1/messages
// (https://docs.anthropic.com/en/api/messages).
type messages struct{}

func (messages) Family() string    { return anthropicFamily }
func (messages) Name() string      { return "messages" }
func (messages) Guarded() bool     { return true }
func (messages) WalkContent() bool { return true }

func (messages) ExampleModel() string { return `"model":"claude-sonnet-4-5"` }

const messagesExample = `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello"}]}`

// Validate checks what the Messages schema requires (anthropic-sdk-go
// MessageNewParams: model, max_tokens and messages are api:"required"):
// `model` a string, `messages` an array whose content blocks are tagged by
// "type", and `max_tokens` an integer of at least 1 (the API answers 400
// "max_tokens: Field required" without it). The caller applies
// default_max_tokens first, so a missing `max_tokens` is really missing.
func (m messages) Validate(r *body.Request) *body.RequestError {
	if err := checkDocument(r, messagesExample); err != nil {
		return err
	}
	if err := checkModel(r, true, m.ExampleModel()); err != nil {
		return err
	}
	if err := checkMessages(r); err != nil {
		return err
	}
	return checkPositiveInteger(r, body.FieldMaxTokens, "the Messages API needs an output cap.",
		` Set it to the most output tokens the reply may use, for example "max_tokens":1024.`)
}

var messagesCaps = []body.Field{body.FieldMaxTokens}

func (messages) CapFields() []body.Field { return messagesCaps }

// minThinkingBudget is the smallest `thinking.budget_tokens` Anthropic
// accepts; the budget must also stay below max_tokens
// (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking).
const minThinkingBudget = 1024

// CapLowered keeps an extended-thinking budget below an output cap the
// gateway has just lowered or set, lowering the budget with it, or refuses
// the request with both numbers when no budget fits.
func (messages) CapLowered(r *body.Request, maxTokens int64) *body.RequestError {
	if string(r.Raw(body.FieldThinkingType)) != `"enabled"` {
		return nil
	}
	budget, ok := body.Number(r.Raw(body.FieldThinkingBudget))
	if !ok || budget < maxTokens {
		return nil
	}
	if maxTokens-1 < minThinkingBudget {
		return &body.RequestError{Param: "thinking.budget_tokens", Message: fmt.Sprintf(
			"max_tokens comes to %d for this request (this gateway's max_tokens ceiling or default, or the model's output limit), but thinking.budget_tokens is %d, and a thinking budget must be below max_tokens and at least %d; "+
				"send max_tokens above the budget, turn thinking off, or ask the gateway's operator for a max_tokens limit above %d", maxTokens, budget, minThinkingBudget, minThinkingBudget)}
	}
	r.SetInt(body.FieldThinkingBudget, maxTokens-1)
	return nil
}

func (messages) WantsStreamUsage() bool { return false }

// anthropicToolsTokens is the system prompt Anthropic adds when a request
// defines tools: 346 tokens for tool_choice auto or none on the Claude 4
// models (https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/overview,
// "Pricing").
const anthropicToolsTokens = 346

// InputTokens counts the conversation, the system prompt, the tool
// definitions (with the system prompt tools bring) and the structured
// output schema in `output_config`.
func (messages) InputTokens(r *body.Request) int64 {
	if !r.Object() {
		return 0
	}
	n := tokens.RequestOverhead + tokens.Conversation(r.Raw(body.FieldMessages)) +
		tokens.Content(r.Raw(body.FieldSystem)) + tokens.JSON(r.Raw(body.FieldOutputConfig))
	if t := r.Raw(body.FieldTools); t != nil {
		n += tokens.JSON(t)
		if tokens.NonEmptyArray(t) {
			n += anthropicToolsTokens
		}
	}
	return n
}

func (messages) Conversation() body.Field { return body.FieldMessages }

// TurnKind: system messages (allowed as messages since API version
// 2026-10-21) are pinned; a user message carrying tool_result blocks
// answers the assistant's tool_use before it.
func (messages) TurnKind(raw []byte) TurnKind {
	role, _, content := turnFields(raw)
	switch string(role) {
	case "system", "developer":
		return TurnPinned
	case "user":
		if hasToolResult(content) {
			return TurnResult
		}
		return TurnUser
	}
	return TurnModel
}

// hasToolResult reports whether a content array holds a tool_result block.
func hasToolResult(content []byte) bool {
	found := false
	body.Elements(content, func(block []byte) bool {
		body.Members(block, func(key string, val []byte) bool {
			if key == "type" {
				t, _ := body.Contents(val)
				found = string(t) == "tool_result"
				return false
			}
			return true
		})
		return !found
	})
	return found
}

// The paths read from a Messages response body, in this order.
const (
	anthropicBodyInput = iota
	anthropicBodyCacheWrite
	anthropicBodyCacheRead
	anthropicBodyOutput
	anthropicBodyStop
	anthropicBodyErrorType
)

var anthropicBodyPaths = jsonread.Compile(
	"usage.input_tokens",
	"usage.cache_creation_input_tokens",
	"usage.cache_read_input_tokens",
	"usage.output_tokens",
	"stop_reason",
	"error.type",
)

func (messages) BodyPaths() *jsonread.Paths { return anthropicBodyPaths }

func (messages) BodyUsage(v []jsonread.Value) Usage {
	var u Usage
	addAnthropicUsage(&u, v[anthropicBodyInput:anthropicBodyOutput+1])
	u.StopReason = v[anthropicBodyStop].String()
	return u
}

// BodyError reads `error.type`; Anthropic spend limits are plain
// rate_limit_error 429s, so nothing on the wire tells a quota apart.
func (messages) BodyError(v []jsonread.Value) (string, bool) {
	return v[anthropicBodyErrorType].String(), false
}

// addAnthropicUsage sets the counts of a usage object given as input,
// cache write, cache read and output tokens. Every count is a whole-message
// total, so present fields overwrite rather than add (message_delta usage
// is cumulative, https://docs.anthropic.com/en/docs/build-with-claude/streaming).
func addAnthropicUsage(u *Usage, v []jsonread.Value) {
	if v[0].Kind == jsonread.Number {
		// Upstream numbers: the sum saturates rather than wrapping.
		u.InputTokens = tokens.Add(tokens.Add(v[0].Count(), v[1].Count()), v[2].Count())
	}
	if v[3].Kind == jsonread.Number {
		u.OutputTokens = v[3].Count()
	}
}

// The paths read from each Messages stream event, in this order.
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

var anthropicStreamPaths = jsonread.Compile(
	"type",
	"message.usage.input_tokens",
	"message.usage.cache_creation_input_tokens",
	"message.usage.cache_read_input_tokens",
	"message.usage.output_tokens",
	"usage.input_tokens",
	"usage.cache_creation_input_tokens",
	"usage.cache_read_input_tokens",
	"usage.output_tokens",
	"delta.stop_reason",
	"error.type",
)

func (messages) StreamPaths() *jsonread.Paths { return anthropicStreamPaths }

// ReadsData: an event's name is its type, and only these carry usage or an
// error type.
func (messages) ReadsData(name []byte) bool {
	switch string(name) {
	case "message_start", "message_delta", "error":
		return true
	}
	return false
}

// Observe follows the Messages stream
// (https://docs.anthropic.com/en/docs/build-with-claude/streaming): input
// tokens arrive in message_start, the cumulative output count and the stop
// reason in message_delta, message_stop ends it, and `event: error` carries
// an error in the shape of an error response.
func (messages) Observe(s *StreamProgress, ev *StreamEvent) {
	f := ev.Fields
	switch string(ev.Type(anthropicType)) {
	case "message_start":
		addAnthropicUsage(&s.Usage, f[anthropicStartInput:anthropicStartOutput+1])
	case "message_delta":
		addAnthropicUsage(&s.Usage, f[anthropicDeltaInput:anthropicDeltaOutput+1])
		if r := f[anthropicStopReason]; r.Kind == jsonread.String && len(r.Text) > 0 {
			s.StopReason = string(r.Text)
		}
	case "message_stop":
		s.Done = true
	case "content_block_start", "content_block_delta", "content_block_stop", "ping":
	case "error":
		s.fail(statusOverloaded, f[anthropicErrorType].String())
	default:
		return
	}
	s.Followed = true
}

func (messages) UsageOnlyEvent(*StreamEvent) bool { return false }

// statusOverloaded is Anthropic's overloaded_error status
// (https://docs.anthropic.com/en/api/errors).
const statusOverloaded = 529

// anthropicCuts are the in-band error events that end a cut stream. Every
// SDK fails a stream on `event: error`; the Go SDK drops events that have
// no `event:` line, so it is always there.
var anthropicCuts = [numCuts][]byte{
	CutIncomplete: anthropicCut(CutIncomplete, "api_error"),
	CutIdle:       anthropicCut(CutIdle, "timeout_error"),
}

func anthropicCut(why StreamCut, errType string) []byte {
	return []byte("event: error\ndata: " + string(anthropicErrorBody(errType, cutMessages[why])) + "\n\n")
}

func (messages) CutEvent(why StreamCut) []byte { return anthropicCuts[why] }

// anthropicErrors are the status and error type of each gateway error, from
// the documented set (https://docs.anthropic.com/en/api/errors).
var anthropicErrors = [numErrorKinds]struct {
	status int
	typ    string
}{
	BodyTooLarge:        {http.StatusRequestEntityTooLarge, "request_too_large"},
	InvalidRequest:      {http.StatusBadRequest, "invalid_request_error"},
	ContextOverflow:     {http.StatusBadRequest, "invalid_request_error"},
	ModelUnavailable:    {statusOverloaded, "overloaded_error"},
	RequestsLimited:     {http.StatusTooManyRequests, "rate_limit_error"},
	TokensLimited:       {http.StatusTooManyRequests, "rate_limit_error"},
	UpstreamUnreachable: {http.StatusBadGateway, "api_error"},
	UpstreamTimeout:     {http.StatusGatewayTimeout, "timeout_error"},
	Overloaded:          {statusOverloaded, "overloaded_error"},
	UnsupportedEncoding: {http.StatusUnsupportedMediaType, "invalid_request_error"},
	LimitsUnavailable:   {http.StatusServiceUnavailable, "api_error"},
	Misplaced:           {http.StatusInternalServerError, "api_error"},
}

func (messages) ErrorStatus(k ErrorKind) int { return anthropicErrors[k].status }

// ErrorBody is `{"type":"error","error":{"type":…,"message":…}}`.
func (messages) ErrorBody(k ErrorKind, message, _ string) []byte {
	return anthropicErrorBody(anthropicErrors[k].typ, message)
}

func anthropicErrorBody(errType, message string) []byte {
	type detail struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
	return marshalError(struct {
		Type  string `json:"type"`
		Error detail `json:"error"`
	}{"error", detail{errType, message}})
}

// anthropicWindows are the windows Anthropic reports on every response
// (https://docs.anthropic.com/en/api/rate-limits#response-headers).
var anthropicWindows = []rateLimitWindow{
	{"Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset"},
	{"Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"},
	{"Anthropic-Ratelimit-Input-Tokens-Remaining", "Anthropic-Ratelimit-Input-Tokens-Reset"},
	{"Anthropic-Ratelimit-Output-Tokens-Remaining", "Anthropic-Ratelimit-Output-Tokens-Reset"},
}

// RateLimitReset reads `anthropic-ratelimit-*-{remaining,reset}`, whose
// resets are RFC 3339 timestamps; a reset already past gives 0.
func (messages) RateLimitReset(h http.Header, now time.Time) (time.Duration, bool) {
	return exhaustedReset(h, anthropicWindows, func(v string) (time.Duration, bool) { return untilRFC3339(v, now) })
}

// WriteRateLimits writes anthropic-ratelimit-{requests,tokens}-{limit,
// remaining,reset}, the resets as RFC 3339 timestamps.
func (messages) WriteRateLimits(h http.Header, s RateLimits, now time.Time) {
	writeRateLimits(h, &anthropicRateLimitHeaders, s, func(after time.Duration) string {
		// RFC 3339 here has whole seconds: round up, so the header never
		// promises capacity before it is there.
		return ceilSecond(now.Add(after)).UTC().Format(time.RFC3339)
	})
}

var anthropicRateLimitHeaders = rateLimitHeaders{
	{"Anthropic-Ratelimit-Requests-Limit", "Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset"},
	{"Anthropic-Ratelimit-Tokens-Limit", "Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"},
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}
