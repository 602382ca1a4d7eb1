package integration

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

func TestRateLimitedThenSuccessHonoursRetryAfter(t *testing.T) {
	g := startGateway(t, "backoff 1ms 2ms", mockprovider.Options{})
	client := g.anthropicClient()
	began := time.Now()
	msg, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("429:retry-after=1,200"))
	if err != nil {
		t.Fatalf("the SDK saw an error where the gateway should have retried: %v", err)
	}
	if waited := time.Since(began); waited < time.Second {
		t.Errorf("answered after %v: the gateway did not sit out retry-after: 1", waited)
	}
	if msg.Model != "claude-haiku-4-5" || len(msg.Content) == 0 {
		t.Errorf("unexpected message: %+v", msg)
	}
	if calls := g.mock.Calls(); len(calls) != 2 {
		t.Errorf("upstream saw %d calls, want 2 (one 429, one success)", len(calls))
	}
}

func TestClientErrorsPassThroughAfterOneCall(t *testing.T) {
	for _, status := range []int{400, 401} {
		g := startGateway(t, "backoff 1ms 2ms", mockprovider.Options{})
		client := g.anthropicClient()
		_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script(itoa(status)))
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
			t.Fatalf("status %d: got %v, want the upstream's %d", status, err, status)
		}
		if n := len(g.mock.Calls()); n != 1 {
			t.Errorf("status %d: upstream saw %d calls, want exactly 1", status, n)
		}
		if got := apiErr.Response.Header.Get("X-Should-Retry"); got != "" {
			t.Errorf("status %d: x-should-retry %q added to an error the gateway did not retry", status, got)
		}
	}
}

func TestExhaustedRetriesTellClientNotToRetry(t *testing.T) {
	g := startGateway(t, "retries 2\n\t\t\tbackoff 1ms 2ms", mockprovider.Options{})
	client := g.anthropicClient()
	_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("529"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 {
		t.Fatalf("got %v, want the upstream's 529", err)
	}
	if got := apiErr.Response.Header.Get("X-Should-Retry"); got != "false" {
		t.Errorf("x-should-retry = %q, want false after the gateway's own retries", got)
	}
	if got := apiErr.Response.Header.Get("Request-Id"); got == "" {
		t.Errorf("the upstream's request-id was lost")
	}
	if n := len(g.mock.Calls()); n != 3 {
		t.Errorf("upstream saw %d calls, want 3 (1 + retries 2)", n)
	}
	if apiErr.Response.StatusCode != http.StatusTeapot && apiErr.Type() != "overloaded_error" {
		t.Errorf("error type %q, want the upstream's overloaded_error", apiErr.Type())
	}
}

func TestFallbackServesWithRewrittenModel(t *testing.T) {
	g := startGateway(t, "retries 1\n\t\t\tbackoff 1ms 2ms\n\t\t\tfallback claude-opus-4-5 claude-sonnet-4-5 claude-haiku-4-5",
		mockprovider.Options{FailModels: map[string]int{"claude-opus-4-5": 529}})
	client := g.anthropicClient()
	msg, err := client.Messages.New(context.Background(), haiku("claude-opus-4-5"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Model != "claude-sonnet-4-5" {
		t.Errorf("served by %q, want the first fallback claude-sonnet-4-5", msg.Model)
	}
	calls := g.mock.Calls()
	if len(calls) != 3 {
		t.Fatalf("upstream saw %d calls, want 2 to opus and 1 to sonnet", len(calls))
	}
	first, last := calls[0].Body, calls[2].Body
	want := []byte(`"claude-sonnet-4-5"`)
	if got := replaceOnce(first, []byte(`"claude-opus-4-5"`), want); string(got) != string(last) {
		t.Errorf("fallback body differs beyond the model:\n first %s\n last  %s", first, last)
	}
}

func TestTransportFailureBecomesDialect502(t *testing.T) {
	g := startGateway(t, "retries 1\n\t\t\tbackoff 1ms 2ms", mockprovider.Options{})
	client := g.anthropicClient()
	_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("drop"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %v, want a 502", err)
	}
	if apiErr.Type() != "api_error" {
		t.Errorf("error type %q, want api_error in the anthropic shape", apiErr.Type())
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2", n)
	}
	_ = anthropicoption.WithMaxRetries
}
