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

// TestFallbackThatCannotTakeTheRequestIsPassedOver: a fallback model whose
// output limit leaves no room for the request's thinking budget is passed
// over. The client's request was valid and its failure the upstream's, so
// it gets the upstream's error (or the next fallback's answer), never a
// 400 of the gateway's.
func TestFallbackThatCannotTakeTheRequestIsPassedOver(t *testing.T) {
	body := `{"model":"claude-big","max_tokens":8000,"thinking":{"type":"enabled","budget_tokens":4000},"messages":[{"role":"user","content":"` + thePrompt + `"}]}`
	for _, c := range []struct {
		name, chain string
		status      int
		served      string
	}{
		{"no usable fallback", "fallback claude-big claude-tiny", 529, ""},
		{"the next one serves", "fallback claude-big claude-tiny claude-roomy", 200, "claude-roomy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := startGateway(t, directives("retries 0", c.chain, "model claude-tiny {\n\t\t\t\tmax_output 1000\n\t\t\t}"),
				mockprovider.Options{FailModels: map[string]int{"claude-big": 529}})
			resp, got := g.post(t, anthropicPath, body, nil)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, got)
			}
			for _, call := range g.mock.Calls() {
				if call.Model == "claude-tiny" {
					t.Errorf("the fallback that cannot take the thinking budget was called")
				}
			}
			if e := g.logEntries(t, "fallback passed over", 1); len(e) != 1 || e[0]["to"] != "claude-tiny" {
				t.Errorf("fallback passed over lines %v, want one for claude-tiny", e)
			}
			if c.served != "" {
				if e := g.logEntries(t, "api_call_success", 1); len(e) != 1 || e[0]["served_model"] != c.served {
					t.Errorf("call lines %v, want one served by %s", e, c.served)
				}
			}
		})
	}
}
