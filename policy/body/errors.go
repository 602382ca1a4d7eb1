package body

import "strconv"

// RequestError is a request the provider would reject anyway, or one the
// gateway cannot guard, found before any upstream call. Answering it
// locally saves a round trip and, under load, a rate-limit slot spent on a
// request that cannot succeed.
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

// BlockFault is a malformed content block: its kind, where it is, and the
// offending value (the element itself, or its "type").
type BlockFault struct {
	// Kind is what is wrong; 0 means nothing is.
	Kind BlockFaultKind
	// Message and Block index the message and its content block.
	Message, Block int
	// Raw is the offending element, or its "type" value.
	Raw []byte
}

// BlockFaultKind is what is wrong with a content block.
type BlockFaultKind uint8

// The kinds of BlockFault; the zero value means none.
const (
	// BlockNotObject is an element of a content array that is not an
	// object.
	BlockNotObject BlockFaultKind = iota + 1
	// BlockNoType is a content block without a "type".
	BlockNoType
	// BlockTypeNotString is a content block whose "type" is not a string.
	BlockTypeNotString
)

// Path returns where the block is, as an OpenAI `param`:
// messages.<i>.content.<j>.
func (f BlockFault) Path() string {
	return "messages." + strconv.Itoa(f.Message) + ".content." + strconv.Itoa(f.Block)
}

// messages reads the messages array at the cursor, recording in f the first
// malformed block of any message's (last) content array.
func (s *bodyScanner) messages(f *BlockFault) bool {
	return s.array(func(i int) bool {
		if s.b[s.i] != '{' {
			return s.value() // not one of the listed rules; the provider will say
		}
		var cf BlockFault // fault in this message's last "content"
		ok := s.object(func(key string) bool {
			if key != "content" {
				return s.value()
			}
			cf = BlockFault{}
			if s.b[s.i] != '[' {
				return s.value()
			}
			return s.content(i, &cf)
		})
		if f.Kind == 0 {
			*f = cf
		}
		return ok
	})
}

// content reads message i's content array, recording in f the first element
// that is not an object or has no string "type".
func (s *bodyScanner) content(i int, f *BlockFault) bool {
	return s.array(func(j int) bool {
		start := s.i
		if s.b[s.i] != '{' {
			ok := s.value()
			if f.Kind == 0 {
				*f = BlockFault{Kind: BlockNotObject, Message: i, Block: j, Raw: s.b[start:s.i]}
			}
			return ok
		}
		var typ []byte
		ok := s.object(func(key string) bool {
			if key != "type" {
				return s.value()
			}
			start := s.i
			if !s.value() {
				return false
			}
			typ = s.b[start:s.i]
			return true
		})
		if f.Kind == 0 {
			switch {
			case typ == nil:
				*f = BlockFault{Kind: BlockNoType, Message: i, Block: j}
			case typ[0] != '"':
				*f = BlockFault{Kind: BlockTypeNotString, Message: i, Block: j, Raw: typ}
			}
		}
		return ok
	})
}

// IsNumber reports whether raw, a complete JSON value, is a number.
func IsNumber(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9')
}

// Describe names a JSON value's kind for a message, quoting short scalars
// so the reader sees exactly what was sent.
func Describe(raw []byte) string {
	if len(raw) == 0 {
		return "empty"
	}
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
