package wire

import (
	"bytes"
	"math"
	"strconv"
	"unsafe"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
)

// The validation rules the APIs share. Each API's Validate names the ones
// its provider's schema requires.

// checkDocument checks that the body is one JSON object: both providers
// answer 400 to a body they cannot parse. example is a minimal valid body.
func checkDocument(r *body.Request, example string) *body.RequestError {
	if !r.JSON() {
		return &body.RequestError{Message: "The request body is not valid JSON. Send a JSON object such as " +
			example + "; check for a truncated body, a trailing comma or an unescaped quote."}
	}
	if !r.Object() {
		return &body.RequestError{Message: "The request body must be a JSON object, but it is " +
			body.Describe(bytes.TrimSpace(r.Body())) + ". Send an object such as " + example + "."}
	}
	return nil
}

// checkModel checks the top-level "model": a string, and present when
// required. exampleModel is a valid "model" member.
func checkModel(r *body.Request, required bool, exampleModel string) *body.RequestError {
	model := r.Raw(body.FieldModel)
	if model == nil {
		if !required {
			return nil
		}
		return &body.RequestError{Param: "model", Message: "Missing required field `model`: name the model to use, " +
			"for example " + exampleModel + "."}
	}
	if model[0] != '"' {
		return &body.RequestError{Param: "model", Message: "`model` must be a string naming the model, but it is " +
			body.Describe(model) + "; for example " + exampleModel + "."}
	}
	if len(model) == 2 {
		return &body.RequestError{Param: "model", Message: "`model` is empty: name the model to use, for example " + exampleModel + "."}
	}
	return nil
}

// checkMessages checks that `messages` is present and an array, then reports
// the first malformed content block the read found. Neither provider can
// read a content block it cannot tag, whatever the type name, so only the
// tag's presence is checked: a new block type passes. Roles, turn order and
// the rest of each message are left to the provider, which no longer
// requires alternation or a first user turn.
func checkMessages(r *body.Request) *body.RequestError {
	const fix = `for example "messages":[{"role":"user","content":"Hello"}].`
	messages := r.Raw(body.FieldMessages)
	if messages == nil {
		return &body.RequestError{Param: "messages", Message: "Missing required field `messages`: send the conversation " +
			"as an array, " + fix}
	}
	if messages[0] != '[' {
		return &body.RequestError{Param: "messages", Message: "`messages` must be an array of messages, but it is " +
			body.Describe(messages) + "; " + fix}
	}
	f := r.ContentFault()
	if f.Kind == 0 {
		return nil
	}
	at := f.Path()
	switch f.Kind {
	case body.BlockNotObject:
		return &body.RequestError{Param: at, Message: at + " must be a content block object, but it is " +
			body.Describe(f.Raw) + ". Write each element of a content array as an object such as " + exampleBlock +
			", or send plain text as the message's content string."}
	case body.BlockNoType:
		return &body.RequestError{Param: at + ".type", Message: at + " has no \"type\": every content block names " +
			"its kind, for example " + exampleBlock + "."}
	}
	return &body.RequestError{Param: at + ".type", Message: at + ".type must be a string naming the block's kind, " +
		"but it is " + body.Describe(f.Raw) + "; for example " + exampleBlock + "."}
}

// exampleBlock is a text content block; both families spell it the same way.
const exampleBlock = `{"type":"text","text":"Hello"}`

// checkPositiveInteger checks a required member that must be a positive
// integer (see integerAtLeast). fix tells how to set it.
func checkPositiveInteger(r *body.Request, f body.Field, missing, fix string) *body.RequestError {
	v := r.Raw(f)
	name := f.String()
	if v == nil {
		return &body.RequestError{Param: name, Message: "Missing required field `" + name + "`: " + missing + fix}
	}
	if integerAtLeast(v, 1) {
		return nil
	}
	return notInteger(name, v, "a positive integer", fix)
}

// checkOptionalCaps checks the output caps of an API whose caps are
// optional: each may be absent or null (the OpenAI SDKs send null for an
// unset optional integer), and is otherwise a whole number, as the OpenAI
// API requires (it answers 400 "Invalid type for 'max_completion_tokens':
// expected an integer" to a string). Zero passes: legacy Completions take
// max_tokens 0 with echo to score a prompt. The gateway enforces its
// max_tokens ceiling on these values, so one it cannot read as a number
// must not reach a compatible upstream that might.
func checkOptionalCaps(r *body.Request, fields []body.Field) *body.RequestError {
	for _, f := range fields {
		if v := r.Raw(f); v != nil && string(v) != "null" && !integerAtLeast(v, 0) {
			name := f.String()
			return notInteger(name, v, "a whole number of tokens", " Set it to the most output tokens the reply may use, for example \""+name+"\":1024, or leave it out.")
		}
	}
	return nil
}

// integerAtLeast reports whether a JSON value is a number that is an
// integer in value, at least least. A number with a zero fraction such as
// 1024.0 passes: whether the provider's parser takes it is the provider's
// call. A value too large for a float64 parses as +Inf, which is left for
// the provider to refuse.
func integerAtLeast(v []byte, least float64) bool {
	if !body.IsNumber(v) {
		return false
	}
	// The read has checked the number's syntax.
	n, _ := strconv.ParseFloat(unsafe.String(unsafe.SliceData(v), len(v)), 64)
	return n >= least && n == math.Trunc(n)
}

// notInteger is the error for a member name whose value v is not what it
// must be (want, such as "a positive integer"); fix tells how to set it.
func notInteger(name string, v []byte, want, fix string) *body.RequestError {
	return &body.RequestError{Param: name, Message: "`" + name + "` must be " + want + ", but it is " +
		body.Describe(v) + "." + fix}
}
