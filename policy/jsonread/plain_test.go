package jsonread

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// TestSpecialLanes compares the eight-byte test with a byte-by-byte one on
// words built from the bytes that matter and their neighbours.
func TestSpecialLanes(t *testing.T) {
	interesting := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, '"', '#', '!', '\\', '[', ']', 0x7f, 0x80, 0x9f, 0xa0, 0xa2, 0xdc, 0xff}
	r := rand.New(rand.NewPCG(1, 2))
	var w [8]byte
	for range 200000 {
		for k := range w {
			if r.IntN(3) == 0 {
				w[k] = byte(r.UintN(256))
			} else {
				w[k] = interesting[r.IntN(len(interesting))]
			}
		}
		want := 8
		for k, c := range w {
			if c < 0x20 || c == '"' || c == '\\' {
				want = k
				break
			}
		}
		got := 8
		if m := specialLanes(binary.LittleEndian.Uint64(w[:])); m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if got != want {
			t.Fatalf("%q: first special byte at %d, want %d", w, got, want)
		}
	}
}
