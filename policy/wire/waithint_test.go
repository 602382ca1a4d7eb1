package wire

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testNow is the moment of a real Anthropic response (anthropicCapture),
// whose resets are 12:40:59Z and 12:41:00Z.
var testNow = time.Date(2025, 8, 21, 12, 40, 0, 0, time.UTC)

func TestWaitHint(t *testing.T) {
	future := testNow.Add(90 * time.Second)
	past := testNow.Add(-time.Hour)
	anthropicExhausted := []string{
		"anthropic-ratelimit-requests-remaining", "0",
		"anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z",
	}
	openAIExhausted := []string{
		"x-ratelimit-remaining-tokens", "0",
		"x-ratelimit-reset-tokens", "6m0s",
	}
	with := func(base []string, kv ...string) []string { return append(append([]string{}, base...), kv...) }

	tests := []headerCase{
		{"nothing", openAIAPIs, nil, 0, false},
		{"nothing anthropic", anthropicAPIs, nil, 0, false},

		{"ms integer", openAIAPIs, []string{"retry-after-ms", "50"}, 50 * time.Millisecond, true},
		{"ms fraction", openAIAPIs, []string{"retry-after-ms", "50.5"}, 50500 * time.Microsecond, true},
		{"ms sub-nanosecond rounds", openAIAPIs, []string{"retry-after-ms", "0.0000004"}, 0, true},
		{"ms zero", openAIAPIs, []string{"retry-after-ms", "0"}, 0, true},
		{"ms large", openAIAPIs, []string{"retry-after-ms", "120000"}, 2 * time.Minute, true},
		{"ms padded", openAIAPIs, []string{"retry-after-ms", " 200 "}, 200 * time.Millisecond, true},
		{"ms leading dot", openAIAPIs, []string{"retry-after-ms", ".5"}, 500 * time.Microsecond, true},
		{"ms trailing dot", openAIAPIs, []string{"retry-after-ms", "7."}, 7 * time.Millisecond, true},
		{"ms negative", openAIAPIs, []string{"retry-after-ms", "-5"}, 0, false},
		{"ms plus sign", openAIAPIs, []string{"retry-after-ms", "+5"}, 0, false},
		{"ms exponent", openAIAPIs, []string{"retry-after-ms", "1e3"}, 0, false},
		{"ms hex float", openAIAPIs, []string{"retry-after-ms", "0x1p3"}, 0, false},
		{"ms NaN", openAIAPIs, []string{"retry-after-ms", "NaN"}, 0, false},
		{"ms Inf", openAIAPIs, []string{"retry-after-ms", "Inf"}, 0, false},
		{"ms two dots", openAIAPIs, []string{"retry-after-ms", "1.2.3"}, 0, false},
		{"ms lone dot", openAIAPIs, []string{"retry-after-ms", "."}, 0, false},
		{"ms unit suffix", openAIAPIs, []string{"retry-after-ms", "50ms"}, 0, false},
		{"ms underscore", openAIAPIs, []string{"retry-after-ms", "1_000"}, 0, false},
		{"ms garbage", openAIAPIs, []string{"retry-after-ms", "soon"}, 0, false},
		{"ms empty", openAIAPIs, []string{"retry-after-ms", ""}, 0, false},
		{"ms overflow saturates", openAIAPIs, []string{"retry-after-ms", "99999999999999999999"}, math.MaxInt64, true},
		{"ms beyond float64 saturates", openAIAPIs, []string{"retry-after-ms", strings.Repeat("9", 400)}, math.MaxInt64, true},

		{"seconds integer", anthropicAPIs, []string{"retry-after", "37"}, 37 * time.Second, true},
		{"seconds one", anthropicAPIs, []string{"retry-after", "1"}, time.Second, true},
		{"seconds zero", anthropicAPIs, []string{"retry-after", "0"}, 0, true},
		{"seconds decimal", openAIAPIs, []string{"retry-after", "1.5"}, 1500 * time.Millisecond, true},
		{"seconds decimal exact", openAIAPIs, []string{"retry-after", "7.66"}, 7660 * time.Millisecond, true},
		{"seconds hour", openAIAPIs, []string{"retry-after", "3600"}, time.Hour, true},
		{"seconds negative", openAIAPIs, []string{"retry-after", "-1"}, 0, false},
		{"seconds garbage", openAIAPIs, []string{"retry-after", "later"}, 0, false},
		{"seconds exponent", openAIAPIs, []string{"retry-after", "1e2"}, 0, false},
		{"seconds last fitting", openAIAPIs, []string{"retry-after", "9223372036"}, 9223372036 * time.Second, true},
		{"seconds overflow saturates", openAIAPIs, []string{"retry-after", "9223372037"}, math.MaxInt64, true},
		{"seconds issue example saturates", anthropicAPIs, []string{"retry-after", "99999999999999999999"}, math.MaxInt64, true},
		{"seconds huge saturates", openAIAPIs, []string{"retry-after", strings.Repeat("9", 400)}, math.MaxInt64, true},
		{"huge ms saturates before seconds", openAIAPIs, []string{"retry-after-ms", "99999999999999999999", "retry-after", "1"}, math.MaxInt64, true},

		{"date future IMF-fixdate", openAIAPIs, []string{"retry-after", future.Format(http.TimeFormat)}, 90 * time.Second, true},
		{"date future RFC 850", openAIAPIs, []string{"retry-after", future.Format(time.RFC850)}, 90 * time.Second, true},
		{"date future asctime", openAIAPIs, []string{"retry-after", future.Format(time.ANSIC)}, 90 * time.Second, true},
		{"date padded", openAIAPIs, []string{"retry-after", " " + future.Format(http.TimeFormat) + " "}, 90 * time.Second, true},
		{"date now", openAIAPIs, []string{"retry-after", testNow.Format(http.TimeFormat)}, 0, true},
		{"date past", openAIAPIs, []string{"retry-after", past.Format(http.TimeFormat)}, 0, true},
		{"date far future saturates", openAIAPIs, []string{"retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"}, math.MaxInt64, true},
		{"date garbage", openAIAPIs, []string{"retry-after", "Thu, 32 Aug 2025 12:41:30 GMT"}, 0, false},
		{"date RFC 3339 is not an HTTP-date", openAIAPIs, []string{"retry-after", "2025-08-21T12:41:30Z"}, 0, false},

		{"ms beats seconds", openAIAPIs, []string{"retry-after-ms", "250", "retry-after", "3"}, 250 * time.Millisecond, true},
		{"ms zero beats seconds", openAIAPIs, []string{"retry-after-ms", "0", "retry-after", "3"}, 0, true},
		{"ms beats date", openAIAPIs, []string{"retry-after-ms", "250", "retry-after", future.Format(http.TimeFormat)}, 250 * time.Millisecond, true},
		{"bad ms falls to seconds", openAIAPIs, []string{"retry-after-ms", "abc", "retry-after", "3"}, 3 * time.Second, true},
		{"negative ms falls to seconds", openAIAPIs, []string{"retry-after-ms", "-250", "retry-after", "3"}, 3 * time.Second, true},
		{"bad ms falls to date", openAIAPIs, []string{"retry-after-ms", "x", "retry-after", future.Format(http.TimeFormat)}, 90 * time.Second, true},
		{"ms beats reset", openAIAPIs, with(openAIExhausted, "retry-after-ms", "250"), 250 * time.Millisecond, true},
		{"seconds beat reset", openAIAPIs, with(openAIExhausted, "retry-after", "3"), 3 * time.Second, true},
		{"seconds beat anthropic reset", anthropicAPIs, with(anthropicExhausted, "retry-after", "3"), 3 * time.Second, true},
		{"bad seconds fall to reset", openAIAPIs, with(openAIExhausted, "retry-after", "soon"), 6 * time.Minute, true},
		{"bad both fall to reset", anthropicAPIs, with(anthropicExhausted, "retry-after-ms", "-1", "retry-after", "-1"), 59 * time.Second, true},
		{"reset alone openai", openAIAPIs, openAIExhausted, 6 * time.Minute, true},
		{"reset alone anthropic", anthropicAPIs, anthropicExhausted, 59 * time.Second, true},
		{"other dialect's reset ignored", anthropicAPIs, openAIExhausted, 0, false},
		{"passthrough reads retry-after", []API{Passthrough}, []string{"retry-after", "2"}, 2 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, api := range tt.apis {
				got, ok := WaitHint(api, hdr(tt.kv...), testNow)
				if got != tt.want || ok != tt.ok {
					t.Errorf("WaitHint(%s, %q) = %v, %v; want %v, %v", api.Name(), tt.kv, got, ok, tt.want, tt.ok)
				}
			}
		})
	}
}

// anthropicAPIs and openAIAPIs are the APIs that share each provider's
// headers.
var (
	anthropicAPIs = []API{Messages}
	openAIAPIs    = []API{ChatCompletions, Responses, Completions, Embeddings}
)

func TestWaitHintFirstValueWins(t *testing.T) {
	h := http.Header{"Retry-After": {"2", "30"}}
	if got, ok := WaitHint(ChatCompletions, h, testNow); got != 2*time.Second || !ok {
		t.Errorf("WaitHint with retry-after [2 30] = %v, %v; want 2s, true", got, ok)
	}
}

// anthropicCapture is the rate-limit header set of a real Anthropic
// response (https://docs.anthropic.com/en/api/rate-limits#response-headers),
// with every window's remaining set by the caller.
func anthropicCapture(requests, tokens, input, output string) http.Header {
	return hdr(
		"request-id", "req_011CSLsW7mFqvHHnzrKdKjAE",
		"anthropic-ratelimit-requests-limit", "1000",
		"anthropic-ratelimit-requests-remaining", requests,
		"anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z",
		"anthropic-ratelimit-tokens-limit", "96000",
		"anthropic-ratelimit-tokens-remaining", tokens,
		"anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:59Z",
		"anthropic-ratelimit-input-tokens-limit", "80000",
		"anthropic-ratelimit-input-tokens-remaining", input,
		"anthropic-ratelimit-input-tokens-reset", "2025-08-21T12:40:59Z",
		"anthropic-ratelimit-output-tokens-limit", "16000",
		"anthropic-ratelimit-output-tokens-remaining", output,
		"anthropic-ratelimit-output-tokens-reset", "2025-08-21T12:41:00Z",
	)
}

func TestRateLimitResetAnthropicCapture(t *testing.T) {
	tests := []struct {
		name                            string
		requests, tokens, input, output string
		want                            time.Duration
		ok                              bool
	}{
		{"nothing exhausted", "999", "96000", "80000", "16000", 0, false},
		{"one remaining is not exhausted", "1", "1", "1", "1", 0, false},
		{"requests exhausted", "0", "96000", "80000", "16000", 59 * time.Second, true},
		{"tokens exhausted", "999", "0", "80000", "16000", 59 * time.Second, true},
		{"input tokens exhausted", "999", "96000", "0", "16000", 59 * time.Second, true},
		{"output tokens exhausted", "999", "96000", "80000", "0", time.Minute, true},
		{"longest exhausted window wins", "0", "0", "0", "0", time.Minute, true},
		{"longest wins regardless of order", "999", "0", "80000", "0", time.Minute, true},
		{"zeros only", "00", "96000", "80000", "16000", 59 * time.Second, true},
		{"padded zero", " 0 ", "96000", "80000", "16000", 59 * time.Second, true},
		{"negative remaining is not zero", "-1", "96000", "80000", "16000", 0, false},
		{"signed zero is not a count", "-0", "96000", "80000", "16000", 0, false},
		{"decimal zero is not a count", "0.0", "96000", "80000", "16000", 0, false},
		{"garbage remaining", "none", "x", "", " ", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := anthropicCapture(tt.requests, tt.tokens, tt.input, tt.output)
			got, ok := Messages.RateLimitReset(h, testNow)
			if got != tt.want || ok != tt.ok {
				t.Errorf("RateLimitReset = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
			// The same headers mean nothing to the OpenAI APIs.
			for _, api := range openAIAPIs {
				if got, ok := api.RateLimitReset(h, testNow); ok || got != 0 {
					t.Errorf("%s RateLimitReset on Anthropic headers = %v, %v", api.Name(), got, ok)
				}
			}
		})
	}
}

func TestRateLimitReset(t *testing.T) {
	const (
		aReqRem = "anthropic-ratelimit-requests-remaining"
		aReqRst = "anthropic-ratelimit-requests-reset"
		aTokRem = "anthropic-ratelimit-tokens-remaining"
		aTokRst = "anthropic-ratelimit-tokens-reset"
		oReqRem = "x-ratelimit-remaining-requests"
		oReqRst = "x-ratelimit-reset-requests"
		oTokRem = "x-ratelimit-remaining-tokens"
		oTokRst = "x-ratelimit-reset-tokens"
	)
	tests := []headerCase{
		{"anthropic nothing", anthropicAPIs, nil, 0, false},
		{"anthropic reset without remaining", anthropicAPIs, []string{aReqRst, "2025-08-21T12:40:59Z"}, 0, false},
		{"anthropic remaining without reset", anthropicAPIs, []string{aReqRem, "0"}, 0, false},
		{"anthropic past reset", anthropicAPIs, []string{aReqRem, "0", aReqRst, "2025-08-21T12:39:00Z"}, 0, true},
		{"anthropic reset now", anthropicAPIs, []string{aReqRem, "0", aReqRst, "2025-08-21T12:40:00Z"}, 0, true},
		{"anthropic fractional reset", anthropicAPIs, []string{aReqRem, "0", aReqRst, "2025-08-21T12:40:30.5Z"}, 30500 * time.Millisecond, true},
		{"anthropic offset reset", anthropicAPIs, []string{aReqRem, "0", aReqRst, "2025-08-21T14:41:00+02:00"}, time.Minute, true},
		{"anthropic padded reset", anthropicAPIs, []string{aReqRem, "0", aReqRst, " 2025-08-21T12:40:10Z "}, 10 * time.Second, true},
		{"anthropic garbage reset", anthropicAPIs, []string{aReqRem, "0", aReqRst, "in a minute"}, 0, false},
		{"anthropic duration reset is not RFC 3339", anthropicAPIs, []string{aReqRem, "0", aReqRst, "59s"}, 0, false},
		{"anthropic HTTP-date reset is not RFC 3339", anthropicAPIs, []string{aReqRem, "0", aReqRst, "Thu, 21 Aug 2025 12:40:59 GMT"}, 0, false},
		{"anthropic garbage reset skipped for a good one", anthropicAPIs, []string{aReqRem, "0", aReqRst, "x", aTokRem, "0", aTokRst, "2025-08-21T12:40:05Z"}, 5 * time.Second, true},
		{"anthropic non-exhausted longer window ignored", anthropicAPIs, []string{aReqRem, "0", aReqRst, "2025-08-21T12:40:05Z", aTokRem, "5", aTokRst, "2025-08-21T12:45:00Z"}, 5 * time.Second, true},
		{"anthropic longest first", anthropicAPIs, []string{aReqRem, "0", aReqRst, "2025-08-21T12:41:00Z", aTokRem, "0", aTokRst, "2025-08-21T12:40:07Z"}, time.Minute, true},
		{"anthropic past and future take the future", anthropicAPIs, []string{aReqRem, "0", aReqRst, "2025-08-21T12:00:00Z", aTokRem, "0", aTokRst, "2025-08-21T12:40:07Z"}, 7 * time.Second, true},

		{"openai nothing", openAIAPIs, nil, 0, false},
		{"openai capture not exhausted", openAIAPIs, []string{oReqRem, "4999", oReqRst, "12ms", oTokRem, "159976", oTokRst, "9ms"}, 0, false},
		{"openai requests 1s", openAIAPIs, []string{oReqRem, "0", oReqRst, "1s"}, time.Second, true},
		{"openai tokens 6m0s", openAIAPIs, []string{oTokRem, "0", oTokRst, "6m0s"}, 6 * time.Minute, true},
		{"openai 20ms", openAIAPIs, []string{oTokRem, "0", oTokRst, "20ms"}, 20 * time.Millisecond, true},
		{"openai 12ms", openAIAPIs, []string{oReqRem, "0", oReqRst, "12ms"}, 12 * time.Millisecond, true},
		{"openai 1h2m3.5s", openAIAPIs, []string{oReqRem, "0", oReqRst, "1h2m3.5s"}, time.Hour + 2*time.Minute + 3500*time.Millisecond, true},
		{"openai 2m59.56s", openAIAPIs, []string{oReqRem, "0", oReqRst, "2m59.56s"}, 2*time.Minute + 59560*time.Millisecond, true},
		{"openai 0.5s", openAIAPIs, []string{oReqRem, "0", oReqRst, "0.5s"}, 500 * time.Millisecond, true},
		{"openai 7.66s", openAIAPIs, []string{oReqRem, "0", oReqRst, "7.66s"}, 7660 * time.Millisecond, true},
		{"openai 0s", openAIAPIs, []string{oReqRem, "0", oReqRst, "0s"}, 0, true},
		{"openai both exhausted take the longest", openAIAPIs, []string{oReqRem, "0", oReqRst, "12ms", oTokRem, "0", oTokRst, "6m0s"}, 6 * time.Minute, true},
		{"openai longest first", openAIAPIs, []string{oReqRem, "0", oReqRst, "6m0s", oTokRem, "0", oTokRst, "12ms"}, 6 * time.Minute, true},
		{"openai only the exhausted window counts", openAIAPIs, []string{oReqRem, "0", oReqRst, "12ms", oTokRem, "10", oTokRst, "6m0s"}, 12 * time.Millisecond, true},
		{"openai remaining missing", openAIAPIs, []string{oReqRst, "1s", oTokRst, "6m0s"}, 0, false},
		{"openai reset missing", openAIAPIs, []string{oReqRem, "0"}, 0, false},
		{"openai negative duration", openAIAPIs, []string{oReqRem, "0", oReqRst, "-1s"}, 0, false},
		{"openai garbage", openAIAPIs, []string{oReqRem, "0", oReqRst, "soon"}, 0, false},
		{"openai garbage skipped for a good one", openAIAPIs, []string{oReqRem, "0", oReqRst, "soon", oTokRem, "0", oTokRst, "3s"}, 3 * time.Second, true},
		{"azure integer seconds", openAIAPIs, []string{oTokRem, "0", oTokRst, "37"}, 37 * time.Second, true},
		{"azure zero", openAIAPIs, []string{oTokRem, "0", oTokRst, "0"}, 0, true},
		{"azure minus one is unknown", openAIAPIs, []string{oTokRem, "0", oTokRst, "-1"}, 0, false},
		{"azure minus one beside a real reset", openAIAPIs, []string{oReqRem, "0", oReqRst, "-1", oTokRem, "0", oTokRst, "4"}, 4 * time.Second, true},
		{"openai RFC 3339 is not a duration", openAIAPIs, []string{oReqRem, "0", oReqRst, "2025-08-21T12:40:59Z"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, api := range tt.apis {
				got, ok := api.RateLimitReset(hdr(tt.kv...), testNow)
				if got != tt.want || ok != tt.ok {
					t.Errorf("%s RateLimitReset(%q) = %v, %v; want %v, %v", api.Name(), tt.kv, got, ok, tt.want, tt.ok)
				}
			}
		})
	}
}

func TestParseOpenAIDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1s", time.Second, true},
		{"6m0s", 6 * time.Minute, true},
		{"20ms", 20 * time.Millisecond, true},
		{"12ms", 12 * time.Millisecond, true},
		{"9ms", 9 * time.Millisecond, true},
		{"1h2m3.5s", time.Hour + 2*time.Minute + 3500*time.Millisecond, true},
		{"1h2m3s", time.Hour + 2*time.Minute + 3*time.Second, true},
		{"2m59.56s", 2*time.Minute + 59560*time.Millisecond, true},
		{"0.5s", 500 * time.Millisecond, true},
		{".5s", 500 * time.Millisecond, true},
		{"7.66s", 7660 * time.Millisecond, true},
		{"0s", 0, true},
		{"0", 0, true},
		{"37", 37 * time.Second, true},
		{"1.5", 1500 * time.Millisecond, true},
		{" 37 ", 37 * time.Second, true},
		{" 6m0s ", 6 * time.Minute, true},
		{"1us", time.Microsecond, true},
		{"1µs", time.Microsecond, true},
		{"1ns", 1, true},
		{"2562047h47m16.854775807s", math.MaxInt64, true},
		{"2562048h", math.MaxInt64, true},
		{"9223372037", math.MaxInt64, true},
		{"99999999999999999999ms", math.MaxInt64, true},
		{"1h2562048h", math.MaxInt64, true},
		{"2562048x", 0, false},
		{"2562048hh", 0, false},
		{"-1", 0, false},
		{"-1s", 0, false},
		{"+1s", 0, false},
		{"-0s", 0, false},
		{"1d", 0, false},
		{"1h 2m", 0, false},
		{"s", 0, false},
		{"ms", 0, false},
		{".", 0, false},
		{"1e3", 0, false},
		{"1e3s", 0, false},
		{"NaN", 0, false},
		{"", 0, false},
		{"   ", 0, false},
		{"2025-08-21T12:40:59Z", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseOpenAIDuration(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseOpenAIDuration(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWaitHintAllocs(t *testing.T) {
	numeric := hdr("retry-after-ms", "250.5")
	openAI := hdr("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "1h2m3.5s",
		"x-ratelimit-remaining-tokens", "159976", "x-ratelimit-reset-tokens", "9ms")
	anthropic := anthropicCapture("999", "0", "80000", "16000")
	empty := http.Header{}
	for name, c := range map[string]struct {
		api API
		h   http.Header
	}{
		"retry-after-ms": {ChatCompletions, numeric},
		"openai reset":   {ChatCompletions, openAI},
		"anthropic":      {Messages, anthropic},
		"no headers":     {Messages, empty},
	} {
		if a := testing.AllocsPerRun(200, func() { WaitHint(c.api, c.h, testNow) }); a != 0 {
			t.Errorf("WaitHint(%s) allocates %v times per call, want 0", name, a)
		}
	}
}

// fuzzAPIs are the APIs a fuzz target picks from by a byte; the seeds name
// them by their index.
var fuzzAPIs = []API{Passthrough, Messages, ChatCompletions, Responses, Completions, Embeddings}

const (
	fuzzPassthrough = iota
	fuzzMessages
	fuzzChat
)

func FuzzWaitHint(f *testing.F) {
	// Real values, as Anthropic, OpenAI and Azure OpenAI send them.
	f.Add(uint8(fuzzMessages), "", "37", "0", "2025-08-21T12:40:59Z", int64(0))
	f.Add(uint8(fuzzMessages), "", "", "999", "2025-08-21T12:41:00Z", int64(0))
	f.Add(uint8(fuzzChat), "50", "1", "0", "6m0s", int64(0))
	f.Add(uint8(fuzzChat), "", "", "0", "12ms", int64(0))
	f.Add(uint8(fuzzChat), "", "", "0", "2m59.56s", int64(0))
	f.Add(uint8(fuzzChat), "", "", "0", "1h2m3s", int64(0))
	f.Add(uint8(fuzzChat), "37000", "37", "0", "37", int64(0))
	f.Add(uint8(fuzzChat), "", "", "0", "-1", int64(0))
	f.Add(uint8(fuzzChat), "-1", "-1", "-0", "-0s", int64(-1))
	f.Add(uint8(fuzzChat), "", "Thu, 21 Aug 2025 12:41:30 GMT", "", "", int64(0))
	f.Add(uint8(fuzzPassthrough), "1e309", "NaN", "0", "9999999999s", int64(math.MaxInt64))
	f.Add(uint8(fuzzMessages), "", "Fri, 31 Dec 9999 23:59:59 GMT", "0", "0001-01-01T00:00:00Z", int64(math.MinInt64))
	f.Add(uint8(fuzzMessages), "99999999999999999999", "99999999999999999999", "0", "99999999999h", int64(0))
	f.Fuzz(func(t *testing.T, d uint8, ms, secs, remaining, reset string, nowNanos int64) {
		now := time.Unix(0, nowNanos)
		h := hdr(
			"retry-after-ms", ms,
			"retry-after", secs,
			"anthropic-ratelimit-tokens-remaining", remaining,
			"anthropic-ratelimit-tokens-reset", reset,
			"x-ratelimit-remaining-tokens", remaining,
			"x-ratelimit-reset-tokens", reset,
		)
		api := fuzzAPIs[int(d)%len(fuzzAPIs)]
		w, ok := WaitHint(api, h, now)
		if w < 0 {
			t.Fatalf("WaitHint = %v, negative", w)
		}
		// Every hint parser saturates: digits alone are always a wait.
		if v := strings.TrimSpace(ms); v != "" && strings.Trim(v, "0123456789") == "" && !ok {
			t.Fatalf("retry-after-ms %q ignored", ms)
		}
		if !ok && w != 0 {
			t.Fatalf("WaitHint = %v, false; an unusable hint must be 0", w)
		}
		r, rok := api.RateLimitReset(h, now)
		if r < 0 || (!rok && r != 0) {
			t.Fatalf("RateLimitReset = %v, %v", r, rok)
		}
		// With no retry-after headers the hint is exactly the reset.
		h.Del("Retry-After-Ms")
		h.Del("Retry-After")
		if w2, ok2 := WaitHint(api, h, now); w2 != r || ok2 != rok {
			t.Fatalf("WaitHint without retry-after = %v, %v; RateLimitReset = %v, %v", w2, ok2, r, rok)
		}
	})
}

func FuzzParseOpenAIDuration(f *testing.F) {
	for _, s := range []string{
		"1s", "6m0s", "20ms", "12ms", "9ms", "1h2m3.5s", "1h2m3s", "2m59.56s", "0.5s",
		"7.66s", "0s", "37", "0", "-1", "1.5", "1µs", "2562047h47m16.854775807s", "+1s", ".", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseOpenAIDuration(s)
		if !ok {
			if d != 0 {
				t.Fatalf("parseOpenAIDuration(%q) = %v, false; want 0 on failure", s, d)
			}
		} else {
			if d < 0 {
				t.Fatalf("parseOpenAIDuration(%q) = %v, negative", s, d)
			}
			// Duration.String writes the same Go-style form OpenAI sends, so
			// every accepted value must survive the round trip.
			if back, ok := parseOpenAIDuration(d.String()); !ok || back != d {
				t.Fatalf("parseOpenAIDuration(%q) = %v, but its String %q parses to %v, %v", s, d, d.String(), back, ok)
			}
		}
		// A well-formed duration is never ignored, however long: it
		// saturates instead.
		if durationSyntax(strings.TrimSpace(s)) && !ok {
			t.Fatalf("parseOpenAIDuration(%q) ignored a well-formed duration", s)
		}
		// Differential check against the standard library for unit forms:
		// whatever it accepts without a sign, this parser must accept alike.
		v := strings.TrimSpace(s)
		if v == "" || v[0] == '-' || v[0] == '+' {
			return
		}
		if want, err := time.ParseDuration(v); err == nil {
			if !ok || d != want {
				t.Fatalf("parseOpenAIDuration(%q) = %v, %v; time.ParseDuration gives %v", s, d, ok, want)
			}
		}
	})
}

// headerCase is a response's headers, as name-value pairs, and the wait
// the APIs apis must read from them.
type headerCase struct {
	name string
	apis []API
	kv   []string
	want time.Duration
	ok   bool
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}
