package jsonread

import (
	"encoding/binary"
	"math/bits"
)

// PlainRun returns how many bytes at the start of b stand for themselves
// inside a JSON string: every byte but '"', '\\' and the control characters
// below 0x20 (RFC 8259, section 7). It checks a few bytes singly first (in
// escape-dense text, such as JSON quoted inside a tool result, the next
// special byte is that close), then eight at a time.
func PlainRun(b []byte) int {
	i, end := 0, min(8, len(b))
	for i < end && plainByte[b[i]] {
		i++
	}
	if i < end {
		return i
	}
	// Four words at a time while no lane matches: the four tests are
	// independent, so the CPU runs them side by side, and one branch
	// serves 32 bytes (measured: about twice the speed of one word at a
	// time on long text, BenchmarkPlainRun).
	for i+32 <= len(b) {
		w := b[i : i+32]
		if specialLanes(binary.LittleEndian.Uint64(w))|
			specialLanes(binary.LittleEndian.Uint64(w[8:]))|
			specialLanes(binary.LittleEndian.Uint64(w[16:]))|
			specialLanes(binary.LittleEndian.Uint64(w[24:])) != 0 {
			break
		}
		i += 32
	}
	for i+8 <= len(b) {
		if m := specialLanes(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(b) && plainByte[b[i]] {
		i++
	}
	return i
}

// plainByte tells which bytes can appear in a string unescaped.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Byte-lane constants for specialLanes.
const (
	lanes01 = 0x0101010101010101
	lanes80 = 0x8080808080808080
)

// specialLanes returns, for eight string bytes read little-endian, a mask
// whose lowest set bit is the high bit of the first byte that ends a run of
// plain content: '"', '\\' or a control character below 0x20; or 0 if none
// does. A lane below n has its high bit set in (x - n·01…) &^ x. A borrow out
// of a lower matching lane can set a false bit above it, never below, so the
// lowest set bit is always a true match.
func specialLanes(x uint64) uint64 {
	q := x ^ (lanes01 * '"')
	bs := x ^ (lanes01 * '\\')
	return (((x - lanes01*0x20) &^ x) | ((q - lanes01) &^ q) | ((bs - lanes01) &^ bs)) & lanes80
}
