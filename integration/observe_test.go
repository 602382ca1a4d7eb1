package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/openai/openai-go/v3"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
)

// number reads a numeric log field; JSON numbers decode as float64.
func number(t *testing.T, e map[string]any, field string) float64 {
	t.Helper()
	v, ok := e[field].(float64)
	if !ok {
		t.Errorf("log field %s = %v (%T), want a number", field, e[field], e[field])
	}
	return v
}

func TestCallLogLines(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "fallback claude-opus-4-5 claude-haiku-4-5"),
		mockprovider.Options{FailModels: map[string]int{"claude-opus-4-5": 529}})
	client := g.anthropicClient()
	if _, err := client.Messages.New(context.Background(), haiku("claude-sonnet-4-5"), script("429:retry-after-ms=10,200")); err != nil {
		t.Fatal(err)
	}
	ok := g.logEntries(t, "api_call_success", 1)
	if len(ok) != 1 {
		t.Fatalf("%d api_call_success lines, want exactly 1 for one call", len(ok))
	}
	e := ok[0]
	if e["level"] != "info" {
		t.Errorf("level %v, want info", e["level"])
	}
	for field, want := range map[string]any{
		"provider": "anthropic", "model": "claude-sonnet-4-5", "served_model": "claude-sonnet-4-5",
		"status": 200.0, "attempts": 2.0, "stop_reason": "end_turn",
	} {
		if e[field] != want {
			t.Errorf("%s = %v, want %v", field, e[field], want)
		}
	}
	if number(t, e, "latency_ms") < 10 {
		t.Errorf("latency_ms %v, want at least the 10ms wait", e["latency_ms"])
	}
	if number(t, e, "input_tokens") <= 0 || number(t, e, "output_tokens") <= 0 {
		t.Errorf("tokens in %v out %v, want both > 0", e["input_tokens"], e["output_tokens"])
	}
	if _, has := e["error_type"]; has {
		t.Errorf("a success has error_type %v", e["error_type"])
	}

	retries := g.logEntries(t, "retrying", 1)
	if len(retries) != 1 {
		t.Fatalf("%d retrying lines, want 1", len(retries))
	}
	r := retries[0]
	if r["level"] != "warn" || r["attempt"] != 2.0 || r["model"] != "claude-sonnet-4-5" || r["status"] != 429.0 {
		t.Errorf("retrying line %v, want warn, attempt 2, model claude-sonnet-4-5, status 429", r)
	}
	if number(t, r, "delay_ms") < 10 {
		t.Errorf("delay_ms %v, want at least the upstream's retry-after-ms 10", r["delay_ms"])
	}

	if _, err := client.Messages.New(context.Background(), haiku("claude-opus-4-5")); err != nil {
		t.Fatal(err)
	}
	ok = g.logEntries(t, "api_call_success", 2)
	if len(ok) != 2 {
		t.Fatalf("%d api_call_success lines, want 2", len(ok))
	}
	if e := ok[1]; e["model"] != "claude-opus-4-5" || e["served_model"] != "claude-haiku-4-5" || e["attempts"] != 3.0 {
		t.Errorf("fallback line model %v served_model %v attempts %v, want opus served by haiku after 3 attempts", e["model"], e["served_model"], e["attempts"])
	}
	if fb := g.logEntries(t, "falling back", 1); len(fb) != 1 || fb[0]["from"] != "claude-opus-4-5" || fb[0]["to"] != "claude-haiku-4-5" {
		t.Errorf("falling back lines %v, want one from opus to haiku", fb)
	}

	// A retry after a connection failure names the error instead.
	if _, err := client.Messages.New(context.Background(), haiku("claude-sonnet-4-5"), script("drop,200")); err != nil {
		t.Fatal(err)
	}
	retries = g.logEntries(t, "retrying", 3) // one more for opus above
	if len(retries) != 3 {
		t.Fatalf("%d retrying lines, want 3", len(retries))
	}
	if r := retries[2]; r["attempt"] != 2.0 || r["error"] == nil || r["status"] != nil {
		t.Errorf("retrying line %v, want attempt 2 with an error and no status", r)
	}

	// A failure names its error_type.
	if _, err := client.Messages.New(context.Background(), haiku("claude-sonnet-4-5"), script("400")); err == nil {
		t.Fatal("want the upstream's 400")
	}
	bad := g.logEntries(t, "api_call_error", 1)
	if len(bad) != 1 || bad[0]["status"] != 400.0 || bad[0]["error_type"] != "invalid_request_error" {
		t.Errorf("api_call_error lines %v, want one with status 400 and error_type invalid_request_error", bad)
	}
}

// TestLogsHoldNoSecretsOrPrompts checks every log line, at debug level, of
// every logger. Caddy's reverse_proxy dumps the upstream request's headers
// (its "upstream roundtrip" DEBUG line, and "aborting with incomplete
// response" at WARN when a stream breaks) and redacts only Authorization and
// cookies; the harness applies the log filter the README recommends, which
// deletes X-Api-Key, so the whole file must hold no key at all.
func TestLogsHoldNoSecretsOrPrompts(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "attempt_timeout 200ms", "max_body 4KB",
		"fallback claude-opus-4-5 claude-haiku-4-5"), mockprovider.Options{})
	ac, oc := g.anthropicClient(), g.openaiClient()
	ctx := context.Background()
	big := strings.Repeat(thePrompt+" ", 200)
	for _, steps := range []string{"200", "429:retry-after-ms=5,200", "529", "400", "drop", "hang", "200:events=5:cut=2"} {
		stream := strings.HasPrefix(steps, "200:events")
		if stream {
			s := ac.Messages.NewStreaming(ctx, haiku("claude-opus-4-5"), script(steps))
			for s.Next() {
			}
			s.Close()
			s2 := oc.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o-mini"), openaiScript(steps))
			for s2.Next() {
			}
			s2.Close()
			continue
		}
		_, _ = ac.Messages.New(ctx, haiku("claude-opus-4-5"), script(steps))
		_, _ = oc.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"), openaiScript(steps))
	}
	params := haiku("claude-haiku-4-5")
	params.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(big))}
	_, _ = ac.Messages.New(ctx, params)
	chat := chatParams("gpt-4o-mini")
	chat.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage(big)}
	_, _ = oc.Chat.Completions.New(ctx, chat)

	if n := len(g.logEntries(t, "api_call_error", 12)); n < 12 {
		t.Fatalf("only %d api_call_error lines: the calls did not all run", n)
	}
	raw := g.RawLogs(t)
	for i, line := range strings.Split(raw, "\n") {
		for _, secret := range []string{testAPIKey, thePrompt, "Bearer"} {
			if strings.Contains(line, secret) {
				t.Errorf("log line %d holds %q:\n%s", i+1, secret, line)
			}
		}
	}
	for _, e := range g.Logs(t, moduleLogger) {
		if s := fmt.Sprint(e); strings.Contains(s, testAPIKey) || strings.Contains(s, thePrompt) {
			t.Errorf("the module logged a secret or the prompt: %v", e)
		}
	}
}

func TestPlaceholdersInAccessLog(t *testing.T) {
	accessLog := filepath.Join(t.TempDir(), "access.log")
	g := startGatewayWith(t, setup{
		options: directives("retries 1", "backoff 1ms 2ms", "fallback claude-opus-4-5 claude-haiku-4-5"),
		mock:    mockprovider.Options{FailModels: map[string]int{"claude-opus-4-5": 529}},
		site: fmt.Sprintf(`	log {
		output file %s
		format json
	}`, accessLog),
		before: `		log_append served_model {http.ai_resilience.served_model}
		log_append attempts {http.ai_resilience.attempts}
		log_append input_tokens {http.ai_resilience.input_tokens}
		log_append output_tokens {http.ai_resilience.output_tokens}`,
	})
	client := g.anthropicClient()
	if _, err := client.Messages.New(context.Background(), haiku("claude-opus-4-5")); err != nil {
		t.Fatal(err)
	}
	stream := client.Messages.NewStreaming(context.Background(), haiku("claude-sonnet-4-5"), script("200:events=7"))
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()

	access := &testcaddy.Server{LogPath: accessLog}
	var entries []map[string]any
	for deadline := time.Now().Add(2 * time.Second); len(entries) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entries = access.Logs(t, "")
	}
	if len(entries) != 2 {
		t.Fatalf("%d access log entries, want 2", len(entries))
	}
	fallback, streamed := entries[0], entries[1]
	if fallback["served_model"] != "claude-haiku-4-5" || fallback["attempts"] != 3.0 {
		t.Errorf("fallback entry served_model %v attempts %v, want claude-haiku-4-5 after 3", fallback["served_model"], fallback["attempts"])
	}
	if number(t, fallback, "input_tokens") <= 0 || number(t, fallback, "output_tokens") != 4 {
		t.Errorf("fallback entry tokens in %v out %v, want > 0 and the mock's 4", fallback["input_tokens"], fallback["output_tokens"])
	}
	if streamed["served_model"] != "claude-sonnet-4-5" || streamed["attempts"] != 1.0 {
		t.Errorf("stream entry served_model %v attempts %v", streamed["served_model"], streamed["attempts"])
	}
	if number(t, streamed, "input_tokens") <= 0 || number(t, streamed, "output_tokens") != 7 {
		t.Errorf("stream entry tokens in %v out %v, want > 0 and the 7 streamed", streamed["input_tokens"], streamed["output_tokens"])
	}
}

// scrape returns the metrics page as series → value, where a series is the
// metric name with its labels as Prometheus writes them.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := testcaddy.Client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("metrics: status %d: %s", resp.StatusCode, body)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsAfterTraffic(t *testing.T) {
	g := startGatewayWith(t, setup{
		options: directives("retries 1", "backoff 1ms 2ms", "fallback claude-metrics-a claude-metrics-b"),
		mock:    mockprovider.Options{FailModels: map[string]int{"claude-metrics-a": 529}},
		site:    "\tmetrics /metrics",
	})
	// The collectors live as long as the process, so compare before and
	// after rather than with absolute values.
	before := scrape(t, g.URL+"/metrics")
	client := g.anthropicClient()
	if _, err := client.Messages.New(context.Background(), haiku("claude-metrics-r"), script("429:retry-after-ms=5,200")); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Messages.New(context.Background(), haiku("claude-metrics-a")); err != nil {
		t.Fatal(err)
	}
	after := scrape(t, g.URL+"/metrics")
	for series, want := range map[string]float64{
		`caddy_ai_resilience_requests_total{dialect="anthropic",model="claude-metrics-r",status="200"}`:         1,
		`caddy_ai_resilience_requests_total{dialect="anthropic",model="claude-metrics-a",status="200"}`:         1,
		`caddy_ai_resilience_attempts_total{dialect="anthropic",model="claude-metrics-r"}`:                      2,
		`caddy_ai_resilience_attempts_total{dialect="anthropic",model="claude-metrics-a"}`:                      2,
		`caddy_ai_resilience_attempts_total{dialect="anthropic",model="claude-metrics-b"}`:                      1,
		`caddy_ai_resilience_retries_total{dialect="anthropic",model="claude-metrics-r",reason="rate_limited"}`: 1,
		`caddy_ai_resilience_retries_total{dialect="anthropic",model="claude-metrics-a",reason="overloaded"}`:   1,
		`caddy_ai_resilience_fallbacks_total{from="claude-metrics-a",to="claude-metrics-b"}`:                    1,
		`caddy_ai_resilience_tokens_total{direction="output",model="claude-metrics-b"}`:                         4,
		`caddy_ai_resilience_overhead_seconds_count{dialect="anthropic"}`:                                       2,
	} {
		got, ok := after[series]
		if !ok {
			t.Errorf("no series %s", series)
			continue
		}
		if d := got - before[series]; d != want {
			t.Errorf("%s grew by %v, want %v", series, d, want)
		}
	}
	if after[`caddy_ai_resilience_tokens_total{direction="input",model="claude-metrics-b"}`] <= 0 {
		t.Errorf("no input tokens counted for the fallback model")
	}
}

// TestPlaceholdersInResponseHeaders uses served_model and attempts in
// deferred response headers, which Caddy fills in when the status is
// written: upstream answers (JSON, stream, fallback, the held error) and
// the gateway's own errors alike.
func TestPlaceholdersInResponseHeaders(t *testing.T) {
	g := startGatewayWith(t, setup{
		options: directives("retries 1", "backoff 1ms 2ms", "max_body 2KB", "fallback claude-opus-4-5 claude-haiku-4-5"),
		before: `		header >X-Served-Model {http.ai_resilience.served_model}
		header >X-Attempts {http.ai_resilience.attempts}`,
	})
	for _, c := range []struct {
		name, body, steps string
		status            int
		served, attempts  string
	}{
		{"json after a retry", anthropicJSON("claude-sonnet-4-5", false), "429:retry-after-ms=1,200", 200, "claude-sonnet-4-5", "2"},
		{"stream after a retry", anthropicJSON("claude-sonnet-4-5", true), "529,200", 200, "claude-sonnet-4-5", "2"},
		{"fallback", anthropicJSON("claude-opus-4-5", false), "529,529,200", 200, "claude-haiku-4-5", "3"},
		{"exhausted", anthropicJSON("claude-sonnet-4-5", false), "529", 529, "claude-sonnet-4-5", "2"},
		{"gateway 502", anthropicJSON("claude-sonnet-4-5", false), "drop", 502, "claude-sonnet-4-5", "2"},
		{"too large", anthropicJSON(strings.Repeat("x", 3000), false), "200", 413, "", "0"},
	} {
		g.mock.Reset()
		resp, body := g.post(t, "/v1/messages", c.body, map[string]string{mockprovider.ScriptHeader: c.steps})
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d: %.200s", c.name, resp.StatusCode, c.status, body)
		}
		if got := resp.Header.Get("X-Served-Model"); got != c.served {
			t.Errorf("%s: X-Served-Model %q, want %q", c.name, got, c.served)
		}
		if got := resp.Header.Get("X-Attempts"); got != c.attempts {
			t.Errorf("%s: X-Attempts %q, want %q", c.name, got, c.attempts)
		}
	}
}

// TestCallLineSaysWhatHappened: the call line's stream flag is the
// request's, served_model names a model an attempt was made on (not a
// fallback whose circuit was open), a retry the circuit then refused is
// logged as dropped, and a chat stream's usage is logged even without a
// tpm zone (the gateway asks for it and strips it again).
func TestCallLineSaysWhatHappened(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms", "retries 1", "circuit_breaker 1 30s", "fallback claude-opus-4-5 claude-haiku-4-5"),
		mockprovider.Options{FailModels: map[string]int{"claude-opus-4-5": 529, "claude-haiku-4-5": 529}})
	// The first call opens both circuits: one failure each.
	_, _ = g.post(t, anthropicPath, anthropicJSON("claude-opus-4-5", true), nil)
	g.mock.Reset()
	resp, body := g.post(t, anthropicPath, anthropicJSON("claude-opus-4-5", true), nil)
	if resp.StatusCode != 529 {
		t.Fatalf("status %d, want the open circuit's 529: %s", resp.StatusCode, body)
	}
	noCalls(t, g, "both circuits open")
	lines := g.logEntries(t, "api_call_error", 2)
	if len(lines) != 2 {
		t.Fatalf("%d call lines, want 2", len(lines))
	}
	if e := lines[1]; e["stream"] != true || e["served_model"] != "claude-opus-4-5" || e["attempts"] != 0.0 {
		t.Errorf("line %v, want stream true, served_model the requested model, 0 attempts", e)
	}
	// In the first call each model's one failure opened its circuit
	// before its retry.
	if e := g.logEntries(t, "retry dropped", 2); len(e) != 2 || e[0]["reason"] != "circuit_open" || e[1]["model"] != "claude-haiku-4-5" {
		t.Errorf("retry dropped lines %v, want one per model whose circuit opened before its retry", e)
	}

	chat := startGateway(t, "", mockprovider.Options{})
	client := chat.openaiClient()
	stream := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o-mini"))
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) == 0 {
			t.Errorf("the client got a usage chunk it did not ask for: %+v", c)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if e := chat.logEntries(t, "api_call_success", 1); len(e) != 1 || number(t, e[0], "input_tokens") == 0 || number(t, e[0], "output_tokens") == 0 {
		t.Errorf("chat stream line %v, want its usage", e)
	}
}
