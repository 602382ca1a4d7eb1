package policy

import (
	"encoding/binary"
	"math"
	"math/bits"
	"strconv"

	"github.com/tidwall/gjson"
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

// ValidateRequest reports the first thing in body that the provider would
// reject, or nil. It checks only what the provider's own schema requires and
// passes everything else (unknown fields, unknown roles such as Anthropic's
// `role: "system"` in API version 2026-10-21, consecutive same-role turns,
// empty text, new block types): a gateway stricter than its upstream breaks
// clients the day the upstream adds something (provider-semantics.md §1.2,
// §7.7).
//
// The body is read in a single pass that both checks the JSON syntax and
// picks out the few values the rules look at, so a large conversation costs
// one scan and no allocation when it is valid. A general-purpose check
// (gjson.ValidBytes) followed by a walk would read every byte of text several
// times. For Anthropic Messages the caller applies default_max_tokens first,
// so a missing `max_tokens` here is really missing.
//
// When a key repeats, its last value is judged, as the providers' JSON
// parsers keep the last one.
func ValidateRequest(d Dialect, e Endpoint, body []byte) *RequestError {
	if d == Passthrough || e == EndpointOther {
		return nil
	}
	var f topFields
	s := bodyScanner{b: body, walkMessages: e == Messages || e == ChatCompletions}
	// Both providers answer 400 to a body they cannot parse.
	if !s.document(&f) {
		return &RequestError{Message: "The request body is not valid JSON. Send a JSON object such as " +
			exampleBody(e) + "; check for a truncated body, a trailing comma or an unescaped quote."}
	}
	if f.notObject != nil {
		return &RequestError{Message: "The request body must be a JSON object, but it is " +
			describeJSON(f.notObject) + ". Send an object such as " + exampleBody(e) + "."}
	}
	if err := checkModel(e, f.model); err != nil {
		return err
	}
	switch e {
	case Messages:
		if err := checkMessages(f.messages, f.fault); err != nil {
			return err
		}
		return checkMaxTokens(f.maxTokens)
	case ChatCompletions:
		return checkMessages(f.messages, f.fault)
	case Embeddings:
		// `input` is required for embeddings (openai-go v3
		// EmbeddingNewParams.Input, api:"required"). Its shape (string, array
		// of strings or token arrays) is left to the provider.
		if f.input == nil {
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

// topFields holds what the scan picked out of the top level: each value as
// its raw JSON, sharing the body's memory, or nil when the key is absent.
type topFields struct {
	notObject                         []byte // the whole document, when it is not an object
	model, messages, maxTokens, input []byte
	fault                             blockFault // first malformed block of the last `messages`
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

// bodyScanner reads a JSON document in one pass, checking it against the
// grammar of RFC 8259 as it goes. Nesting is held in a bit stack rather than
// by recursion, so a hostile body of a million '[' costs bits, not goroutine
// stack. Like encoding/json.Valid and gjson it does not check that strings
// are valid UTF-8; that is left to the provider.
type bodyScanner struct {
	b []byte
	i int
	// walkMessages makes the top level descend into `messages` to check
	// content blocks; other endpoints only skip it.
	walkMessages bool
}

// document reads the whole body into f and reports whether it is JSON.
func (s *bodyScanner) document(f *topFields) bool {
	if s.peek() != '{' {
		start := s.i
		if !s.value() {
			return false
		}
		f.notObject = s.b[start:s.i]
	} else if !s.object(func(key string) bool {
		start := s.i
		var dst *[]byte
		switch key {
		case "model":
			dst = &f.model
		case "max_tokens":
			dst = &f.maxTokens
		case "input":
			dst = &f.input
		case "messages":
			f.fault = blockFault{} // a later "messages" replaces an earlier one
			var ok bool
			if s.walkMessages && s.b[s.i] == '[' {
				ok = s.messages(&f.fault)
			} else {
				ok = s.value()
			}
			f.messages = s.b[start:s.i]
			return ok
		default:
			return s.value()
		}
		ok := s.value()
		*dst = s.b[start:s.i]
		return ok
	}) {
		return false
	}
	s.ws()
	return s.i == len(s.b)
}

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

// object reads the object whose '{' is at the cursor, calling member for
// each key with the cursor on the member's value; member must read the value.
func (s *bodyScanner) object(member func(key string) bool) bool {
	s.i++
	if s.eat('}') {
		return true
	}
	for {
		key, ok := s.key()
		if !ok || !member(key) {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// array reads the array whose '[' is at the cursor, calling elem with each
// element's index and the cursor on the element; elem must read it.
func (s *bodyScanner) array(elem func(i int) bool) bool {
	s.i++
	if s.eat(']') {
		return true
	}
	for i := 0; ; i++ {
		s.ws()
		if s.i == len(s.b) || !elem(i) {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// key reads an object key and its ':', leaving the cursor on the value. The
// key is returned unescaped; it shares the body's memory unless it had
// escapes, which real clients never write in the keys the rules look at.
func (s *bodyScanner) key() (string, bool) {
	if s.peek() != '"' {
		return "", false
	}
	start := s.i
	ok, escaped := s.str()
	raw := s.b[start:s.i]
	if !ok || !s.eat(':') {
		return "", false
	}
	s.ws()
	if s.i == len(s.b) {
		return "", false
	}
	if escaped {
		return gjson.ParseBytes(raw).Str, true
	}
	return bytesView(raw[1 : len(raw)-1]), true
}

// value reads one JSON value of any depth at the cursor.
func (s *bodyScanner) value() bool {
	var buf [4]uint64 // nesting bits: 1 for an object, 0 for an array
	stack := buf[:0]
	depth := 0
	push := func(obj bool) {
		if depth>>6 == len(stack) {
			stack = append(stack, 0)
		}
		if obj {
			stack[depth>>6] |= 1 << (depth & 63)
		} else {
			stack[depth>>6] &^= 1 << (depth & 63)
		}
		depth++
	}
	for {
		// A value starts at the cursor.
		switch s.peek() {
		case '{':
			s.i++
			if s.eat('}') {
				break
			}
			push(true)
			if _, ok := s.key(); !ok {
				return false
			}
			continue
		case '[':
			s.i++
			if s.eat(']') {
				break
			}
			push(false)
			continue
		case '"':
			if ok, _ := s.str(); !ok {
				return false
			}
		case 't':
			if !s.literal("true") {
				return false
			}
		case 'f':
			if !s.literal("false") {
				return false
			}
		case 'n':
			if !s.literal("null") {
				return false
			}
		default:
			if !s.number() {
				return false
			}
		}
		// A value ended: close the containers that end here, then step to
		// the next element of the innermost open one.
		for {
			if depth == 0 {
				return true
			}
			obj := stack[(depth-1)>>6]>>((depth-1)&63)&1 == 1
			c := s.peek()
			if c == ',' {
				s.i++
				if obj {
					if _, ok := s.key(); !ok {
						return false
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				s.i++
				depth--
				continue
			}
			return false
		}
	}
}

// str reads the string whose opening quote is at the cursor, leaving the
// cursor after the closing quote; escaped reports a backslash inside.
func (s *bodyScanner) str() (ok, escaped bool) {
	b := s.b
	i := s.i + 1
	for {
		// Check a few bytes singly first: in escape-dense text, such as JSON
		// quoted inside a tool result, the next special byte is that close.
		// Past them, skip plain text eight bytes at a time.
		end := min(i+8, len(b))
		for i < end && plainByte[b[i]] {
			i++
		}
		if i == end {
			for i+8 <= len(b) {
				if m := specialLanes(binary.LittleEndian.Uint64(b[i:])); m != 0 {
					i += bits.TrailingZeros64(m) >> 3
					break
				}
				i += 8
			}
			for i < len(b) && plainByte[b[i]] {
				i++
			}
		}
		if i >= len(b) {
			return false, escaped
		}
		switch b[i] {
		case '"':
			s.i = i + 1
			return true, escaped
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				return false, escaped
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHexByte(b[i+2]) || !isHexByte(b[i+3]) || !isHexByte(b[i+4]) || !isHexByte(b[i+5]) {
					return false, escaped
				}
				i += 6
			default:
				return false, escaped
			}
		default: // a raw control character, which JSON forbids in strings
			return false, escaped
		}
	}
}

// plainByte tells which bytes can appear in a string unescaped: all but '"',
// '\\' and the control characters below 0x20.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Byte-lane constants for specialLanes.
const (
	lanes01 = 0x0101010101010101
	lanes80 = 0x8080808080808080
)

// specialLanes returns, for eight string bytes read little-endian, a mask
// whose lowest set bit is the high bit of the first byte that ends a run of
// plain content: '"', '\\' or a control character below 0x20; or 0 if none
// does. A lane below n has its high bit set in (x - n·01…) &^ x. A borrow out
// of a lower matching lane can set a false bit above it, never below, so the
// lowest set bit is always a true match.
func specialLanes(x uint64) uint64 {
	q := x ^ (lanes01 * '"')
	bs := x ^ (lanes01 * '\\')
	return (((x - lanes01*0x20) &^ x) | ((q - lanes01) &^ q) | ((bs - lanes01) &^ bs)) & lanes80
}

// number reads a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *bodyScanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return false
		}
		i = j
	}
	s.i = i
	return true
}

// skipDigits returns the index of the first non-digit at or after i.
func skipDigits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// literal reads true, false or null.
func (s *bodyScanner) literal(word string) bool {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return false
	}
	s.i += len(word)
	return true
}

// ws skips JSON whitespace.
func (s *bodyScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the byte at the cursor, or 0 at the end.
func (s *bodyScanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// eat skips whitespace and consumes c if it is next.
func (s *bodyScanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

func isHexByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
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
