package sse

import (
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"testing"
)

// discard counts events and keeps nothing.
type discard struct{ n int }

func (d *discard) Boundary(_ int, ev *wire.StreamEvent) {
	if ev != nil {
		d.n++
	}
}

// BenchmarkParser is the parser's cost per event of the kinds that
// dominate each API's streams, fed one event per write as reverse_proxy
// passes them on.
func BenchmarkParser(b *testing.B) {
	for _, c := range []struct{ name, api, event string }{
		{"anthropic/content_block_delta", "anthropic", "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" jumps over\"}}\n\n"},
		{"anthropic/message_start", "anthropic", "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":2095,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n"},
		{"openai_chat/delta", "chat", "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_fc9f1d7035\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" jumps over\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"},
		{"openai_responses/delta", "responses", "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":12,\"item_id\":\"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c8b7a\",\"output_index\":0,\"content_index\":0,\"delta\":\" jumps over\",\"logprobs\":[]}\n\n"},
		{"openai_responses/delta_data_only", "responses", "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":12,\"item_id\":\"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c8b7a\",\"output_index\":0,\"content_index\":0,\"delta\":\" jumps over\",\"logprobs\":[]}\n\n"},
	} {
		b.Run(c.name, func(b *testing.B) {
			api := wire.Messages
			switch c.api {
			case "chat":
				api = wire.ChatCompletions
			case "responses":
				api = wire.Responses
			}
			var p Parser
			p.Reset(api)
			var sink discard
			ev := []byte(c.event)
			b.SetBytes(int64(len(ev)))
			b.ReportAllocs()
			for b.Loop() {
				p.Feed(ev, &sink)
			}
		})
	}
}
