package jsonread

import (
	"bytes"
	"testing"
)

var sinkN int

func BenchmarkPlainRun(b *testing.B) {
	long := append(bytes.Repeat([]byte("lorem ipsum dolor sit amet "), 4000), '"')
	b.SetBytes(int64(len(long)))
	for b.Loop() {
		sinkN = PlainRun(long)
	}
}
