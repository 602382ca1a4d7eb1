package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

func TestOversizeBodyIs413WithoutUpstreamCall(t *testing.T) {
	g := startGateway(t, directives("max_body 1KB"), mockprovider.Options{})
	big := strings.Repeat("retry ", 5000/6)

	params := haiku("claude-haiku-4-5")
	params.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(big))}
	ac := g.anthropicClient()
	_, err := ac.Messages.New(context.Background(), params)
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusRequestEntityTooLarge || aErr.Type() != "request_too_large" {
		t.Errorf("anthropic: got %v, want 413 request_too_large", err)
	}

	chat := chatParams("gpt-4o-mini")
	chat.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage(big)}
	oc := g.openaiClient()
	_, err = oc.Chat.Completions.New(context.Background(), chat)
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusRequestEntityTooLarge || oErr.Code != "request_too_large" {
		t.Errorf("openai: got %v, want 413 with code request_too_large", err)
	}

	// A chunked body declares no length; the limit holds while reading.
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/messages", io.MultiReader(strings.NewReader(`{"model":"claude-haiku-4-5","max_tokens":1,"messages":[{"role":"user","content":"`), strings.NewReader(big), strings.NewReader(`"}]}`)))
	req.Header.Set("Content-Type", "application/json")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || gjson.GetBytes(body, "error.type").Str != "request_too_large" {
		t.Errorf("chunked: status %d body %s, want 413 request_too_large", resp.StatusCode, body)
	}
	if n := len(g.mock.Calls()); n != 0 {
		t.Errorf("upstream saw %d calls, want none for oversize bodies", n)
	}
}

func TestOpenAITransportFailuresAreDialectShaped(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "attempt_timeout 200ms"), mockprovider.Options{})
	client := g.openaiClient()
	for _, c := range []struct {
		steps  string
		status int
		code   string
	}{
		{"drop", http.StatusBadGateway, "bad_gateway"},
		{"hang", http.StatusGatewayTimeout, "timeout"},
	} {
		g.mock.Reset()
		_, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript(c.steps))
		var oErr *openai.Error
		if !errors.As(err, &oErr) || oErr.StatusCode != c.status {
			t.Errorf("%s: got %v, want %d", c.steps, err, c.status)
			continue
		}
		if oErr.Code != c.code || oErr.Type != "server_error" || oErr.Message == "" {
			t.Errorf("%s: error code %q type %q message %q, want code %s type server_error and a message", c.steps, oErr.Code, oErr.Type, oErr.Message, c.code)
		}
		if ct := oErr.Response.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: content-type %q", c.steps, ct)
		}
		if got := oErr.Response.Header.Get("X-Should-Retry"); got != "false" {
			t.Errorf("%s: x-should-retry %q, want false after the gateway's retry", c.steps, got)
		}
		if n := len(g.mock.Calls()); n != 2 {
			t.Errorf("%s: upstream saw %d calls, want 2 (1 + retries 1)", c.steps, n)
		}
	}
}

func TestUpstreamShouldRetryOverridesStatus(t *testing.T) {
	g := startGateway(t, directives("retries 2", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()

	_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("529:should-retry=false"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 {
		t.Fatalf("got %v, want the upstream's 529", err)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("x-should-retry false: upstream saw %d calls, want 1", n)
	}

	g.mock.Reset()
	msg, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("400:should-retry=true,200"))
	if err != nil {
		t.Fatalf("x-should-retry true on a 400: got %v, want it retried to success", err)
	}
	if len(msg.Content) == 0 {
		t.Errorf("empty message")
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("x-should-retry true: upstream saw %d calls, want 2", n)
	}
}

func TestOpenAIQuotaIsNeverRetried(t *testing.T) {
	// client_retries allow lets SDKs retry what the gateway gave up on;
	// a spent quota is not that, so it still says no: every SDK would
	// otherwise retry the 429 by its status alone.
	for _, clientRetries := range []string{"deny", "allow"} {
		t.Run(clientRetries, func(t *testing.T) {
			g := startGateway(t, directives("retries 3", "backoff 1ms 2ms", "client_retries "+clientRetries), mockprovider.Options{})
			client := g.openaiClient()
			_, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript("429:quota"))
			var oErr *openai.Error
			if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("got %v, want the upstream's 429", err)
			}
			if oErr.Code != "insufficient_quota" {
				t.Errorf("code %q, want insufficient_quota passed through", oErr.Code)
			}
			if got := oErr.Response.Header.Get("X-Should-Retry"); got != "false" {
				t.Errorf("x-should-retry %q, want false: waiting does not refill a quota", got)
			}
			if n := len(g.mock.Calls()); n != 1 {
				t.Errorf("upstream saw %d calls, want 1", n)
			}
		})
	}
}

func TestOpenAIRateLimitResetIsTheWaitHint(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	client := g.openaiClient()
	began := time.Now()
	_, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript("429:reset=1,200"))
	took := time.Since(began)
	if err != nil {
		t.Fatalf("got %v, want success after the reset", err)
	}
	calls := g.mock.Calls()
	if len(calls) != 2 {
		t.Fatalf("upstream saw %d calls, want 2", len(calls))
	}
	if gap := calls[1].At.Sub(calls[0].At); gap < 950*time.Millisecond || took > 2*time.Second {
		t.Errorf("retried %v after the 429 (answered after %v), want about the 1s x-ratelimit-reset", gap, took)
	}
}

func TestClientRetriesAllowLeavesShouldRetryAlone(t *testing.T) {
	g := startGateway(t, directives("retries 1", "backoff 1ms 2ms", "client_retries allow"), mockprovider.Options{})
	client := g.anthropicClient()
	_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("529"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 {
		t.Fatalf("got %v, want the upstream's 529", err)
	}
	if v := apiErr.Response.Header.Values("X-Should-Retry"); len(v) != 0 {
		t.Errorf("x-should-retry %q, want none with client_retries allow", v)
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2", n)
	}
}

// overloadedUpstream answers everything with a 529 and records what came.
type overloadedUpstream struct {
	mu     sync.Mutex
	calls  []string
	bodies []string
}

func (u *overloadedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.calls = append(u.calls, r.Method+" "+r.URL.Path)
	u.bodies = append(u.bodies, string(body))
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(529)
	_, _ = io.WriteString(w, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
}

func (u *overloadedUpstream) seen() ([]string, []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.calls...), append([]string(nil), u.bodies...)
}

func TestNonAPIRequestsPassThroughUntouched(t *testing.T) {
	up := &overloadedUpstream{}
	g := startGatewayWith(t, setup{
		options:  directives("retries 3", "backoff 1ms 2ms"),
		upstream: func(http.Handler) http.Handler { return up },
	})
	for _, c := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/models", ""},
		{http.MethodPost, "/v1/other", `{"model":"claude-haiku-4-5","anything":true}`},
		{http.MethodGet, "/v1/messages", ""},
	} {
		req, _ := http.NewRequest(c.method, g.URL+c.path, strings.NewReader(c.body))
		resp, body := do(t, req)
		if resp.StatusCode != 529 || !strings.Contains(string(body), "overloaded_error") {
			t.Errorf("%s %s: status %d body %s, want the upstream's 529 as it was", c.method, c.path, resp.StatusCode, body)
		}
		if v := resp.Header.Values("X-Should-Retry"); len(v) != 0 {
			t.Errorf("%s %s: x-should-retry %q added to a request the gateway does not handle", c.method, c.path, v)
		}
	}
	calls, bodies := up.seen()
	if want := "GET /v1/models,POST /v1/other,GET /v1/messages"; strings.Join(calls, ",") != want {
		t.Errorf("upstream calls %q, want one each: %s", calls, want)
	}
	if len(bodies) > 1 && bodies[1] != `{"model":"claude-haiku-4-5","anything":true}` {
		t.Errorf("passthrough body changed: %q", bodies[1])
	}
	if e := g.logEntries(t, "api_call_error", 0); len(e) != 0 {
		t.Errorf("passthrough requests logged as API calls: %v", e)
	}
}

// atChatCompletions serves the mock's chat completions on any path, as a
// provider behind a custom path would.
func atChatCompletions(mock http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = "/v1/chat/completions"
		mock.ServeHTTP(w, r)
	})
}

func TestForcedProviderRetriesOnCustomPath(t *testing.T) {
	for _, provider := range []string{"openai", "auto"} {
		t.Run(provider, func(t *testing.T) {
			g := startGatewayWith(t, setup{
				options:  directives("provider "+provider, "backoff 1ms 2ms"),
				path:     "/custom/*",
				upstream: atChatCompletions,
			})
			client := g.openaiClient(openaioption.WithBaseURL(g.URL + "/custom"))
			_, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript("429:retry-after-ms=10,200"))
			calls := g.mock.Calls()
			if provider == "auto" {
				// The contrast: by path alone, /custom/... is not an API
				// call, so the 429 passes through untouched.
				var oErr *openai.Error
				if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusTooManyRequests || len(calls) != 1 {
					t.Errorf("auto: got %v after %d calls, want the 429 passed through after 1", err, len(calls))
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want the 429 retried to success", err)
			}
			if len(calls) != 2 {
				t.Errorf("upstream saw %d calls, want 2", len(calls))
			}
		})
	}
}

// TestMaxBodyBoundary sends bodies of exactly max_body and one byte more,
// with a declared length and chunked.
func TestMaxBodyBoundary(t *testing.T) {
	g := startGateway(t, directives("max_body 1KB"), mockprovider.Options{})
	shell := anthropicJSON("claude-haiku-4-5", false)
	pad := 1000 - len(shell)
	for _, c := range []struct {
		size    int
		chunked bool
		status  int
	}{
		{1000, false, 200}, {1001, false, 413}, {1000, true, 200}, {1001, true, 413},
	} {
		body := strings.Replace(shell, thePrompt, thePrompt+strings.Repeat(" ", pad+c.size-1000), 1)
		if len(body) != c.size {
			t.Fatalf("built a body of %d bytes, want %d", len(body), c.size)
		}
		var r io.Reader = strings.NewReader(body)
		if c.chunked {
			r = io.MultiReader(r) // hides the length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/messages", r)
		req.Header.Set("Content-Type", "application/json")
		resp, got := do(t, req)
		if resp.StatusCode != c.status {
			t.Errorf("%d bytes (chunked %v): status %d, want %d: %s", c.size, c.chunked, resp.StatusCode, c.status, got)
		}
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2 (the bodies within max_body)", n)
	}
}

// TestChunkedBodyIsReplayedWhole sends a body without a declared length
// into retries: every attempt must carry the whole body and the same
// headers.
func TestChunkedBodyIsReplayedWhole(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	body := anthropicJSON("claude-haiku-4-5", false)
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/messages", io.MultiReader(strings.NewReader(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(mockprovider.ScriptHeader, "529:retry-after-ms=1,503,200")
	resp, got := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 on the third attempt: %s", resp.StatusCode, got)
	}
	calls := g.mock.Calls()
	if len(calls) != 3 {
		t.Fatalf("upstream saw %d calls, want 3", len(calls))
	}
	for i, c := range calls {
		if string(c.Body) != body {
			t.Errorf("attempt %d carried %q, want the whole body", i+1, c.Body)
		}
		// The proxy's own headers are added once per attempt, not once
		// more per retry.
		for _, name := range []string{"X-Forwarded-For", "Via", "Content-Type", mockprovider.ScriptHeader} {
			if v := c.Header.Values(name); len(v) != 1 || v[0] != calls[0].Header.Get(name) {
				t.Errorf("attempt %d: %s = %q, want the first attempt's single value", i+1, name, v)
			}
		}
	}
}

func TestRetryOnListDecides(t *testing.T) {
	g := startGateway(t, directives("retry_on 503", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.openaiClient()
	_, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript("429,200"))
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("got %v, want the 429 passed through: retry_on lists only 503", err)
	}
	if v := oErr.Response.Header.Values("X-Should-Retry"); len(v) != 0 {
		t.Errorf("x-should-retry %q on a response the gateway did not retry", v)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("429: upstream saw %d calls, want 1", n)
	}
	g.mock.Reset()
	if _, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript("503,200")); err != nil {
		t.Fatalf("503: got %v, want it retried to success", err)
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("503: upstream saw %d calls, want 2", n)
	}
}

// TestMisplacedGatewayAnswersInShape: ai_resilience placed before `handle`
// blocks in one route gets no response from the rest of the route on its
// second attempt (Caddy skips the handle groups it already matched). The
// client gets a 500 in the dialect's shape that says where to put the
// gateway, and not to retry, rather than an empty 500 its SDK would retry.
func TestMisplacedGatewayAnswersInShape(t *testing.T) {
	mock := mockprovider.New(mockprovider.Options{})
	upstream := httptest.NewServer(mock)
	t.Cleanup(upstream.Close)
	g := &gateway{Server: startSite(t, fmt.Sprintf(`
	route /v1/* {
		ai_resilience {
			backoff 1ms 2ms
		}
		handle /v1/messages {
			reverse_proxy %s
		}
		handle /v1/chat/* {
			reverse_proxy %s
		}
	}`, upstream.URL, upstream.URL)), mock: mock}
	for _, path := range []string{anthropicPath, chatPath} {
		mock.Reset()
		body := anthropicJSON("claude-haiku-4-5", false)
		if path == chatPath {
			body = chatJSON("gpt-4o-mini", false)
		}
		resp, got := g.post(t, path, body, map[string]string{mockprovider.ScriptHeader: "529,200"})
		wantGatewayError(t, path, path, resp, got, http.StatusInternalServerError, "same route or handle block as reverse_proxy")
		if v := resp.Header.Get("X-Should-Retry"); v != "false" {
			t.Errorf("%s: x-should-retry %q, want false", path, v)
		}
		if n := len(mock.Calls()); n != 1 {
			t.Errorf("%s: upstream saw %d calls, want the 1 before the retry found no handler", path, n)
		}
	}
}

// TestForcedProviderPassesOtherEndpoints: under a forced provider, the
// provider's endpoints other than the generation APIs (count_tokens,
// batches, files…) pass through untouched: no validation, no retry.
func TestForcedProviderPassesOtherEndpoints(t *testing.T) {
	g := startGateway(t, directives("provider anthropic"), mockprovider.Options{})
	body := `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"` + thePrompt + `"}]}`
	for _, path := range []string{"/v1/messages/count_tokens", "/v1/messages/batches"} {
		g.mock.Reset()
		// The mock serves no such endpoint: its 404 comes back as it is,
		// where the gateway would have refused the body as a Messages
		// request without max_tokens.
		resp, got := g.post(t, path, body, nil)
		if resp.StatusCode != http.StatusNotFound || len(g.mock.Calls()) != 1 || !strings.Contains(string(got), "mock provider has no endpoint") {
			t.Errorf("%s: status %d after %d calls, want the upstream's answer passed through after 1: %s", path, resp.StatusCode, len(g.mock.Calls()), got)
		}
	}
}
