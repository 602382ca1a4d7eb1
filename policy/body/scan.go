package body

import (
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
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
		i += jsonread.PlainRun(b[i:])
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

// Members calls fn with each member of the JSON object raw, its key
// unescaped and its value as raw JSON sharing raw's memory, until fn
// returns false. It stops quietly at malformed JSON: what comes before the
// fault is handed out, nothing after it.
func Members(raw []byte, fn func(key string, val []byte) bool) {
	s := bodyScanner{b: raw}
	if s.peek() != '{' {
		return
	}
	s.object(func(key string) bool {
		start := s.i
		return s.value() && fn(key, raw[start:s.i])
	})
}

// Elements calls fn with each element of the JSON array raw, as raw JSON
// sharing raw's memory, until fn returns false. It stops quietly at
// malformed JSON, as Members does.
func Elements(raw []byte, fn func(val []byte) bool) {
	s := bodyScanner{b: raw}
	if s.peek() != '[' {
		return
	}
	s.array(func(int) bool {
		start := s.i
		return s.value() && fn(raw[start:s.i])
	})
}

// Contents returns the text of the raw JSON string value raw without its
// quotes, escapes kept, and whether raw is a string at all.
func Contents(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	return raw[1 : len(raw)-1], true
}
