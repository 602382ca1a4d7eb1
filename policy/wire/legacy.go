package wire

import (
	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
)

// completions is the legacy OpenAI Completions API, POST /v1/completions
// (openai-go v3 CompletionNewParams and Completion). Its
// responses and streams report usage, finish reasons and ends the way Chat
// Completions does, so it shares chat's reading of them.
type completions struct{ chat }

func (completions) Name() string      { return "completions" }
func (completions) WalkContent() bool { return false }

func (completions) ExampleModel() string { return `"model":"gpt-3.5-turbo-instruct"` }

// Validate: `model` is required (openai-go v3 CompletionNewParams.Model,
// api:"required"); `prompt` is left to the provider; `max_tokens`, when
// set, is a whole number.
func (c completions) Validate(r *body.Request) *body.RequestError {
	if err := checkDocument(r, `{"model":"gpt-3.5-turbo-instruct","prompt":"Hello"}`); err != nil {
		return err
	}
	if err := checkModel(r, true, c.ExampleModel()); err != nil {
		return err
	}
	return checkOptionalCaps(r, completionsCaps)
}

var completionsCaps = []body.Field{body.FieldMaxTokens}

func (completions) CapFields() []body.Field { return completionsCaps }
func (completions) WantsStreamUsage() bool  { return false }

// InputTokens counts the prompt and the suffix (token ids count one each).
func (completions) InputTokens(r *body.Request) int64 {
	if !r.Object() {
		return 0
	}
	return tokens.RequestOverhead + tokens.Content(r.Raw(body.FieldPrompt)) + tokens.Content(r.Raw(body.FieldSuffix))
}

func (completions) Conversation() body.Field         { return body.NoField }
func (completions) TurnKind([]byte) TurnKind         { return TurnModel }
func (completions) UsageOnlyEvent(*StreamEvent) bool { return false }

// embeddings is the OpenAI Embeddings API, POST /v1/embeddings
// (https://platform.openai.com/docs/guides/embeddings): no output,
// no stream; its usage reads like chat's (prompt_tokens).
type embeddings struct{ completions }

func (embeddings) Name() string { return "embeddings" }

func (embeddings) ExampleModel() string { return `"model":"text-embedding-3-small"` }

// Validate: `model` and `input` are required (openai-go v3
// EmbeddingNewParams, api:"required"); the input's shape (a string, an
// array of strings or of token arrays) is left to the provider.
func (e embeddings) Validate(r *body.Request) *body.RequestError {
	if err := checkDocument(r, `{"model":"text-embedding-3-small","input":"Hello"}`); err != nil {
		return err
	}
	if err := checkModel(r, true, e.ExampleModel()); err != nil {
		return err
	}
	if r.Raw(body.FieldInput) == nil {
		return &body.RequestError{Param: "input", Message: "Missing required field `input`: send the text to embed " +
			`as a string or an array of strings, for example "input":"Hello".`}
	}
	return nil
}

func (embeddings) CapFields() []body.Field { return nil }

// InputTokens counts the input.
func (embeddings) InputTokens(r *body.Request) int64 {
	if !r.Object() {
		return 0
	}
	return tokens.RequestOverhead + tokens.Content(r.Raw(body.FieldInput))
}

// passthrough is every request the gateway does not read: it is passed on
// untouched, but for the rate-limit zones, whose refusals it answers in
// the OpenAI shape, the one most compatible servers speak.
type passthrough struct{ embeddings }

func (passthrough) Family() string { return "passthrough" }
func (passthrough) Name() string   { return "other" }
func (passthrough) Guarded() bool  { return false }
