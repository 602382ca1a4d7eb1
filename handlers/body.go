package handlers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// bufferPool recycles request and response buffers across requests, as
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

// errBodyTooLarge means the request body is larger than max_body.
var errBodyTooLarge = errors.New("request body too large")

// readBody reads the whole request body into buf, refusing more than limit
// bytes. declared is the request's Content-Length (-1 when unknown); a
// declared length over the limit is refused before any byte is read.
func readBody(buf *bytes.Buffer, body io.Reader, declared, limit int64) error {
	if declared > limit {
		return errBodyTooLarge
	}
	if body == nil {
		return nil
	}
	if declared > 0 {
		buf.Grow(int(declared))
	}
	n, err := buf.ReadFrom(io.LimitReader(body, limit+1))
	if err != nil {
		return fmt.Errorf("reading request body: %w", err)
	}
	if n > limit {
		return errBodyTooLarge
	}
	return nil
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
