package tokens

import (
	"math"
	bigmath "math/big"
	"testing"
)

// FuzzSaturatingAdd compares Add with exact arithmetic.
func FuzzSaturatingAdd(f *testing.F) {
	f.Add(int64(math.MaxInt64), int64(1))
	f.Add(int64(math.MinInt64), int64(-1))
	f.Add(int64(1000), int64(math.MaxInt64))
	f.Add(int64(-5), int64(7))
	f.Fuzz(func(t *testing.T, a, b int64) {
		exact := new(bigmath.Int).Add(bigmath.NewInt(a), bigmath.NewInt(b))
		want := exact
		if exact.Cmp(bigmath.NewInt(math.MaxInt64)) > 0 {
			want = bigmath.NewInt(math.MaxInt64)
		} else if exact.Cmp(bigmath.NewInt(math.MinInt64)) < 0 {
			want = bigmath.NewInt(math.MinInt64)
		}
		if got := Add(a, b); got != want.Int64() {
			t.Fatalf("Add(%d, %d) = %d, want %s", a, b, got, want)
		}
	})
}
