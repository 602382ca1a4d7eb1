package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
)

// slowStream is ten deltas 100 ms apart: long enough that a buffered
// stream shows, short enough for a fast suite.
const slowStream = "200:events=10:interval=100ms"

// checkEventByEvent fails the test unless the first event reached the
// client well before the stream ended: a gateway that buffers the stream
// delivers the first event only at the end.
func checkEventByEvent(t *testing.T, first, total time.Duration) {
	t.Helper()
	if first <= 0 {
		t.Fatalf("no event arrived (total %v)", total)
	}
	if total < 900*time.Millisecond {
		t.Errorf("the stream took %v; the upstream paces it over at least a second", total)
	}
	if first >= total/2 {
		t.Errorf("first event after %v of %v: the stream was held back, not passed through event by event", first, total)
	}
}

func TestAnthropicStreamPassesThroughEventByEvent(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()
	began := time.Now()
	stream := client.Messages.NewStreaming(context.Background(), haiku("claude-haiku-4-5"), script(slowStream))
	defer stream.Close()
	var msg anthropic.Message
	var first time.Duration
	events := 0
	for stream.Next() {
		if first == 0 {
			first = time.Since(began)
		}
		events++
		if err := msg.Accumulate(stream.Current()); err != nil {
			t.Fatalf("accumulating event %d: %v", events, err)
		}
	}
	total := time.Since(began)
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error: %v", err)
	}
	checkEventByEvent(t, first, total)
	if want := mockText("claude-haiku-4-5", 10); len(msg.Content) != 1 || msg.Content[0].Text != want {
		t.Errorf("accumulated content %+v, want one text block %q", msg.Content, want)
	}
	if msg.Usage.InputTokens <= 0 || msg.Usage.OutputTokens != 10 {
		t.Errorf("usage %+v, want input > 0 and output 10", msg.Usage)
	}
	if msg.StopReason != anthropic.StopReasonEndTurn {
		t.Errorf("stop reason %q, want end_turn", msg.StopReason)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1", n)
	}
}

// TestOpenAIChatStreamPassesThroughEventByEvent runs with and without the
// client asking for usage. A tpm zone makes the gateway need the usage, so
// without, it asks the upstream for the usage chunk itself: it must count
// the tokens, strip that chunk from what the client sees, and not hold the
// stream back while doing so.
func TestOpenAIChatStreamPassesThroughEventByEvent(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms", "limit tokens {", "\ttpm 10000000", "}"), mockprovider.Options{})
	client := g.openaiClient()
	for _, includeUsage := range []bool{true, false} {
		t.Run(fmt.Sprintf("include_usage=%v", includeUsage), func(t *testing.T) {
			params := chatParams("gpt-4o-mini")
			if includeUsage {
				params.StreamOptions.IncludeUsage = openai.Bool(true)
			}
			before := len(g.logEntries(t, "api_call_success", 0))
			began := time.Now()
			stream := client.Chat.Completions.NewStreaming(context.Background(), params, openaiScript(slowStream))
			defer stream.Close()
			var acc openai.ChatCompletionAccumulator
			var first time.Duration
			usageChunks := 0
			for stream.Next() {
				if first == 0 {
					first = time.Since(began)
				}
				chunk := stream.Current()
				if len(chunk.Choices) == 0 {
					usageChunks++
				}
				acc.AddChunk(chunk)
			}
			total := time.Since(began)
			if err := stream.Err(); err != nil {
				t.Fatalf("stream error: %v", err)
			}
			checkEventByEvent(t, first, total)
			if len(acc.Choices) != 1 {
				t.Fatalf("accumulated %d choices, want 1", len(acc.Choices))
			}
			if got, want := acc.Choices[0].Message.Content, mockText("gpt-4o-mini", 10); got != want || acc.Choices[0].FinishReason != "stop" {
				t.Errorf("content %q finish %q, want %q and stop", got, acc.Choices[0].FinishReason, want)
			}
			if includeUsage {
				if usageChunks != 1 || acc.Usage.PromptTokens <= 0 || acc.Usage.CompletionTokens != 10 {
					t.Errorf("%d usage chunks, usage %+v, want one chunk with prompt > 0 and completion 10", usageChunks, acc.Usage)
				}
			} else if usageChunks != 0 {
				t.Errorf("%d usage chunks reached a client that did not ask for usage", usageChunks)
			}
			lines := g.logEntries(t, "api_call_success", before+1)
			if len(lines) != before+1 {
				t.Fatalf("%d api_call_success lines, want %d; the module logged %v", len(lines), before+1, g.Logs(t, moduleLogger))
			}
			if e := lines[before]; e["output_tokens"] != 10.0 || number(t, e, "input_tokens") <= 0 {
				t.Errorf("log tokens in %v out %v, want the stream's usage, out 10", e["input_tokens"], e["output_tokens"])
			}
			if !includeUsage {
				if body := g.mock.Calls()[len(g.mock.Calls())-1].Body; !bytes.Contains(body, []byte(`"include_usage":true`)) {
					t.Errorf("the gateway did not ask the upstream for usage: %s", body)
				}
			}
		})
	}
}

func TestResponsesStreamPassesThroughEventByEvent(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	client := g.openaiClient()
	began := time.Now()
	stream := client.Responses.NewStreaming(context.Background(), responsesParams("gpt-5"), openaiScript(slowStream))
	defer stream.Close()
	var first time.Duration
	var text strings.Builder
	var completed *responses.Response
	for stream.Next() {
		if first == 0 {
			first = time.Since(began)
		}
		switch ev := stream.Current(); ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			r := ev.AsResponseCompleted().Response
			completed = &r
		}
	}
	total := time.Since(began)
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error: %v", err)
	}
	checkEventByEvent(t, first, total)
	if want := mockText("gpt-5", 10); text.String() != want {
		t.Errorf("text %q, want %q", text.String(), want)
	}
	if completed == nil {
		t.Fatal("no response.completed event")
	}
	if completed.Usage.InputTokens <= 0 || completed.Usage.OutputTokens != 10 {
		t.Errorf("usage %+v, want input > 0 and output 10", completed.Usage)
	}
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name string
	data []byte
}

// parseSSE splits a complete event stream into events. Every event must end
// with a blank line: a trailing partial event is an error.
func parseSSE(t *testing.T, body []byte) []sseEvent {
	t.Helper()
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	if !strings.HasSuffix(text, "\n\n") {
		t.Fatalf("the stream does not end with a complete event:\n%s", body)
	}
	var events []sseEvent
	for _, block := range strings.Split(strings.TrimSuffix(text, "\n\n"), "\n\n") {
		var ev sseEvent
		for _, line := range strings.Split(block, "\n") {
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "event":
				ev.name = value
			case "data":
				ev.data = append(ev.data, value...)
			}
		}
		events = append(events, ev)
	}
	return events
}

func TestStreamAfterRetriedRateLimitHasCleanHeaders(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	resp, body := g.post(t, "/v1/messages", anthropicJSON("claude-haiku-4-5", true), map[string]string{
		"X-Api-Key":               testAPIKey,
		"Anthropic-Version":       "2023-06-01",
		mockprovider.ScriptHeader: "429:retry-after-ms=10:reset=0.01,200:events=5",
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 after the retried 429; body %s", resp.StatusCode, body)
	}
	checkRetriedHeaders(t, g, resp)
	if ct := resp.Header.Values("Content-Type"); len(ct) != 1 || !strings.HasPrefix(ct[0], "text/event-stream") {
		t.Errorf("Content-Type %q, want exactly one text/event-stream", ct)
	}
	if v := resp.Header.Values("Content-Length"); len(v) != 0 || resp.ContentLength != -1 {
		t.Errorf("Content-Length %q on a stream", v)
	}

	events := parseSSE(t, body)
	var types []string
	for _, ev := range events {
		var payload struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(ev.data, &payload); err != nil {
			t.Fatalf("event %q has data that is not JSON: %q", ev.name, ev.data)
		}
		if payload.Type != ev.name {
			t.Errorf("event %q carries type %q", ev.name, payload.Type)
		}
		types = append(types, ev.name)
	}
	want := "message_start content_block_start ping" + strings.Repeat(" content_block_delta", 5) + " content_block_stop message_delta message_stop"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
}

func TestJSONAfterRetriedRateLimitHasCleanHeaders(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	resp, body := g.post(t, "/v1/messages", anthropicJSON("claude-haiku-4-5", false), map[string]string{
		mockprovider.ScriptHeader: "429:retry-after-ms=10:reset=0.01,200:bytes=3000",
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 after the retried 429; body %s", resp.StatusCode, body)
	}
	checkRetriedHeaders(t, g, resp)
	if ct := resp.Header.Values("Content-Type"); len(ct) != 1 || ct[0] != "application/json" {
		t.Errorf("Content-Type %q, want exactly one application/json", ct)
	}
	if cl := resp.Header.Values("Content-Length"); len(cl) > 1 || (len(cl) == 1 && cl[0] != strconv.Itoa(len(body))) {
		t.Errorf("Content-Length %q for a body of %d bytes", cl, len(body))
	}
	if !json.Valid(body) || !bytes.Contains(body, []byte(`"stop_reason":"end_turn"`)) {
		t.Errorf("body is not the whole message: %.200s", body)
	}
}

// checkRetriedHeaders checks that an answer after a retried 429 carries the
// successful attempt's headers only: no wait hints, no x-should-retry, one
// request id (the second attempt's) and its rate-limit headers, not the
// 429's "nothing remains".
func checkRetriedHeaders(t *testing.T, g *gateway, resp *http.Response) {
	t.Helper()
	for _, name := range []string{"Retry-After", "Retry-After-Ms", "X-Should-Retry"} {
		if v := resp.Header.Values(name); len(v) != 0 {
			t.Errorf("%s %q left over from the retried 429", name, v)
		}
	}
	calls := g.mock.Calls()
	if len(calls) != 2 || calls[0].Status != 429 || calls[1].Status != 200 {
		t.Fatalf("upstream calls %+v, want a 429 then a 200", calls)
	}
	if ids := resp.Header.Values("Request-Id"); len(ids) != 1 || ids[0] != "req_mock_2" {
		t.Errorf("Request-Id %q, want only the successful attempt's req_mock_2", ids)
	}
	if v := resp.Header.Values("Anthropic-Ratelimit-Requests-Remaining"); len(v) != 1 || v[0] == "0" {
		t.Errorf("Anthropic-Ratelimit-Requests-Remaining %q, want the success's one value", v)
	}
}

// streamCase is one streaming API driven through its official SDK; run
// returns the error the SDK's stream ended with.
type streamCase struct {
	name string
	run  func(g *gateway, steps string) error
}

var streamCases = []streamCase{
	{"anthropic", func(g *gateway, steps string) error {
		client := g.anthropicClient()
		stream := client.Messages.NewStreaming(context.Background(), haiku("claude-haiku-4-5"), script(steps))
		defer stream.Close()
		var msg anthropic.Message
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				return err
			}
		}
		return stream.Err()
	}},
	{"openai-chat", func(g *gateway, steps string) error {
		client := g.openaiClient()
		stream := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o-mini"), openaiScript(steps))
		defer stream.Close()
		for stream.Next() {
		}
		return stream.Err()
	}},
	{"openai-responses", func(g *gateway, steps string) error {
		client := g.openaiClient()
		stream := client.Responses.NewStreaming(context.Background(), responsesParams("gpt-5"), openaiScript(steps))
		defer stream.Close()
		for stream.Next() {
		}
		return stream.Err()
	}},
}

func TestCutStreamReachesSDKAsError(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	cuts := 0
	for _, how := range []string{"end=3", "cut=3", "cut=3:midevent"} {
		for _, c := range streamCases {
			t.Run(c.name+"/"+how, func(t *testing.T) {
				g.mock.Reset()
				err := c.run(g, "200:events=10:"+how)
				cuts++
				if err == nil {
					t.Fatal("the SDK took a cut stream for a complete answer")
				}
				// The gateway's in-band event reaches the SDK before the
				// connection ends, so the SDK reports it, not a bare EOF,
				// nor half an event that a cut inside one left behind.
				if c.name == "anthropic" {
					var apiErr *anthropic.Error
					if !errors.As(err, &apiErr) {
						t.Errorf("error %v (%T), want the gateway's in-band *anthropic.Error", err, err)
					} else if apiErr.Type() != "api_error" {
						t.Errorf("in-band error type %q, want api_error", apiErr.Type())
					}
				} else if !strings.Contains(err.Error(), "stream_incomplete") {
					t.Errorf("error %v, want the gateway's in-band stream_incomplete error", err)
				}
				if n := len(g.mock.Calls()); n != 1 {
					t.Errorf("upstream saw %d calls, want 1", n)
				}
			})
		}
	}
	incomplete := 0
	for _, e := range g.logEntries(t, "api_call_error", cuts) {
		if e["error_type"] == "stream_incomplete" {
			incomplete++
		}
	}
	if incomplete != cuts {
		t.Errorf("%d api_call_error lines with error_type stream_incomplete, want %d", incomplete, cuts)
	}
}

// TestCutStreamEndsWithInBandError reads the raw bytes: a stream the
// upstream cut (or ended early) ends with exactly one error event in the
// dialect's form after the events that did arrive.
func TestCutStreamEndsWithInBandError(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	for _, how := range []string{"end=3", "cut=3", "cut=3:midevent"} {
		t.Run("anthropic/"+how, func(t *testing.T) {
			_, body := g.post(t, "/v1/messages", anthropicJSON("claude-haiku-4-5", true), map[string]string{mockprovider.ScriptHeader: "200:events=10:" + how})
			events := parseSSE(t, body)
			last := events[len(events)-1]
			if last.name != "error" || !bytes.Contains(last.data, []byte(`"type":"error"`)) {
				t.Errorf("last event %q %s, want an anthropic error event", last.name, last.data)
			}
			if n := bytes.Count(body, []byte("content_block_delta")); n != 6 { // event line and data type
				t.Errorf("%d delta mentions, want the 3 deltas that arrived", n/2)
			}
		})
		t.Run("openai-chat/"+how, func(t *testing.T) {
			_, body := g.post(t, "/v1/chat/completions", chatJSON("gpt-4o-mini", true), map[string]string{mockprovider.ScriptHeader: "200:events=10:" + how})
			events := parseSSE(t, body)
			last := events[len(events)-1]
			if last.name != "" || !bytes.HasPrefix(last.data, []byte(`{"error":`)) {
				t.Errorf("last event %q %s, want a data-only error chunk", last.name, last.data)
			}
			if bytes.Contains(body, []byte("[DONE]")) {
				t.Error("a cut chat stream must not end with [DONE]")
			}
		})
	}
}

func TestNoRetryAfterStreamStarted(t *testing.T) {
	g := startGateway(t, directives("retries 3", "backoff 1ms 2ms"), mockprovider.Options{})
	for _, steps := range []string{"200:events=10:cut=3,200", "200:events=10:end=3,200"} {
		g.mock.Reset()
		before := len(g.logEntries(t, "api_call_error", 0))
		err := streamCases[0].run(g, steps)
		if err == nil {
			t.Errorf("%s: the SDK saw a complete stream", steps)
		}
		g.logEntries(t, "api_call_error", before+1) // the call has ended
		if n := len(g.mock.Calls()); n != 1 {
			t.Errorf("%s: upstream saw %d calls, want 1: nothing may be retried once bytes reached the client", steps, n)
		}
	}
}

func TestStreamFallsBackBeforeFirstByte(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "fallback claude-opus-4-5 claude-haiku-4-5"), mockprovider.Options{})
	client := g.anthropicClient()
	// Two 529s spend opus's retries; the third attempt, on haiku, streams.
	stream := client.Messages.NewStreaming(context.Background(), haiku("claude-opus-4-5"), script("529,529,200:events=4"))
	defer stream.Close()
	var msg anthropic.Message
	for stream.Next() {
		if err := msg.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error: %v", err)
	}
	if msg.Model != "claude-haiku-4-5" || len(msg.Content) != 1 || msg.Content[0].Text != mockText("claude-haiku-4-5", 4) {
		t.Errorf("model %q content %+v, want haiku's whole answer", msg.Model, msg.Content)
	}
	calls := g.mock.Calls()
	if len(calls) != 3 || calls[2].Model != "claude-haiku-4-5" {
		t.Errorf("upstream saw %d calls, want 2 to opus then 1 to haiku", len(calls))
	}
}

func TestClientLeavingMidStreamIsClientClosed(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/messages", strings.NewReader(anthropicJSON("claude-haiku-4-5", true)))
	req.Header.Set(mockprovider.ScriptHeader, "200:events=20:interval=50ms")
	resp, err := testcaddy.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the client leaves after the first bytes
	lines := g.logEntries(t, "api_call_error", 1)
	if len(lines) != 1 || lines[0]["error_type"] != "client_closed" {
		t.Errorf("log lines %v, want one api_call_error with error_type client_closed", lines)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1", n)
	}
}

// TestStreamReadToItsEndIsSuccess covers the OpenAI SDK's habit of closing
// the connection as soon as it reads `data: [DONE]`: an upstream that ends
// its body a moment after that event (as a real one across a network may)
// must not turn a delivered answer into a client_closed error.
func TestStreamReadToItsEndIsSuccess(t *testing.T) {
	g := startGatewayWith(t, setup{
		options: directives("backoff 1ms 2ms"),
		upstream: func(mock http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mock.ServeHTTP(w, r)
				time.Sleep(300 * time.Millisecond) // the body ends later than its last event
			})
		},
	})
	client := g.openaiClient()
	stream := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o-mini"), openaiScript("200:events=3"))
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	var ends []map[string]any
	for deadline := time.Now().Add(2 * time.Second); len(ends) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ends = append(g.logEntries(t, "api_call_success", 0), g.logEntries(t, "api_call_error", 0)...)
	}
	if len(ends) != 1 || ends[0]["msg"] != "api_call_success" || ends[0]["status"] != 200.0 {
		t.Errorf("call lines %v, want one api_call_success with status 200", ends)
	}
}
