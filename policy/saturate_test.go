package policy

import (
	"encoding/json"
	"fmt"
	"math"
	bigmath "math/big"
	"testing"
)

// FuzzSaturatingAdd compares SaturatingAdd with exact arithmetic.
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
		if got := SaturatingAdd(a, b); got != want.Int64() {
			t.Fatalf("SaturatingAdd(%d, %d) = %d, want %s", a, b, got, want)
		}
	})
}

// FuzzUsageCounts feeds any numbers an upstream might send as usage, in
// every dialect's shape, and checks that the counts read are never
// negative and that a sum of them never wraps: a hostile or broken upstream
// must not make a token counter go backwards.
func FuzzUsageCounts(f *testing.F) {
	f.Add("9223372036854775807", "1", "1", "1e30")
	f.Add("-5", "3", "2e400", "18446744073709551616")
	f.Add("100", "200", "300", "400")
	f.Fuzz(func(t *testing.T, in, cacheWrite, cacheRead, out string) {
		bodies := []struct {
			d    Dialect
			e    Endpoint
			body string
		}{
			{Anthropic, Messages, fmt.Sprintf(`{"usage":{"input_tokens":%s,"cache_creation_input_tokens":%s,"cache_read_input_tokens":%s,"output_tokens":%s}}`, in, cacheWrite, cacheRead, out)},
			{OpenAI, ChatCompletions, fmt.Sprintf(`{"usage":{"prompt_tokens":%s,"completion_tokens":%s}}`, in, out)},
			{OpenAI, Responses, fmt.Sprintf(`{"usage":{"input_tokens":%s,"output_tokens":%s}}`, in, out)},
		}
		for _, b := range bodies {
			u := UsageFromBody(b.d, b.e, []byte(b.body))
			if u.InputTokens < 0 || u.OutputTokens < 0 {
				t.Fatalf("%s: usage %+v is negative", b.body, u)
			}
			if SaturatingAdd(u.InputTokens, u.OutputTokens) < 0 {
				t.Fatalf("%s: usage %+v sums below zero", b.body, u)
			}
		}
		// A stream's usage, as its events' fields give it.
		var s StreamProgress
		num := func(v string) JSONValue { return JSONValue{Kind: JSONNumber, Text: []byte(v)} }
		s.addAnthropicUsage([]JSONValue{num(in), num(cacheWrite), num(cacheRead), num(out)})
		if !json.Valid([]byte(in)) || !json.Valid([]byte(cacheWrite)) || !json.Valid([]byte(cacheRead)) {
			return
		}
		if a, b, c := s.InputTokens, num(in).Int(), num(cacheWrite).Int(); a < 0 && b >= 0 && c >= 0 && num(cacheRead).Int() >= 0 {
			t.Fatalf("stream input tokens %d from %s, %s and %s wrapped below zero", a, in, cacheWrite, cacheRead)
		}
	})
}
