package sse

import (
	"bytes"
	"fmt"
	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"runtime"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/handlers/sse/ssetest"
)

// collector records what the parser reports.
type collector struct {
	events []ssetest.Event
	blanks int
}

func (c *collector) Boundary(_ int, ev *wire.StreamEvent) {
	c.blanks++
	if ev != nil {
		c.events = append(c.events, ssetest.FromStream(ev))
	}
}

// apis are the field sets the gateway compiles.
var apis = map[string][]string{
	"anthropic": wire.Messages.StreamPaths().Strings(),
	"chat":      wire.ChatCompletions.StreamPaths().Strings(),
	"responses": wire.Responses.StreamPaths().Strings(),
}

// allData are rules that read the given paths from every event's data.
type allData struct{ paths *jsonread.Paths }

func (a allData) StreamPaths() *jsonread.Paths { return a.paths }
func (allData) ReadsData([]byte) bool          { return true }

// checkAgainstReference feeds stream split at the given points and
// compares what the parser found with the reference.
func checkAgainstReference(t *testing.T, stream []byte, splits ...int) {
	t.Helper()
	for name, paths := range apis {
		blocks := ssetest.Blocks(stream, paths)
		want := ssetest.Events(stream, paths)
		blanks := len(blocks)
		if len(blocks) > 0 && blocks[len(blocks)-1].Tail {
			blanks--
		}
		var p Parser
		p.Reset(allData{jsonread.Compile(paths...)})
		var got collector
		last := 0
		for _, s := range splits {
			s = min(max(s, last), len(stream))
			p.Feed(stream[last:s], &got)
			last = s
		}
		p.Feed(stream[last:], &got)
		if got.blanks != blanks {
			t.Fatalf("%s: %d blank lines, want %d in %q (split %v)", name, got.blanks, blanks, stream, splits)
		}
		if len(got.events) != len(want) {
			t.Fatalf("%s: %d events, want %d in %q (split %v)", name, len(got.events), len(want), stream, splits)
		}
		for i := range want {
			if !ssetest.Same(got.events[i], want[i]) {
				t.Fatalf("%s: event %d of %q (split %v)\n got %s\nwant %s", name, i, stream, splits, show(got.events[i]), show(want[i]))
			}
		}
	}
}

func show(e ssetest.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "named=%v name=%q json=%v head=%q", e.Named, e.Name, e.JSON, e.Head)
	for i, f := range e.Fields {
		if f.Kind != jsonread.Absent {
			fmt.Fprintf(&b, " [%d kind=%d len=%d text=%q]", i, f.Kind, f.Len, f.Text)
		}
	}
	return b.String()
}

// streams are seeds: each API's events in every framing the standard
// allows, and the JSON corner cases.
var streams = []string{
	"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\\"there\\\" \\u00e9\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\r\n\r\n" +
		"data: [DONE]\r\n\r\n",
	"data: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\"}}\r\r" +
		": keep-alive\r" + "id: 7\rretry: 1000\r" +
		"data: {\"type\":\"response.completed\",\r" + "data: \"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":76,\"output_tokens\":73}}}\r\r",
	"\xEF\xBB\xBFevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
	"data: {\"error\":{\"message\":\"x\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
	"data:{\"type\":\"x\",\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"rate_limit_exceeded\"}}}\n\n",
	"data\n\nevent\n\nevent:\ndata: 1\n\ndata: -0.5e+3\n\ndata: 01\n\ndata: [1,2,]\n\ndata: {\"a\":1}\ndata: {\"b\":2}\n\n",
	"data: {\"\\u0074ype\":\"error\",\"code\":\"\\ud800\"}\n\nevent: " + strings.Repeat("x", 300) + "\ndata: {}\n\n",
	"data: {\"choices\":{\"0\":{\"finish_reason\":\"stop\"}},\"usage\":{\"prompt_tokens\":1e2}}\n\ndata: {\"choices\":[1,[],{}],\"usage\":[]}\n\n",
	"data: \"" + strings.Repeat("y", 400) + "\"\n\ndata: {\"type\":\"" + strings.Repeat("z", 300) + "\"}\n\n",
	"data: [[[[[[[[[[{\"a\":[{\"type\":1}]}]]]]]]]]]]\n\ndata: {\"type\":\"a\"} x\n\ndata: {\"type\":\"a\"\n\n",
	"data: {\"type\":\"ok\"}\n\ndata: {\"type\":\"unfinished\"}\n",
}

// TestParserMatchesReference splits every seed stream at every point, at
// pairs of points on a grid, and into single bytes.
func TestParserMatchesReference(t *testing.T) {
	for _, s := range streams {
		stream := []byte(s)
		for i := 0; i <= len(stream); i++ {
			checkAgainstReference(t, stream, i)
		}
		step := max(1, len(stream)/12)
		for i := 0; i <= len(stream); i += step {
			for j := i + 1; j <= len(stream); j += step {
				checkAgainstReference(t, stream, i, j)
			}
		}
		checkAgainstReference(t, stream, makeRange(len(stream))...) // a byte at a time
	}
}

func makeRange(n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = i
	}
	return r
}

// FuzzParser compares the parser with the reference on arbitrary bytes
// split at two arbitrary points. Work per input is linear in its size.
func FuzzParser(f *testing.F) {
	for _, s := range streams {
		f.Add([]byte(s), uint16(7), uint16(40))
	}
	f.Fuzz(func(t *testing.T, stream []byte, a, b uint16) {
		if len(stream) > 1<<16 {
			return
		}
		checkAgainstReference(t, stream, int(a)%(len(stream)+1), int(b)%(len(stream)+1))
	})
}

// TestParserDepthLimit: data nested past encoding/json's limit is not
// JSON, and the parser's memory for it stays a bit per level.
func TestParserDepthLimit(t *testing.T) {
	for _, depth := range []int{jsonread.MaxDepth, jsonread.MaxDepth + 1} {
		data := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		checkAgainstReference(t, []byte("data: "+data+"\n\n"), 3, 5000, 15000)
	}
}

// TestParserBoundedMemory feeds one event of 32 MiB in one line, as
// reverse_proxy passes it on (32 KiB at a time), and checks the event is
// judged while the parser keeps only a few kilobytes.
func TestParserBoundedMemory(t *testing.T) {
	var text bytes.Buffer
	text.WriteString(`data: {"type":"response.completed","response":{"output":[{"type":"message","content":[{"type":"output_text","text":"`)
	for text.Len() < 32<<20 {
		text.WriteString("lorem ipsum dolor sit amet \\\"quoted\\\" ")
	}
	text.WriteString(`"}]}],"status":"completed","usage":{"input_tokens":76,"output_tokens":73}}}` + "\n\n")
	stream := text.Bytes()
	fields := allData{jsonread.Compile(apis["responses"]...)}
	var got collector
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var p Parser
	p.Reset(fields)
	for i := 0; i < len(stream); i += 32 << 10 {
		p.Feed(stream[i:min(i+32<<10, len(stream))], &got)
	}
	runtime.ReadMemStats(&after)
	if len(got.events) != 1 || !got.events[0].JSON {
		t.Fatalf("events %v, want the one complete event", got.events)
	}
	var progress wire.StreamProgress
	progress.Observe(wire.Responses, ssetest.ToStream(got.events[0]))
	if !progress.Done || progress.InputTokens != 76 || progress.OutputTokens != 73 {
		t.Errorf("progress %+v, want done with usage 76/73", progress)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("following one 32 MiB event allocated %d bytes", n)
	}
}
