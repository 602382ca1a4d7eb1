package handlers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
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

// bodyReader replays the buffered request body to one attempt. It is a
// value inside the call, so each attempt costs no allocation for its body.
type bodyReader struct {
	bytes.Reader
}

// Close does nothing: the buffer belongs to the call, not the attempt.
func (*bodyReader) Close() error { return nil }
