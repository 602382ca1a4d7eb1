package handlers

import (
	"bytes"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/handlers/sse/ssetest"
)

// FuzzEventStream feeds arbitrary upstream bytes, split at two arbitrary
// points, through the stream tap of each API, stripping the Chat usage
// chunk, and compares with the reference parser: the tap must judge the
// stream as the reference's events say, and the stripper's output must be
// the input less exactly the blocks whose event is a usage-only chunk.
// Work per input is linear in its size.
func FuzzEventStream(f *testing.F) {
	f.Add([]byte(chatStreamWithUsage), uint16(10), uint16(90))
	f.Add([]byte(crlf(chatStreamWithUsage)), uint16(40), uint16(41))
	f.Add([]byte(cr(chatStreamWithUsage)), uint16(75), uint16(76))
	f.Add([]byte(anthropicStream), uint16(3), uint16(200))
	f.Add([]byte(cr(anthropicStream)), uint16(100), uint16(101))
	f.Add([]byte(dataOnlyResponses), uint16(50), uint16(51))
	f.Add([]byte("data: {\"choices\":[],\"usage\":{}}\r\n\r\ndata: [DONE]"), uint16(7), uint16(30))
	f.Add([]byte("event: error\ndata: {\"type\":\"error\"}\n\n\n\n:comment\nretry: 5\n"), uint16(0), uint16(1))
	f.Fuzz(func(t *testing.T, stream []byte, a, b uint16) {
		if len(stream) > 1<<16 {
			return
		}
		at, bt := int(a)%(len(stream)+1), int(b)%(len(stream)+1)
		for _, api := range []wire.API{wire.Messages, wire.ChatCompletions, wire.Responses} {
			tap := &responseTap{api: api, strip: api.WantsStreamUsage()}
			tap.start(200, sseHeader)
			var out bytes.Buffer
			_ = tap.pass(stream[:min(at, bt)], &out)
			_ = tap.pass(stream[min(at, bt):max(at, bt)], &out)
			_ = tap.pass(stream[max(at, bt):], &out)
			endStream(tap, &out)

			var want wire.StreamProgress
			var kept []byte
			for _, block := range ssetest.Blocks(stream, api.StreamPaths().Strings()) {
				drop := false
				if block.Event != nil {
					ev := ssetest.ToStream(*block.Event)
					// The tap passes over the data of an event whose name
					// needs none read, and loses the stream when a later
					// name needs it after all.
					ev.Unread = len(block.Event.DataName) > 0 && !api.ReadsData(block.Event.DataName) &&
						ev.Named && api.ReadsData(ev.Name)
					drop = tap.strip && !ev.Unread && api.UsageOnlyEvent(ev)
					want.Observe(api, ev)
				}
				if !drop && !(block.Tail && tap.incompleteStream()) {
					kept = append(kept, block.Bytes...)
				}
			}
			if tap.incompleteStream() {
				// Half an event gives way to the gateway's own.
				kept = append(kept, api.CutEvent(wire.CutIncomplete)...)
			}
			if tap.progress != want {
				t.Fatalf("%s: progress %+v, reference %+v", api.Name(), tap.progress, want)
			}
			if !bytes.Equal(out.Bytes(), kept) {
				t.Fatalf("%s: output\n%q\nwant\n%q", api.Name(), out.Bytes(), kept)
			}
			tap.release()
		}
	})
}
