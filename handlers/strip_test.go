package handlers

import (
	"bytes"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"strings"
	"testing"
)

const chatStreamWithUsage = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
	"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n" +
	"data: [DONE]\n\n"

// strip runs a stream through a stripping tap, written in pieces split at
// the given points.
func strip(stream []byte, splits ...int) ([]byte, *responseTap) {
	tap := &responseTap{api: wire.ChatCompletions, strip: true}
	tap.start(200, sseHeader)
	var out bytes.Buffer
	last := 0
	for _, s := range append(splits, len(stream)) {
		s = min(max(s, last), len(stream))
		_ = tap.pass(stream[last:s], &out)
		last = s
	}
	tap.finish()
	tap.flush(&out)
	return out.Bytes(), tap
}

// TestUsageStripperAtEverySplit feeds the stream in two writes split at
// every byte, in every framing, and checks that exactly the usage chunk is
// left out while the tap still reads its usage.
func TestUsageStripperAtEverySplit(t *testing.T) {
	usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n"
	wants := framings(strings.Replace(chatStreamWithUsage, usage, "", 1))
	for framing, stream := range framings(chatStreamWithUsage) {
		want := wants[framing]
		for i := 0; i <= len(stream); i++ {
			got, tap := strip([]byte(stream), i)
			if string(got) != want {
				t.Fatalf("%s split at %d:\n got %q\nwant %q", framing, i, got, want)
			}
			if u := tap.progress.Usage; u.InputTokens != 9 || u.OutputTokens != 2 || !tap.progress.Done {
				t.Fatalf("%s split at %d: progress %+v", framing, i, tap.progress)
			}
		}
	}
}

// TestUsageStripperKeepsAnUnfinishedTail passes on bytes of an event whose
// blank line never came, so a cut stream reaches the client as it was.
func TestUsageStripperKeepsAnUnfinishedTail(t *testing.T) {
	in := "data: {\"choices\":[]}\n\ndata: {\"cho"
	if got, _ := strip([]byte(in)); string(got) != in {
		t.Fatalf("got %q", got)
	}
}

// TestUsageStripperPassesLargeEvents: an event too large to be a usage
// chunk is passed on as it arrives rather than held whole.
func TestUsageStripperPassesLargeEvents(t *testing.T) {
	big := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", 1<<20) + "\"}}]}\n\n"
	tap := &responseTap{api: wire.ChatCompletions, strip: true}
	tap.start(200, sseHeader)
	var out bytes.Buffer
	for i := 0; i < len(big)-1; i += 32 << 10 {
		_ = tap.pass([]byte(big[i:min(i+32<<10, len(big)-1)]), &out)
	}
	if out.Len() < len(big)-maxHeldEvent-32<<10 || len(tap.hold) > maxHeldEvent {
		t.Fatalf("%d of %d bytes passed, %d held, before the event's end", out.Len(), len(big), len(tap.hold))
	}
	_ = tap.pass([]byte(big[len(big)-1:]), &out)
	if out.String() != big {
		t.Fatal("the large event did not pass whole")
	}
}
