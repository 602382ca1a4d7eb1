package sse

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// The reference: the WHATWG event-stream rules and RFC 8259 written out as
// plainly as possible, on the whole stream at once, with encoding/json
// reading the data. The parser must find exactly what it finds, however
// the stream is split.

// event is what the tests compare: the parts of a policy.StreamEvent, with
// the boundary that dispatched it.
type event struct {
	Named  bool
	Name   string
	JSON   bool
	Fields []policy.JSONValue
	Head   string
}

// referenceEvents parses a whole stream.
func referenceEvents(stream []byte, paths []string) (events []event, blanks int) {
	stream = bytes.TrimPrefix(stream, bom[:])
	var lines [][]byte
	for {
		i := bytes.IndexAny(stream, "\r\n")
		if i < 0 {
			break // an unfinished line at the end is discarded with its event
		}
		lines = append(lines, stream[:i])
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		stream = stream[i+1:]
	}
	var name, data []byte
	hasData := false
	for _, line := range lines {
		if len(line) == 0 {
			blanks++
			if hasData {
				events = append(events, referenceEvent(name, bytes.TrimSuffix(data, []byte("\n")), paths))
			}
			name, data, hasData = nil, nil, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			name = value
		case "data":
			data = append(append(data, value...), '\n')
			hasData = true
		}
	}
	return events, blanks
}

// referenceEvent reads one event's data.
func referenceEvent(name, data []byte, paths []string) event {
	ev := event{Named: len(name) > 0, JSON: json.Valid(data), Head: string(data[:min(len(data), headLen)])}
	if ev.Named && len(name) <= policy.MaxStreamText {
		ev.Name = string(name)
	}
	ev.Fields = make([]policy.JSONValue, len(paths))
	if !ev.JSON {
		return ev
	}
	for i, p := range paths {
		ev.Fields[i] = referenceValue(bytes.Trim(data, " \t\r\n"), strings.Split(p, "."))
	}
	return ev
}

// referenceValue finds the value at a path: a step of digits indexes an
// array, any other names a member (the last one, when it is given twice).
func referenceValue(raw json.RawMessage, steps []string) policy.JSONValue {
	for _, step := range steps {
		if index, err := strconv.Atoi(step); err == nil && strings.Trim(step, "0123456789") == "" {
			var elems []json.RawMessage
			if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil || index >= len(elems) {
				return policy.JSONValue{}
			}
			raw = elems[index]
			continue
		}
		var members map[string]json.RawMessage
		if raw[0] != '{' || json.Unmarshal(raw, &members) != nil {
			return policy.JSONValue{}
		}
		v, ok := members[step]
		if !ok {
			return policy.JSONValue{}
		}
		raw = v
	}
	var v policy.JSONValue
	switch raw[0] {
	case 'n':
		v.Kind = policy.JSONNull
	case 't':
		v.Kind = policy.JSONTrue
	case 'f':
		v.Kind = policy.JSONFalse
	case '{':
		v.Kind = policy.JSONObject
	case '[':
		v.Kind = policy.JSONArray
		var elems []json.RawMessage
		_ = json.Unmarshal(raw, &elems)
		v.Len = len(elems)
	case '"':
		v.Kind = policy.JSONString
		if len(raw)-2 <= policy.MaxStreamText {
			var s string
			_ = json.Unmarshal(raw, &s)
			v.Text = []byte(s)
		}
	default:
		v.Kind = policy.JSONNumber
		if len(raw) <= policy.MaxStreamText {
			v.Text = raw
		}
	}
	return v
}

// collector records what the parser reports.
type collector struct {
	events []event
	blanks int
}

func (c *collector) Boundary(_ int, ev *policy.StreamEvent) {
	c.blanks++
	if ev == nil {
		return
	}
	e := event{Named: ev.Named, Name: string(ev.Name), JSON: ev.JSON, Head: string(ev.Head)}
	for _, f := range ev.Fields {
		f.Text = bytes.Clone(f.Text)
		e.Fields = append(e.Fields, f)
	}
	c.events = append(c.events, e)
}

// apis are the field sets the gateway compiles.
var apis = map[string][]string{
	"anthropic": policy.StreamFields(policy.Anthropic, policy.Messages),
	"chat":      policy.StreamFields(policy.OpenAI, policy.ChatCompletions),
	"responses": policy.StreamFields(policy.OpenAI, policy.Responses),
}

// checkAgainstReference feeds stream split at the given points and
// compares what the parser found with the reference.
func checkAgainstReference(t *testing.T, stream []byte, splits ...int) {
	t.Helper()
	for name, paths := range apis {
		want, blanks := referenceEvents(stream, paths)
		var p Parser
		p.Reset(Compile(paths))
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
			if !sameEvent(got.events[i], want[i]) {
				t.Fatalf("%s: event %d of %q (split %v)\n got %s\nwant %s", name, i, stream, splits, show(got.events[i]), show(want[i]))
			}
		}
	}
}

func sameEvent(a, b event) bool {
	if a.Named != b.Named || a.Name != b.Name || a.JSON != b.JSON || a.Head != b.Head || len(a.Fields) != len(b.Fields) {
		return false
	}
	for i := range a.Fields {
		x, y := a.Fields[i], b.Fields[i]
		if x.Kind != y.Kind || x.Len != y.Len || !bytes.Equal(x.Text, y.Text) {
			return false
		}
	}
	return true
}

func show(e event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "named=%v name=%q json=%v head=%q", e.Named, e.Name, e.JSON, e.Head)
	for i, f := range e.Fields {
		if f.Kind != policy.JSONAbsent {
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

// TestParserMatchesReference splits every seed stream at every pair of
// points.
func TestParserMatchesReference(t *testing.T) {
	for _, s := range streams {
		stream := []byte(s)
		step := max(1, len(stream)/40)
		for i := 0; i <= len(stream); i += step {
			for j := i; j <= len(stream); j += step {
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
	for _, depth := range []int{maxDepth, maxDepth + 1} {
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
	fields := Compile(apis["responses"])
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
	var progress policy.StreamProgress
	ev := policy.StreamEvent{JSON: true, Fields: got.events[0].Fields}
	progress.Observe(policy.OpenAI, policy.Responses, &ev)
	if !progress.Done || progress.InputTokens != 76 || progress.OutputTokens != 73 {
		t.Errorf("progress %+v, want done with usage 76/73", progress)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("following one 32 MiB event allocated %d bytes", n)
	}
}
