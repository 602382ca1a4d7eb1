package policy

import (
	"bytes"
	"math"
	"strconv"
)

// RequestError is a request the provider would reject anyway, found before
// any upstream call (SPEC "Guards", `validate on`). Answering it locally saves
// a round trip and, under load, a rate-limit slot spent on a request that
// cannot succeed.
type RequestError struct {
	// Param is the JSON path of the offending value, dot-separated with array
	// indices as numbers (for example "messages.2.content.0.type"), or empty
	// when the body as a whole is at fault. It fills OpenAI's `param` field.
	Param string
	// Message says what is wrong, where, and how to fix it, for a person.
	Message string
}

// Error returns the message, so a RequestError reads well in logs.
func (e *RequestError) Error() string { return e.Message }

// Validate reports the first thing in the request that the provider would
// reject, or nil. It checks only what the provider's own schema requires and
// passes everything else (unknown fields, unknown roles such as Anthropic's
// `role: "system"` in API version 2026-10-21, consecutive same-role turns,
// empty text, new block types): a gateway stricter than its upstream breaks
// clients the day the upstream adds something.
//
// It reads what the request's one scan picked out (see ReadRequest), so a
// large conversation costs no second pass and no allocation when it is
// valid. For Anthropic Messages the caller applies default_max_tokens first,
// so a missing `max_tokens` here is really missing.
//
// When a key repeats inside a message or a content block, its last value is
// judged, as the providers' JSON parsers keep the last one. (A repeated
// top-level member the gateway reads is refused earlier, by Integrity.)
func (r *Request) Validate() *RequestError {
	e := r.e
	if r.d == Passthrough || e == EndpointOther {
		return nil
	}
	// Both providers answer 400 to a body they cannot parse.
	if !r.json {
		return &RequestError{Message: "The request body is not valid JSON. Send a JSON object such as " +
			exampleBody(e) + "; check for a truncated body, a trailing comma or an unescaped quote."}
	}
	if !r.object {
		return &RequestError{Message: "The request body must be a JSON object, but it is " +
			describeJSON(bytes.TrimSpace(r.body)) + ". Send an object such as " + exampleBody(e) + "."}
	}
	if err := checkModel(e, r.raw(fieldModel)); err != nil {
		return err
	}
	switch e {
	case Messages:
		if err := checkMessages(r.raw(fieldMessages), r.fault); err != nil {
			return err
		}
		return checkMaxTokens(r.raw(fieldMaxTokens))
	case ChatCompletions:
		return checkMessages(r.raw(fieldMessages), r.fault)
	case Embeddings:
		// `input` is required for embeddings (openai-go v3
		// EmbeddingNewParams.Input, api:"required"). Its shape (string, array
		// of strings or token arrays) is left to the provider.
		if r.raw(fieldInput) == nil {
			return &RequestError{Param: "input", Message: "Missing required field `input`: send the text to embed " +
				`as a string or an array of strings, for example "input":"Hello".`}
		}
	}
	// Responses: `input` may be absent, since `previous_response_id`,
	// `conversation` or a stored `prompt` can supply the conversation
	// (openai-go v3 ResponseNewParams.Input is optional). Completions:
	// `prompt` is left to the provider.
	return nil
}

// checkModel checks the top-level "model". It is required on Anthropic
// Messages (anthropic-sdk-go MessageNewParams.Model, api:"required"), OpenAI
// Chat Completions, legacy Completions and Embeddings (openai-go v3
// ChatCompletionNewParams, CompletionNewParams, EmbeddingNewParams: Model
// api:"required"). On Responses it is optional, because a stored `prompt` can
// name the model (openai-go v3 ResponseNewParams.Model has no api:"required"),
// but when present it must be a string there too: every SDK types it so.
func checkModel(e Endpoint, model []byte) *RequestError {
	if model == nil {
		if e == Responses {
			return nil
		}
		return &RequestError{Param: "model", Message: "Missing required field `model`: name the model to use, " +
			"for example " + exampleModel(e) + "."}
	}
	if model[0] != '"' {
		return &RequestError{Param: "model", Message: "`model` must be a string naming the model, but it is " +
			describeJSON(model) + "; for example " + exampleModel(e) + "."}
	}
	return nil
}

// checkMaxTokens checks Anthropic's `max_tokens`, a required integer of at
// least 1 (anthropic-sdk-go MessageNewParams.MaxTokens int64, api:"required";
// the API answers 400 "max_tokens: Field required" without it). A number with
// a zero fraction such as 1024.0 passes: it is an integer in value, and
// whether the provider's parser takes it is the provider's call.
func checkMaxTokens(v []byte) *RequestError {
	const fix = ` Set it to the most output tokens the reply may use, for example "max_tokens":1024.`
	if v == nil {
		return &RequestError{Param: "max_tokens", Message: "Missing required field `max_tokens`: the Messages API " +
			"needs an output cap." + fix}
	}
	if !isNumber(v) {
		return &RequestError{Param: "max_tokens", Message: "`max_tokens` must be a positive integer, but it is " +
			describeJSON(v) + "." + fix}
	}
	// The scan has checked the number's syntax; a value too large for a
	// float64 parses as +Inf, which is left for the provider to refuse.
	n, _ := strconv.ParseFloat(bytesView(v), 64)
	if n < 1 || n != math.Trunc(n) {
		return &RequestError{Param: "max_tokens", Message: "`max_tokens` must be a positive integer, but it is " +
			describeJSON(v) + "." + fix}
	}
	return nil
}

// checkMessages checks that `messages` is present and an array, then reports
// the first malformed content block the scan found.
//
// Anthropic: `messages` is a required array (anthropic-sdk-go
// MessageNewParams.Messages, api:"required"); `content` is a string or an
// array of blocks, each tagged by "type" (ContentBlockParamUnion; reference
// §1.2). OpenAI Chat Completions: `messages` is a required array (openai-go
// v3 ChatCompletionNewParams.Messages, api:"required"); `content` is a string
// or an array of parts, each tagged by "type" (text, image_url, input_audio,
// file, refusal; reference §2.2). Neither provider can read a block it cannot
// tag, whatever the type name, so only the tag's presence is checked: a new
// block type passes. Roles, turn order and the rest of each message are left
// to the provider (reference §1.2: do not enforce alternation or first role).
func checkMessages(messages []byte, f blockFault) *RequestError {
	const fix = `for example "messages":[{"role":"user","content":"Hello"}].`
	if messages == nil {
		return &RequestError{Param: "messages", Message: "Missing required field `messages`: send the conversation " +
			"as an array, " + fix}
	}
	if messages[0] != '[' {
		return &RequestError{Param: "messages", Message: "`messages` must be an array of messages, but it is " +
			describeJSON(messages) + "; " + fix}
	}
	if f.kind == 0 {
		return nil
	}
	at := "messages." + strconv.Itoa(f.msg) + ".content." + strconv.Itoa(f.block)
	switch f.kind {
	case blockNotObject:
		return &RequestError{Param: at, Message: at + " must be a content block object, but it is " +
			describeJSON(f.raw) + ". Write each element of a content array as an object such as " + exampleBlock +
			", or send plain text as the message's content string."}
	case blockNoType:
		return &RequestError{Param: at + ".type", Message: at + " has no \"type\": every content block names " +
			"its kind, for example " + exampleBlock + "."}
	}
	return &RequestError{Param: at + ".type", Message: at + ".type must be a string naming the block's kind, " +
		"but it is " + describeJSON(f.raw) + "; for example " + exampleBlock + "."}
}

// blockFault is a malformed content block: its kind, where it is, and the
// offending value (the element itself, or its "type").
type blockFault struct {
	kind       uint8
	msg, block int
	raw        []byte
}

// Kinds of blockFault; the zero value means none.
const (
	blockNotObject = iota + 1
	blockNoType
	blockTypeNotString
)

// messages reads the messages array at the cursor, recording in f the first
// malformed block of any message's (last) content array.
func (s *bodyScanner) messages(f *blockFault) bool {
	return s.array(func(i int) bool {
		if s.b[s.i] != '{' {
			return s.value() // not one of the listed rules; the provider will say
		}
		var cf blockFault // fault in this message's last "content"
		ok := s.object(func(key string) bool {
			if key != "content" {
				return s.value()
			}
			cf = blockFault{}
			if s.b[s.i] != '[' {
				return s.value()
			}
			return s.content(i, &cf)
		})
		if f.kind == 0 {
			*f = cf
		}
		return ok
	})
}

// content reads message i's content array, recording in f the first element
// that is not an object or has no string "type".
func (s *bodyScanner) content(i int, f *blockFault) bool {
	return s.array(func(j int) bool {
		start := s.i
		if s.b[s.i] != '{' {
			ok := s.value()
			if f.kind == 0 {
				*f = blockFault{kind: blockNotObject, msg: i, block: j, raw: s.b[start:s.i]}
			}
			return ok
		}
		var typ []byte
		ok := s.object(func(key string) bool {
			if key != "type" {
				return s.value()
			}
			start := s.i
			ok := s.value()
			typ = s.b[start:s.i]
			return ok
		})
		if f.kind == 0 {
			switch {
			case typ == nil:
				*f = blockFault{kind: blockNoType, msg: i, block: j}
			case typ[0] != '"':
				*f = blockFault{kind: blockTypeNotString, msg: i, block: j, raw: typ}
			}
		}
		return ok
	})
}

// isNumber reports whether raw, a complete JSON value, is a number.
func isNumber(raw []byte) bool {
	return raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9'
}

// describeJSON names a JSON value's kind for a message, quoting short scalars so
// the reader sees exactly what was sent.
func describeJSON(raw []byte) string {
	switch c := raw[0]; {
	case c == 'n':
		return "null"
	case c == 't' || c == 'f':
		return "a boolean (" + string(raw) + ")"
	case c == '"':
		if len(raw) <= 26 {
			return "the string " + string(raw)
		}
		return "a string"
	case c == '[':
		return "an array"
	case c == '{':
		return "an object"
	}
	if len(raw) <= 24 {
		return "the number " + string(raw)
	}
	return "a number"
}

// exampleBody returns a minimal valid body for the endpoint, to show in messages.
func exampleBody(e Endpoint) string {
	switch e {
	case Messages:
		return `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello"}]}`
	case Responses:
		return `{"model":"gpt-4o-mini","input":"Hello"}`
	case Completions:
		return `{"model":"gpt-3.5-turbo-instruct","prompt":"Hello"}`
	case Embeddings:
		return `{"model":"text-embedding-3-small","input":"Hello"}`
	}
	return `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}`
}

// exampleModel returns a "model" member valid for the endpoint.
func exampleModel(e Endpoint) string {
	switch e {
	case Messages:
		return `"model":"claude-sonnet-4-5"`
	case Embeddings:
		return `"model":"text-embedding-3-small"`
	case Completions:
		return `"model":"gpt-3.5-turbo-instruct"`
	}
	return `"model":"gpt-4o-mini"`
}

// exampleBlock is a text content block; both dialects spell it the same way.
const exampleBlock = `{"type":"text","text":"Hello"}`
