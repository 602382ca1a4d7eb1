package body_test

// Benchmarks of the per-request decisions on the gateway's hot path.
//
//	go test -run '^$' -bench . -benchmem ./policy/body/

import (
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// messagesBody returns an Anthropic Messages request of about size bytes.
// With modelFirst the small fields lead, as the SDKs write them; otherwise
// they trail the conversation, the worst case for a reader that stops early.
func messagesBody(size int, modelFirst, stream bool) []byte {
	return testbody.Body{Size: size, Stream: stream, System: "You are a helpful assistant.", ModelLast: !modelFirst}.Bytes()
}

var readRequestSink body.Request

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
			raw := messagesBody(size.n, c.modelFirst, c.stream)
			b.Run(size.name+"/"+c.name, func(b *testing.B) {
				want := body.Read(raw, wire.Messages.WalkContent())
				if want.Model != "claude-sonnet-4-5" {
					b.Fatalf("Read = %+v", want)
				}
				b.SetBytes(int64(len(raw)))
				b.ReportAllocs()
				for b.Loop() {
					readRequestSink = body.Read(raw, wire.Messages.WalkContent())
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
			raw := messagesBody(size.n, first, false)
			r := body.Read(raw, wire.Messages.WalkContent())
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
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
