package integration

// Streams and responses as the wire has them: every framing the SSE
// standard allows, errors inside 200 streams, HTTP/2 clients, upstreams
// that go silent or cut a body short.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/openai/openai-go/v3"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
)

// api is one streaming API reached with raw requests.
type api struct {
	name, path string
	body       string
}

var streamAPIs = []api{
	{"anthropic", "/v1/messages", anthropicJSON("claude-haiku-4-5", true)},
	{"openai-chat", "/v1/chat/completions", testbody.Body{API: testbody.Chat, Model: "gpt-4o-mini", Stream: true, IncludeUsage: true, Prompt: thePrompt}.String()},
	{"openai-responses", "/v1/responses", testbody.Body{API: testbody.Responses, Model: "gpt-5", Stream: true, Prompt: thePrompt}.String()},
}

// callLine waits for the call log line after the first `before` ones and
// returns it.
func callLine(t *testing.T, g *gateway, before int) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var lines []map[string]any
		for _, e := range g.Logs(t, moduleLogger) {
			if e["msg"] == "api_call_success" || e["msg"] == "api_call_error" {
				lines = append(lines, e)
			}
		}
		if len(lines) > before {
			return lines[before]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call log line after the first %d", before)
		}
	}
}

// callLines counts the call log lines so far.
func callLines(t *testing.T, g *gateway) int {
	t.Helper()
	n := 0
	for _, e := range g.Logs(t, moduleLogger) {
		if e["msg"] == "api_call_success" || e["msg"] == "api_call_error" {
			n++
		}
	}
	return n
}

// TestStreamFramingsAreWhole: a complete stream in any framing the SSE
// standard allows (CR, LF or CRLF line ends, comments, id and retry
// fields, data over several lines, data-only Responses events, an event
// larger than 8 MB) passes untouched, with nothing appended, and is logged
// as a success with its usage.
func TestStreamFramingsAreWhole(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	cases := map[string][]string{
		"anthropic":        {"lf", "crlf", "cr", "comments+multiline", "cr+comments+multiline"},
		"openai-chat":      {"crlf", "cr", "comments+multiline", "crlf+comments+multiline"},
		"openai-responses": {"dataonly", "dataonly+crlf", "dataonly+cr+comments+multiline", "cr+comments"},
	}
	for _, a := range streamAPIs {
		for _, framing := range cases[a.name] {
			t.Run(a.name+"/"+framing, func(t *testing.T) {
				checkWholeStream(t, g, a, "200:events=4:framing="+framing, 4)
			})
		}
	}
	t.Run("openai-responses/dataonly-9MB-event", func(t *testing.T) {
		checkWholeStream(t, g, streamAPIs[2], "200:events=4:bytes=9000000:framing=dataonly", 0)
	})
}

// checkWholeStream sends one stream and checks it came through whole and
// was logged as a success with the usage of output tokens (0: any).
func checkWholeStream(t *testing.T, g *gateway, a api, steps string, output float64) {
	t.Helper()
	before := callLines(t, g)
	g.mock.Reset()
	resp, body := g.post(t, a.path, a.body, map[string]string{mockprovider.ScriptHeader: steps})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %.300s", resp.StatusCode, body)
	}
	for _, cut := range []string{"stream_incomplete", `"type":"error"`, `{"error"`} {
		if bytes.Contains(body, []byte(cut)) {
			t.Fatalf("the gateway appended an error (%s) to a whole stream: ...%s", cut, body[max(0, len(body)-400):])
		}
	}
	line := callLine(t, g, before)
	if line["msg"] != "api_call_success" || number(t, line, "input_tokens") <= 0 || number(t, line, "output_tokens") <= 0 ||
		(output > 0 && line["output_tokens"] != output) {
		t.Errorf("call logged %v", line)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("%d upstream calls, want 1", n)
	}
}

// TestResponsesDataOnlyThroughOpenAISDK is the case as an OpenAI-compatible
// upstream sends it: Responses events as data lines only. openai-go reads
// the stream to its end through the gateway, and the usage is settled.
func TestResponsesDataOnlyThroughOpenAISDK(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms", "limit tokens {", "\ttpm 10000000", "}"), mockprovider.Options{})
	client := g.openaiClient()
	stream := client.Responses.NewStreaming(context.Background(), responsesParams("gpt-5"), openaiScript("200:events=7:framing=dataonly"))
	defer stream.Close()
	var output int64
	for stream.Next() {
		if ev := stream.Current(); ev.Type == "response.completed" {
			output = ev.Response.Usage.OutputTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("the SDK raised %v on a complete stream", err)
	}
	if output != 7 {
		t.Errorf("response.completed usage %d, want 7", output)
	}
	line := callLine(t, g, 0)
	if line["msg"] != "api_call_success" || line["output_tokens"] != 7.0 || number(t, line, "input_tokens") <= 0 || line["stop_reason"] != "completed" {
		t.Errorf("call logged %v", line)
	}
	if settled := g.logEntries(t, "api_call_success", 1); len(settled) != 1 {
		t.Errorf("%d success lines", len(settled))
	}
}

// TestUsageStripFollowsFraming: the usage chunk the gateway asks for on a
// client's behalf is stripped in every framing, and its tokens counted.
func TestUsageStripFollowsFraming(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms", "limit tokens {", "\ttpm 10000000", "}"), mockprovider.Options{})
	for _, framing := range []string{"cr", "crlf+comments+multiline"} {
		before := callLines(t, g)
		_, body := g.post(t, "/v1/chat/completions", chatJSON("gpt-4o-mini", true), map[string]string{mockprovider.ScriptHeader: "200:events=3:framing=" + framing})
		if bytes.Contains(body, []byte(`"choices":[]`)) || !bytes.Contains(body, []byte("[DONE]")) {
			t.Errorf("%s: the usage chunk reached a client that did not ask for it, or the end did not: %q", framing, body)
		}
		if line := callLine(t, g, before); line["msg"] != "api_call_success" || line["output_tokens"] != 3.0 {
			t.Errorf("%s: call logged %v", framing, line)
		}
	}
}

// inbandCases are each API's in-band error event and the status it stands
// for.
var inbandCases = []struct {
	api     api
	step    string // the inband= or failed= modifier
	errType string
	status  float64
}{
	{streamAPIs[0], "inband=overloaded_error", "overloaded_error", 529},
	{streamAPIs[0], "inband=api_error", "api_error", 500},
	{streamAPIs[1], "inband=server_error", "server_error", 500},
	{streamAPIs[1], "inband=rate_limit_error", "rate_limit_error", 429},
	{streamAPIs[2], "inband=server_error", "server_error", 500},
	// A Responses stream opens with response.created, so response.failed
	// comes after output has begun.
	{streamAPIs[2], "failed=server_error", "server_error", 0},
}

// TestInBandErrorFirstIsRetried: an error that is a 200 stream's first
// event has reached no client, so it is retried like the status it stands
// for, and the client gets the retry's stream.
func TestInBandErrorFirstIsRetried(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "circuit_breaker off"), mockprovider.Options{})
	for _, c := range inbandCases {
		if c.status == 0 {
			continue
		}
		t.Run(c.api.name+"/"+c.errType, func(t *testing.T) {
			before := callLines(t, g)
			g.mock.Reset()
			resp, body := g.post(t, c.api.path, c.api.body, map[string]string{mockprovider.ScriptHeader: "200:" + c.step + ",200:events=3"})
			if resp.StatusCode != 200 || bytes.Contains(body, []byte(c.errType)) {
				t.Errorf("status %d, body %.300s: want the retry's stream only", resp.StatusCode, body)
			}
			if calls := g.mock.Calls(); len(calls) != 2 {
				t.Errorf("%d upstream calls, want the error and the retry", len(calls))
			}
			if line := callLine(t, g, before); line["msg"] != "api_call_success" || line["attempts"] != 2.0 || line["output_tokens"] != 3.0 {
				t.Errorf("call logged %v", line)
			}
			if retries := g.logEntries(t, "retrying", 1); len(retries) == 0 || retries[len(retries)-1]["status"] != c.status {
				t.Errorf("retry lines %v, want the last with status %v", retries, c.status)
			}
		})
	}
}

// TestInBandErrorFirstThroughSDKs: the official SDKs see the retried
// stream whole; without retries left they see the upstream's own error.
func TestInBandErrorFirstThroughSDKs(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "circuit_breaker off"), mockprovider.Options{})
	for _, steps := range []string{"200:inband=overloaded_error,200:events=3", "200:inband=overloaded_error"} {
		g.mock.Reset()
		err := streamCases[0].run(g, steps)
		var apiErr *anthropic.Error
		switch {
		case strings.HasSuffix(steps, "200:events=3") && err != nil:
			t.Errorf("%s: the SDK got %v, want the retry's stream", steps, err)
		case !strings.HasSuffix(steps, "200:events=3") && (!errors.As(err, &apiErr) || apiErr.Type() != "overloaded_error"):
			t.Errorf("%s: the SDK got %v, want the upstream's in-band overloaded_error", steps, err)
		}
		if n := len(g.mock.Calls()); n != 2 {
			t.Errorf("%s: %d upstream calls, want 2", steps, n)
		}
	}
	lines := g.logEntries(t, "api_call_error", 1)
	if len(lines) != 1 || lines[0]["error_type"] != "overloaded_error" || lines[0]["attempts"] != 2.0 {
		t.Errorf("error lines %v, want one overloaded_error after 2 attempts", lines)
	}
	// An OpenAI chat stream falls back the same way.
	g2 := startGateway(t, directives("retries 0", "backoff 1ms 2ms", "fallback gpt-4o gpt-4o-mini"), mockprovider.Options{})
	client := g2.openaiClient()
	stream := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o"), openaiScript("200:inband=server_error,200:events=2"))
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil || acc.Model != "gpt-4o-mini" {
		t.Errorf("err %v, model %q: want the fallback's stream", err, acc.Model)
	}
}

// TestInBandErrorFirstOpensCircuit: in-band overloads count against the
// model's circuit exactly as HTTP 529s do.
func TestInBandErrorFirstOpensCircuit(t *testing.T) {
	g := startGateway(t, directives("retries 0", "circuit_breaker 2 30s"), mockprovider.Options{})
	for i := range 3 {
		resp, body := g.post(t, "/v1/messages", anthropicJSON("claude-opus-4-5", true), map[string]string{mockprovider.ScriptHeader: "200:inband=overloaded_error"})
		if i == 2 && (resp.StatusCode != 529 || !bytes.Contains(body, []byte("circuit breaker is open"))) {
			t.Errorf("third request: %d %s, want the open circuit's 529", resp.StatusCode, body)
		}
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("%d upstream calls, want 2: the open circuit skips the third", n)
	}
}

// TestInBandErrorFirstNotRetryable: an in-band error that stands for a
// status not worth retrying is passed on once, as it came, and logged.
func TestInBandErrorFirstNotRetryable(t *testing.T) {
	g := startGateway(t, directives("retries 2", "backoff 1ms 2ms"), mockprovider.Options{})
	err := streamCases[0].run(g, "200:inband=invalid_request_error,200")
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.Type() != "invalid_request_error" {
		t.Errorf("the SDK got %v, want the upstream's invalid_request_error", err)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("%d upstream calls, want 1", n)
	}
	if line := callLine(t, g, 0); line["msg"] != "api_call_error" || line["error_type"] != "invalid_request_error" {
		t.Errorf("call logged %v", line)
	}
}

// TestInBandErrorAfterOutput: an error event after the stream began reaches
// the client once (no cut event of the gateway's after it), and the call
// is an error in the log, the metrics and the circuit breaker.
func TestInBandErrorAfterOutput(t *testing.T) {
	g := startGatewayWith(t, setup{options: directives("retries 2", "backoff 1ms 2ms", "circuit_breaker 2 30s"), site: "\tmetrics /metrics"})
	for _, c := range inbandCases {
		t.Run(c.api.name+"/"+c.errType, func(t *testing.T) {
			before, metrics := callLines(t, g), scrape(t, g.URL+"/metrics")
			g.mock.Reset()
			_, body := g.post(t, c.api.path, c.api.body, map[string]string{mockprovider.ScriptHeader: "200:events=5:" + c.step + ":at=2,200"})
			message := "sent an in-band"
			if c.errType == "overloaded_error" {
				message = "Overloaded"
			}
			if n := bytes.Count(body, []byte(message)); n != 1 || bytes.Contains(body, []byte("stream_incomplete")) {
				t.Errorf("%d error events in the stream, want the upstream's once: %s", n, body)
			}
			if n := len(g.mock.Calls()); n != 1 {
				t.Errorf("%d upstream calls, want 1: output had begun", n)
			}
			line := callLine(t, g, before)
			if line["msg"] != "api_call_error" || line["error_type"] != c.errType {
				t.Errorf("call logged %v", line)
			}
			dialect := "openai"
			if c.api.name == "anthropic" {
				dialect = "anthropic"
			}
			series := fmt.Sprintf(`caddy_ai_resilience_errors_total{dialect=%q,error_type=%q,model=%q}`, dialect, c.errType, line["model"])
			if d := scrape(t, g.URL+"/metrics")[series] - metrics[series]; d != 1 {
				t.Errorf("%s grew by %v, want 1", series, d)
			}
		})
	}
	// Two overloads after output open the model's circuit.
	g.mock.Reset()
	for range 2 {
		g.post(t, "/v1/messages", anthropicJSON("claude-sonnet-4-5", true), map[string]string{mockprovider.ScriptHeader: "200:events=5:inband=overloaded_error:at=2"})
	}
	if resp, _ := g.post(t, "/v1/messages", anthropicJSON("claude-sonnet-4-5", true), nil); resp.StatusCode != 529 || len(g.mock.Calls()) != 2 {
		t.Errorf("status %d after %d calls: want the open circuit's 529 with no third call", resp.StatusCode, len(g.mock.Calls()))
	}
}

// TestInBandErrorAfterOutputThroughSDK: anthropic-sdk-go gets the
// upstream's own error, with its type, and the gateway logs that error.
func TestInBandErrorAfterOutputThroughSDK(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	err := streamCases[0].run(g, "200:events=5:inband=overloaded_error:at=2")
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.Type() != "overloaded_error" {
		t.Errorf("the SDK got %v, want the upstream's overloaded_error", err)
	}
	if line := callLine(t, g, 0); line["msg"] != "api_call_error" || line["error_type"] != "overloaded_error" {
		t.Errorf("call logged %v", line)
	}
}

// h2cClient speaks HTTP/2 without TLS, as an h2c client does.
func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestCutStreamOverHTTP1AndHTTP2: when the upstream breaks a stream off,
// HTTP/1.1 and HTTP/2 clients alike get every byte it sent, the in-band
// error event and a clean end of the response, with and without
// compression. Several tries, since a reset races the data it drops.
func TestCutStreamOverHTTP1AndHTTP2(t *testing.T) {
	for _, site := range []string{"", "\tencode zstd gzip"} {
		g := startGatewayWith(t, setup{
			options: directives("backoff 1ms 2ms", "circuit_breaker off"),
			global:  "\tservers {\n\t\tprotocols h1 h2c\n\t}",
			site:    site,
		})
		for _, client := range []struct {
			name  string
			c     *http.Client
			proto int
		}{{"http1", testcaddy.Client, 1}, {"h2c", h2cClient(), 2}} {
			t.Run(fmt.Sprintf("%s/encode=%v", client.name, site != ""), func(t *testing.T) {
				for try := range 15 {
					req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/messages", strings.NewReader(anthropicJSON("claude-haiku-4-5", true)))
					req.Header.Set(mockprovider.ScriptHeader, "200:events=5:cut=2")
					resp, err := client.c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.ProtoMajor != client.proto {
						t.Fatalf("spoke HTTP/%d", resp.ProtoMajor)
					}
					if err != nil {
						t.Fatalf("try %d: the response did not end cleanly: %v after %q", try, err, body)
					}
					if n := bytes.Count(body, []byte("event: content_block_delta")); n != 2 {
						t.Fatalf("try %d: %d deltas, want the 2 sent", try, n)
					}
					if last := lastEvent(t, body); last.name != "error" || !bytes.Contains(last.data, []byte("api_error")) {
						t.Fatalf("try %d: the last event is %q %s, want the in-band error", try, last.name, last.data)
					}
				}
			})
		}
	}
}

// TestIdleTimeoutEndsSilentStream: a stream that goes silent is ended after
// idle_timeout with the in-band timeout_error, the upstream request is
// cancelled, and the call is an error.
func TestIdleTimeoutEndsSilentStream(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms", "idle_timeout 300ms"), mockprovider.Options{})
	began := time.Now()
	err := streamCases[0].run(g, "200:events=5:stall=2")
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.Type() != "timeout_error" {
		t.Errorf("the SDK got %v, want the in-band timeout_error", err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("the silent stream took %v to end", took)
	}
	if line := callLine(t, g, 0); line["msg"] != "api_call_error" || line["error_type"] != "timeout_error" {
		t.Errorf("call logged %v", line)
	}
	awaitCanceled(t, g)

	// A chat stream, through the SDK.
	g.mock.Reset()
	if err := streamCases[1].run(g, "200:events=5:stall=1"); err == nil || !strings.Contains(err.Error(), "idle_timeout") {
		t.Errorf("chat: the SDK got %v, want the in-band timeout", err)
	}
	awaitCanceled(t, g)
}

// lastEvent returns the last event of a stream that must end with a whole
// one.
func lastEvent(t *testing.T, body []byte) sseEvent {
	t.Helper()
	if !bytes.HasSuffix(body, []byte("\n\n")) {
		t.Fatalf("the stream does not end with a whole event: %q", body)
	}
	events := parseSSE(t, body)
	return events[len(events)-1]
}

// awaitCanceled waits for the mock to see its one call cancelled.
func awaitCanceled(t *testing.T, g *gateway) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if calls := g.mock.Calls(); len(calls) == 1 && calls[0].Canceled {
			return
		}
	}
	t.Errorf("upstream calls %+v, want one, cancelled", g.mock.Calls())
}

// TestIdleTimeoutCountsPings: a slow stream that keeps pinging is not
// silent.
func TestIdleTimeoutCountsPings(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms", "idle_timeout 300ms"), mockprovider.Options{})
	for _, c := range streamCases[:2] {
		if err := c.run(g, "200:events=3:interval=700ms:ping=100ms"); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestIdleTimeoutBody: a JSON answer whose body never starts is retried
// (nothing reached the client); one that starts and then goes silent is
// cut so that the client sees an incomplete body, not a short whole one.
func TestIdleTimeoutBody(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "idle_timeout 300ms"), mockprovider.Options{})
	client := g.anthropicClient()
	msg, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("200:stall=0,200"))
	if err != nil || len(msg.Content) != 1 {
		t.Fatalf("got %v, %v: want the retry's answer", msg, err)
	}
	if calls := g.mock.Calls(); len(calls) != 2 || !calls[0].Canceled {
		t.Errorf("upstream calls %+v, want the silent one cancelled, then the retry", calls)
	}

	g.mock.Reset()
	before := callLines(t, g)
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/messages", strings.NewReader(anthropicJSON("claude-haiku-4-5", false)))
	req.Header.Set(mockprovider.ScriptHeader, "200:stall=40")
	resp, err := testcaddy.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(body) != 40 {
		t.Errorf("read %d bytes, %v: want the 40 sent and an incomplete body", len(body), err)
	}
	if line := callLine(t, g, before); line["msg"] != "api_call_error" || line["error_type"] != "timeout_error" {
		t.Errorf("call logged %v", line)
	}
	awaitCanceled(t, g)
}

// TestReadTimeoutComposes: reverse_proxy's own read_timeout ends a silent
// stream too, and the gateway ends it in-band and cleanly whichever of the
// two bounds the silence first.
func TestReadTimeoutComposes(t *testing.T) {
	for _, c := range []struct {
		options, errType string
	}{
		{"idle_timeout 5s", "stream_incomplete"},
		{"idle_timeout 200ms", "timeout_error"},
	} {
		g := startGatewayWith(t, setup{
			options: directives("backoff 1ms 2ms", c.options),
			proxy:   "\t\t\ttransport http {\n\t\t\t\tread_timeout 600ms\n\t\t\t}",
		})
		resp, body := g.post(t, "/v1/messages", anthropicJSON("claude-haiku-4-5", true), map[string]string{mockprovider.ScriptHeader: "200:events=5:stall=2"})
		if last := lastEvent(t, body); resp.StatusCode != 200 || last.name != "error" {
			t.Errorf("%s: status %d, last event %q %s: want the in-band error", c.options, resp.StatusCode, last.name, last.data)
		}
		if line := callLine(t, g, 0); line["msg"] != "api_call_error" || line["error_type"] != c.errType {
			t.Errorf("%s: call logged %v", c.options, line)
		}
	}
}

// TestDeadlineBoundsAnswerBeforeFirstByte: headers that come without a
// body (or a stream without its first event) are bounded by the deadline,
// since nothing has reached the client.
func TestDeadlineBoundsAnswerBeforeFirstByte(t *testing.T) {
	g := startGatewayWith(t, setup{
		options: directives("retries 0", "deadline 1s"),
		upstream: func(mock http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/responses" {
					mock.ServeHTTP(w, r)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(200)
				_, _ = io.WriteString(w, ": waiting\n\n")
				http.NewResponseController(w).Flush()
				<-r.Context().Done()
			})
		},
	})
	for _, c := range []struct{ path, body, script string }{
		{"/v1/messages", anthropicJSON("claude-haiku-4-5", false), "200:stall=0"},
		{"/v1/responses", streamAPIs[2].body, ""},
	} {
		began := time.Now()
		resp, body := g.post(t, c.path, c.body, map[string]string{mockprovider.ScriptHeader: c.script})
		if took := time.Since(began); resp.StatusCode != http.StatusGatewayTimeout || took > 3*time.Second {
			t.Errorf("%s: %d after %v (%s), want the deadline's 504 after about 1s", c.path, resp.StatusCode, took, body)
		}
	}
}

// TestCutJSONBodyIsError: a 200 JSON body cut by a reset or short of its
// Content-Length reaches the client incomplete and is an error.
func TestCutJSONBodyIsError(t *testing.T) {
	g := startGatewayWith(t, setup{options: directives("backoff 1ms 2ms"), site: "\tmetrics /metrics"})
	for _, step := range []string{"200:cut=40", "200:end=40"} {
		before, metrics := callLines(t, g), scrape(t, g.URL+"/metrics")
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/messages", strings.NewReader(anthropicJSON("claude-haiku-4-5", false)))
		req.Header.Set(mockprovider.ScriptHeader, step)
		resp, err := testcaddy.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("%s: the client read %d bytes as a whole body", step, len(body))
		}
		if line := callLine(t, g, before); line["msg"] != "api_call_error" || line["error_type"] != "response_incomplete" {
			t.Errorf("%s: call logged %v", step, line)
		}
		series := `caddy_ai_resilience_errors_total{dialect="anthropic",error_type="response_incomplete",model="claude-haiku-4-5"}`
		if d := scrape(t, g.URL+"/metrics")[series] - metrics[series]; d != 1 {
			t.Errorf("%s: %s grew by %v, want 1", step, series, d)
		}
	}
}
