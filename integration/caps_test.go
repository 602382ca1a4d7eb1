package integration

// End-to-end tests of the rule that lowering an output cap keeps the
// request valid: an Anthropic thinking budget must stay below max_tokens
// (and at least 1024), on every path that lowers a cap.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

// thinkingParams is a request for long output with extended thinking.
func thinkingParams(model string, maxTokens, budget int64) anthropic.MessageNewParams {
	p := haiku(model)
	p.MaxTokens = maxTokens
	p.Thinking = anthropic.ThinkingConfigParamOfEnabled(budget)
	return p
}

// streamAll runs a streaming Messages call (the SDK refuses long
// non-streaming ones) to its end.
func streamAll(client anthropic.Client, params anthropic.MessageNewParams) error {
	stream := client.Messages.NewStreaming(context.Background(), params)
	for stream.Next() {
	}
	return stream.Err()
}

// wantCaps checks the max_tokens and thinking budget an upstream call got.
func wantCaps(t *testing.T, what string, call mockprovider.Call, maxTokens, budget int64) {
	t.Helper()
	got := gjson.GetManyBytes(call.Body, "max_tokens", "thinking.budget_tokens")
	if got[0].Int() != maxTokens || got[1].Int() != budget || got[0].Raw != itoa(int(maxTokens)) {
		t.Errorf("%s: upstream got max_tokens %s and budget_tokens %s, want %d and %d", what, got[0].Raw, got[1].Raw, maxTokens, budget)
	}
}

func TestThinkingBudgetFollowsTheCeiling(t *testing.T) {
	g := startGateway(t, directives("max_tokens 8192"), mockprovider.Options{})
	if err := streamAll(g.anthropicClient(), thinkingParams("claude-haiku-4-5", 32000, 16000)); err != nil {
		t.Fatal(err)
	}
	wantCaps(t, "ceiling", onlyCall(t, g), 8192, 8191)

	// A budget that already fits is left alone.
	g.mock.Reset()
	if err := streamAll(g.anthropicClient(), thinkingParams("claude-haiku-4-5", 32000, 4000)); err != nil {
		t.Fatal(err)
	}
	wantCaps(t, "fitting budget", onlyCall(t, g), 8192, 4000)
}

func TestThinkingBudgetFollowsModelMaxOutput(t *testing.T) {
	g := startGateway(t, directives("model claude-think-test {", "\tmax_output 4096", "}"), mockprovider.Options{})
	if err := streamAll(g.anthropicClient(), thinkingParams("claude-think-test", 32000, 16000)); err != nil {
		t.Fatal(err)
	}
	wantCaps(t, "max_output", onlyCall(t, g), 4096, 4095)
}

// TestThinkingBudgetFollowsFallbackMaxOutput falls back to a model with a
// smaller max_output: its request gets the smaller cap and a budget below
// it, while the first model's attempt went as the client sent it.
func TestThinkingBudgetFollowsFallbackMaxOutput(t *testing.T) {
	g := startGateway(t, directives("retries 0", "fallback claude-think-big claude-think-small",
		"model claude-think-small {", "\tmax_output 2048", "}"),
		mockprovider.Options{FailModels: map[string]int{"claude-think-big": 529}})
	if err := streamAll(g.anthropicClient(), thinkingParams("claude-think-big", 8000, 4000)); err != nil {
		t.Fatal(err)
	}
	calls := g.mock.Calls()
	if len(calls) != 2 {
		t.Fatalf("upstream saw %d calls, want 2", len(calls))
	}
	wantCaps(t, "first model", calls[0], 8000, 4000)
	wantCaps(t, "fallback", calls[1], 2048, 2047)
}

// TestThinkingBudgetThatCannotFitIsRefused lowers the cap below the
// smallest thinking budget Anthropic accepts: the request is answered here
// with both numbers, never sent invalid.
func TestThinkingBudgetThatCannotFitIsRefused(t *testing.T) {
	g := startGateway(t, directives("max_tokens 1000"), mockprovider.Options{})
	err := streamAll(g.anthropicClient(), thinkingParams("claude-haiku-4-5", 32000, 16000))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Type() != "invalid_request_error" {
		t.Fatalf("got %v, want a 400 invalid_request_error", err)
	}
	msg := gjson.Get(apiErr.RawJSON(), "error.message").Str
	for _, want := range []string{"1000", "16000", "budget_tokens", "1024"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not name %s", msg, want)
		}
	}
	noCalls(t, g, "an impossible thinking budget")
}
