package wire

import (
	"bytes"
	"net/http"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
)

// chat is the OpenAI Chat Completions API, POST /v1/chat/completions
// (https://platform.openai.com/docs/guides/text).
type chat struct{ openAI }

func (chat) Name() string      { return "chat_completions" }
func (chat) Guarded() bool     { return true }
func (chat) WalkContent() bool { return true }

func (chat) ExampleModel() string { return `"model":"gpt-4o-mini"` }

// Validate checks what the Chat Completions schema requires (openai-go v3
// ChatCompletionNewParams: model and messages are api:"required"): `model`
// a string, and `messages` an array whose content parts are tagged by
// "type" (text, image_url, input_audio, file, refusal); output caps, when
// set, whole numbers.
func (c chat) Validate(r *body.Request) *body.RequestError {
	if err := checkDocument(r, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}`); err != nil {
		return err
	}
	if err := checkModel(r, true, c.ExampleModel()); err != nil {
		return err
	}
	if err := checkMessages(r); err != nil {
		return err
	}
	return checkOptionalCaps(r, chatCaps)
}

// chatCaps: max_completion_tokens is current and `max_tokens` is deprecated
// but still accepted, so a cap is enforced on both, or a client could slip
// past it with the old name.
var chatCaps = []body.Field{body.FieldMaxCompletionTokens, body.FieldMaxTokens}

func (chat) CapFields() []body.Field                            { return chatCaps }
func (chat) CapLowered(*body.Request, int64) *body.RequestError { return nil }

// WantsStreamUsage: a chat stream reports usage only in a final chunk that
// `stream_options.include_usage` asks for
// (IncludeUsage in openai-go v3 ChatCompletionStreamOptionsParam).
func (chat) WantsStreamUsage() bool { return true }

// InputTokens counts the conversation and the tool, function and response
// format definitions.
func (chat) InputTokens(r *body.Request) int64 {
	if !r.Object() {
		return 0
	}
	return tokens.RequestOverhead + tokens.Conversation(r.Raw(body.FieldMessages)) + tokens.JSON(r.Raw(body.FieldTools)) +
		tokens.JSON(r.Raw(body.FieldFunctions)) + tokens.JSON(r.Raw(body.FieldResponseFormat))
}

func (chat) Conversation() body.Field { return body.FieldMessages }

// TurnKind: system and developer messages are pinned; a `tool` (or legacy
// `function`) message answers the tool calls of the assistant message
// before it.
func (chat) TurnKind(raw []byte) TurnKind {
	role, _, _ := turnFields(raw)
	switch string(role) {
	case "system", "developer":
		return TurnPinned
	case "tool", "function":
		return TurnResult
	case "user":
		return TurnUser
	}
	return TurnModel
}

// The paths read from a Chat or legacy Completions response body, in this
// order, then openAIErrorPaths.
const (
	chatBodyPrompt = iota
	chatBodyCompletion
	chatBodyFinish
	chatBodyErrors
)

var chatBodyPaths = jsonread.Compile(append([]string{
	"usage.prompt_tokens",
	"usage.completion_tokens",
	"choices.0.finish_reason",
}, openAIErrorPaths...)...)

func (chat) BodyPaths() *jsonread.Paths { return chatBodyPaths }

func (chat) BodyUsage(v []jsonread.Value) Usage {
	return Usage{InputTokens: v[chatBodyPrompt].Count(), OutputTokens: v[chatBodyCompletion].Count(), StopReason: v[chatBodyFinish].String()}
}

func (chat) BodyError(v []jsonread.Value) (string, bool) { return openAIBodyError(v[chatBodyErrors:]) }

// The paths read from each chat stream chunk, in this order.
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

var chatStreamPaths = jsonread.Compile(
	"error",
	"error.type",
	"error.code",
	"usage",
	"usage.prompt_tokens",
	"usage.completion_tokens",
	"choices",
	"choices.0.finish_reason",
)

func (chat) StreamPaths() *jsonread.Paths { return chatStreamPaths }

// ReadsData: chunks are judged by their data alone, whatever their name.
func (chat) ReadsData([]byte) bool { return true }

// Observe follows the Chat Completions (and legacy Completions) stream
// (https://platform.openai.com/docs/guides/streaming-responses?api-mode=chat): data-only
// chunks, the finish reason in the last choice chunk, usage in a final chunk
// with empty choices when include_usage is set, `data: [DONE]` at the end,
// and a chunk with an `error` object for an error.
func (chat) Observe(s *StreamProgress, ev *StreamEvent) {
	if bytes.HasPrefix(ev.Head, doneMarker) {
		s.Done, s.Followed = true, true
		return
	}
	f := ev.Fields
	if !ev.JSON {
		return
	}
	if f[chatError].Kind == jsonread.Object {
		s.Followed = true
		s.fail(http.StatusServiceUnavailable, f[chatErrorType].String(), f[chatErrorCode].String())
		return
	}
	if f[chatChoices].Kind != jsonread.Array && f[chatUsage].Kind != jsonread.Object {
		return
	}
	s.Followed = true
	if f[chatUsage].Kind == jsonread.Object {
		s.InputTokens, s.OutputTokens = f[chatPromptTokens].Count(), f[chatCompletionTokens].Count()
	}
	if r := f[chatFinishReason]; r.Kind == jsonread.String && len(r.Text) > 0 {
		s.StopReason = string(r.Text)
	}
}

// UsageOnlyEvent reports the chunk include_usage adds: empty choices and a
// usage object.
func (chat) UsageOnlyEvent(ev *StreamEvent) bool {
	if !ev.JSON {
		return false
	}
	choices := ev.Fields[chatChoices]
	return choices.Kind == jsonread.Array && choices.Len == 0 && ev.Fields[chatUsage].Kind == jsonread.Object
}

// doneMarker is the data of the last event of a Chat or legacy Completions
// stream; the official SDKs end the stream on any data that starts with it.
var doneMarker = []byte("[DONE]")

// chatCuts end a cut chat stream. The OpenAI SDKs fail a stream on any data
// payload with an "error" object (openai-go packages/ssestream); chat
// streams carry it as plain data.
var chatCuts = [numCuts][]byte{
	CutIncomplete: chatCut(CutIncomplete, "stream_incomplete"),
	CutIdle:       chatCut(CutIdle, "timeout"),
}

func chatCut(why StreamCut, code string) []byte {
	return []byte("data: " + string(openAIErrorBody(cutMessages[why], "server_error", "", code)) + "\n\n")
}

func (chat) CutEvent(why StreamCut) []byte { return chatCuts[why] }
