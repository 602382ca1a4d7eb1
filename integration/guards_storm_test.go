package integration

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

// TestTenantRateLimitsNeverOpenCircuit: tenant A's key meets 429s, with
// hints and without, many more than the threshold; tenant B's requests for
// the same model still reach the upstream, because a rate limit says
// nothing about the model's health.
func TestTenantRateLimitsNeverOpenCircuit(t *testing.T) {
	const model = "claude-sonnet-4-5"
	g := startGateway(t, directives("circuit_breaker 2 30s", "retries 1", "backoff 1ms 2ms"), mockprovider.Options{})
	ctx := context.Background()
	a := g.anthropicClient(anthropicoption.WithAPIKey("sk-ant-tenant-a"))
	b := g.anthropicClient(anthropicoption.WithAPIKey("sk-ant-tenant-b"))
	for i, steps := range []string{"429", "429:retry-after=0.01", "429", "429:should-retry=true", "429"} {
		_, err := a.Messages.New(ctx, haiku(model), script(steps))
		var aErr *anthropic.Error
		if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("tenant A, request %d: got %v, want the upstream's 429", i+1, err)
		}
	}
	if n := len(g.mock.Calls()); n != 10 {
		t.Fatalf("tenant A's requests made %d upstream calls, want 10 (2 attempts each)", n)
	}
	g.mock.Reset()
	for i := range 3 {
		if _, err := b.Messages.New(ctx, haiku(model)); err != nil {
			t.Fatalf("tenant B, request %d: %v (tenant A's rate limits opened the model's circuit)", i+1, err)
		}
	}
	if n := len(g.mock.Calls()); n != 3 {
		t.Errorf("tenant B's requests made %d upstream calls, want 3", n)
	}
	if open := g.logLines(t, "circuit open"); len(open) != 0 {
		t.Errorf("circuit open lines %v, want none", open)
	}
}

// TestLateSuccessDoesNotCloseCircuit: a request sent while the circuit was
// closed, answered only after it opened, neither closes it nor shortens the
// cooldown: the next request still goes to the fallback without a call to
// the open model.
func TestLateSuccessDoesNotCloseCircuit(t *testing.T) {
	const a, b = "late-circuit-a", "late-circuit-b"
	sw := &modelSwitch{model: a}
	g := startGatewayWith(t, setup{
		options:  directives("circuit_breaker 2 30s", "retries 0", "fallback "+a+" "+b),
		upstream: func(h http.Handler) http.Handler { sw.next = h; return sw },
	})
	ctx := context.Background()
	client := g.anthropicClient()

	slow := make(chan error, 1)
	go func() {
		msg, err := client.Messages.New(ctx, haiku(a), script("200:delay=700ms"))
		if err == nil && msg.Model != a {
			err = errors.New("the slow request was served by " + msg.Model)
		}
		slow <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); len(g.mock.Calls()) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached the upstream")
		}
	}
	sw.down.Store(true)
	for i := range 2 {
		msg, err := client.Messages.New(ctx, haiku(a))
		if err != nil || msg.Model != b {
			t.Fatalf("failing request %d: %v, served by %v; want the fallback", i+1, err, msg)
		}
	}
	if len(g.logLines(t, "circuit open")) != 1 {
		t.Fatal("two consecutive 529s did not open the circuit")
	}
	if err := <-slow; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	// The model answers again, but its circuit opened after the slow
	// request was sent: the cooldown holds.
	sw.down.Store(false)
	g.mock.Reset()
	msg, err := client.Messages.New(ctx, haiku(a))
	if err != nil || msg.Model != b {
		t.Fatalf("after the late success: %v, served by %v; want the fallback", err, msg)
	}
	if got := modelCalls(g); got[a] != 0 {
		t.Errorf("the open model got %d calls after a late success, want none for the cooldown", got[a])
	}
	if closed := g.logLines(t, "circuit closed"); len(closed) != 0 {
		t.Errorf("circuit closed lines %v, want none", closed)
	}
}

// TestPacedRetriesPassSpentBudget: with a budget that allows no retry of
// the gateway's own, a retry that waits for the upstream's hint
// (retry-after, retry-after-ms, a rate-limit reset) still goes, while an
// unhinted 529 is returned at once.
func TestPacedRetriesPassSpentBudget(t *testing.T) {
	g := startGateway(t, directives("retry_budget 0% 0", "retries 2", "backoff 1ms 2ms"), mockprovider.Options{})
	ctx := context.Background()
	ac, oc := g.anthropicClient(), g.openaiClient()
	for _, steps := range []string{"429:retry-after=0.05,200", "529:retry-after=0.05,200", "429:retry-after-ms=50,200"} {
		g.mock.Reset()
		if _, err := ac.Messages.New(ctx, haiku("claude-haiku-4-5"), script(steps)); err != nil {
			t.Errorf("%s: %v (a hinted retry was refused)", steps, err)
		}
		if n := len(g.mock.Calls()); n != 2 {
			t.Errorf("%s: %d upstream calls, want 2", steps, n)
		}
	}
	// An OpenAI 429 whose only hint is its exhausted window's reset.
	g.mock.Reset()
	if _, err := oc.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"), openaiScript("429:reset=0.1,200")); err != nil {
		t.Errorf("reset-hinted 429: %v (a hinted retry was refused)", err)
	}
	if n := len(g.logLines(t, "retry budget spent")); n != 0 {
		t.Errorf("%d retry budget spent lines for hinted retries, want none", n)
	}

	g.mock.Reset()
	_, err := ac.Messages.New(ctx, haiku("claude-haiku-4-5"), script("529,200"))
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != 529 {
		t.Fatalf("unhinted 529 with the budget spent: got %v, want the upstream's 529 at once", err)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("unhinted 529: %d upstream calls, want 1", n)
	}
	if n := len(g.logLines(t, "retry budget spent")); n != 1 {
		t.Errorf("%d retry budget spent lines, want 1", n)
	}
}

// TestPaceHoldsOnlyItsModelAndKey: providers limit each model, and each
// key's organisation, separately. A 429 saying claude-opus-4-5's request
// limit is spent for 6 s holds the next claude-opus-4-5 request with the
// same key (here beyond max_wait, so it is answered at once without an
// upstream call), and nothing else: not claude-haiku-4-5, not another key.
func TestPaceHoldsOnlyItsModelAndKey(t *testing.T) {
	g := startGateway(t, directives("max_wait 1s"), mockprovider.Options{})
	ctx := context.Background()
	keyA := g.anthropicClient(anthropicoption.WithAPIKey("sk-ant-org-a"))
	keyB := g.anthropicClient(anthropicoption.WithAPIKey("sk-ant-org-b"))
	_, err := keyA.Messages.New(ctx, haiku("claude-opus-4-5"), script("429:reset=6"))
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("first request: got %v, want the upstream's 429", err)
	}

	for name, send := range map[string]func() error{
		"another model, same key": func() error { _, err := keyA.Messages.New(ctx, haiku("claude-haiku-4-5")); return err },
		"same model, another key": func() error { _, err := keyB.Messages.New(ctx, haiku("claude-opus-4-5")); return err },
	} {
		g.mock.Reset()
		began := time.Now()
		if err := send(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if took := time.Since(began); took > 500*time.Millisecond {
			t.Errorf("%s: held %v", name, took)
		}
		if n := len(g.mock.Calls()); n != 1 {
			t.Errorf("%s: %d upstream calls, want 1", name, n)
		}
	}

	g.mock.Reset()
	_, err = keyA.Messages.New(ctx, haiku("claude-opus-4-5"))
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests || !strings.Contains(aErr.RawJSON(), "upstream") {
		t.Fatalf("same model and key: got %v, want the gateway's 429 about the upstream's spent limit", err)
	}
	noCalls(t, g, "same model and key")

	// OpenAI keys come in Authorization; the same rule holds.
	oa := g.openaiClient(openaioption.WithAPIKey("sk-org-a"))
	ob := g.openaiClient(openaioption.WithAPIKey("sk-org-b"))
	if _, err := oa.Chat.Completions.New(ctx, chatParams("gpt-4o"), openaiScript("200:reset=6")); err != nil {
		t.Fatal(err)
	}
	g.mock.Reset()
	if _, err := ob.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
		t.Errorf("openai, another key: %v", err)
	}
	_, err = oa.Chat.Completions.New(ctx, chatParams("gpt-4o"))
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusTooManyRequests {
		t.Errorf("openai, same model and key: got %v, want the gateway's 429", err)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("openai: %d upstream calls after the hold, want 1 (the other key's)", n)
	}
}

// TestCircuitCountsHealthNotRetryOn: the circuit judges health by what the
// upstream did, not by what the gateway retries: a stream the upstream cuts
// after its 200, and a 500 that retry_on does not list, are failures of the
// model.
func TestCircuitCountsHealthNotRetryOn(t *testing.T) {
	for name, c := range map[string]struct {
		options, steps string
		stream         bool
	}{
		"cut stream":    {"retries 0", "200:cut=2", true},
		"unretried 500": {"retry_on 429 529", "500", false},
	} {
		t.Run(name, func(t *testing.T) {
			const model = "health-model"
			g := startGateway(t, directives("circuit_breaker 2 30s", c.options), mockprovider.Options{})
			for range 2 {
				g.post(t, "/v1/messages", anthropicJSON(model, c.stream), map[string]string{mockprovider.ScriptHeader: c.steps, "X-Api-Key": testAPIKey})
			}
			g.mock.Reset()
			resp, body := g.post(t, "/v1/messages", anthropicJSON(model, c.stream), map[string]string{"X-Api-Key": testAPIKey})
			if resp.StatusCode != 529 || !strings.Contains(string(body), "circuit") {
				t.Errorf("after two failures: %d %s, want the gateway's 529 for an open circuit", resp.StatusCode, body)
			}
			noCalls(t, g, "open circuit")
		})
	}
}
