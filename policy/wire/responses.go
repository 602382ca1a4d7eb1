package wire

import (
	"bytes"
	"net/http"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
)

// responses is the OpenAI Responses API, POST /v1/responses
// (https://platform.openai.com/docs/guides/text?api-mode=responses).
type responses struct{ openAI }

func (responses) Name() string      { return "responses" }
func (responses) Guarded() bool     { return true }
func (responses) WalkContent() bool { return false }

func (responses) ExampleModel() string { return `"model":"gpt-4o-mini"` }

// Validate: `model` is optional, because a stored `prompt` can name the
// model (openai-go v3 ResponseNewParams.Model has no api:"required"), but
// when present it must be a string, as every SDK types it. `input` may be
// absent too: `previous_response_id`, `conversation` or a stored `prompt`
// can supply the conversation. `max_output_tokens`, when set, is a
// whole number.
func (a responses) Validate(r *body.Request) *body.RequestError {
	if err := checkDocument(r, `{"model":"gpt-4o-mini","input":"Hello"}`); err != nil {
		return err
	}
	if err := checkModel(r, false, a.ExampleModel()); err != nil {
		return err
	}
	return checkOptionalCaps(r, responsesCaps)
}

var responsesCaps = []body.Field{body.FieldMaxOutputTokens}

func (responses) CapFields() []body.Field                            { return responsesCaps }
func (responses) CapLowered(*body.Request, int64) *body.RequestError { return nil }
func (responses) WantsStreamUsage() bool                             { return false }

// InputTokens counts the instructions, the input (a string or a list of
// items), the tool definitions and the output schema in `text.format`.
func (responses) InputTokens(r *body.Request) int64 {
	if !r.Object() {
		return 0
	}
	n := tokens.RequestOverhead + tokens.Content(r.Raw(body.FieldInstructions)) + tokens.JSON(r.Raw(body.FieldTools)) +
		tokens.JSON(r.Raw(body.FieldText))
	if input := r.Raw(body.FieldInput); len(input) > 0 && input[0] == '[' {
		n += tokens.Conversation(input)
	} else {
		n += tokens.Content(input)
	}
	return n
}

// Conversation: `input`, when it is a list of items; a string input has no
// turns to drop.
func (responses) Conversation() body.Field { return body.FieldInput }

// TurnKind: items with a system or developer role are pinned, user messages
// open turns; items without a role are the model's (reasoning, tool calls)
// except those answering a call: function_call_output,
// computer_call_output, mcp_approval_response and the like.
func (responses) TurnKind(raw []byte) TurnKind {
	role, typ, _ := turnFields(raw)
	switch string(role) {
	case "system", "developer":
		return TurnPinned
	case "user":
		return TurnUser
	case "":
		if bytes.HasSuffix(typ, []byte("_output")) || bytes.HasSuffix(typ, []byte("_response")) {
			return TurnResult
		}
	}
	return TurnModel
}

// The paths read from a Responses response body, in this order, then
// openAIErrorPaths.
const (
	responsesBodyInput = iota
	responsesBodyOutput
	responsesBodyStatus
	responsesBodyIncomplete
	responsesBodyErrors
)

var responsesBodyPaths = jsonread.Compile(append([]string{
	"usage.input_tokens",
	"usage.output_tokens",
	"status",
	"incomplete_details.reason",
}, openAIErrorPaths...)...)

func (responses) BodyPaths() *jsonread.Paths { return responsesBodyPaths }

func (responses) BodyUsage(v []jsonread.Value) Usage {
	return Usage{
		InputTokens:  v[responsesBodyInput].Count(),
		OutputTokens: v[responsesBodyOutput].Count(),
		StopReason:   responsesStop(v[responsesBodyStatus], v[responsesBodyIncomplete]),
	}
}

func (responses) BodyError(v []jsonread.Value) (string, bool) {
	return openAIBodyError(v[responsesBodyErrors:])
}

// responsesStop names how a Responses answer ended: its status, or the
// reason it is incomplete (for example max_output_tokens).
func responsesStop(status, incompleteReason jsonread.Value) string {
	if status.Is("incomplete") && incompleteReason.String() != "" {
		return incompleteReason.String()
	}
	return status.String()
}

// The paths read from each Responses event, in this order.
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

var responsesStreamPaths = jsonread.Compile(
	"type",
	"response.usage.input_tokens",
	"response.usage.output_tokens",
	"response.status",
	"response.incomplete_details.reason",
	"response.error.code",
	"code",
	"error.type",
	"error.code",
)

func (responses) StreamPaths() *jsonread.Paths { return responsesStreamPaths }

// ReadsData: a named event's type is its name, and only the ends and errors
// carry what the gateway reads.
func (responses) ReadsData(name []byte) bool {
	switch string(name) {
	case "response.completed", "response.incomplete", "response.failed", "error":
		return true
	}
	return false
}

// Observe follows the Responses stream
// (https://platform.openai.com/docs/guides/streaming-responses):
// typed events, no [DONE]; response.completed, response.incomplete or
// response.failed ends it with the final response and its usage, and an
// `error` event reports an error.
func (responses) Observe(s *StreamProgress, ev *StreamEvent) {
	f := ev.Fields
	typ := ev.Type(responsesType)
	switch string(typ) {
	case "response.completed", "response.incomplete", "response.failed":
		s.InputTokens, s.OutputTokens = f[responsesInput].Count(), f[responsesOutput].Count()
		s.StopReason = responsesStop(f[responsesStatus], f[responsesIncomplete])
		s.Done = true
		if string(typ) == "response.failed" {
			s.fail(http.StatusServiceUnavailable, f[responsesFailCode].String(), "response_failed")
		}
	case "error":
		// The documented event has a top-level code; some compatible
		// servers nest an error object instead.
		s.fail(http.StatusServiceUnavailable, f[responsesCode].String(), f[responsesErrorType].String(), f[responsesErrorCode].String())
	default:
		if !bytes.HasPrefix(typ, []byte("response.")) {
			return
		}
	}
	s.Followed = true
}

func (responses) UsageOnlyEvent(*StreamEvent) bool { return false }

// responsesCuts end a cut Responses stream: the documented error event's
// fields and, so that every SDK raises it, an "error" object.
var responsesCuts = [numCuts][]byte{
	CutIncomplete: responsesCut(CutIncomplete, "stream_incomplete"),
	CutIdle:       responsesCut(CutIdle, "timeout"),
}

func responsesCut(why StreamCut, code string) []byte {
	message := cutMessages[why]
	type detail struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	event := marshalError(struct {
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
		Error   detail  `json:"error"`
	}{"error", code, message, nil, detail{"server_error", code, message}})
	return []byte("event: error\ndata: " + string(event) + "\n\n")
}

func (responses) CutEvent(why StreamCut) []byte { return responsesCuts[why] }
