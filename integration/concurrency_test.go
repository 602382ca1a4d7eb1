package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/openai/openai-go/v3"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

// TestConcurrentCallsStayApart runs many retried calls at once, streamed
// and not, each for its own model: every answer must be its own request's
// (the gateway pools buffers across calls), and under -race the run checks
// the request path for data races.
func TestConcurrentCallsStayApart(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms", "retry_budget off", "circuit_breaker off"), mockprovider.Options{})
	ac, oc := g.anthropicClient(), g.openaiClient()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			model := fmt.Sprintf("model-%02d", i)
			id := mockprovider.ScriptIDHeader
			steps := "429:retry-after-ms=5,200:events=6"
			var text string
			switch i % 4 {
			case 0:
				msg, err := ac.Messages.New(context.Background(), haiku(model), script(steps), anthropicHeader(id, model))
				if err != nil {
					errs <- fmt.Errorf("%s: %w", model, err)
					return
				}
				text = msg.Content[0].Text
			case 1:
				stream := ac.Messages.NewStreaming(context.Background(), haiku(model), script(steps), anthropicHeader(id, model))
				var msg anthropic.Message
				for stream.Next() {
					_ = msg.Accumulate(stream.Current())
				}
				if err := stream.Err(); err != nil || len(msg.Content) != 1 {
					errs <- fmt.Errorf("%s: stream %v, content %+v", model, err, msg.Content)
					return
				}
				text = msg.Content[0].Text
			case 2:
				c, err := oc.Chat.Completions.New(context.Background(), chatParams(model), openaiScript(steps), openaiHeader(id, model))
				if err != nil {
					errs <- fmt.Errorf("%s: %w", model, err)
					return
				}
				text = c.Choices[0].Message.Content
			case 3:
				stream := oc.Chat.Completions.NewStreaming(context.Background(), chatParams(model), openaiScript(steps), openaiHeader(id, model))
				var acc openai.ChatCompletionAccumulator
				for stream.Next() {
					acc.AddChunk(stream.Current())
				}
				if err := stream.Err(); err != nil || len(acc.Choices) != 1 {
					errs <- fmt.Errorf("%s: stream %v", model, err)
					return
				}
				text = acc.Choices[0].Message.Content
			}
			want := mockText(model, 4) // non-streamed replies are the four words
			if i%2 == 1 {
				want = mockText(model, 6)
			}
			if text != want {
				errs <- fmt.Errorf("%s: answer %q, want %q", model, text, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if calls := len(g.mock.Calls()); calls != 2*n {
		t.Errorf("upstream saw %d calls, want %d (one 429 and one success each)", calls, 2*n)
	}
	if lines := g.logEntries(t, "api_call_success", n); len(lines) != n {
		t.Errorf("%d api_call_success lines, want %d", len(lines), n)
	}
}
