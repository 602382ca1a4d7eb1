// Package testbody builds the request bodies that tests and benchmarks
// send: Anthropic Messages, OpenAI Chat Completions and Responses
// requests, short or padded to a size with earlier turns, streaming or
// not. One builder keeps the bodies of the unit tests, the integration
// tests and the load benchmark alike, so a number measured in one place
// describes the same request as in another.
package testbody

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// API is the shape of a request body.
type API int

const (
	// Messages is Anthropic's Messages API (POST /v1/messages).
	Messages API = iota
	// Chat is OpenAI's Chat Completions API (POST /v1/chat/completions).
	Chat
	// Responses is OpenAI's Responses API (POST /v1/responses).
	Responses
)

// Path returns the API's URL path.
func (a API) Path() string {
	switch a {
	case Chat:
		return "/v1/chat/completions"
	case Responses:
		return "/v1/responses"
	default:
		return "/v1/messages"
	}
}

// defaultFiller is the text the padding turns repeat.
const defaultFiller = "lorem ipsum dolor sit amet "

// maxTurnText bounds the text of one padding turn, so that a large body is
// a long conversation of turns of realistic size rather than one huge
// message.
const maxTurnText = 1 << 10

// Body describes a request body. Its zero value is a short non-streaming
// Messages request for claude-sonnet-4-5.
type Body struct {
	// API is the body's shape.
	API API
	// Model is the model asked for; empty means claude-sonnet-4-5 for
	// Messages and gpt-4o otherwise.
	Model string
	// MaxTokens is the output cap, in the API's own field (max_tokens,
	// max_completion_tokens, max_output_tokens); 0 means 1024 for Messages,
	// which requires it, and none otherwise.
	MaxTokens int
	// Stream asks for an event stream. The stream member is always written,
	// false included.
	Stream bool
	// IncludeUsage, for a Chat stream, asks for the usage chunk
	// (stream_options.include_usage).
	IncludeUsage bool
	// System is the system prompt, if any: Messages' system, a system
	// message in Chat, Responses' instructions.
	System string
	// Prompt is the last user turn; empty means "Summarise the above.".
	Prompt string
	// Size, when above the unpadded body's size, pads the conversation
	// with user and assistant turns before the prompt, up to at most Size
	// bytes and within about one turn of it.
	Size int
	// Filler is the text the padding turns repeat, as the content of a
	// JSON string (escapes such as \n and \" are kept as written); empty
	// means lorem ipsum.
	Filler string
	// ModelLast puts the model, the cap and the stream members after the
	// conversation instead of first, as some clients order them: the worst
	// case for a reader that stops once it has found them.
	ModelLast bool
}

// String returns the body as a string.
func (b Body) String() string { return string(b.Bytes()) }

// Bytes returns the body.
func (b Body) Bytes() []byte {
	// The padding goes in last: a body with one byte of padding (a padded
	// Responses input is an array, not a string) tells what the rest takes.
	fixed := len(b.assemble(" ")) - 1
	return []byte(b.assemble(b.padding(b.Size - fixed)))
}

// assemble returns the body with pad as the earlier turns.
func (b Body) assemble(pad string) string {
	if b.ModelLast {
		return "{" + b.conversation(pad) + "," + b.small() + "}"
	}
	return "{" + b.small() + "," + b.conversation(pad) + "}"
}

// small returns the members a gateway reads first: model, output cap,
// stream and stream options.
func (b Body) small() string {
	var s strings.Builder
	model := b.Model
	if model == "" {
		model = "gpt-4o"
		if b.API == Messages {
			model = "claude-sonnet-4-5"
		}
	}
	s.WriteString(`"model":` + quote(model))
	maxTokens := b.MaxTokens
	if maxTokens == 0 && b.API == Messages {
		maxTokens = 1024
	}
	if maxTokens > 0 {
		field := "max_tokens"
		switch b.API {
		case Chat:
			field = "max_completion_tokens"
		case Responses:
			field = "max_output_tokens"
		}
		s.WriteString(`,"` + field + `":` + strconv.Itoa(maxTokens))
	}
	s.WriteString(`,"stream":` + strconv.FormatBool(b.Stream))
	if b.IncludeUsage {
		s.WriteString(`,"stream_options":{"include_usage":true}`)
	}
	return s.String()
}

// conversation returns the system prompt and the turns, pad (earlier
// turns, each ending in a comma) before the prompt.
func (b Body) conversation(pad string) string {
	prompt := b.Prompt
	if prompt == "" {
		prompt = "Summarise the above."
	}
	switch b.API {
	case Chat:
		system := ""
		if b.System != "" {
			system = `{"role":"system","content":` + quote(b.System) + `},`
		}
		return `"messages":[` + system + pad + `{"role":"user","content":` + quote(prompt) + `}]`
	case Responses:
		system := ""
		if b.System != "" {
			system = `"instructions":` + quote(b.System) + `,`
		}
		if pad == "" {
			return system + `"input":` + quote(prompt)
		}
		return system + `"input":[` + pad + `{"role":"user","content":` + quote(prompt) + `}]`
	default:
		system := ""
		if b.System != "" {
			system = `"system":` + quote(b.System) + `,`
		}
		return system + `"messages":[` + pad + `{"role":"user","content":` + quote(prompt) + `}]`
	}
}

// padding returns the earlier turns, each ending in a comma, in at most
// room bytes: pairs of user and assistant turns, each turn's text at most
// maxTurnText bytes.
func (b Body) padding(room int) string {
	filler := b.Filler
	if filler == "" {
		filler = defaultFiller
	}
	turn := `{"role":"user","content":"%s"},{"role":"assistant","content":"%s"},`
	if b.API == Messages {
		turn = `{"role":"user","content":[{"type":"text","text":"%s"}]},{"role":"assistant","content":[{"type":"text","text":"%s"}]},`
	}
	overhead := len(turn) - len("%s%s")
	perTurn := max(1, maxTurnText/len(filler))
	var pad strings.Builder
	for {
		n := min(perTurn, (room-pad.Len()-overhead)/(2*len(filler)))
		if n < 1 {
			return pad.String()
		}
		text := strings.Repeat(filler, n)
		pad.WriteString(strings.Replace(strings.Replace(turn, "%s", text, 1), "%s", text, 1))
	}
}

// quote returns s as a JSON string, without the HTML escapes of
// json.Marshal.
func quote(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(buf.String(), "\n")
}
