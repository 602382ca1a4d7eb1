package integration

// End-to-end tests of the guards (output caps, context window, validation),
// the circuit breaker and the retry budget: through a real Caddy, with the
// official SDKs as clients wherever the request is one an SDK would send,
// and raw HTTP for the malformed bodies no SDK sends.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// sentBody records the body an SDK put on the wire, so a test can compare
// it byte for byte with what reached the upstream.
type sentBody struct{ b []byte }

func (s *sentBody) keep(r *http.Request) error {
	if r.Body == nil {
		s.b = nil
		return nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	s.b = b
	return nil
}

func (s *sentBody) anthropic() anthropicoption.RequestOption {
	return anthropicoption.WithMiddleware(func(r *http.Request, next anthropicoption.MiddlewareNext) (*http.Response, error) {
		if err := s.keep(r); err != nil {
			return nil, err
		}
		return next(r)
	})
}

func (s *sentBody) openai() openaioption.RequestOption {
	return openaioption.WithMiddleware(func(r *http.Request, next openaioption.MiddlewareNext) (*http.Response, error) {
		if err := s.keep(r); err != nil {
			return nil, err
		}
		return next(r)
	})
}

// onlyCall returns the single call the upstream received, or fails.
func onlyCall(t *testing.T, g *gateway) mockprovider.Call {
	t.Helper()
	calls := g.mock.Calls()
	if len(calls) != 1 {
		t.Fatalf("upstream saw %d calls, want exactly 1", len(calls))
	}
	return calls[0]
}

// noCalls fails unless the upstream received nothing.
func noCalls(t *testing.T, g *gateway, what string) {
	t.Helper()
	if n := len(g.mock.Calls()); n != 0 {
		t.Errorf("%s: upstream saw %d calls, want none", what, n)
	}
}

// sameBodyBut checks that the upstream body is the sent body with only the
// listed `"field":value` members replaced.
func sameBodyBut(t *testing.T, what string, sent, upstream []byte, replacements ...string) {
	t.Helper()
	want := sent
	for i := 0; i+1 < len(replacements); i += 2 {
		if !bytes.Contains(want, []byte(replacements[i])) {
			t.Fatalf("%s: sent body %s has no %s", what, sent, replacements[i])
		}
		want = bytes.Replace(want, []byte(replacements[i]), []byte(replacements[i+1]), 1)
	}
	if !bytes.Equal(want, upstream) {
		t.Errorf("%s: upstream body differs beyond the cap field:\n want %s\n got  %s", what, want, upstream)
	}
}

func TestGuardMaxTokensClamp(t *testing.T) {
	g := startGateway(t, directives("max_tokens 1000"), mockprovider.Options{})
	ctx := context.Background()
	ac, oc := g.anthropicClient(), g.openaiClient()
	var sent sentBody

	// Anthropic: max_tokens 5000 reaches upstream as 1000, nothing else moves.
	params := haiku("claude-haiku-4-5")
	params.MaxTokens = 5000
	params.Temperature = anthropic.Float(0.5)
	if _, err := ac.Messages.New(ctx, params, sent.anthropic()); err != nil {
		t.Fatal(err)
	}
	call := onlyCall(t, g)
	if got := gjson.GetBytes(call.Body, "max_tokens").Int(); got != 1000 {
		t.Errorf("anthropic: upstream max_tokens %d, want the ceiling 1000", got)
	}
	sameBodyBut(t, "anthropic", sent.b, call.Body, `"max_tokens":5000`, `"max_tokens":1000`)

	// OpenAI Chat: the current and the deprecated field are both clamped,
	// or a client could slip past the cap with the old name.
	g.mock.Reset()
	chat := chatParams("gpt-4o-mini")
	chat.MaxCompletionTokens = openai.Int(5000)
	chat.MaxTokens = openai.Int(4000)
	if _, err := oc.Chat.Completions.New(ctx, chat, sent.openai()); err != nil {
		t.Fatal(err)
	}
	call = onlyCall(t, g)
	for _, f := range []string{"max_completion_tokens", "max_tokens"} {
		if got := gjson.GetBytes(call.Body, f).Int(); got != 1000 {
			t.Errorf("chat: upstream %s %d, want 1000", f, got)
		}
	}
	sameBodyBut(t, "chat", sent.b, call.Body,
		`"max_completion_tokens":5000`, `"max_completion_tokens":1000`, `"max_tokens":4000`, `"max_tokens":1000`)

	// A Chat request under the ceiling is sent as it is.
	g.mock.Reset()
	chat = chatParams("gpt-4o-mini")
	chat.MaxCompletionTokens = openai.Int(700)
	if _, err := oc.Chat.Completions.New(ctx, chat, sent.openai()); err != nil {
		t.Fatal(err)
	}
	if call = onlyCall(t, g); !bytes.Equal(call.Body, sent.b) {
		t.Errorf("chat under the ceiling: body changed:\n sent %s\n got  %s", sent.b, call.Body)
	}

	// Responses: max_output_tokens.
	g.mock.Reset()
	rp := responsesParams("gpt-4o-mini")
	rp.MaxOutputTokens = openai.Int(5000)
	if _, err := oc.Responses.New(ctx, rp, sent.openai()); err != nil {
		t.Fatal(err)
	}
	call = onlyCall(t, g)
	if got := gjson.GetBytes(call.Body, "max_output_tokens").Int(); got != 1000 {
		t.Errorf("responses: upstream max_output_tokens %d, want 1000", got)
	}
	sameBodyBut(t, "responses", sent.b, call.Body, `"max_output_tokens":5000`, `"max_output_tokens":1000`)
}

func TestGuardMaxTokensReject(t *testing.T) {
	g := startGateway(t, directives("max_tokens 1000 reject"), mockprovider.Options{})
	ctx := context.Background()
	ac := g.anthropicClient()

	// Below the SDK's own non-streaming guard of 21,333: above it
	// anthropic-sdk-go (client.go) expects over 10 minutes and refuses to send.
	params := haiku("claude-haiku-4-5")
	params.MaxTokens = 5000
	_, err := ac.Messages.New(ctx, params)
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusBadRequest || aErr.Type() != "invalid_request_error" {
		t.Fatalf("anthropic: got %v, want 400 invalid_request_error", err)
	}
	msg := gjson.Get(aErr.RawJSON(), "error.message").Str
	if gjson.Get(aErr.RawJSON(), "type").Str != "error" || !strings.Contains(msg, "max_tokens") || !strings.Contains(msg, "1000") || !strings.Contains(msg, "5000") {
		t.Errorf("anthropic: body %s, want the anthropic shape naming max_tokens, 5000 and the limit 1000", aErr.RawJSON())
	}

	oc := g.openaiClient()
	for _, c := range []struct {
		field string
		send  func() error
	}{
		{"max_completion_tokens", func() error {
			p := chatParams("gpt-4o-mini")
			p.MaxCompletionTokens = openai.Int(5000)
			_, err := oc.Chat.Completions.New(ctx, p)
			return err
		}},
		{"max_tokens", func() error { // the deprecated Chat field
			p := chatParams("gpt-4o-mini")
			p.MaxTokens = openai.Int(5000)
			_, err := oc.Chat.Completions.New(ctx, p)
			return err
		}},
		{"max_output_tokens", func() error {
			p := responsesParams("gpt-4o-mini")
			p.MaxOutputTokens = openai.Int(5000)
			_, err := oc.Responses.New(ctx, p)
			return err
		}},
	} {
		var oErr *openai.Error
		if err := c.send(); !errors.As(err, &oErr) || oErr.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: got %v, want 400", c.field, err)
			continue
		}
		if oErr.Type != "invalid_request_error" || oErr.Param != c.field || !strings.Contains(oErr.Message, "1000") {
			t.Errorf("%s: type %q param %q message %q, want invalid_request_error naming %s and the limit", c.field, oErr.Type, oErr.Param, oErr.Message, c.field)
		}
	}
	noCalls(t, g, "rejected caps")

	// At the ceiling passes unchanged.
	params.MaxTokens = 1000
	if _, err := ac.Messages.New(ctx, params); err != nil {
		t.Fatalf("max_tokens at the ceiling: %v", err)
	}
	if got := gjson.GetBytes(onlyCall(t, g).Body, "max_tokens").Int(); got != 1000 {
		t.Errorf("upstream max_tokens %d, want 1000", got)
	}
}

func TestGuardDefaultMaxTokens(t *testing.T) {
	g := startGateway(t, directives("default_max_tokens 512"), mockprovider.Options{})
	ctx := context.Background()
	oc := g.openaiClient()

	if _, err := oc.Chat.Completions.New(ctx, chatParams("gpt-4o-mini")); err != nil {
		t.Fatal(err)
	}
	call := onlyCall(t, g)
	if got := gjson.GetBytes(call.Body, "max_completion_tokens"); got.Int() != 512 {
		t.Errorf("chat: upstream max_completion_tokens %s, want 512", got.Raw)
	}
	if gjson.GetBytes(call.Body, "max_tokens").Exists() {
		t.Errorf("chat: the deprecated max_tokens was inserted too: %s", call.Body)
	}

	g.mock.Reset()
	if _, err := oc.Responses.New(ctx, responsesParams("gpt-4o-mini")); err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(onlyCall(t, g).Body, "max_output_tokens"); got.Int() != 512 {
		t.Errorf("responses: upstream max_output_tokens %s, want 512", got.Raw)
	}

	// A request that names its own cap keeps it.
	g.mock.Reset()
	p := chatParams("gpt-4o-mini")
	p.MaxTokens = openai.Int(100)
	if _, err := oc.Chat.Completions.New(ctx, p); err != nil {
		t.Fatal(err)
	}
	call = onlyCall(t, g)
	if gjson.GetBytes(call.Body, "max_tokens").Int() != 100 || gjson.GetBytes(call.Body, "max_completion_tokens").Exists() {
		t.Errorf("chat with its own cap: upstream body %s, want max_tokens 100 and nothing added", call.Body)
	}

	// Anthropic requires max_tokens, so the SDK cannot leave it out: raw
	// HTTP. The default fills it in before validation looks.
	g.mock.Reset()
	resp, body := g.post(t, "/v1/messages", `{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"Hi"}]}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("anthropic without max_tokens: status %d %s, want 200 with the default", resp.StatusCode, body)
	}
	if got := gjson.GetBytes(onlyCall(t, g).Body, "max_tokens"); got.Int() != 512 {
		t.Errorf("anthropic: upstream max_tokens %s, want 512", got.Raw)
	}
}

func TestGuardModelMaxOutputClamp(t *testing.T) {
	ctx := context.Background()
	g := startGateway(t, directives("model claude-haiku-4-5* {", "\tmax_output 2000", "}"), mockprovider.Options{})
	ac := g.anthropicClient()
	params := haiku("claude-haiku-4-5-20251001") // a dated id, matched by the prefix
	params.MaxTokens = 4000
	if _, err := ac.Messages.New(ctx, params); err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(onlyCall(t, g).Body, "max_tokens").Int(); got != 2000 {
		t.Errorf("override: upstream max_tokens %d, want the configured max_output 2000", got)
	}

	// The built-in table: claude-haiku-4-5 takes at most 64K output. A
	// non-streaming SDK call refuses 100000 itself (a request that may take
	// over 10 minutes must stream): stream.
	g = startGateway(t, "", mockprovider.Options{})
	ac, oc := g.anthropicClient(), g.openaiClient()
	params = haiku("claude-haiku-4-5")
	params.MaxTokens = 100000
	stream := ac.Messages.NewStreaming(ctx, params)
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	_ = stream.Close()
	if got := gjson.GetBytes(onlyCall(t, g).Body, "max_tokens").Int(); got != 64000 {
		t.Errorf("built-in: upstream max_tokens %d, want claude-haiku-4-5's 64000", got)
	}

	g.mock.Reset()
	chat := chatParams("gpt-4o-mini")
	chat.MaxCompletionTokens = openai.Int(20000)
	if _, err := oc.Chat.Completions.New(ctx, chat); err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(onlyCall(t, g).Body, "max_completion_tokens").Int(); got != 16384 {
		t.Errorf("built-in: upstream max_completion_tokens %d, want gpt-4o-mini's 16384", got)
	}

	// A fallback model with a smaller max_output gets the request clamped
	// to it; nothing else but the model changes.
	g = startGateway(t, directives("retries 0", "fallback guard-big guard-small", "model guard-small {", "\tmax_output 500", "}"),
		mockprovider.Options{FailModels: map[string]int{"guard-big": 529}})
	params = haiku("guard-big")
	params.MaxTokens = 800
	ac = g.anthropicClient()
	msg, err := ac.Messages.New(ctx, params)
	if err != nil || msg.Model != "guard-small" {
		t.Fatalf("fallback: got %v, %v; want guard-small to serve", msg, err)
	}
	calls := g.mock.Calls()
	if len(calls) != 2 {
		t.Fatalf("fallback: upstream saw %d calls, want 2", len(calls))
	}
	if a, b := gjson.GetBytes(calls[0].Body, "max_tokens").Int(), gjson.GetBytes(calls[1].Body, "max_tokens").Int(); a != 800 || b != 500 {
		t.Errorf("fallback: max_tokens %d then %d, want 800 to guard-big and 500 to guard-small", a, b)
	}
	sameBodyBut(t, "fallback", calls[0].Body, calls[1].Body, `"model":"guard-big"`, `"model":"guard-small"`, `"max_tokens":800`, `"max_tokens":500`)
}

// longText is about n KB of English prose.
func longText(n int) string {
	const sentence = "The gateway keeps a careful count of every token before it calls the model upstream. "
	return strings.Repeat(sentence, n*1024/len(sentence))
}

func TestGuardContextOverflowRejected(t *testing.T) {
	g := startGateway(t, directives("model tiny-model {", "\tcontext_window 1000", "}"), mockprovider.Options{})
	ctx := context.Background()
	ac, oc := g.anthropicClient(), g.openaiClient()
	big := longText(20)

	params := haiku("tiny-model")
	params.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(big))}
	_, err := ac.Messages.New(ctx, params)
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusBadRequest || aErr.Type() != "invalid_request_error" {
		t.Fatalf("anthropic: got %v, want 400 invalid_request_error", err)
	}
	msg := gjson.Get(aErr.RawJSON(), "error.message").Str
	for _, want := range []string{"estimated", "window", "tiny-model", "+ 256 output", "> 1000 window"} {
		if !strings.Contains(msg, want) {
			t.Errorf("anthropic: message %q lacks %q", msg, want)
		}
	}

	chat := chatParams("tiny-model")
	chat.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage(big)}
	_, err = oc.Chat.Completions.New(ctx, chat)
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusBadRequest {
		t.Fatalf("openai: got %v, want 400", err)
	}
	if oErr.Code != "context_length_exceeded" || oErr.Param != "messages" || oErr.Type != "invalid_request_error" ||
		!strings.Contains(oErr.Message, "estimated") || !strings.Contains(oErr.Message, "window") {
		t.Errorf("openai: code %q param %q type %q message %q, want context_length_exceeded on messages with the numbers",
			oErr.Code, oErr.Param, oErr.Type, oErr.Message)
	}
	noCalls(t, g, "context overflow")

	// A prompt that fits goes through.
	if _, err := ac.Messages.New(ctx, haiku("tiny-model")); err != nil {
		t.Fatalf("a short prompt: %v", err)
	}
	onlyCall(t, g)
}

func TestGuardContextOverflowServedByLargerFallback(t *testing.T) {
	g := startGateway(t, directives(
		"model tiny-model {", "\tcontext_window 1000", "}",
		"model big-model {", "\tcontext_window 1000000", "}",
		"fallback tiny-model big-model",
	), mockprovider.Options{})
	ac := g.anthropicClient()
	params := haiku("tiny-model")
	params.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(longText(20)))}
	var sent sentBody
	msg, err := ac.Messages.New(context.Background(), params, sent.anthropic())
	if err != nil {
		t.Fatalf("got %v, want the larger fallback to serve", err)
	}
	if msg.Model != "big-model" {
		t.Errorf("served by %q, want big-model", msg.Model)
	}
	call := onlyCall(t, g)
	if call.Model != "big-model" {
		t.Errorf("the upstream's only call names %q, want big-model", call.Model)
	}
	sameBodyBut(t, "context fallback", sent.b, call.Body, `"model":"tiny-model"`, `"model":"big-model"`)
	if fb := g.logEntries(t, "context window fallback", 1); len(fb) != 1 || fb[0]["from"] != "tiny-model" || fb[0]["to"] != "big-model" {
		t.Errorf("context window fallback log lines %v, want one from tiny-model to big-model", fb)
	}
}

// toolIDs lists the ids of a message's blocks of the given type: tool_use
// blocks by "id", tool_result blocks by "tool_use_id".
func toolIDs(msg gjson.Result, typ string) []string {
	key := "id"
	if typ == "tool_result" {
		key = "tool_use_id"
	}
	var ids []string
	for _, b := range msg.Get("content").Array() {
		if b.Get("type").Str == typ {
			ids = append(ids, b.Get(key).Str)
		}
	}
	return ids
}

func TestGuardContextTruncateKeepsSystemAndToolPairs(t *testing.T) {
	g := startGateway(t, directives("context_guard truncate", "model tiny-model {", "\tcontext_window 3000", "}"), mockprovider.Options{})
	client := g.anthropicClient()
	turn := func(i int) string { return fmt.Sprintf("Turn %d. %s", i, longText(1)) }
	const system = "You are a terse assistant for weather questions."

	// The tool round sits at different places, so the cut falls before,
	// inside and after it in one case or another.
	pairKept, pairDropped, straddled := 0, 0, 0
	for k, toolAt := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9} {
		g.mock.Reset()
		var msgs []anthropic.MessageParam
		for i := range 10 {
			msgs = append(msgs, anthropic.NewUserMessage(anthropic.NewTextBlock(turn(2*i))))
			if i == toolAt {
				id := fmt.Sprintf("toolu_%02d", i)
				msgs = append(msgs,
					anthropic.NewAssistantMessage(anthropic.NewTextBlock("Let me look that up. "+longText(1)),
						anthropic.NewToolUseBlock(id, map[string]any{"city": "Paris"}, "get_weather")),
					anthropic.NewUserMessage(anthropic.NewToolResultBlock(id, turn(2*i)+" Sunny, 21 degrees.", false)))
			}
			msgs = append(msgs, anthropic.NewAssistantMessage(anthropic.NewTextBlock(turn(2*i+1))))
		}
		msgs = append(msgs, anthropic.NewUserMessage(anthropic.NewTextBlock("And tomorrow?")))
		params := anthropic.MessageNewParams{
			Model:     "tiny-model",
			MaxTokens: 256,
			System:    []anthropic.TextBlockParam{{Text: system}},
			Messages:  msgs,
		}
		var sent sentBody
		if _, err := client.Messages.New(context.Background(), params, sent.anthropic()); err != nil {
			t.Fatalf("tool round at turn %d: %v", toolAt, err)
		}
		call := onlyCall(t, g)
		what := fmt.Sprintf("tool round at turn %d", toolAt)
		if len(call.Body) >= len(sent.b) {
			t.Errorf("%s: upstream body %d bytes, not shorter than the %d sent", what, len(call.Body), len(sent.b))
		}
		if got, want := gjson.GetBytes(call.Body, "system").Raw, gjson.GetBytes(sent.b, "system").Raw; got != want || want == "" {
			t.Errorf("%s: system %s, want it kept as %s", what, got, want)
		}
		// Everything but messages is kept byte for byte.
		sentMsgs, upMsgs := gjson.GetBytes(sent.b, "messages"), gjson.GetBytes(call.Body, "messages")
		if got := strings.Replace(string(call.Body), upMsgs.Raw, "", 1); got != strings.Replace(string(sent.b), sentMsgs.Raw, "", 1) {
			t.Errorf("%s: body changed outside messages:\n sent %s\n got  %s", what, sent.b, call.Body)
		}
		kept := upMsgs.Array()
		all := sentMsgs.Array()
		if len(kept) == 0 || len(kept) >= len(all) {
			t.Fatalf("%s: %d of %d messages kept", what, len(kept), len(all))
		}
		// The kept messages are the newest ones, in order.
		for i, m := range kept {
			if want := all[len(all)-len(kept)+i].Raw; m.Raw != want {
				t.Errorf("%s: kept message %d is %s, want the original %s", what, i, m.Raw, want)
			}
		}
		first := kept[0]
		if first.Get("role").Str != "user" || len(toolIDs(first, "tool_result")) > 0 {
			t.Errorf("%s: first message %s, want a user turn that is not a tool result", what, first.Raw)
		}
		if last := kept[len(kept)-1]; last.Get("content.0.text").Str != "And tomorrow?" {
			t.Errorf("%s: last message %s, want the last user turn", what, last.Raw)
		}
		for i, m := range kept {
			for _, id := range toolIDs(m, "tool_result") {
				if i == 0 || !contains(toolIDs(kept[i-1], "tool_use"), id) {
					t.Errorf("%s: tool_result %s kept without its tool_use", what, id)
				}
			}
			for _, id := range toolIDs(m, "tool_use") {
				if i+1 == len(kept) || !contains(toolIDs(kept[i+1], "tool_result"), id) {
					t.Errorf("%s: tool_use %s kept without its tool_result", what, id)
				}
			}
		}
		lines := g.logEntries(t, "truncated conversation", k+1)
		if len(lines) != k+1 {
			t.Fatalf("%s: %d truncated conversation log lines, want %d", what, len(lines), k+1)
		}
		if d := number(t, lines[k], "dropped_messages"); int(d) != len(all)-len(kept) {
			t.Errorf("%s: log says dropped_messages %v, the body lost %d", what, d, len(all)-len(kept))
		}
		// The oracle: the fewest oldest messages whose dropping makes the
		// gateway's own estimate fit the window less max_tokens, moved on
		// to the next message a conversation may start with.
		budget := int64(3000 - 256)
		naive := 0
		for ; naive < len(all); naive++ {
			raws := make([]string, 0, len(all)-naive)
			for _, m := range all[naive:] {
				raws = append(raws, m.Raw)
			}
			b := strings.Replace(string(sent.b), sentMsgs.Raw, "["+strings.Join(raws, ",")+"]", 1)
			req := body.Read([]byte(b), false)
			if wire.Messages.InputTokens(&req) <= budget {
				break
			}
		}
		start := naive
		for start < len(all) && (all[start].Get("role").Str != "user" || len(toolIDs(all[start], "tool_result")) > 0) {
			start++
		}
		if dropped := len(all) - len(kept); dropped != start {
			t.Errorf("%s: dropped %d messages, want %d (the first %d fit; %d is the next user turn)", what, dropped, start, naive, start)
		}
		if len(toolIDs(all[naive], "tool_use")) > 0 || len(toolIDs(all[naive], "tool_result")) > 0 {
			straddled++
		}
		t.Logf("%s: kept %d of %d messages; dropping %d would fit", what, len(kept), len(all), naive)
		if strings.Contains(upMsgs.Raw, `"tool_use"`) {
			pairKept++
		} else {
			pairDropped++
		}
	}
	if pairKept == 0 || pairDropped == 0 || straddled == 0 {
		t.Errorf("the tool round was kept %d times, dropped %d times and cut through %d times: the cases no longer exercise it", pairKept, pairDropped, straddled)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// validationCase is a raw request the provider would reject (or, for a
// twin, accept), sent to the gateway as it is.
type validationCase struct {
	name   string
	path   string
	body   string
	header map[string]string
	// For rejections: the param an OpenAI error names, and words the
	// message must hold to say how to fix the request.
	param string
	says  []string
}

const (
	anthropicPath = "/v1/messages"
	chatPath      = "/v1/chat/completions"
)

// Each rule: a request the provider rejects itself, so answering it at the
// edge only saves the round trip.
var rejectedRequests = []validationCase{
	// Not JSON: both APIs parse the body as JSON and answer 400
	// invalid_request_error when they cannot
	// (https://docs.anthropic.com/en/api/errors,
	// https://platform.openai.com/docs/guides/error-codes).
	{name: "anthropic not JSON", path: anthropicPath, body: `{"model":"claude-haiku-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hi"}]`,
		says: []string{"not valid JSON", `{"model":"claude-sonnet-4-5","max_tokens":1024`}},
	{name: "openai not JSON", path: chatPath, body: `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"},]}`,
		says: []string{"not valid JSON", "trailing comma"}},
	// Missing model: `model` is required on Messages (model, max_tokens
	// and messages are required: https://docs.anthropic.com/en/api/messages)
	// and on Chat Completions (`model`, `messages`; openai-go v3
	// ChatCompletionNewParams.Model api:"required").
	{name: "anthropic missing model", path: anthropicPath, body: `{"max_tokens":256,"messages":[{"role":"user","content":"Hi"}]}`,
		param: "model", says: []string{"Missing required field `model`", `"model":"claude-sonnet-4-5"`}},
	{name: "openai missing model", path: chatPath, body: `{"messages":[{"role":"user","content":"Hi"}]}`,
		param: "model", says: []string{"Missing required field `model`", `"model":"gpt-4o-mini"`}},
	// Messages not an array: Messages takes "messages (array)", Chat
	// `messages` (openai-go v3 Messages []ChatCompletionMessageParamUnion).
	{name: "anthropic messages not an array", path: anthropicPath, body: `{"model":"claude-haiku-4-5","max_tokens":256,"messages":{"role":"user","content":"Hi"}}`,
		param: "messages", says: []string{"must be an array", `"messages":[{"role":"user","content":"Hello"}]`}},
	{name: "openai messages not an array", path: chatPath, body: `{"model":"gpt-4o-mini","messages":"Hi"}`,
		param: "messages", says: []string{"must be an array", `"messages":[{"role":"user","content":"Hello"}]`}},
	// Anthropic without max_tokens: the Messages API lists max_tokens among
	// the required fields (the API answers "max_tokens: Field required").
	{name: "anthropic missing max_tokens", path: anthropicPath, body: `{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"Hi"}]}`,
		param: "max_tokens", says: []string{"Missing required field `max_tokens`", `"max_tokens":1024`}},
	// A content block without type: Messages content is a string or an
	// array of blocks of the listed block types, each tagged by type; Chat
	// content is a string or parts, each part tagged by type.
	{name: "anthropic block without type", path: anthropicPath, body: `{"model":"claude-haiku-4-5","max_tokens":256,"messages":[{"role":"user","content":[{"text":"Hi"}]}]}`,
		param: "messages.0.content.0.type", says: []string{`messages.0.content.0 has no "type"`, `{"type":"text","text":"Hello"}`}},
	{name: "openai part without type", path: chatPath, body: `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"text":"Hi"}]}]}`,
		param: "messages.1.content.0.type", says: []string{`messages.1.content.0 has no "type"`, `{"type":"text","text":"Hello"}`}},
}

// The twins: near misses the provider accepts, which must pass.
var acceptedRequests = []validationCase{
	// Unknown top-level fields: both APIs add fields all the time
	// (Messages gained output_config, container, inference_geo, ... lately).
	{name: "anthropic unknown field", path: anthropicPath, body: `{"model":"claude-haiku-4-5","max_tokens":256,"future_field":{"x":[1,2]},"messages":[{"role":"user","content":"Hi"}]}`},
	{name: "openai unknown field", path: chatPath, body: `{"model":"gpt-4o-mini","future_field":true,"messages":[{"role":"user","content":"Hi"}]}`},
	// role "system" in messages: new in the 2026-10-21 API types
	// (SystemMessageParam in the Anthropic SDKs).
	{name: "anthropic system role", path: anthropicPath, header: map[string]string{"anthropic-version": "2026-10-21"},
		body: `{"model":"claude-haiku-4-5","max_tokens":256,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}`},
	// Consecutive same-role turns are combined by the API into one turn
	// (https://docs.anthropic.com/en/api/messages).
	{name: "anthropic consecutive user turns", path: anthropicPath,
		body: `{"model":"claude-haiku-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hi"},{"role":"user","content":[{"type":"text","text":"Again"}]}]}`},
	{name: "openai consecutive user turns", path: chatPath, body: `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"},{"role":"user","content":"Again"}]}`},
	// Unknown headers and API versions are the provider's business.
	{name: "anthropic new version header", path: anthropicPath, body: anthropicJSON("claude-haiku-4-5", false),
		header: map[string]string{"anthropic-version": "2026-10-21", "anthropic-beta": "future-feature-2027-01-01"}},
	// A block type the gateway has never heard of: the tag is there.
	{name: "anthropic new block type", path: anthropicPath,
		body: `{"model":"claude-haiku-4-5","max_tokens":256,"messages":[{"role":"user","content":[{"type":"future_block","data":"x"}]}]}`},
}

func TestGuardValidation(t *testing.T) {
	g := startGateway(t, "", mockprovider.Options{})
	for _, c := range rejectedRequests {
		g.mock.Reset()
		resp, body := g.post(t, c.path, c.body, c.header)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d %s, want 400", c.name, resp.StatusCode, body)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: content-type %q", c.name, ct)
		}
		msg := gjson.GetBytes(body, "error.message").Str
		if c.path == anthropicPath {
			if gjson.GetBytes(body, "type").Str != "error" || gjson.GetBytes(body, "error.type").Str != "invalid_request_error" {
				t.Errorf("%s: body %s, want the anthropic invalid_request_error shape", c.name, body)
			}
		} else {
			param := gjson.GetBytes(body, "error.param")
			if gjson.GetBytes(body, "error.type").Str != "invalid_request_error" || param.Str != c.param || (c.param == "" && param.Type != gjson.Null) {
				t.Errorf("%s: body %s, want openai invalid_request_error with param %q", c.name, body, c.param)
			}
		}
		for _, want := range c.says {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: message %q does not say %q", c.name, msg, want)
			}
		}
		noCalls(t, g, c.name)
	}
	for _, c := range acceptedRequests {
		g.mock.Reset()
		resp, body := g.post(t, c.path, c.body, c.header)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d %s, want it passed to the provider", c.name, resp.StatusCode, body)
		}
		if n := len(g.mock.Calls()); n != 1 {
			t.Errorf("%s: upstream saw %d calls, want 1", c.name, n)
		} else if got := g.mock.Calls()[0].Body; string(got) != c.body {
			t.Errorf("%s: body changed on the way:\n sent %s\n got  %s", c.name, c.body, got)
		}
	}
}

func TestGuardValidateOffPassesMalformed(t *testing.T) {
	g := startGateway(t, directives("validate off"), mockprovider.Options{})
	for _, c := range rejectedRequests {
		g.mock.Reset()
		g.post(t, c.path, c.body, c.header)
		calls := g.mock.Calls()
		if len(calls) != 1 {
			t.Errorf("%s: upstream saw %d calls, want the malformed request passed on", c.name, len(calls))
			continue
		}
		if string(calls[0].Body) != c.body {
			t.Errorf("%s: body changed on the way:\n sent %s\n got  %s", c.name, c.body, calls[0].Body)
		}
	}
}

// modelSwitch is an upstream in front of the mock that fails one model with
// 529 while down is set: X-Mock-Script scripts a request, not a model, so
// the switch picks the requests to script. The mock still records them all.
type modelSwitch struct {
	next  http.Handler
	model string
	down  atomic.Bool
}

func (u *modelSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if u.down.Load() && gjson.GetBytes(body, "model").Str == u.model {
		r.Header.Set(mockprovider.ScriptHeader, "529")
	}
	u.next.ServeHTTP(w, r)
}

// modelCalls counts the upstream's calls by model.
func modelCalls(g *gateway) map[string]int {
	n := map[string]int{}
	for _, c := range g.mock.Calls() {
		n[c.Model]++
	}
	return n
}

func TestGuardCircuitBreakerSkipsOpenModelAndProbeCloses(t *testing.T) {
	const a, b = "guard-circuit-a", "guard-circuit-b"
	sw := &modelSwitch{model: a}
	sw.down.Store(true)
	g := startGatewayWith(t, setup{
		options:  directives("circuit_breaker 3 1s", "retries 0", "fallback "+a+" "+b),
		upstream: func(h http.Handler) http.Handler { sw.next = h; return sw },
		site:     "\tmetrics /metrics",
	})
	before := scrape(t, g.URL+"/metrics")
	client := g.anthropicClient()
	send := func(phase string, n int, servedBy string) {
		t.Helper()
		g.mock.Reset()
		for i := range n {
			msg, err := client.Messages.New(context.Background(), haiku(a))
			if err != nil {
				t.Fatalf("%s, request %d: %v", phase, i+1, err)
			}
			if msg.Model != servedBy {
				t.Errorf("%s, request %d: served by %s, want %s", phase, i+1, msg.Model, servedBy)
			}
		}
	}
	want := func(phase string, calls map[string]int) {
		t.Helper()
		if got := modelCalls(g); got[a] != calls[a] || got[b] != calls[b] || len(g.mock.Calls()) != calls[a]+calls[b] {
			t.Errorf("%s: upstream calls by model %v, want %v", phase, got, calls)
		}
	}

	// Three failures in a row, each served by the fallback, open it.
	send("failing", 3, b)
	want("failing", map[string]int{a: 3, b: 3})
	if open := g.logEntries(t, "circuit open", 1); len(open) != 1 || open[0]["model"] != a || open[0]["level"] != "warn" {
		t.Fatalf("circuit open log lines %v, want one warn line for %s", open, a)
	}
	// While open, the upstream sees no call for the open model.
	send("open", 5, b)
	want("open", map[string]int{b: 5})

	// After the cooldown, one probe: it fails and the circuit opens again.
	time.Sleep(1200 * time.Millisecond)
	send("failed probe", 3, b)
	want("failed probe", map[string]int{a: 1, b: 3})
	if n := len(g.logEntries(t, "circuit open", 2)); n != 2 {
		t.Errorf("%d circuit open lines after the failed probe, want 2", n)
	}

	// The model recovers; after the cooldown the probe succeeds and closes
	// the circuit, and the model serves again.
	sw.down.Store(false)
	time.Sleep(1200 * time.Millisecond)
	send("recovered", 4, a)
	want("recovered", map[string]int{a: 4})
	if closed := g.logEntries(t, "circuit closed", 1); len(closed) != 1 || closed[0]["model"] != a || closed[0]["from"] != "half_open" {
		t.Errorf("circuit closed log lines %v, want one for %s from half_open", closed, a)
	}
	if n := len(g.logEntries(t, "circuit half_open", 2)); n != 2 {
		t.Errorf("%d circuit half_open lines, want 2 (two probes)", n)
	}

	after := scrape(t, g.URL+"/metrics")
	for to, n := range map[string]float64{"open": 2, "half_open": 2, "closed": 1} {
		series := fmt.Sprintf(`caddy_ai_resilience_circuit_transitions_total{model=%q,to=%q}`, a, to)
		if d := after[series] - before[series]; d != n {
			t.Errorf("%s grew by %v, want %v", series, d, n)
		}
	}
	series := `caddy_ai_resilience_guard_actions_total{action="circuit_open",dialect="anthropic"}`
	if d := after[series] - before[series]; d != 7 {
		t.Errorf("%s grew by %v, want 7 (5 while open, 2 while the failed probe's cooldown ran)", series, d)
	}
}

func TestGuardCircuitOpenWithoutFallback(t *testing.T) {
	const claude, gpt = "guard-nofb-claude", "guard-nofb-gpt"
	g := startGateway(t, directives("circuit_breaker 2 30s", "retries 0"),
		mockprovider.Options{FailModels: map[string]int{claude: 529, gpt: 503}})
	ctx := context.Background()
	ac, oc := g.anthropicClient(), g.openaiClient()
	for range 2 {
		_, _ = ac.Messages.New(ctx, haiku(claude))
		_, _ = oc.Chat.Completions.New(ctx, chatParams(gpt))
	}
	if n := len(g.mock.Calls()); n != 4 {
		t.Fatalf("upstream saw %d calls, want the 4 failures that open both circuits", n)
	}
	g.mock.Reset()

	_, err := ac.Messages.New(ctx, haiku(claude))
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != 529 || aErr.Type() != "overloaded_error" {
		t.Fatalf("anthropic: got %v, want the gateway's 529 overloaded_error", err)
	}
	if !strings.Contains(gjson.Get(aErr.RawJSON(), "error.message").Str, "circuit") {
		t.Errorf("anthropic: message %s does not say the circuit is open", aErr.RawJSON())
	}
	checkRetryAfter(t, "anthropic", aErr.Response.Header)

	_, err = oc.Chat.Completions.New(ctx, chatParams(gpt))
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("openai: got %v, want the gateway's 503", err)
	}
	if oErr.Type != "server_error" || !strings.Contains(oErr.Message, "circuit") {
		t.Errorf("openai: type %q message %q, want server_error about the open circuit", oErr.Type, oErr.Message)
	}
	checkRetryAfter(t, "openai", oErr.Response.Header)
	noCalls(t, g, "open circuits without fallback")
}

// checkRetryAfter wants a retry-after within the 30 s cooldown.
func checkRetryAfter(t *testing.T, what string, h http.Header) {
	t.Helper()
	ra := h.Get("Retry-After")
	var secs int
	if _, err := fmt.Sscan(ra, &secs); err != nil || secs < 1 || secs > 30 {
		t.Errorf("%s: retry-after %q, want 1 to 30 seconds", what, ra)
	}
}

func TestGuardRetryBudgetBoundsUpstreamCalls(t *testing.T) {
	const requests = 50
	const denied = `caddy_ai_resilience_retry_budget_denied_total{dialect="anthropic"}`
	// run sends the requests to an always-overloaded upstream and returns
	// how many calls the upstream saw and how many retries the budget
	// refused.
	run := func(budget string) (calls int, refused float64, g *gateway) {
		g = startGatewayWith(t, setup{
			options: directives("retries 3", "backoff 1ms 2ms", budget, "circuit_breaker off"),
			site:    "\tmetrics /metrics",
		})
		before := scrape(t, g.URL+"/metrics")
		client := g.anthropicClient()
		for i := range requests {
			_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), script("529"))
			var aErr *anthropic.Error
			if !errors.As(err, &aErr) || aErr.StatusCode != 529 {
				t.Fatalf("%s, request %d: got %v, want the upstream's 529", budget, i+1, err)
			}
		}
		refused = scrape(t, g.URL+"/metrics")[denied] - before[denied]
		return len(g.mock.Calls()), refused, g
	}

	// 20 % of 50 requests plus a floor of 1 a second over the 10 s window:
	// about 50 + 10 + 10 upstream calls, not 50 × 4.
	calls, refused, g := run("retry_budget 20% 1")
	if calls < requests || calls > 75 {
		t.Errorf("with a 20%% budget the upstream saw %d calls for %d requests, want between %d and 75 (without it: %d)", calls, requests, requests, requests*4)
	}
	t.Logf("retry budget 20%% 1: %d upstream calls for %d requests, %v refusals", calls, requests, refused)
	// Each request that found the budget spent was returned at once: one
	// refusal, one log line.
	if refused < 1 || refused > requests {
		t.Errorf("%s grew by %v, want between 1 and %d", denied, refused, requests)
	}
	if spent := g.logEntries(t, "retry budget spent", int(refused)); len(spent) != int(refused) || spent[0]["level"] != "warn" {
		t.Errorf("%d retry budget spent log lines (first %v), want %v warn lines, one per refusal", len(spent), spent, refused)
	}

	if calls, refused, _ := run("retry_budget off"); calls != requests*4 || refused != 0 {
		t.Errorf("without a budget the upstream saw %d calls and %v refusals, want %d (1 + retries 3 each) and none", calls, refused, requests*4)
	}
}
