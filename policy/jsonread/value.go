package jsonread

import (
	"strconv"
	"unsafe"
)

// Kind is the kind of a JSON value read from a document.
type Kind uint8

// The kinds of JSON value; Absent is a path the document does not have.
const (
	Absent Kind = iota
	Null
	False
	True
	Number
	String
	Object
	Array
)

// MaxText is the longest string or number, as JSON text, that a Reader
// keeps (and the longest member name it follows). Every type, code and
// stop reason the providers send is far shorter; a longer value is known
// by its kind alone, so an upstream cannot make the gateway keep, or log,
// an unbounded string.
const MaxText = 256

// Value is one value read from a document.
type Value struct {
	Kind Kind
	// Text is a string's decoded text or a number's JSON text, when its
	// JSON text is at most MaxText bytes; nil otherwise.
	Text []byte
	// Len is an array's number of elements.
	Len int
}

// Int returns a number as an integer: a fraction is truncated, a value
// beyond int64 saturates, and anything but a number is 0.
func (v Value) Int() int64 {
	if v.Kind != Number {
		return 0
	}
	s := unsafe.String(unsafe.SliceData(v.Text), len(v.Text))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && f == 0, f != f:
		return 0
	case f >= 1<<63:
		return 1<<63 - 1
	case f < -(1 << 63):
		return -1 << 63
	}
	return int64(f)
}

// Count returns a number as a token count: saturated, and never negative.
func (v Value) Count() int64 { return max(v.Int(), 0) }

// String returns a string's text, or "" for anything else.
func (v Value) String() string {
	if v.Kind != String {
		return ""
	}
	return string(v.Text)
}

// Is reports whether v is the string s, without allocating.
func (v Value) Is(s string) bool { return v.Kind == String && string(v.Text) == s }
