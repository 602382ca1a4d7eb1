package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/openai/openai-go/v3"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

func TestClientCancelDuringBackoffStopsAttempts(t *testing.T) {
	g := startGateway(t, directives("retries 3", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelled := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		cancelled <- time.Now()
		cancel()
	}()
	_, err := client.Messages.New(ctx, haiku("claude-haiku-4-5"), script("529:retry-after=5"))
	returned := time.Now()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want the SDK's context.Canceled", err)
	}
	if late := returned.Sub(<-cancelled); late > time.Second {
		t.Errorf("the SDK returned %v after the cancel", late)
	}
	// The gateway was sitting out retry-after: 5 when the client left; a
	// gateway that kept waiting would call again after the wait, and one
	// that ignored the wait would already have called again.
	time.Sleep(1500 * time.Millisecond)
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1: no attempt after the client left", n)
	}
	if e := g.logEntries(t, "api_call_error", 1); len(e) != 1 || e[0]["error_type"] != "client_closed" {
		t.Errorf("log lines %v, want one api_call_error with error_type client_closed", e)
	}
}

func TestClientCancelDuringAttemptStopsAttempts(t *testing.T) {
	g := startGateway(t, directives("retries 3", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := client.Messages.New(ctx, haiku("claude-haiku-4-5"), script("hang"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the SDK's context deadline", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("the SDK returned after %v", took)
	}
	if e := g.logEntries(t, "api_call_error", 1); len(e) != 1 || e[0]["error_type"] != "client_closed" || e[0]["attempts"] != 1.0 {
		t.Errorf("log lines %v, want one api_call_error, client_closed after 1 attempt", e)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1: the hung attempt ends with the client", n)
	}
}

func TestDeadlineAnswersTimeoutInDialectShape(t *testing.T) {
	g := startGateway(t, directives("deadline 1s", "backoff 1ms 2ms"), mockprovider.Options{})

	ac, oc := g.anthropicClient(), g.openaiClient()
	began := time.Now()
	_, err := ac.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("hang"))
	took := time.Since(began)
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusGatewayTimeout || aErr.Type() != "timeout_error" {
		t.Fatalf("anthropic: got %v, want a 504 timeout_error", err)
	}
	if ct := aErr.Response.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("anthropic: content-type %q, want application/json", ct)
	}
	if took < time.Second || took > 2*time.Second {
		t.Errorf("anthropic: answered after %v, want about the 1s deadline", took)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("anthropic: upstream saw %d calls, want 1 (nothing fits after the deadline)", n)
	}

	g.mock.Reset()
	began = time.Now()
	_, err = oc.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"), openaiScript("hang"))
	took = time.Since(began)
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusGatewayTimeout || oErr.Code != "timeout" || oErr.Message == "" {
		t.Fatalf("openai: got %v, want a 504 with code timeout", err)
	}
	if took < time.Second || took > 2*time.Second {
		t.Errorf("openai: answered after %v, want about the 1s deadline", took)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("openai: upstream saw %d calls, want 1", n)
	}
}

func TestMaxWaitReturnsLongHintAtOnce(t *testing.T) {
	g := startGateway(t, directives("max_wait 1s", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()
	began := time.Now()
	_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("429:retry-after=30"))
	took := time.Since(began)
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("got %v, want the upstream's 429", err)
	}
	if took > time.Second {
		t.Errorf("answered after %v, want at once: a 30s hint is over max_wait", took)
	}
	h := apiErr.Response.Header
	if got := h.Get("X-Should-Retry"); got != "false" {
		t.Errorf("x-should-retry %q, want false", got)
	}
	if got := h.Get("Retry-After"); got != "30" {
		t.Errorf("retry-after %q, want the upstream's 30", got)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1", n)
	}
}

func TestMaxWaitGoesToFallbackAtOnce(t *testing.T) {
	g := startGateway(t, directives("max_wait 1s", "backoff 1ms 2ms", "fallback claude-opus-4-5 claude-haiku-4-5"), mockprovider.Options{})
	client := g.anthropicClient()
	began := time.Now()
	msg, err := client.Messages.New(context.Background(), haiku("claude-opus-4-5"), script("429:retry-after=30,200"))
	if err != nil {
		t.Fatalf("got %v, want the fallback's answer", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("answered after %v, want at once", took)
	}
	if msg.Model != "claude-haiku-4-5" {
		t.Errorf("served by %q, want the fallback claude-haiku-4-5", msg.Model)
	}
	calls := g.mock.Calls()
	if len(calls) != 2 || calls[0].Model != "claude-opus-4-5" || calls[1].Model != "claude-haiku-4-5" {
		t.Errorf("upstream calls %d, want one to opus then one to haiku", len(calls))
	}
}

func TestAttemptTimeoutRetriesSlowHeaders(t *testing.T) {
	g := startGateway(t, directives("attempt_timeout 300ms", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()
	began := time.Now()
	msg, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("200:delay=2s,200"))
	took := time.Since(began)
	if err != nil {
		t.Fatalf("got %v, want the second attempt's answer", err)
	}
	if len(msg.Content) == 0 {
		t.Errorf("empty message %+v", msg)
	}
	if took < 300*time.Millisecond || took > time.Second {
		t.Errorf("answered after %v, want just after the 300ms attempt timeout", took)
	}
	calls := g.mock.Calls()
	if len(calls) != 2 || calls[0].Status != 0 || calls[1].Status != 200 {
		t.Errorf("upstream calls %+v, want an abandoned one then a 200", calls)
	}
}

func TestAttemptTimeoutDoesNotCutStartedStream(t *testing.T) {
	g := startGateway(t, directives("attempt_timeout 300ms", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()
	began := time.Now()
	stream := client.Messages.NewStreaming(context.Background(), haiku("claude-haiku-4-5"), script("200:events=5:interval=200ms"))
	defer stream.Close()
	var msg anthropic.Message
	for stream.Next() {
		if err := msg.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(began)
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error %v: attempt_timeout cut a stream that had started", err)
	}
	if took < time.Second {
		t.Errorf("the stream took %v; the upstream paces it over 2s", took)
	}
	if want := mockText("claude-haiku-4-5", 5); len(msg.Content) != 1 || msg.Content[0].Text != want {
		t.Errorf("content %+v, want all five deltas %q", msg.Content, want)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1", n)
	}
}

func TestWaitCrossingDeadlineIsNotStarted(t *testing.T) {
	g := startGateway(t, directives("deadline 2s", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.anthropicClient()
	began := time.Now()
	_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("529:retry-after=3"))
	took := time.Since(began)
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 || apiErr.Type() != "overloaded_error" {
		t.Fatalf("got %v, want the upstream's 529", err)
	}
	if took > time.Second {
		t.Errorf("answered after %v, want at once: a 3s wait cannot fit a 2s deadline", took)
	}
	if got := apiErr.Response.Header.Get("X-Should-Retry"); got != "false" {
		t.Errorf("x-should-retry %q, want false", got)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1", n)
	}
}

func TestDeadlineDoesNotCutStartedStream(t *testing.T) {
	g := startGateway(t, directives("deadline 1s", "backoff 1ms 2ms"), mockprovider.Options{})
	client := g.openaiClient()
	began := time.Now()
	stream := client.Chat.Completions.NewStreaming(context.Background(), chatParams("gpt-4o-mini"), openaiScript("200:events=6:interval=250ms"))
	defer stream.Close()
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	took := time.Since(began)
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error %v: the deadline cut a stream that had started", err)
	}
	if took < 1500*time.Millisecond {
		t.Errorf("the stream took %v; the upstream paces it over 2s, past the 1s deadline", took)
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != mockText("gpt-4o-mini", 6) {
		t.Errorf("choices %+v, want all six deltas", acc.Choices)
	}
}

// TestHalfClosedClientGetsNoSuccess: a client that sends a whole request
// and then, 300ms later, half-closes its connection has left, as far as
// Go's server can tell. Wherever the gateway is when it notices (in an attempt, sitting
// out a backoff, queued in a zone), the call is logged client_closed and
// the connection carries status 499, as bare reverse_proxy's does, never
// an empty 200 a client could take for a whole answer.
func TestHalfClosedClientGetsNoSuccess(t *testing.T) {
	const statusClientClosed = 499
	// Each case has its own bucket of one request a minute, and may wait
	// for it longer than the minute its refill takes.
	g := startGateway(t, limitOptions([]string{"retries 3", "backoff 1ms 2ms"}, limitBlock("half-close", "key {http.request.header.X-Case}", "rpm 1", "wait 90s")), mockprovider.Options{})
	const body = `{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
	request := func(name, steps string) string {
		return fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAnthropic-Version: 2023-06-01\r\nX-Api-Key: sk-ant-test\r\nX-Case: %s\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s",
			name, mockprovider.ScriptHeader, steps, len(body), body)
	}
	// The queued case's bucket is spent first, by a request that completes.
	if status, answer := rawExchange(t, g.URL, request("queued", "200"), noHalfClose, 5*time.Second); status != http.StatusOK {
		t.Fatalf("request spending the bucket: status %d %s", status, answer)
	}
	for i, c := range []struct{ name, steps string }{
		{"in-attempt", "hang"},
		{"in-backoff", "529:retry-after=5"},
		{"queued", "200"},
	} {
		status, answer := rawExchange(t, g.URL, request(c.name, c.steps), 300*time.Millisecond, 5*time.Second)
		if status != statusClientClosed || len(answer) != 0 {
			t.Errorf("%s: got status %d %q, want %d and no body", c.name, status, answer, statusClientClosed)
		}
		if e := g.logEntries(t, "api_call_error", i+1); len(e) != i+1 || e[i]["error_type"] != "client_closed" {
			t.Errorf("%s: log lines %v, want api_call_error client_closed", c.name, e)
		}
	}
	if n := len(g.mock.Calls()); n != 3 {
		t.Errorf("upstream saw %d calls, want 3: the first, the hung one, the 529 (no retry after the client left)", n)
	}
}
