package handlers

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// bufferPool recycles held and tapped response buffers across requests, as
// reverse_proxy does (reverseproxy.go bufPool).
var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer keeps rare huge bodies from pinning memory in the pool.
const maxPooledBuffer = 1 << 20

func getBuffer() *bytes.Buffer {
	return bufferPool.Get().(*bytes.Buffer)
}

func putBuffer(b *bytes.Buffer) {
	if b == nil || b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	bufferPool.Put(b)
}

// bodyPool recycles request body arrays, as bufferPool does buffers.
var bodyPool = sync.Pool{New: func() any { return new([]byte) }}

func getBody() *[]byte { return bodyPool.Get().(*[]byte) }

func putBody(b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		*b = nil
	}
	*b = (*b)[:0]
	bodyPool.Put(b)
}

// buffered counts the bytes of request bodies and held responses that every
// gateway of the process keeps in memory at once (`max_buffered`). It is
// one count for the process, whatever the config: memory is the process's.
var buffered atomic.Int64

// bufferCharge is what one call holds of the process's count, so that it
// gives back exactly that when it ends. A call's reads and its attempts'
// writes happen on its own goroutine, so it needs no lock.
type bufferCharge struct {
	limit int64 // this gateway's max_buffered
	held  int64
}

// fits reports whether n more bytes would stay within the limit now,
// without taking them.
func (b *bufferCharge) fits(n int64) bool { return buffered.Load()+n <= b.limit }

// take counts n more bytes held, unless that would pass the limit.
func (b *bufferCharge) take(n int64) bool {
	for {
		cur := buffered.Load()
		if cur+n > b.limit {
			return false
		}
		if buffered.CompareAndSwap(cur, cur+n) {
			b.held += n
			return true
		}
	}
}

// add counts n more bytes held, even past the limit: copies of a body that
// has already been admitted (an edited body, a fallback's body) must be
// counted, but refusing them half-way through a call would help no one.
func (b *bufferCharge) add(n int64) {
	buffered.Add(n)
	b.held += n
}

// give returns n bytes to the count.
func (b *bufferCharge) give(n int64) {
	buffered.Add(-n)
	b.held -= n
}

// Why a request body could not be read, beyond the reader's own errors.
var (
	// errBodyTooLarge means the body is larger than max_body (after
	// decoding, when it came compressed).
	errBodyTooLarge = errors.New("request body too large")
	// errOverBuffered means holding the body would pass max_buffered.
	errOverBuffered = errors.New("max_buffered reached")
	// errUnsupportedEncoding means a Content-Encoding other than gzip,
	// deflate or identity.
	errUnsupportedEncoding = errors.New("unsupported content encoding")
)

// firstBodyArray is the size of a body array's first allocation when the
// pooled one is too small; it doubles from there as bytes arrive.
const firstBodyArray = 16 << 10

// readWindow is the most bytes one read into a pooled array may bring in,
// and so the most that read takes from max_buffered ahead of its bytes.
const readWindow = 64 << 10

// readBody reads body into *dst, at most limit bytes (more is
// errBodyTooLarge). Memory is taken as bytes arrive: the array doubles from
// what has been read, up to the declared length (-1 when unknown), which
// bounds the growth but never reserves memory by itself, so a client that
// declares 16 MB and sends one byte costs kilobytes.
//
// What the call holds is taken from charge before it is held: an array it
// grows, whole (that is the memory it pins), and in the pooled array it
// started with, the bytes read so far.
func readBody(dst *[]byte, body io.Reader, declared, limit int64, charge *bufferCharge) error {
	b := *dst
	defer func() { *dst = b }()
	var held int64 // what this read has taken from charge
	hold := func(n int64) bool {
		if n <= held {
			return true
		}
		if !charge.take(n - held) {
			return false
		}
		held = n
		return true
	}
	grown := false
	for {
		if len(b) == cap(b) {
			size := max(2*cap(b), firstBodyArray)
			if declared >= 0 {
				// One byte past the declared length lets the reader
				// report the end without another allocation.
				size = min(size, max(int(declared)+1, len(b)+1))
			}
			size = int(min(int64(size), limit+1))
			if !hold(int64(size)) {
				return errOverBuffered
			}
			a := make([]byte, len(b), size)
			copy(a, b)
			b, grown = a, true
		}
		window := min(cap(b)-len(b), readWindow)
		if declared >= 0 {
			window = min(window, max(int(declared)+1-len(b), 1))
		}
		if !grown && !hold(int64(len(b)+window)) {
			return errOverBuffered
		}
		n, err := body.Read(b[len(b) : len(b)+window])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return errBodyTooLarge
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// contentDecoder returns a reader of r's body decoded from its
// Content-Encoding (gzip or deflate; RFC 9110, section 8.4.1), or the body
// itself when it has none. Other encodings are errUnsupportedEncoding: the
// gateway must read the JSON to guard it. done releases the decoder.
func contentDecoder(r *http.Request) (body io.Reader, encoded bool, done func(), err error) {
	coding := ""
	for _, v := range r.Header.Values("Content-Encoding") {
		for _, c := range strings.Split(v, ",") {
			c = strings.ToLower(strings.TrimSpace(c))
			if c == "" || c == "identity" {
				continue
			}
			if coding != "" { // stacked codings: nothing sends them to an API
				return nil, false, nil, errUnsupportedEncoding
			}
			coding = c
		}
	}
	switch coding {
	case "":
		return r.Body, false, func() {}, nil
	case "gzip", "x-gzip": // x-gzip is gzip (RFC 9110, section 8.4.1.3)
		zr, _ := gzipPool.Get().(*gzip.Reader)
		if zr == nil {
			zr = new(gzip.Reader)
		}
		if err := zr.Reset(r.Body); err != nil {
			return nil, true, nil, badEncoding{err}
		}
		return zr, true, func() { gzipPool.Put(zr) }, nil
	case "deflate":
		return deflateReader(r.Body), true, func() {}, nil
	}
	return nil, false, nil, errUnsupportedEncoding
}

// errBadEncoding marks a body that does not decode as its Content-Encoding
// says (errors.Is matches a badEncoding).
var errBadEncoding = errors.New("the body does not decode as its Content-Encoding says")

// badEncoding is a body that does not decode as its Content-Encoding says:
// its message is the decoder's own, which the client's answer quotes after
// saying as much itself.
type badEncoding struct{ err error }

func (e badEncoding) Error() string        { return e.err.Error() }
func (e badEncoding) Unwrap() error        { return e.err }
func (e badEncoding) Is(target error) bool { return target == errBadEncoding }

// gzipPool recycles gzip readers, whose windows are the costly part.
var gzipPool sync.Pool

// deflateReader reads an HTTP "deflate" body: the zlib format (RFC 1950),
// as RFC 9110 defines the coding, or a raw deflate stream (RFC 1951), which
// some clients send under that name; the first two bytes tell them apart.
func deflateReader(body io.Reader) io.Reader {
	var head [2]byte
	n, err := io.ReadFull(body, head[:])
	src := io.MultiReader(bytes.NewReader(head[:n]), body)
	if err != nil {
		return &failedReader{badEncoding{err}}
	}
	if head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
		zr, err := zlib.NewReader(src)
		if err != nil {
			return &failedReader{badEncoding{err}}
		}
		return zr
	}
	return flate.NewReader(src)
}

// failedReader returns its error on every read.
type failedReader struct{ err error }

func (f *failedReader) Read([]byte) (int, error) { return 0, f.err }

// decodingFailed reports whether err says the body is not what its
// Content-Encoding claims, as opposed to a body that stopped arriving.
func decodingFailed(err error) bool {
	var corrupt flate.CorruptInputError
	return errors.Is(err, errBadEncoding) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) ||
		errors.Is(err, zlib.ErrChecksum) || errors.Is(err, zlib.ErrHeader) || errors.As(err, &corrupt)
}

// openBodies counts the body readers of one call's attempts that the
// transport has not closed yet. It outlives the call if need be, so a late
// Close never touches anything reused.
type openBodies struct{ n atomic.Int32 }

// reader returns a fresh reader over payload for one attempt: a reader may
// still be read by the transport after its attempt has ended, so attempts
// never share one.
func (o *openBodies) reader(payload []byte) io.ReadCloser {
	o.n.Add(1)
	br := &bodyReader{open: o}
	br.Reset(payload)
	return br
}

// bodyReader replays the buffered request body to one attempt.
type bodyReader struct {
	bytes.Reader
	open   *openBodies
	closed atomic.Bool
}

// Close records that the transport is done with the body.
func (b *bodyReader) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.open.n.Add(-1)
	}
	return nil
}
