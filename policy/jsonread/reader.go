// Package jsonread reads the values at a few JSON paths from a document as
// its bytes pass, in pieces, without keeping the document: the usage, stop
// reason and error type of an upstream response or of one server-sent
// event's data. It checks the grammar of RFC 8259 as it goes, in memory
// bounded by the paths (no value kept is longer than MaxText), whatever
// the document's size or nesting.
package jsonread

import (
	"encoding/json"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting the reader accepts, encoding/json's own
// limit: data nested deeper is not JSON to a Go client either. It also
// bounds the reader's memory, one bit per level.
const MaxDepth = 10000

// maxTracked is the deepest container whose members can lead to a wanted
// path; below it the reader only checks the grammar.
const maxTracked = 8

// state is where the reader is in the JSON grammar (RFC 8259).
type state uint8

const (
	sValue     state = iota // a value must come
	sArrFirst               // after '[': a value or ']'
	sObjFirst               // after '{': a member name or '}'
	sObjName                // after ',' in an object: a member name
	sColon                  // after a member name
	sAfter                  // after a value in a container: ',' or its close
	sEnd                    // after the top-level value: only white space
	sString                 // in a string
	sEscape                 // after '\' in a string
	sHex                    // in the four hex digits of \u
	sMinus                  // after a number's '-'
	sZero                   // after a number's leading 0
	sInt                    // in a number's integer digits
	sDot                    // after a number's '.'
	sFrac                   // in a number's fraction digits
	sExp                    // after a number's 'e'
	sExpSign                // after the exponent's sign
	sExpDigits              // in the exponent's digits
	sLiteral                // in true, false or null
	sBad                    // not JSON
)

// slot holds what was found at one node of the wanted paths.
type slot struct {
	kind Kind
	n    int    // an array's elements so far
	text []byte // a string's raw text (no quotes) or a number's, bounded
	long bool   // the text was longer than MaxText
	esc  bool   // the string has escapes
}

// frame is a container whose members can lead to a wanted path.
type frame struct {
	node *node // nil when nothing wanted lies below
	n    int   // elements so far, for an array
}

// Reader checks that a document is one JSON value and keeps the values at
// the wanted paths, reading the document as it arrives, in pieces, without
// keeping it. A member given twice counts by its last value, as in
// encoding/json and the providers' own parsers. Its zero value is not
// ready: call Reset.
type Reader struct {
	f       *Paths
	st      state
	depth   int
	objects []uint64 // bit d is set when the container at depth d+1 is an object
	object  bool     // the innermost container is an object
	frames  [maxTracked]frame
	slots   []slot

	inName   bool   // the string being read is a member name
	keepName bool   // ... which may lead to a wanted path
	name     []byte // that name, bounded
	nameLong bool
	nameEsc  bool
	next     *node // the node of the member whose value comes next
	capture  int   // the slot whose text is being read, or -1
	hex      int   // hex digits still due in a \u escape
	literal  string
}

// Reset prepares the reader to read the paths p from a new document.
func (r *Reader) Reset(p *Paths) {
	if r.f != p {
		r.f, r.slots = p, make([]slot, p.slots)
	}
	*r = Reader{f: r.f, objects: r.objects, slots: r.slots, name: r.name[:0], capture: -1}
	r.forget(r.f.root)
}

// forget clears the slots of the subtree rooted at n.
func (r *Reader) forget(n *node) {
	for i := n.lo; i < n.hi; i++ {
		s := &r.slots[i]
		*s = slot{text: s.text[:0]}
	}
}

// Feed reads the next piece of the document.
func (r *Reader) Feed(b []byte) {
	for i := 0; i < len(b); {
		c := b[i]
		switch r.st {
		case sBad:
			return
		case sString:
			j := i + PlainRun(b[i:])
			r.text(b[i:j])
			if j == len(b) {
				return
			}
			i = j
			switch b[i] {
			case '"':
				r.endString()
			case '\\':
				r.text(b[i : i+1])
				r.st = sEscape
				if r.inName {
					r.nameEsc = true
				} else if r.capture >= 0 {
					r.slots[r.capture].esc = true
				}
			default: // a control character
				r.st = sBad
			}
			i++
			continue
		case sEscape:
			switch c {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.st = sString
			case 'u':
				r.st, r.hex = sHex, 4
			default:
				r.st = sBad
				return
			}
			r.text(b[i : i+1])
			i++
			continue
		case sHex:
			if !isHex(c) {
				r.st = sBad
				return
			}
			r.text(b[i : i+1])
			if r.hex--; r.hex == 0 {
				r.st = sString
			}
			i++
			continue
		case sMinus, sZero, sInt, sDot, sFrac, sExp, sExpSign, sExpDigits:
			j := i
			for j < len(b) && r.number(b[j]) {
				j++
			}
			r.text(b[i:j])
			if j == len(b) || r.st == sBad {
				return
			}
			// b[j] ends the number; it is read again in the state after.
			r.endValue()
			i = j
			continue
		case sLiteral:
			if c != r.literal[0] {
				r.st = sBad
				return
			}
			if r.literal = r.literal[1:]; r.literal == "" {
				r.endValue()
			}
			i++
			continue
		}
		// The structural states: white space is allowed before any token.
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			i++
			continue
		}
		switch r.st {
		case sValue:
			r.value(c)
		case sArrFirst:
			if c == ']' {
				r.close()
			} else {
				r.value(c)
			}
		case sObjFirst:
			switch c {
			case '}':
				r.close()
			case '"':
				r.beginName()
			default:
				r.st = sBad
			}
		case sObjName:
			if c != '"' {
				r.st = sBad
				return
			}
			r.beginName()
		case sColon:
			if c != ':' {
				r.st = sBad
				return
			}
			r.st = sValue
		case sAfter:
			object := r.inObject()
			switch {
			case c == ',' && object:
				r.st = sObjName
			case c == ',':
				r.st = sValue
			case c == '}' && object, c == ']' && !object:
				r.close()
			default:
				r.st = sBad
			}
		default: // sEnd: nothing but white space may follow the value
			r.st = sBad
		}
		i++
	}
}

// number advances a number by one byte, reporting false when the byte is
// not part of it (the number ends, or, where a digit was due, is bad).
func (r *Reader) number(c byte) bool {
	digit := c >= '0' && c <= '9'
	switch r.st {
	case sMinus:
		switch {
		case c == '0':
			r.st = sZero
		case digit:
			r.st = sInt
		default:
			r.st = sBad
			return false
		}
	case sZero, sInt:
		switch {
		case digit && r.st == sInt:
		case c == '.':
			r.st = sDot
		case c == 'e' || c == 'E':
			r.st = sExp
		default:
			return false
		}
	case sDot:
		if !digit {
			r.st = sBad
			return false
		}
		r.st = sFrac
	case sFrac:
		switch {
		case digit:
		case c == 'e' || c == 'E':
			r.st = sExp
		default:
			return false
		}
	case sExp:
		switch {
		case c == '+' || c == '-':
			r.st = sExpSign
		case digit:
			r.st = sExpDigits
		default:
			r.st = sBad
			return false
		}
	case sExpSign:
		if !digit {
			r.st = sBad
			return false
		}
		r.st = sExpDigits
	default: // sExpDigits
		return digit
	}
	return true
}

// value starts the value whose first byte is c.
func (r *Reader) value(c byte) {
	n := r.valueNode()
	var kind Kind
	switch {
	case c == '{':
		kind = Object
	case c == '[':
		kind = Array
	case c == '"':
		kind, r.st = String, sString
	case c == '-':
		kind, r.st = Number, sMinus
	case c == '0':
		kind, r.st = Number, sZero
	case c >= '1' && c <= '9':
		kind, r.st = Number, sInt
	case c == 't':
		kind, r.st, r.literal = True, sLiteral, "rue"
	case c == 'f':
		kind, r.st, r.literal = False, sLiteral, "alse"
	case c == 'n':
		kind, r.st, r.literal = Null, sLiteral, "ull"
	default:
		r.st = sBad
		return
	}
	if n != nil {
		r.forget(n) // a member given again forgets its earlier value
		if n.slot >= 0 {
			r.slots[n.slot].kind = kind
			if kind == String || kind == Number {
				r.capture = n.slot
			}
		}
	}
	switch kind {
	case Number:
		r.text([]byte{c})
	case Object, Array:
		r.open(kind == Object, n)
	}
}

// valueNode returns the node of the value about to start, or nil when no
// wanted path leads through it, and counts an array's elements.
func (r *Reader) valueNode() *node {
	if r.depth == 0 {
		return r.f.root
	}
	if r.depth > maxTracked {
		return nil
	}
	if r.inObject() {
		n := r.next
		r.next = nil
		return n
	}
	fr := &r.frames[r.depth-1]
	if fr.node == nil {
		return nil
	}
	index := fr.n
	fr.n++
	if fr.node.slot >= 0 {
		r.slots[fr.node.slot].n = fr.n
	}
	return fr.node.element(index)
}

// open enters a container whose node is n (nil when nothing is wanted).
func (r *Reader) open(object bool, n *node) {
	if r.depth == MaxDepth {
		r.st = sBad
		return
	}
	word, bit := r.depth/64, uint(r.depth%64)
	for len(r.objects) <= word {
		r.objects = append(r.objects, 0)
	}
	if object {
		r.objects[word] |= 1 << bit
		r.st = sObjFirst
	} else {
		r.objects[word] &^= 1 << bit
		r.st = sArrFirst
	}
	r.depth++
	r.object = object
	if r.depth <= maxTracked {
		if n != nil && len(n.kids) == 0 && object {
			n = nil // an object wanted for its kind alone
		}
		r.frames[r.depth-1] = frame{node: n}
	}
}

// inObject reports whether the innermost container is an object.
func (r *Reader) inObject() bool { return r.object }

// close leaves the innermost container.
func (r *Reader) close() {
	r.depth--
	if d := r.depth - 1; d >= 0 {
		r.object = r.objects[d/64]&(1<<uint(d%64)) != 0
	}
	r.endValue()
}

// endValue moves on after a complete value.
func (r *Reader) endValue() {
	r.capture = -1
	if r.depth == 0 {
		r.st = sEnd
	} else {
		r.st = sAfter
	}
}

// beginName starts a member name, kept when the object is on a wanted path.
func (r *Reader) beginName() {
	r.st, r.inName = sString, true
	r.keepName = r.depth <= maxTracked && r.frames[r.depth-1].node != nil
	r.name, r.nameLong, r.nameEsc = r.name[:0], false, false
}

// endString ends a string: a member name finds its node, a value is done.
func (r *Reader) endString() {
	if !r.inName {
		r.endValue()
		return
	}
	r.inName, r.st, r.next = false, sColon, nil
	if !r.keepName || r.nameLong {
		return
	}
	// Wanted names are ASCII, so only a name with escapes can spell one
	// otherwise than as it is written (invalid UTF-8 decodes to U+FFFD).
	name := r.name
	if r.nameEsc {
		decoded, ok := decodeString(name)
		if !ok {
			return
		}
		name = decoded
	}
	r.next = r.frames[r.depth-1].node.member(name)
}

// text keeps a piece of the string or number being read, when it is a
// kept member name or the value of a wanted path, up to the bound.
func (r *Reader) text(b []byte) {
	switch {
	case len(b) == 0:
	case r.inName:
		if r.keepName && !r.nameLong {
			if len(r.name)+len(b) > MaxText {
				r.nameLong = true
				return
			}
			r.name = append(r.name, b...)
		}
	case r.capture >= 0:
		s := &r.slots[r.capture]
		if s.long {
			return
		}
		if len(s.text)+len(b) > MaxText {
			s.long, s.text = true, s.text[:0]
			return
		}
		s.text = append(s.text, b...)
	}
}

// End finishes the document and reports whether it was one JSON value.
func (r *Reader) End() bool {
	switch r.st {
	case sEnd:
		return true
	case sZero, sInt, sFrac, sExpDigits:
		return r.depth == 0 // a top-level number ends with the data
	}
	return false
}

// Values fills dst, one per compiled path in order, with what the document
// held there (Kind Absent for a path it did not have), and returns it. It is
// meant for a document that End reported as JSON; the values share the
// reader's memory until its next Reset.
func (r *Reader) Values(dst []Value) []Value {
	dst = dst[:0]
	for _, s := range r.f.paths {
		v := Value{}
		if r.slots[s].kind != Absent {
			v = r.result(s)
		}
		dst = append(dst, v)
	}
	return dst
}

// result returns what was found at a slot.
func (r *Reader) result(i int) Value {
	s := &r.slots[i]
	v := Value{Kind: s.kind, Len: s.n}
	if s.long {
		return v
	}
	switch s.kind {
	case Number:
		v.Text = s.text
	case String:
		v.Text = s.text
		if s.esc || !utf8.Valid(s.text) {
			v.Text, _ = decodeString(s.text)
		}
	}
	return v
}

// decodeString decodes the raw text of a JSON string (without its quotes)
// the way encoding/json does, escapes and invalid UTF-8 included. It is
// only called for the rare short string that needs it.
func decodeString(raw []byte) ([]byte, bool) {
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
