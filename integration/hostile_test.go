package integration

// End-to-end tests of hostile input and bounded memory: numbers that
// overflow, hints that overflow, bodies that would hold unbounded memory,
// client strings that would be stored or logged unbounded, and an upstream
// error body built to be expensive to inspect.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
)

// TestOverflowingCapIsRefusedWithoutUpstreamCall sends the largest output
// cap JSON allows into a tpm zone: the reservation (estimate plus cap)
// saturates instead of wrapping negative, so the request is too large ever
// to fit: 429 with x-should-retry: false, no upstream call, no panic.
func TestOverflowingCapIsRefusedWithoutUpstreamCall(t *testing.T) {
	g := startGateway(t, directives("limit t {", "\ttpm 1000", "}"), mockprovider.Options{})
	const huge = "9223372036854775807"
	for _, c := range []struct{ path, body string }{
		{anthropicPath, `{"model":"my-unknown-model","max_tokens":` + huge + `,"messages":[{"role":"user","content":"hi"}]}`},
		{chatPath, `{"model":"my-unknown-model","max_completion_tokens":` + huge + `,"messages":[{"role":"user","content":"hi"}]}`},
		{chatPath, `{"model":"my-unknown-model","max_tokens":1e400,"messages":[{"role":"user","content":"hi"}]}`},
		{responsesPath, `{"model":"my-unknown-model","max_output_tokens":` + huge + `,"input":"hi"}`},
	} {
		resp, body := g.post(t, c.path, c.body, nil)
		wantGatewayError(t, c.body, c.path, resp, body, http.StatusTooManyRequests, "can never be admitted")
		if got := resp.Header.Get("X-Should-Retry"); got != "false" {
			t.Errorf("%s: x-should-retry %q, want false", c.body, got)
		}
	}
	noCalls(t, g, "overflowing caps")
	// The gateway is still serving, and its metrics still scrape.
	client := g.anthropicClient()
	if _, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5")); err != nil {
		t.Fatalf("a normal request after the overflowing ones: %v", err)
	}
}

// TestOverflowingWaitHintGoesToClientAtOnce answers 429 with wait hints
// too large for any duration: each saturates, is above max_wait, and the
// 429 reaches the client after one upstream call, with x-should-retry:
// false, instead of being ignored and retried at once.
func TestOverflowingWaitHintGoesToClientAtOnce(t *testing.T) {
	g := startGateway(t, directives("retries 3", "backoff 1ms 2ms"), mockprovider.Options{})
	client, oclient := g.anthropicClient(), g.openaiClient()
	nines := strings.Repeat("9", 400)
	for _, step := range []string{
		"429:retry-after=99999999999999999999",
		"429:retry-after-ms=99999999999999999999",
		"429:retry-after=" + nines,
		"429:retry-after-ms=" + nines + ".5",
	} {
		g.mock.Reset()
		began := time.Now()
		_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script(step))
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s: got %v, want the upstream's 429", step, err)
		}
		if got := apiErr.Response.Header.Get("X-Should-Retry"); got != "false" {
			t.Errorf("%s: x-should-retry %q, want false", step, got)
		}
		if n := len(g.mock.Calls()); n != 1 {
			t.Errorf("%s: upstream saw %d calls, want 1: the hint is beyond max_wait", step, n)
		}
		if took := time.Since(began); took > 2*time.Second {
			t.Errorf("%s: answered after %v, want at once", step, took)
		}
	}
	g.mock.Reset()
	_, err := oclient.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript("429:retry-after-ms=99999999999999999999"))
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusTooManyRequests || len(g.mock.Calls()) != 1 {
		t.Errorf("openai: got %v after %d calls, want the 429 after 1", err, len(g.mock.Calls()))
	}
}

// holdBody opens a connection that sends all but the last byte of a
// Messages request of size bytes and keeps it open, so the gateway holds
// the body in memory; send finishes it and returns the status.
func holdBody(t *testing.T, url string, size int) (send func() int) {
	t.Helper()
	body := anthropicJSON("claude-haiku-4-5", false)
	body = strings.Replace(body, thePrompt, thePrompt+strings.Repeat(" ", size-len(body)), 1)
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)-1])
	return func() int {
		_, _ = conn.Write([]byte(body[len(body)-1:]))
		status, _ := readStatus(conn)
		return status
	}
}

// readStatus reads a response's status from a raw connection.
func readStatus(conn net.Conn) (int, error) {
	var buf [64]byte
	n, err := conn.Read(buf[:])
	var status int
	if _, serr := fmt.Sscanf(string(buf[:n]), "HTTP/1.1 %d", &status); serr != nil {
		return 0, errors.Join(err, serr)
	}
	return status, nil
}

// TestMaxBufferedAnswersOverloaded holds a body in the gateway's memory and
// sends another that would pass max_buffered: it is answered at once with
// the dialect's overload error, a retry hint and x-should-retry: true, as
// the official SDKs see it; once the first body is done, the second fits.
func TestMaxBufferedAnswersOverloaded(t *testing.T) {
	g := startGateway(t, directives("max_body 512KB", "max_buffered 1MB"), mockprovider.Options{})
	const size = 510_000 // two of them pass 1MB, one fits
	finish := holdBody(t, g.URL, size)
	long := strings.Repeat("word ", size/5)
	client, oclient := g.anthropicClient(), g.openaiClient()

	params := haiku("claude-haiku-4-5")
	params.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(long))}
	var apiErr *anthropic.Error
	for i := 0; ; i++ { // until the held body's bytes have reached the gateway
		_, err := client.Messages.New(context.Background(), params)
		if errors.As(err, &apiErr) && apiErr.StatusCode == 529 {
			break
		}
		if i == 50 {
			t.Fatalf("no overload answer while a body is held: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if apiErr.Type() != "overloaded_error" || !strings.Contains(apiErr.RawJSON(), "max_buffered") {
		t.Errorf("anthropic: %s, want overloaded_error naming max_buffered", apiErr.RawJSON())
	}
	for _, h := range []string{"Retry-After", "Retry-After-Ms"} {
		if apiErr.Response.Header.Get(h) == "" {
			t.Errorf("anthropic: no %s on the overload answer", h)
		}
	}
	if got := apiErr.Response.Header.Get("X-Should-Retry"); got != "true" {
		t.Errorf("anthropic: x-should-retry %q, want true: it passes once memory frees", got)
	}

	chat := chatParams("gpt-4o-mini")
	chat.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage(long)}
	_, err := oclient.Chat.Completions.New(context.Background(), chat)
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusServiceUnavailable || oErr.Type != "server_error" {
		t.Errorf("openai: got %v, want 503 server_error", err)
	}

	if status := finish(); status != http.StatusOK {
		t.Fatalf("the held body: status %d, want 200", status)
	}
	if _, err := client.Messages.New(context.Background(), params); err != nil {
		t.Errorf("after the held body was done: %v", err)
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2 (the held body, and the retry once it fit)", n)
	}
}

// TestHostileUpstreamErrorBody answers an OpenAI route with a 429 whose
// body is a million '[': the gateway judges it (quota or rate?) from a
// small stack. The test caps goroutine stacks, so a check that recursed per
// level of nesting would crash the process.
func TestHostileUpstreamErrorBody(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(32 << 20))
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms"), mockprovider.Options{})
	const n = 1_000_000
	req, _ := http.NewRequest(http.MethodPost, g.URL+chatPath, strings.NewReader(chatJSON("gpt-4o-mini", false)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(mockprovider.ScriptHeader, fmt.Sprintf("429:nest=%d", n))
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusTooManyRequests || len(body) != n || body[0] != '[' {
		t.Errorf("status %d, %d bytes; want the upstream's 429 as it was", resp.StatusCode, len(body))
	}
	if calls := len(g.mock.Calls()); calls != 2 {
		t.Errorf("upstream saw %d calls, want 2: a rate limit, not a quota, is retried", calls)
	}
}

// TestClientStringsAreBounded sends client-controlled strings of hundreds
// of kilobytes where the gateway would store or log them: a model id
// (refused, and logged as a bounded prefix), the SDK retry-count header
// (not logged), and a zone key (kept as a fixed-size hash, logged as one).
func TestClientStringsAreBounded(t *testing.T) {
	g := startGatewayWith(t, setup{
		options: directives("limit team {", "\tkey {http.request.header.X-Team}", "\trpm 1", "}"),
		// Caddy reads 16KB of headers by default; an operator may allow more.
		global: "servers {\n\t\tmax_header_size 2MB\n\t}",
	})
	big := strings.Repeat("m", 1<<20)
	resp, body := g.post(t, chatPath, chatJSON(big, false), nil)
	wantGatewayError(t, "long model", chatPath, resp, body, http.StatusBadRequest, "longer than 256 bytes", "1048576 bytes")
	if gjson.GetBytes(body, "error.param").Str != "model" || len(body) > 1024 {
		t.Errorf("long model: %d-byte answer %.200s", len(body), body)
	}
	// Exactly 256 bytes is a model id.
	g.post(t, anthropicPath, anthropicJSON(strings.Repeat("m", 256), false), map[string]string{"X-Team": "a"})

	team := strings.Repeat("t", 500<<10)
	for range 2 {
		g.post(t, anthropicPath, anthropicJSON("claude-haiku-4-5", false), map[string]string{"X-Team": team, "X-Stainless-Retry-Count": strings.Repeat("9", 500<<10)})
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2 (the 256-byte model, the first long-key request)", n)
	}
	limited := g.logEntries(t, "rate limited", 1)
	if len(limited) != 1 || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(fmt.Sprint(limited[0]["key_hash"])) {
		t.Errorf("rate limited lines %v, want one with a 16-hex-digit key_hash", limited)
	}
	// The module's own lines stay small (Caddy's debug lines dump request
	// headers whole: a deployment that allows huge headers logs them).
	for _, e := range g.Logs(t, moduleLogger) {
		if line, _ := json.Marshal(e); len(line) > 4<<10 {
			t.Errorf("a %d-byte log line: %.300s", len(line), line)
		}
	}
	for _, e := range g.logEntries(t, "api_call_success", 2) {
		if _, ok := e["client_retry"]; ok {
			t.Errorf("logged a client_retry of %d bytes", len(fmt.Sprint(e["client_retry"])))
		}
	}
}

// TestSmallClientRetryCountIsLogged is the twin of the bound above: the
// count an SDK really sends is logged.
func TestSmallClientRetryCountIsLogged(t *testing.T) {
	g := startGateway(t, "", mockprovider.Options{})
	g.post(t, anthropicPath, anthropicJSON("claude-haiku-4-5", false), map[string]string{"X-Stainless-Retry-Count": "2"})
	if e := g.logEntries(t, "api_call_success", 1); len(e) != 1 || e[0]["client_retry"] != float64(2) {
		t.Errorf("log lines %v, want client_retry 2", e)
	}
}

// secretHeaders are the credentials a test sends, one per header a
// provider reads; no log line may hold any of the values.
var secretHeaders = map[string]string{
	"X-Api-Key":     "sk-ant-EXAMPLE-x-api-key-3b1f",
	"Api-Key":       "azure-EXAMPLE-api-key-77c2",
	"Authorization": "Bearer sk-EXAMPLE-bearer-9d0e",
}

// TestExamplesKeepKeysOutOfLogs starts Caddy with each file in examples/,
// its loggers at debug level and its upstreams pointed at the mock, sends
// requests carrying every credential header (successes, a retried
// failure, a stream the upstream cuts, an unknown path), and greps every
// log Caddy wrote for the credentials.
func TestExamplesKeepKeysOutOfLogs(t *testing.T) {
	for _, file := range exampleFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			ex := startExample(t, file)
			for _, prefix := range ex.prefixes {
				for _, c := range []struct{ path, body, script string }{
					{"/v1/messages", anthropicJSON("claude-haiku-4-5", false), "529,200"},
					{"/v1/messages", anthropicJSON("claude-haiku-4-5", true), "200:cut=2"},
					{"/v1/chat/completions", chatJSON("gpt-4o-mini", false), "503,200"},
					{"/v1/chat/completions", chatJSON("gpt-4o-mini", true), "200:cut=2"},
					{"/v1/nothing-here", `{}`, ""},
				} {
					req, _ := http.NewRequest(http.MethodPost, ex.url+prefix+c.path, strings.NewReader(c.body))
					req.Header.Set("Content-Type", "application/json")
					for k, v := range secretHeaders {
						req.Header.Set(k, v)
					}
					if c.script != "" {
						req.Header.Set(mockprovider.ScriptHeader, c.script)
					}
					if resp, err := testcaddy.Client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}
			logs := ex.logs(t)
			if len(logs) == 0 {
				t.Fatal("no log was written")
			}
			if !bytes.Contains(logs, []byte(`"api_call_`)) && !bytes.Contains(logs, []byte("api_call_")) {
				t.Errorf("the module's call lines are not in the logs; the requests did not go through it")
			}
			for name, secret := range secretHeaders {
				token := strings.TrimPrefix(secret, "Bearer ")
				if i := bytes.Index(logs, []byte(token)); i >= 0 {
					line := logs[bytes.LastIndexByte(logs[:i], '\n')+1:]
					line, _, _ = bytes.Cut(line, []byte("\n"))
					t.Errorf("%s: the %s value is in a log line:\n%s", file, name, line)
				}
			}
		})
	}
}
