package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
)

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
			api  API
			body string
		}{
			{Messages, fmt.Sprintf(`{"usage":{"input_tokens":%s,"cache_creation_input_tokens":%s,"cache_read_input_tokens":%s,"output_tokens":%s}}`, in, cacheWrite, cacheRead, out)},
			{ChatCompletions, fmt.Sprintf(`{"usage":{"prompt_tokens":%s,"completion_tokens":%s}}`, in, out)},
			{Responses, fmt.Sprintf(`{"usage":{"input_tokens":%s,"output_tokens":%s}}`, in, out)},
		}
		for _, b := range bodies {
			u := bodyUsage(b.api, []byte(b.body))
			if u.InputTokens < 0 || u.OutputTokens < 0 {
				t.Fatalf("%s: usage %+v is negative", b.body, u)
			}
			if tokens.Add(u.InputTokens, u.OutputTokens) < 0 {
				t.Fatalf("%s: usage %+v sums below zero", b.body, u)
			}
		}
		// A stream's usage, as its events' fields give it.
		var s StreamProgress
		num := func(v string) jsonread.Value { return jsonread.Value{Kind: jsonread.Number, Text: []byte(v)} }
		addAnthropicUsage(&s.Usage, []jsonread.Value{num(in), num(cacheWrite), num(cacheRead), num(out)})
		if !json.Valid([]byte(in)) || !json.Valid([]byte(cacheWrite)) || !json.Valid([]byte(cacheRead)) {
			return
		}
		if a, b, c := s.InputTokens, num(in).Int(), num(cacheWrite).Int(); a < 0 && b >= 0 && c >= 0 && num(cacheRead).Int() >= 0 {
			t.Fatalf("stream input tokens %d from %s, %s and %s wrapped below zero", a, in, cacheWrite, cacheRead)
		}
	})
}

// bodyUsage reads a whole successful response body as the gateway does,
// and returns its usage; a body that is not one JSON value has none.
func bodyUsage(api API, b []byte) Usage { return readUsage(new(jsonread.Reader), api, b) }

// readUsage is bodyUsage with a reader to reuse, as the gateway pools them.
func readUsage(r *jsonread.Reader, api API, b []byte) Usage {
	r.Reset(api.BodyPaths())
	r.Feed(b)
	if !r.End() {
		return Usage{}
	}
	var buf [16]jsonread.Value
	return api.BodyUsage(r.Values(buf[:0]))
}

var usageSink Usage

// BenchmarkBodyUsage measures reading the usage of a whole response body,
// as the gateway does while the body passes.
func BenchmarkBodyUsage(b *testing.B) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 30)
	cases := []struct {
		name string
		api  API
		body string
	}{
		{"anthropic", Messages,
			`{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"` + text +
				`"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":503,"service_tier":"standard"}}`},
		{"openai_chat", ChatCompletions,
			`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"` + text +
				`","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}`},
		{"openai_responses", Responses,
			`{"id":"resp_67ccd3a9da748190baa7f1570fe91ac604becb25c8b7a","object":"response","created_at":1741476777,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4o-2024-08-06","output":[{"type":"message","id":"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c8b7a","status":"completed","role":"assistant","content":[{"type":"output_text","text":"` + text +
				`","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":0},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":380},"user":null,"metadata":{}}`},
	}
	for _, c := range cases {
		body := []byte(c.body)
		b.Run(c.name, func(b *testing.B) {
			if u := bodyUsage(c.api, body); u.InputTokens == 0 || u.OutputTokens == 0 || u.StopReason == "" {
				b.Fatalf("BodyUsage = %+v", u)
			}
			var r jsonread.Reader
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				usageSink = readUsage(&r, c.api, body)
			}
		})
	}
}
