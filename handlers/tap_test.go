package handlers

import (
	"bytes"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/handlers/sse/ssetest"
)

const anthropicStream = "event: message_start\n" +
	"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n" +
	"event: content_block_delta\n" +
	"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
	"event: message_delta\n" +
	"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
	"event: message_stop\n" +
	"data: {\"type\":\"message_stop\"}\n\n"

// dataOnlyResponses is a Responses stream as OpenAI-compatible upstreams
// send it: data lines only, the type in the JSON.
const dataOnlyResponses = "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"status\":\"in_progress\"}}\n\n" +
	"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"Hi\"}\n\n" +
	"data: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":76,\"output_tokens\":73,\"total_tokens\":149}}}\n\n"

var sseHeader = http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}

// tapStream runs a stream through a tap in two writes split at i.
func tapStream(api wire.API, stream string, i int) *responseTap {
	tap := &responseTap{api: api}
	tap.start(200, sseHeader)
	_ = tap.pass([]byte(stream[:i]), io.Discard)
	_ = tap.pass([]byte(stream[i:]), io.Discard)
	tap.finish()
	return tap
}

// endStream ends a tapped stream as the gateway does: what is held goes on,
// or, for a stream without its proper end, the in-band error event.
func endStream(tap *responseTap, out io.Writer) {
	tap.finish()
	if tap.incompleteStream() {
		tap.cut(out, wire.CutIncomplete)
		return
	}
	tap.flush(out)
}

// framings rewrites a stream in each way the standard allows: CRLF or CR
// line ends, comments, reconnection fields, data split over lines, a byte
// order mark.
func framings(stream string) map[string]string {
	fancy := strings.ReplaceAll(stream, "\ndata: {", "\n: keep-alive\nid: 42\nretry: 3000\ndata:{\ndata: ")
	return map[string]string{
		"lf":        stream,
		"crlf":      crlf(stream),
		"cr":        cr(stream),
		"fancy":     fancy,
		"fancycrlf": crlf(fancy),
		"bom":       "\xEF\xBB\xBF" + stream,
	}
}

// TestTapFollowsStreamsAtEverySplit checks usage, stop reason and the
// proper end of each API's stream in every framing, split at every byte.
func TestTapFollowsStreamsAtEverySplit(t *testing.T) {
	for _, c := range []struct {
		name   string
		api    wire.API
		stream string
		want   wire.Usage
	}{
		{"anthropic", wire.Messages, anthropicStream, wire.Usage{InputTokens: 30, OutputTokens: 15, StopReason: "end_turn"}},
		{"chat", wire.ChatCompletions, chatStreamWithUsage, wire.Usage{InputTokens: 9, OutputTokens: 2, StopReason: "stop"}},
		{"responses-data-only", wire.Responses, dataOnlyResponses, wire.Usage{InputTokens: 76, OutputTokens: 73, StopReason: "completed"}},
	} {
		for framing, stream := range framings(c.stream) {
			for i := 0; i <= len(stream); i++ {
				tap := tapStream(c.api, stream, i)
				if tap.progress.Usage != c.want || tap.incompleteStream() || tap.progress.Err.Status != 0 {
					t.Fatalf("%s %s split at %d: progress %+v, incomplete %v", c.name, framing, i, tap.progress, tap.incompleteStream())
				}
				tap.release()
			}
		}
	}
}

// TestTapProperEnds: each API's proper ends, and what is not one.
func TestTapProperEnds(t *testing.T) {
	for _, c := range []struct {
		name       string
		api        wire.API
		stream     string
		incomplete bool
		errType    string
		errStatus  int
	}{
		{"anthropic cut", wire.Messages, anthropicStream[:strings.Index(anthropicStream, "event: message_stop")], true, "", 0},
		{"anthropic unfinished last event", wire.Messages, strings.TrimSuffix(anthropicStream, "\n"), true, "", 0},
		{"anthropic error", wire.Messages, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", false, "overloaded_error", 529},
		{"anthropic data-only", wire.Messages, "data: {\"type\":\"message_start\",\"message\":{}}\n\ndata: {\"type\":\"message_stop\"}\n\n", false, "", 0},
		{"chat done", wire.ChatCompletions, "data: {\"choices\":[]}\n\ndata: [DONE]\n\n", false, "", 0},
		{"chat cut", wire.ChatCompletions, "data: {\"choices\":[]}\n\n", true, "", 0},
		{"chat error", wire.ChatCompletions, "data: {\"error\":{\"message\":\"x\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n", false, "server_error", 500},
		{"chat rate limit", wire.ChatCompletions, "data: {\"error\":{\"message\":\"x\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n", false, "requests", 429},
		{"responses incomplete", wire.Responses, "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"}}}\n\n", false, "", 0},
		{"responses failed", wire.Responses, "data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"x\"}}}\n\n", false, "server_error", 500},
		{"responses error", wire.Responses, "data: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"x\",\"param\":null}\n\n", false, "rate_limit_exceeded", 429},
		{"responses cut", wire.Responses, dataOnlyResponses[:strings.LastIndex(dataOnlyResponses, "data:")], true, "", 0},
		{"empty", wire.Responses, "", true, "", 0},
		// The data of a delta is passed over; named message_delta after it,
		// the event cannot be read: the stream is passed on as it is.
		{"renamed after its data", wire.Messages, "event: content_block_delta\ndata: {\"usage\":{\"output_tokens\":3}}\nevent: message_delta\n\n", false, "", 0},
		{"foreign events", wire.Responses, "data: {\"candidates\":[]}\n\n", false, "", 0},
	} {
		tap := tapStream(c.api, c.stream, len(c.stream)/2)
		if tap.incompleteStream() != c.incomplete || tap.progress.Err.Type != c.errType || tap.progress.Err.Status != c.errStatus {
			t.Errorf("%s: incomplete %v, error %+v; want %v, %q %d", c.name, tap.incompleteStream(), tap.progress.Err, c.incomplete, c.errType, c.errStatus)
		}
	}
}

// TestTapCutEventStartsAnEvent: whatever the stream stopped in the middle
// of, the client's parser sees the whole events before the cut and then the
// gateway's error event, never half an event of the upstream's.
func TestTapCutEventStartsAnEvent(t *testing.T) {
	paths := wire.Messages.StreamPaths().Strings()
	for i := 0; i <= len(anthropicStream); i++ {
		for _, stream := range []string{anthropicStream[:i], cr(anthropicStream[:i])} {
			tap := &responseTap{api: wire.Messages}
			tap.start(200, sseHeader)
			var out bytes.Buffer
			_ = tap.pass([]byte(stream[:len(stream)/2]), &out)
			_ = tap.pass([]byte(stream[len(stream)/2:]), &out)
			endStream(tap, &out)
			events := ssetest.Events(out.Bytes(), paths)
			complete := ssetest.Events([]byte(stream), paths)
			switch {
			case tap.progress.Done:
				if len(events) != len(complete) {
					t.Fatalf("cut at %d: %d events for %d whole ones", i, len(events), len(complete))
				}
			case len(events) != len(complete)+1:
				t.Fatalf("cut at %d: %d events for %d whole ones and the error", i, len(events), len(complete))
			default:
				if last := events[len(events)-1]; last.Name != "error" || !strings.Contains(string(wire.Messages.CutEvent(wire.CutIncomplete)), last.Head) {
					t.Fatalf("cut at %d: the last event is %+v", i, last)
				}
			}
			for k, ev := range complete {
				if events[k].Name != ev.Name || events[k].Head != ev.Head {
					t.Fatalf("cut at %d: event %d is %+v, want %+v", i, k, events[k], ev)
				}
			}
		}
	}
}

// TestTapReadsJSONUsageAndErrors covers non-stream bodies.
func TestTapReadsJSONUsageAndErrors(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}}
	tap := responseTap{api: wire.ChatCompletions}
	tap.start(200, h)
	var out bytes.Buffer
	_ = tap.pass([]byte(`{"choices":[{"finish_reason":"length"}],"usage":{"prompt_tokens":7,`), &out)
	_ = tap.pass([]byte(`"completion_tokens":3}}`), &out)
	tap.finish()
	if u := tap.progress.Usage; u.InputTokens != 7 || u.OutputTokens != 3 || u.StopReason != "length" {
		t.Fatalf("usage %+v", u)
	}
	tap.release()
	tap.start(400, h)
	_ = tap.pass([]byte(`{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`), &out)
	tap.finish()
	if tap.errorType != "invalid_request_error" {
		t.Fatalf("error type %q", tap.errorType)
	}
}

func cr(s string) string { return strings.ReplaceAll(s, "\n", "\r") }

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
