package handlers

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// trickle returns its bytes one read at a time, then blocks the test's
// view of the body with an error that stands for a client that stopped.
type trickle struct {
	parts [][]byte
	end   error
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.parts) == 0 {
		return 0, t.end
	}
	n := copy(p, t.parts[0])
	t.parts[0] = t.parts[0][n:]
	if len(t.parts[0]) == 0 {
		t.parts = t.parts[1:]
	}
	return n, nil
}

// withLimit runs f with a charge of the given limit, and checks that what
// f leaves held is exactly what the charge says.
func withLimit(t *testing.T, limit int64, f func(c *bufferCharge)) {
	t.Helper()
	before := buffered.Load()
	c := &bufferCharge{limit: before + limit}
	f(c)
	if got := buffered.Load() - before; got != c.held {
		t.Errorf("the process count moved by %d, the charge holds %d", got, c.held)
	}
	c.give(c.held)
}

// TestReadBodyTakesMemoryAsBytesArrive declares a large body and sends one
// byte: the array grows from what arrived, not from the declared length.
func TestReadBodyTakesMemoryAsBytesArrive(t *testing.T) {
	withLimit(t, 512<<20, func(c *bufferCharge) {
		var b []byte
		err := readBody(&b, &trickle{parts: [][]byte{[]byte("{")}, end: io.ErrUnexpectedEOF}, 16_000_000, 16_000_000, c)
		if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "{" {
			t.Fatalf("read %q, %v", b, err)
		}
		if cap(b) > firstBodyArray || c.held > firstBodyArray {
			t.Errorf("1 byte of a declared 16 MB took an array of %d bytes and held %d", cap(b), c.held)
		}
	})
}

// TestReadBodyGrowsToTheDeclaredLength checks that a body of known length
// ends in an array of exactly that length (plus the byte that sees the
// end), whatever the reads, and that a body of unknown length grows by
// doubling.
func TestReadBodyGrowsToTheDeclaredLength(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 300_000)
	withLimit(t, 512<<20, func(c *bufferCharge) {
		var b []byte
		if err := readBody(&b, iotest.OneByteReader(bytes.NewReader(body)), int64(len(body)), 1<<20, c); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, body) || cap(b) != len(body)+1 || c.held != int64(cap(b)) {
			t.Errorf("read %d bytes into an array of %d, holding %d; want %d, %d, %d", len(b), cap(b), c.held, len(body), len(body)+1, len(body)+1)
		}
	})
	withLimit(t, 512<<20, func(c *bufferCharge) {
		var b []byte
		if err := readBody(&b, bytes.NewReader(body), -1, 1<<20, c); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, body) || cap(b) >= 2*len(body)+firstBodyArray {
			t.Errorf("unknown length: %d bytes in an array of %d", len(b), cap(b))
		}
	})
}

// TestReadBodyLimits checks max_body (errBodyTooLarge after at most one
// byte more) and max_buffered (errOverBuffered before the memory is
// taken), and that a pooled array is charged for its bytes, not its size.
func TestReadBodyLimits(t *testing.T) {
	withLimit(t, 512<<20, func(c *bufferCharge) {
		var b []byte
		err := readBody(&b, strings.NewReader(strings.Repeat("x", 1001)), -1, 1000, c)
		if !errors.Is(err, errBodyTooLarge) || len(b) > 1001 {
			t.Errorf("1001 bytes under max_body 1000: %v after %d bytes", err, len(b))
		}
	})
	withLimit(t, 100_000, func(c *bufferCharge) {
		var b []byte
		err := readBody(&b, strings.NewReader(strings.Repeat("x", 200_000)), 200_000, 1<<20, c)
		if !errors.Is(err, errOverBuffered) || c.held > 100_000 {
			t.Errorf("200000 bytes under max_buffered 100000: %v, holding %d", err, c.held)
		}
	})
	withLimit(t, 10_000, func(c *bufferCharge) {
		b := make([]byte, 0, 1<<20) // as from the pool
		if err := readBody(&b, strings.NewReader("small"), 5, 1<<20, c); err != nil || string(b) != "small" {
			t.Errorf("a small body in a large pooled array: %q, %v", b, err)
		}
	})
}

// TestContentDecoder checks the codings read and the ones refused.
func TestContentDecoder(t *testing.T) {
	const body = `{"model":"m"}`
	pack := func(w func(io.Writer) io.WriteCloser) []byte {
		var b bytes.Buffer
		zw := w(&b)
		_, _ = io.WriteString(zw, body)
		_ = zw.Close()
		return b.Bytes()
	}
	gz := pack(func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
	zl := pack(func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })
	raw := pack(func(w io.Writer) io.WriteCloser { fw, _ := flate.NewWriter(w, 1); return fw })
	for _, c := range []struct {
		encoding string
		in       []byte
		want     error // nil: decodes to body
		encoded  bool
	}{
		{"", []byte(body), nil, false},
		{"identity", []byte(body), nil, false},
		{"gzip", gz, nil, true},
		{"GZip", gz, nil, true},
		{"x-gzip", gz, nil, true},
		{"identity, gzip", gz, nil, true},
		{"deflate", zl, nil, true},
		{"deflate", raw, nil, true},
		{"br", []byte(body), errUnsupportedEncoding, false},
		{"zstd", []byte(body), errUnsupportedEncoding, false},
		{"gzip, gzip", gz, errUnsupportedEncoding, false},
		{"gzip", []byte(body), errBadEncoding, true},
	} {
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", bytes.NewReader(c.in))
		if c.encoding != "" {
			r.Header.Set("Content-Encoding", c.encoding)
		}
		src, encoded, done, err := contentDecoder(r)
		if err == nil {
			var got []byte
			got, err = io.ReadAll(src)
			done()
			if err == nil && string(got) != body {
				t.Errorf("%q: decoded %q", c.encoding, got)
			}
		}
		switch {
		case c.want == nil && err != nil, c.want != nil && !errors.Is(err, c.want) && !(c.want == errBadEncoding && decodingFailed(err)):
			t.Errorf("%q: error %v, want %v", c.encoding, err, c.want)
		case c.want == nil && encoded != c.encoded:
			t.Errorf("%q: encoded %v", c.encoding, encoded)
		}
	}
}

// TestHeldResponseWithinMaxBuffered holds a retryable response only while
// it fits max_buffered; past it, the response goes to the client as it is.
func TestHeldResponseWithinMaxBuffered(t *testing.T) {
	for _, limit := range []int64{1 << 20, 100} {
		withLimit(t, limit, func(c *bufferCharge) {
			rec := httptest.NewRecorder()
			tap := responseTap{api: wire.Messages}
			aw := attemptWriter{rw: rec, retryOn: policy.DefaultRetryOn(), tap: &tap, charge: c}
			aw.reset(func() {})
			aw.WriteHeader(529)
			_, _ = aw.Write([]byte(strings.Repeat("x", 500)))
			held := aw.state.Load() == stateHeld
			if held != (limit > 500) {
				t.Errorf("limit %d: held %v", limit, held)
			}
			if !held && rec.Body.Len() != 500 {
				t.Errorf("limit %d: the client got %d bytes of the spilled response", limit, rec.Body.Len())
			}
			aw.reset(func() {})
			if c.held != 0 {
				t.Errorf("limit %d: %d bytes still held after the attempt", limit, c.held)
			}
		})
	}
}

// TestGatewayGivesBackWhatItHolds runs requests through a gateway, some
// refused, some served, some retried, and checks the process's count is
// back where it started.
func TestGatewayGivesBackWhatItHolds(t *testing.T) {
	g := testGateway(t, Config{
		MaxBody: 1 << 20, MaxBuffered: 1 << 30, Retries: ptr(1),
		Backoff: &Backoff{Base: caddy.Duration(time.Millisecond), Max: caddy.Duration(time.Millisecond)},
		MaxWait: caddy.Duration(time.Second), Deadline: caddy.Duration(time.Minute),
		MaxTokens: &MaxTokens{Limit: 10},
	})
	attempts := 0
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, _ = io.Copy(io.Discard, r.Body)
		attempts++
		if attempts%2 == 1 {
			w.WriteHeader(529)
			_, _ = w.Write([]byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
			return nil
		}
		_, _ = w.Write([]byte(`{"usage":{"input_tokens":1,"output_tokens":1}}`))
		return nil
	})
	before := buffered.Load()
	for _, body := range []string{
		`{"model":"m","max_tokens":50000,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","max_tokens":5,"max_tokens":6,"messages":[]}`,
		`not json`,
	} {
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body))
		if err := g.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
			t.Fatal(err)
		}
	}
	if after := buffered.Load(); after != before {
		t.Errorf("the process's count went from %d to %d", before, after)
	}
}
