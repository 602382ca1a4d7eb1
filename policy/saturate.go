package policy

import "math"

// SaturatingAdd adds two int64s, saturating at the bounds instead of
// wrapping. Token counts come from clients (an output cap of
// 9223372036854775807 is valid JSON) and upstreams (usage), and waits from
// upstream headers, so a sum of them must never wrap into a negative
// reservation, a counter that goes backwards, or an instant in the past.
func SaturatingAdd(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}
