package body

// What the external tests (package body_test, which may import the wire
// APIs and the guards that use this package) read of a Request's insides.

// NumFields is the number of fields, nested ones included.
const NumFields = numFields

// MaxModelBytes is the longest model id accepted.
const MaxModelBytes = maxModelBytes

// Span returns where field f's value lies in the body; start == end when
// it is absent.
func (r *Request) Span(f Field) (start, end int) { return r.at[f].start, r.at[f].end }

// Duplicated reports whether field f was found more than once.
func (r *Request) Duplicated(f Field) bool { return r.dups&(1<<f) != 0 }

// Closer returns the offset of the top-level object's closing brace, and
// whether the object has members.
func (r *Request) Closer() (closer int, members bool) { return r.closer, r.members }
