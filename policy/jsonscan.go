package policy

import "strings"

// jsonIter walks the members of one JSON object, or the elements of one JSON
// array, handing out each value as its raw text. Unlike gjson's ForEach it
// never unescapes a string (gjson copies every string value that contains an
// escape, and message text nearly always contains \n), so walking a whole
// conversation allocates nothing. It trusts its input only as far as it
// must: on malformed JSON it stops early, never panics, and Err reports it.
type jsonIter struct {
	s   string
	i   int
	obj bool
	bad bool
}

// iterJSON starts a walk over raw, which must be an object or an array
// (leading whitespace allowed). ok is false for any other value.
func iterJSON(raw string) (it jsonIter, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || (raw[i] != '{' && raw[i] != '[') {
		return jsonIter{}, false
	}
	return jsonIter{s: raw, i: i + 1, obj: raw[i] == '{'}, true
}

// next returns the next member: for an object its key (raw, without
// quotes; escapes are left as they are, which is fine for the plain ASCII
// field names the gateway looks for) and value, for an array an empty key
// and the element. start is the value's offset in the walked text. ok is
// false at the end of the container or at the first malformed byte.
func (it *jsonIter) next() (key, val string, start int, ok bool) {
	s := it.s
	i := skipSpace(s, it.i)
	if i < len(s) && s[i] == ',' {
		i = skipSpace(s, i+1)
	}
	if i >= len(s) {
		it.bad, it.i = true, i
		return "", "", 0, false
	}
	if s[i] == '}' || s[i] == ']' {
		it.bad = (s[i] == '}') != it.obj
		it.i = len(s) // finished: later calls report the end again
		return "", "", 0, false
	}
	if it.obj {
		if s[i] != '"' {
			it.bad, it.i = true, len(s)
			return "", "", 0, false
		}
		end := skipString(s, i)
		if end < 0 {
			it.bad, it.i = true, len(s)
			return "", "", 0, false
		}
		key = s[i+1 : end-1]
		i = skipSpace(s, end)
		if i >= len(s) || s[i] != ':' {
			it.bad, it.i = true, len(s)
			return "", "", 0, false
		}
		i = skipSpace(s, i+1)
	}
	end := skipValue(s, i)
	if end <= i {
		it.bad, it.i = true, len(s)
		return "", "", 0, false
	}
	it.i = end
	return key, s[i:end], i, true
}

// err reports whether the walk stopped at malformed JSON rather than at
// the container's closing bracket.
func (it *jsonIter) err() bool { return it.bad }

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting with the
// quote at s[i], or -1 if it is not terminated. It jumps from quote to
// quote with IndexByte, which is vectorised, and counts the backslashes
// before each quote to tell an escaped one from the end.
func skipString(s string, i int) int {
	i++
	for {
		j := strings.IndexByte(s[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		n := 0
		for k := i - 1; k >= 0 && s[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i
		}
	}
}

// skipValue returns the index just past the JSON value starting at s[i]
// (which is not whitespace), or i when there is no value there.
func skipValue(s string, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '"':
		if end := skipString(s, i); end > 0 {
			return end
		}
		return i
	case '{', '[':
		depth := 0
		for j := i; j < len(s); j++ {
			switch s[j] {
			case '"':
				end := skipString(s, j)
				if end < 0 {
					return i
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return i
	case ',', ':', '}', ']':
		return i
	}
	// A number or a literal: it runs to the next delimiter.
	j := i
	for j < len(s) && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ':' && s[j] != ' ' && s[j] != '\n' && s[j] != '\r' && s[j] != '\t' && s[j] != '"' && s[j] != '{' && s[j] != '[' {
		j++
	}
	return j
}

// rawString returns the contents of a raw JSON string value (without its
// quotes, escapes kept), and whether val is a string at all.
func rawString(val string) (string, bool) {
	if len(val) < 2 || val[0] != '"' {
		return "", false
	}
	return val[1 : len(val)-1], true
}
