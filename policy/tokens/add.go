package tokens

import "math"

// Add adds two token counts, saturating at the bounds instead of wrapping.
// Counts come from clients (an output cap of 9223372036854775807 is valid
// JSON) and upstreams (usage), so a sum of them must never wrap into a
// negative reservation or a counter that goes backwards.
func Add(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}
