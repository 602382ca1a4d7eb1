package body

import (
	"encoding/json"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// maxModelBytes is the longest `model` value the gateway accepts. Real ids
// are short (the longest in the built-in table is under 40 bytes; fine-tuned
// OpenAI ids and Bedrock ARNs stay well under 256), while a model name is
// stored and logged per request: a circuit per model, a log field, a metric
// label. A longer one is refused rather than kept.
const maxModelBytes = 256

// Field is a member the gateway reads or rewrites in a request body: a
// top-level member, or one of the few members inside one that it adjusts.
// The scan records where each lies; which of them an API uses is the API's
// business.
type Field uint8

const (
	FieldModel Field = iota
	FieldStream
	FieldMaxTokens
	FieldMaxCompletionTokens
	FieldMaxOutputTokens
	FieldMessages
	FieldInput
	FieldSystem
	FieldThinking
	FieldStreamOptions
	// The members the token estimate reads besides the conversation.
	FieldTools
	FieldFunctions
	FieldResponseFormat
	FieldOutputConfig
	FieldInstructions
	FieldText
	FieldPrompt
	FieldSuffix
	// Nested members.
	FieldThinkingType
	FieldThinkingBudget
	FieldIncludeUsage
	numFields
	// NoField names no member: an API without a conversation, say.
	NoField = numFields
)

// numTopFields ends the top-level members; the fields after it are nested.
const numTopFields = FieldThinkingType

// guarded marks the members a duplicate of which is refused: those the
// guards judge or rewrite (the providers' parsers keep the last of a
// duplicated member, so the guards would judge one value and the provider
// use another), with the nested members of those. The members read only
// for the token estimate are not among them: a duplicate there makes the
// estimate read the last one, as the provider does.
const guarded = 1<<FieldModel | 1<<FieldStream | 1<<FieldMaxTokens | 1<<FieldMaxCompletionTokens |
	1<<FieldMaxOutputTokens | 1<<FieldMessages | 1<<FieldInput | 1<<FieldSystem | 1<<FieldThinking |
	1<<FieldStreamOptions | 1<<FieldThinkingType | 1<<FieldThinkingBudget | 1<<FieldIncludeUsage

// fieldPaths names each field as a dotted path, for messages and the OpenAI
// error's `param`.
var fieldPaths = [numFields]string{
	FieldModel:               "model",
	FieldStream:              "stream",
	FieldMaxTokens:           "max_tokens",
	FieldMaxCompletionTokens: "max_completion_tokens",
	FieldMaxOutputTokens:     "max_output_tokens",
	FieldMessages:            "messages",
	FieldInput:               "input",
	FieldSystem:              "system",
	FieldThinking:            "thinking",
	FieldStreamOptions:       "stream_options",
	FieldTools:               "tools",
	FieldFunctions:           "functions",
	FieldResponseFormat:      "response_format",
	FieldOutputConfig:        "output_config",
	FieldInstructions:        "instructions",
	FieldText:                "text",
	FieldPrompt:              "prompt",
	FieldSuffix:              "suffix",
	FieldThinkingType:        "thinking.type",
	FieldThinkingBudget:      "thinking.budget_tokens",
	FieldIncludeUsage:        "stream_options.include_usage",
}

// String returns the field's dotted path, such as "thinking.budget_tokens".
func (f Field) String() string {
	if f >= numFields {
		return ""
	}
	return fieldPaths[f]
}

// topField returns the field a top-level key names, if the gateway reads it.
func topField(key string) (Field, bool) {
	for f := Field(0); f < numTopFields; f++ {
		if fieldPaths[f] == key {
			return f, true
		}
	}
	return 0, false
}

// span is where a value lies in the body: body[start:end]. Every JSON value
// is at least one byte long, so the zero span means "absent".
type span struct{ start, end int }

func (s span) present() bool { return s.end > s.start }

// Request is a request body read once, in a single pass (ReadRequest), into
// everything the gateway needs before the first attempt: whether it is JSON,
// where each member it reads or rewrites lies, which of them are given
// twice, and the facts the validation rules look at. The guards then read
// from it, and every edit (the model of a fallback, a clamped output cap, a
// lowered thinking budget, include_usage) is a splice at a recorded offset
// that keeps every other byte and moves the offsets after it, so no edit
// walks the body again.
//
// The body a Request is read from must not change while the Request is in
// use: the Request points into it. Its first edit copies the body, and
// later edits change that copy in place, so a Request must not be edited
// once its Body has been handed to an upstream attempt; Clone gives an
// independent one to edit instead.
type Request struct {
	// Model is the top-level "model" string as the client sent it
	// (unescaped), or empty when there is none or it is not a string. A
	// model over maxModelBytes is cut to that length here, for the log line
	// of its refusal (see Integrity).
	Model string

	body      []byte
	owned     bool // body is this Request's own copy, safe to edit in place
	at        [numFields]span
	closer    int    // offset of the top-level object's closing brace
	members   bool   // the top-level object has at least one member
	json      bool   // the whole body is one JSON value
	object    bool   // ... and it is an object
	dups      uint32 // a bit per guarded field given more than once
	modelLen  int    // the model value's length in bytes as sent; 0 when absent
	longModel bool   // the model is over maxModelBytes, unescaped
	fault     BlockFault
}

// Read reads a request body in one pass: it checks the JSON grammar (RFC
// 8259), records where each member the gateway reads or rewrites lies and
// whether one is given twice, and, when walkContent is set (the APIs whose
// `messages` hold content blocks), notes the first malformed content block.
//
// A body that is not JSON is read as far as it is: the members before the
// first fault are recorded, and the guards apply to them (with `validate
// off` such a body still goes upstream, which will refuse it).
func Read(body []byte, walkContent bool) Request {
	r := Request{body: body}
	s := bodyScanner{b: body, walkMessages: walkContent}
	r.json = s.document(&r)
	r.readModel()
	return r
}

// document reads the whole body into r and reports whether it is JSON.
func (s *bodyScanner) document(r *Request) bool {
	if s.peek() != '{' {
		if !s.value() {
			return false
		}
		s.ws()
		return s.i == len(s.b)
	}
	r.object = true
	if !s.object(func(key string) bool {
		r.members = true
		f, known := topField(key)
		if !known {
			return s.value()
		}
		start := s.i
		var ok bool
		switch c := s.b[s.i]; {
		case f == FieldMessages && c == '[' && s.walkMessages:
			r.fault = BlockFault{} // judged on the last "messages", as the provider reads it
			ok = s.messages(&r.fault)
		case (f == FieldThinking || f == FieldStreamOptions) && c == '{':
			ok = s.nested(r, f)
		default:
			ok = s.value()
		}
		if ok {
			r.record(f, span{start, s.i})
		}
		return ok
	}) {
		return false
	}
	r.closer = s.i - 1
	s.ws()
	return s.i == len(s.b)
}

// nested reads the object at the cursor, the value of the top-level field
// parent, recording the members of it the gateway reads.
func (s *bodyScanner) nested(r *Request, parent Field) bool {
	pp := fieldPaths[parent]
	return s.object(func(key string) bool {
		start := s.i
		ok := s.value()
		for f := numTopFields; f < numFields && ok; f++ {
			p := fieldPaths[f]
			if len(p) == len(pp)+1+len(key) && p[:len(pp)] == pp && p[len(pp)] == '.' && p[len(pp)+1:] == key {
				r.record(f, span{start, s.i})
			}
		}
		return ok
	})
}

// record notes where field f lies, and whether it was seen before.
func (r *Request) record(f Field, at span) {
	if r.at[f].present() && guarded&(1<<f) != 0 {
		r.dups |= 1 << f
	}
	r.at[f] = at
}

// readModel sets Model from the recorded "model" value.
func (r *Request) readModel() {
	raw := r.Raw(FieldModel)
	if len(raw) == 0 || raw[0] != '"' {
		return
	}
	r.modelLen = len(raw) - 2
	// An escape takes at most six bytes for each byte it stands for, so a
	// value this long is over the bound without unescaping it.
	if r.modelLen > 6*maxModelBytes {
		r.Model, r.longModel = validPrefix(raw[1:], maxModelBytes), true
		return
	}
	m := string(raw[1 : len(raw)-1]) // a copy: the body is a pooled buffer
	for _, c := range raw {
		if c == '\\' {
			m = gjson.ParseBytes(raw).Str
			break
		}
	}
	if len(m) > maxModelBytes {
		m, r.longModel = validPrefix([]byte(m), maxModelBytes), true
	}
	r.Model = m
}

// validPrefix returns at most n bytes of b, cut at a UTF-8 boundary.
func validPrefix(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n])
}

// Raw returns field f's raw JSON value, or nil when the body has none. It
// shares the body's memory.
func (r *Request) Raw(f Field) []byte {
	if f >= numFields || !r.at[f].present() {
		return nil
	}
	return r.body[r.at[f].start:r.at[f].end]
}

// Body returns the body to send, with every edit made so far.
func (r *Request) Body() []byte { return r.body }

// Stream reports whether the body asks for a streamed answer.
func (r *Request) Stream() bool { return string(r.Raw(FieldStream)) == "true" }

// JSON reports whether the whole body is one JSON value.
func (r *Request) JSON() bool { return r.json }

// Object reports whether the body is a JSON object (whole or not).
func (r *Request) Object() bool { return r.object }

// ContentFault returns the first malformed content block of the last
// `messages`, when the read walked content; its Kind is 0 when there is
// none.
func (r *Request) ContentFault() BlockFault { return r.fault }

// Integrity reports what makes the body unsafe to guard, whatever the
// `validate` setting: a member the gateway reads or rewrites given twice
// (the providers' JSON parsers keep the last one, so the guards would judge
// one value and the provider use another), or a model id longer than
// maxModelBytes. exampleModel is a valid "model" member for the API, to
// show in the message.
func (r *Request) Integrity(exampleModel string) *RequestError {
	if r.dups != 0 {
		// Name the outermost member: a top-level member given twice
		// repeats its nested ones too.
		p := fieldPaths[bits.TrailingZeros32(r.dups)]
		return &RequestError{Param: p, Message: "`" + p + "` appears more than once in the request body. " +
			"Send each member once: the provider would use the last one, and this gateway does not guess which was meant."}
	}
	if r.longModel {
		return &RequestError{Param: "model", Message: "`model` is longer than " + strconv.Itoa(maxModelBytes) + " bytes (" + strconv.Itoa(r.modelLen) +
			" bytes as sent); model ids are shorter. Send the model's id, for example " + exampleModel + "."}
	}
	return nil
}

// Clone returns a Request with its own copy of the body, to edit while the
// original's body is in use upstream.
func (r *Request) Clone() Request {
	c := *r
	c.body = slices.Clone(r.body)
	c.owned = true
	return c
}

// SetModel makes the body name model, replacing the top-level "model"
// value (or adding one to a JSON object). Every other byte is kept.
func (r *Request) SetModel(model string) {
	v, _ := json.Marshal(model) // a string always marshals
	if r.at[FieldModel].present() {
		r.Replace(FieldModel, v)
		return
	}
	r.insertMember(FieldModel, v)
}

// SetIncludeUsage makes a stream request ask for its final usage chunk
// (`stream_options.include_usage`, an OpenAI Chat Completions option). It
// reports whether it changed the body: only then is the extra chunk the
// client's to lose.
func (r *Request) SetIncludeUsage() bool {
	if !r.object || !r.Stream() || string(r.Raw(FieldIncludeUsage)) == "true" {
		return false
	}
	opts := r.Raw(FieldStreamOptions)
	switch {
	case opts == nil:
		if !r.insertMember(FieldStreamOptions, []byte(`{"include_usage":true}`)) {
			return false
		}
		at := r.at[FieldStreamOptions]
		r.at[FieldIncludeUsage] = span{at.end - len(`true}`), at.end - 1}
	case r.at[FieldIncludeUsage].present():
		r.Replace(FieldIncludeUsage, []byte("true"))
	case opts[0] == '{':
		const key = `"include_usage":`
		member := key + "true"
		if sc := (bodyScanner{b: opts, i: 1}); sc.peek() != '}' {
			member += ","
		}
		at := r.at[FieldStreamOptions].start + 1
		r.insert(at, []byte(member))
		r.at[FieldIncludeUsage] = span{at + len(key), at + len(key) + len("true")}
	case string(opts) == "null":
		r.Replace(FieldStreamOptions, []byte(`{"include_usage":true}`))
		at := r.at[FieldStreamOptions]
		r.at[FieldIncludeUsage] = span{at.end - len(`true}`), at.end - 1}
	default:
		return false // not an object: the provider will say so
	}
	return true
}

// SetInt writes n as field f's value, as an integer, and reports whether
// it could: a member can be added only to a whole JSON object.
func (r *Request) SetInt(f Field, n int64) bool {
	var buf [20]byte
	v := strconv.AppendInt(buf[:0], n, 10)
	if r.at[f].present() {
		r.Replace(f, v)
		return true
	}
	return r.insertMember(f, v)
}

// Replace splices v, which must be one JSON value, in place of field f's
// value, which must be present. Offsets after it move by the change in
// length; the members that contain it grow or shrink with it, and the
// members inside the old value are forgotten.
func (r *Request) Replace(f Field, v []byte) {
	at := r.at[f]
	delta := len(v) - (at.end - at.start)
	r.edit(at.start, at.end, v)
	for i := range r.at {
		switch s := &r.at[i]; {
		case !s.present():
		case Field(i) != f && s.start >= at.start && s.end <= at.end:
			*s = span{} // inside the value replaced
		case s.start >= at.end:
			s.start += delta
			s.end += delta
		case s.start <= at.start && s.end >= at.end:
			s.end += delta
		}
	}
	if r.closer >= at.end {
		r.closer += delta
	}
}

// insertMember adds the top-level member f with value v at the end of the
// object, and records it. It reports false, changing nothing, when the
// body is not a whole JSON object: its end is not known.
func (r *Request) insertMember(f Field, v []byte) bool {
	if !r.object || !r.json {
		return false
	}
	member := make([]byte, 0, len(fieldPaths[f])+len(v)+4)
	if r.members {
		member = append(member, ',')
	}
	member = append(member, '"')
	member = append(member, fieldPaths[f]...)
	member = append(member, '"', ':')
	member = append(member, v...)
	at := r.closer
	r.insert(at, member)
	r.members = true
	r.at[f] = span{at + len(member) - len(v), at + len(member)}
	return true
}

// insert splices v in at offset at, moving what follows.
func (r *Request) insert(at int, v []byte) {
	r.edit(at, at, v)
	for i := range r.at {
		switch s := &r.at[i]; {
		case !s.present():
		case s.start >= at:
			s.start += len(v)
			s.end += len(v)
		case s.end > at:
			s.end += len(v)
		}
	}
	if r.closer >= at {
		r.closer += len(v)
	}
}

// edit replaces body[start:end] with v, copying the body on its first edit
// (with room for a few more small edits) and in place after that.
func (r *Request) edit(start, end int, v []byte) {
	if !r.owned {
		b := make([]byte, 0, len(r.body)+len(v)-(end-start)+64)
		b = append(b, r.body[:start]...)
		b = append(b, v...)
		r.body = append(b, r.body[end:]...)
		r.owned = true
		return
	}
	r.body = slices.Replace(r.body, start, end, v...)
}

// Number reads a raw JSON value as a whole number, judged by value in
// any JSON form (`50000`, `50000.0`, `5e4`, `5E+4`): a fraction rounds up,
// since a cap of 100.5 asks for more than 100, and a value beyond int64
// saturates, so it still counts as far above any limit. ok is false when raw
// is not a number.
func Number(raw []byte) (n int64, ok bool) {
	if len(raw) == 0 || !IsNumber(raw) {
		return 0, false
	}
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	plain := true
	for _, c := range digits {
		if c < '0' || c > '9' {
			plain = false
			break
		}
	}
	if plain {
		n, err := strconv.ParseInt(bytesView(raw), 10, 64)
		if err != nil { // only out of range is left
			if raw[0] == '-' {
				return math.MinInt64, true
			}
			return math.MaxInt64, true
		}
		return n, true
	}
	// ParseFloat returns ±Inf for a value beyond float64, and the nearest
	// float otherwise; precision past 2^53 does not matter for a cap.
	f, _ := strconv.ParseFloat(bytesView(raw), 64)
	f = math.Ceil(f)
	switch {
	case f >= math.MaxInt64: // 2^63, the first float64 above MaxInt64
		return math.MaxInt64, true
	case f < math.MinInt64:
		return math.MinInt64, true
	}
	return int64(f), true
}

// bytesView returns a string sharing b's memory. The caller must not change
// b while the string, or anything sliced from it, is in use.
func bytesView(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
