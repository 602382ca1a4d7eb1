package policy_test

// Benchmarks of the per-request decisions on the gateway's hot path.
//
//	go test -run '^$' -bench . -benchmem ./policy/

import (
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// messagesBody returns an Anthropic Messages request of about size bytes.
// With modelFirst the small fields lead, as the SDKs write them; otherwise
// they trail the conversation, the worst case for a reader that stops early.
func messagesBody(size int, modelFirst, stream bool) []byte {
	return testbody.Body{Size: size, Stream: stream, System: "You are a helpful assistant.", ModelLast: !modelFirst}.Bytes()
}

var readRequestSink policy.Request

func BenchmarkReadRequest(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KB", 1 << 10}, {"100KB", 100 << 10}} {
		for _, c := range []struct {
			name               string
			modelFirst, stream bool
		}{
			{"model_first", true, false},
			{"model_last", false, false},
		} {
			body := messagesBody(size.n, c.modelFirst, c.stream)
			b.Run(size.name+"/"+c.name, func(b *testing.B) {
				want := policy.ReadRequest(policy.Anthropic, policy.Messages, body)
				if want.Model != "claude-sonnet-4-5" {
					b.Fatalf("ReadRequest = %+v", want)
				}
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					readRequestSink = policy.ReadRequest(policy.Anthropic, policy.Messages, body)
				}
			})
		}
	}
}

func BenchmarkSetModel(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KB", 1 << 10}, {"100KB", 100 << 10}} {
		for _, first := range []bool{true, false} {
			name := size.name + "/model_first"
			if !first {
				name = size.name + "/model_last"
			}
			body := messagesBody(size.n, first, false)
			r := policy.ReadRequest(policy.Anthropic, policy.Messages, body)
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					fallback := r.Clone()
					fallback.SetModel("claude-haiku-4-5")
					if len(fallback.Body()) == 0 {
						b.Fatal("empty body")
					}
				}
			})
		}
	}
}

var usageSink policy.Usage

func BenchmarkUsageFromBody(b *testing.B) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 30)
	cases := []struct {
		name string
		d    policy.Dialect
		e    policy.Endpoint
		body string
	}{
		{"anthropic", policy.Anthropic, policy.Messages,
			`{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"` + text +
				`"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":503,"service_tier":"standard"}}`},
		{"openai_chat", policy.OpenAI, policy.ChatCompletions,
			`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"` + text +
				`","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}`},
		{"openai_responses", policy.OpenAI, policy.Responses,
			`{"id":"resp_67ccd3a9da748190baa7f1570fe91ac604becb25c8b7a","object":"response","created_at":1741476777,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4o-2024-08-06","output":[{"type":"message","id":"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c8b7a","status":"completed","role":"assistant","content":[{"type":"output_text","text":"` + text +
				`","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":0},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":380},"user":null,"metadata":{}}`},
	}
	for _, c := range cases {
		body := []byte(c.body)
		b.Run(c.name, func(b *testing.B) {
			if u := policy.UsageFromBody(c.d, c.e, body); u.InputTokens == 0 || u.OutputTokens == 0 || u.StopReason == "" {
				b.Fatalf("UsageFromBody = %+v", u)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				usageSink = policy.UsageFromBody(c.d, c.e, body)
			}
		})
	}
}
