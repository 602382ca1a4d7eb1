package mockprovider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	aoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// start serves a provider with the given options for the test's lifetime.
func start(t *testing.T, opts Options) (*Provider, *httptest.Server) {
	t.Helper()
	p := New(opts)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

// anthropicClient is the official Anthropic SDK pointed at srv, with SDK
// retries off unless more options turn them on.
func anthropicClient(srv *httptest.Server, opts ...aoption.RequestOption) *anthropic.Client {
	base := []aoption.RequestOption{aoption.WithBaseURL(srv.URL), aoption.WithAPIKey("test"), aoption.WithMaxRetries(0)}
	c := anthropic.NewClient(append(base, opts...)...)
	return &c
}

// openAIClient is the official OpenAI SDK pointed at srv, with SDK retries
// off.
func openAIClient(srv *httptest.Server) *openai.Client {
	c := openai.NewClient(ooption.WithBaseURL(srv.URL+"/v1"), ooption.WithAPIKey("test"), ooption.WithMaxRetries(0))
	return &c
}

// script sends an x-mock-script (and optionally x-mock-id) header.
func script(s string) aoption.RequestOption { return aoption.WithHeader(ScriptHeader, s) }

// oscript is script for the OpenAI SDK.
func oscript(s string) ooption.RequestOption { return ooption.WithHeader(ScriptHeader, s) }

func messageParams(model string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     model,
		MaxTokens: 100,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("a secret prompt"))},
	}
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a secret prompt")},
	}
}

// inputTokens is the mock's input count for the body of the call.
func inputTokens(c Call) int64 { return int64((len(c.Body) + 3) / 4) }

func TestAnthropicMessage(t *testing.T) {
	p, srv := start(t, Options{})
	client := anthropicClient(srv)
	var resp *http.Response
	msg, err := client.Messages.New(context.Background(), messageParams("claude-haiku-4-5"), aoption.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	calls := p.Calls()
	if len(calls) != 1 || calls[0].Status != 200 || calls[0].Model != "claude-haiku-4-5" || calls[0].Path != "/v1/messages" {
		t.Fatalf("calls = %+v", calls)
	}
	if got := msg.Content[0].Text; got != "mock reply from claude-haiku-4-5" {
		t.Errorf("text = %q", got)
	}
	if msg.Model != "claude-haiku-4-5" || msg.StopReason != anthropic.StopReasonEndTurn || msg.Role != "assistant" {
		t.Errorf("message = %+v", msg)
	}
	if msg.Usage.InputTokens != inputTokens(calls[0]) || msg.Usage.OutputTokens != 4 {
		t.Errorf("usage = %+v, want input %d output 4", msg.Usage, inputTokens(calls[0]))
	}
	if !strings.HasPrefix(resp.Header.Get("request-id"), "req_mock_") {
		t.Errorf("request-id = %q", resp.Header.Get("request-id"))
	}
	for _, name := range []string{"requests", "tokens", "input-tokens", "output-tokens"} {
		reset := resp.Header.Get("anthropic-ratelimit-" + name + "-reset")
		if _, err := time.Parse(time.RFC3339, reset); err != nil || resp.Header.Get("anthropic-ratelimit-"+name+"-remaining") == "0" {
			t.Errorf("%s: reset %q (%v), remaining %q", name, reset, err, resp.Header.Get("anthropic-ratelimit-"+name+"-remaining"))
		}
	}
}

func TestAnthropicStream(t *testing.T) {
	p, srv := start(t, Options{})
	client := anthropicClient(srv)
	stream := client.Messages.NewStreaming(context.Background(), messageParams("claude-x"), script("200:events=7:interval=1ms"))
	var msg anthropic.Message
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		if err := msg.Accumulate(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	want := "message_start content_block_start" + strings.Repeat(" content_block_delta", 7) + " content_block_stop message_delta message_stop"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("events = %s\nwant     %s", got, want)
	}
	if got := msg.Content[0].Text; got != "mock reply from claude-x mock reply from" {
		t.Errorf("text = %q", got)
	}
	if msg.Usage.OutputTokens != 7 || msg.Usage.InputTokens != inputTokens(p.Calls()[0]) || msg.StopReason != anthropic.StopReasonEndTurn {
		t.Errorf("usage = %+v, stop = %q", msg.Usage, msg.StopReason)
	}
}

func TestAnthropicErrors(t *testing.T) {
	_, srv := start(t, Options{})
	client := anthropicClient(srv)
	for status, typ := range map[int]string{
		400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
		404: "not_found_error", 408: "timeout_error", 409: "conflict_error", 413: "request_too_large",
		429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "api_error",
		504: "timeout_error", 529: "overloaded_error",
	} {
		_, err := client.Messages.New(context.Background(), messageParams("claude-x"), script(fmt.Sprint(status)))
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("%d: err = %v, want *anthropic.Error", status, err)
		}
		if apiErr.StatusCode != status || string(apiErr.Type()) != typ || !strings.HasPrefix(apiErr.RequestID, "req_mock_") {
			t.Errorf("%d: status %d type %q request id %q", status, apiErr.StatusCode, apiErr.Type(), apiErr.RequestID)
		}
		if !strings.Contains(apiErr.RawJSON(), `"request_id":"`+apiErr.RequestID+`"`) {
			t.Errorf("%d: body %s lacks the request id", status, apiErr.RawJSON())
		}
	}
}

func TestOpenAIChat(t *testing.T) {
	p, srv := start(t, Options{})
	client := openAIClient(srv)
	ctx := context.Background()

	var resp *http.Response
	c, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"), ooption.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	in := inputTokens(p.Calls()[0])
	if c.Choices[0].Message.Content != "mock reply from gpt-4o-mini" || c.Choices[0].FinishReason != "stop" || c.Model != "gpt-4o-mini" {
		t.Errorf("completion = %+v", c)
	}
	if c.Usage.PromptTokens != in || c.Usage.CompletionTokens != 4 || c.Usage.TotalTokens != in+4 {
		t.Errorf("usage = %+v, want prompt %d", c.Usage, in)
	}
	if !strings.HasPrefix(resp.Header.Get("x-request-id"), "req_mock_") || resp.Header.Get("x-ratelimit-reset-requests") != "1s" {
		t.Errorf("headers = %v", resp.Header)
	}

	for _, includeUsage := range []bool{false, true} {
		p.Reset()
		params := chatParams("gpt-4o-mini")
		if includeUsage {
			params.StreamOptions.IncludeUsage = openai.Bool(true)
		}
		stream := client.Chat.Completions.NewStreaming(ctx, params, oscript("200:events=3"))
		var acc openai.ChatCompletionAccumulator
		chunks, usageChunks := 0, 0
		for stream.Next() {
			chunk := stream.Current()
			acc.AddChunk(chunk)
			chunks++
			if len(chunk.Choices) == 0 {
				usageChunks++
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		wantUsage := 0
		if includeUsage {
			wantUsage = 1
		}
		if chunks != 4+wantUsage || usageChunks != wantUsage || len(acc.Choices) != 1 {
			t.Fatalf("include_usage %v: %d chunks, %d usage chunks", includeUsage, chunks, usageChunks)
		}
		if got := acc.Choices[0].Message.Content; got != "mock reply from" || acc.Choices[0].FinishReason != "stop" {
			t.Errorf("include_usage %v: content %q finish %q", includeUsage, got, acc.Choices[0].FinishReason)
		}
		if in := inputTokens(p.Calls()[0]); includeUsage && (acc.Usage.CompletionTokens != 3 || acc.Usage.PromptTokens != in) {
			t.Errorf("usage = %+v, want prompt %d completion 3", acc.Usage, in)
		}
	}
}

func TestOpenAIResponses(t *testing.T) {
	p, srv := start(t, Options{})
	client := openAIClient(srv)
	ctx := context.Background()
	params := responses.ResponseNewParams{Model: "gpt-5", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("a secret prompt")}}

	r, err := client.Responses.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	in := inputTokens(p.Calls()[0])
	if r.OutputText() != "mock reply from gpt-5" || r.Status != "completed" || r.Usage.InputTokens != in || r.Usage.OutputTokens != 4 || r.Usage.TotalTokens != in+4 {
		t.Errorf("response = %s", r.RawJSON())
	}

	p.Reset()
	stream := client.Responses.NewStreaming(ctx, params, oscript("200:events=4"))
	var text strings.Builder
	var completed *responses.Response
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			r := ev.AsResponseCompleted().Response
			completed = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) == 0 || types[0] != "response.created" || types[len(types)-1] != "response.completed" {
		t.Fatalf("events = %v", types)
	}
	if text.String() != "mock reply from gpt-5" || completed == nil || completed.OutputText() != text.String() {
		t.Fatalf("text %q, completed %v", text.String(), completed)
	}
	if in := inputTokens(p.Calls()[0]); completed.Usage.OutputTokens != 4 || completed.Usage.InputTokens != in {
		t.Errorf("usage = %+v", completed.Usage)
	}
}

func TestOpenAICompletionsAndEmbeddings(t *testing.T) {
	_, srv := start(t, Options{})
	client := openAIClient(srv)
	ctx := context.Background()
	params := openai.CompletionNewParams{Model: "gpt-3.5-turbo-instruct", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")}}

	c, err := client.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if c.Choices[0].Text != "mock reply from gpt-3.5-turbo-instruct" || c.Usage.CompletionTokens != 4 {
		t.Errorf("completion = %s", c.RawJSON())
	}
	stream := client.Completions.NewStreaming(ctx, params, oscript("200:events=2"))
	var text strings.Builder
	for stream.Next() {
		if ch := stream.Current().Choices; len(ch) > 0 {
			text.WriteString(ch[0].Text)
		}
	}
	if err := stream.Err(); err != nil || text.String() != "mock reply" {
		t.Errorf("stream text %q, err %v", text.String(), err)
	}

	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{"", "base64"} {
		e, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "text-embedding-3-small", EncodingFormat: format,
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b", "c"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Data) != 3 || len(e.Data[2].Embedding) != embeddingDims || e.Data[2].Embedding[7] != 1 || e.Data[2].Index != 2 {
			t.Errorf("format %q: embeddings = %s", format, e.RawJSON())
		}
	}
}

func TestOpenAIErrors(t *testing.T) {
	_, srv := start(t, Options{})
	client := openAIClient(srv)
	for _, tc := range []struct {
		step, typ, code string
		status          int
	}{
		{"429", "requests", "rate_limit_exceeded", 429},
		{"429:quota", "insufficient_quota", "insufficient_quota", 429},
		{"400", "invalid_request_error", "", 400},
		{"401", "invalid_request_error", "invalid_api_key", 401},
		{"500", "server_error", "", 500},
		{"503", "server_error", "", 503},
	} {
		var resp *http.Response
		_, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o"), oscript(tc.step), ooption.WithResponseInto(&resp))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("%s: err = %v, want *openai.Error", tc.step, err)
		}
		if apiErr.StatusCode != tc.status || apiErr.Type != tc.typ || apiErr.Code != tc.code || apiErr.Message == "" {
			t.Errorf("%s: got %d %q %q %q", tc.step, apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Message)
		}
		if !strings.HasPrefix(resp.Header.Get("x-request-id"), "req_mock_") {
			t.Errorf("%s: x-request-id = %q", tc.step, resp.Header.Get("x-request-id"))
		}
	}
}

func TestScriptAdvancesPerKey(t *testing.T) {
	p, srv := start(t, Options{})
	client := anthropicClient(srv)
	status := func(opts ...aoption.RequestOption) int {
		_, err := client.Messages.New(context.Background(), messageParams("claude-x"), opts...)
		var apiErr *anthropic.Error
		if errors.As(err, &apiErr) {
			return apiErr.StatusCode
		} else if err != nil {
			t.Fatal(err)
		}
		return 200
	}
	const s = "529,503,200"
	a := []aoption.RequestOption{script(s), aoption.WithHeader(ScriptIDHeader, "a")}
	b := []aoption.RequestOption{script(s), aoption.WithHeader(ScriptIDHeader, "b")}
	got := []int{status(a...), status(a...), status(b...), status(a...), status(a...), status(script(s)), status(b...)}
	if want := []int{529, 503, 529, 200, 200, 529, 503}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	p.Reset()
	if got := status(a...); got != 529 {
		t.Errorf("after Reset: %d, want 529", got)
	}

	// The SDK's own retries follow the mock's wait hints.
	p.Reset()
	retrying := anthropicClient(srv, aoption.WithMaxRetries(2))
	if _, err := retrying.Messages.New(context.Background(), messageParams("claude-x"), script("529:retry-after-ms=1,429:retry-after-ms=1,200")); err != nil {
		t.Fatal(err)
	}
	if n := len(p.Calls()); n != 3 {
		t.Errorf("%d calls, want 3", n)
	}
}

func TestScriptConcurrent(t *testing.T) {
	p, srv := start(t, Options{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
			req.Header.Set(ScriptHeader, "500,200")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		})
	}
	wg.Wait()
	failed := 0
	for _, c := range p.Calls() {
		if c.Status == 500 {
			failed++
		}
	}
	if calls := len(p.Calls()); calls != 20 || failed != 1 {
		t.Errorf("%d calls, %d failed; want 20 and 1", calls, failed)
	}
}

func TestHintHeaders(t *testing.T) {
	for _, tc := range []struct {
		path, step string
		want       map[string]string
	}{
		{"/v1/messages", "529:retry-after=2:retry-after-ms=1500:should-retry=false", map[string]string{
			"Retry-After": "2", "Retry-After-Ms": "1500", "X-Should-Retry": "false"}},
		{"/v1/messages", "429:reset=30", map[string]string{
			"Anthropic-Ratelimit-Requests-Remaining": "0", "Anthropic-Ratelimit-Tokens-Remaining": "0",
			"Anthropic-Ratelimit-Input-Tokens-Remaining": "0", "Anthropic-Ratelimit-Output-Tokens-Remaining": "0"}},
		{"/v1/messages", "429:retry-after=99999999999999999999:retry-after-ms=1.5", map[string]string{
			"Retry-After": "99999999999999999999", "Retry-After-Ms": "1.5"}},
		{"/v1/chat/completions", "200:reset=360", map[string]string{
			"X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Remaining-Tokens": "0",
			"X-Ratelimit-Reset-Requests": "6m0s", "X-Ratelimit-Reset-Tokens": "6m0s"}},
	} {
		resp := post(t, tc.path, tc.step, `{"model":"m"}`)
		for k, v := range tc.want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s %s: %s = %q, want %q", tc.path, tc.step, k, got, v)
			}
		}
	}

	resp := post(t, "/v1/messages", "429:reset=30", `{"model":"m"}`)
	if reset, err := time.Parse(time.RFC3339, resp.Header.Get("Anthropic-Ratelimit-Tokens-Reset")); err != nil || time.Until(reset) < 29*time.Second {
		t.Errorf("tokens reset %v (%v), want 30s ahead", reset, err)
	}
	resp = post(t, "/v1/chat/completions", "503:retry-after-date=10", `{"model":"m"}`)
	if at, err := http.ParseTime(resp.Header.Get("Retry-After")); err != nil || time.Until(at) < 8*time.Second {
		t.Errorf("Retry-After %q (%v), want an HTTP-date 10s ahead", resp.Header.Get("Retry-After"), err)
	}
}

// post sends a raw request with a script to a fresh provider and returns the
// response with its body read.
func post(t *testing.T, path, step, body string) *http.Response {
	t.Helper()
	_, srv := start(t, Options{})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	if step != "" {
		req.Header.Set(ScriptHeader, step)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp
}

func TestDropIsATransportError(t *testing.T) {
	p, srv := start(t, Options{})
	_, err := anthropicClient(srv).Messages.New(context.Background(), messageParams("claude-x"), script("drop"))
	var apiErr *anthropic.Error
	if err == nil || errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want a connection error", err)
	}
	if calls := p.Calls(); len(calls) != 1 || calls[0].Status != 0 {
		t.Errorf("calls = %+v", calls)
	}
}

func TestHangAndDelayFollowTheClient(t *testing.T) {
	p, srv := start(t, Options{})
	client := openAIClient(srv)
	for _, step := range []string{"hang", "200:delay=1h", "200:interval=1h"} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		params := chatParams("gpt-4o")
		params.StreamOptions.IncludeUsage = openai.Bool(true)
		stream := client.Chat.Completions.NewStreaming(ctx, params, oscript(step))
		for stream.Next() {
		}
		if err := stream.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want deadline exceeded", step, err)
		}
		cancel()
	}
	if calls := p.Calls(); len(calls) != 3 || calls[0].Status != 0 || calls[1].Status != 0 || calls[2].Status != 200 {
		t.Errorf("calls = %+v", calls)
	}

	p.Reset()
	began := time.Now()
	if _, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o"), oscript("200:delay=50ms")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d < 50*time.Millisecond {
		t.Errorf("answered after %v, want at least 50ms", d)
	}
}

func TestEndLeavesStreamsUnfinished(t *testing.T) {
	_, srv := start(t, Options{})
	ctx := context.Background()

	stream := anthropicClient(srv).Messages.NewStreaming(ctx, messageParams("claude-x"), script("200:end=2"))
	var types []string
	for stream.Next() {
		types = append(types, stream.Current().Type)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(types, " "); got != "message_start content_block_start content_block_delta content_block_delta" {
		t.Errorf("anthropic events = %s", got)
	}

	body := rawStream(t, srv, "/v1/chat/completions", "200:end=2")
	if strings.Count(body, "data: ") != 2 || strings.Contains(body, "[DONE]") || strings.Contains(body, `"finish_reason":"stop"`) {
		t.Errorf("chat body = %s", body)
	}
	body = rawStream(t, srv, "/v1/responses", "200:end=1")
	if strings.Count(body, "response.output_text.delta") != 2 || strings.Contains(body, "response.completed") {
		t.Errorf("responses body = %s", body)
	}
}

// rawStream posts a streaming request with a script and returns the whole
// response body, which must end without a transport error.
func rawStream(t *testing.T, srv *httptest.Server, path, step string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{"model":"m","stream":true}`))
	req.Header.Set(ScriptHeader, step)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCutBreaksStreams(t *testing.T) {
	p, srv := start(t, Options{})
	ctx := context.Background()

	stream := anthropicClient(srv).Messages.NewStreaming(ctx, messageParams("claude-x"), script("200:cut=2"))
	deltas := 0
	for stream.Next() {
		if stream.Current().Type == "content_block_delta" {
			deltas++
		}
	}
	if stream.Err() == nil || deltas != 2 {
		t.Errorf("anthropic: %d deltas, err %v; want 2 and an error", deltas, stream.Err())
	}

	ostream := openAIClient(srv).Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"), oscript("200:cut=1"))
	chunks := 0
	for ostream.Next() {
		chunks++
	}
	if ostream.Err() == nil || chunks != 1 {
		t.Errorf("openai: %d chunks, err %v; want 1 and an error", chunks, ostream.Err())
	}
	if calls := p.Calls(); len(calls) != 2 || calls[0].Status != 200 {
		t.Errorf("calls = %+v", calls)
	}
}

func TestModelFaults(t *testing.T) {
	_, srv := start(t, Options{
		FailModels: map[string]int{"claude-opus-4-5": 529},
		Flaky:      map[string]float64{"claude-sonnet-4-5": 1, "gpt-flaky": 1, "claude-haiku-4-5": 0},
	})
	client := anthropicClient(srv)
	for model, want := range map[string]int{"claude-opus-4-5": 529, "claude-sonnet-4-5": 529, "claude-haiku-4-5": 200} {
		_, err := client.Messages.New(context.Background(), messageParams(model))
		var apiErr *anthropic.Error
		switch {
		case want == 200 && err != nil:
			t.Errorf("%s: %v", model, err)
		case want != 200 && (!errors.As(err, &apiErr) || apiErr.StatusCode != want || apiErr.Type() != "overloaded_error"):
			t.Errorf("%s: err = %v, want %d overloaded_error", model, err, want)
		}
	}
	_, err := openAIClient(srv).Chat.Completions.New(context.Background(), chatParams("gpt-flaky"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Type != "server_error" {
		t.Errorf("gpt-flaky: err = %v, want 503 server_error", err)
	}
	// A script wins over the model's fault.
	if _, err := client.Messages.New(context.Background(), messageParams("claude-opus-4-5"), script("200")); err != nil {
		t.Errorf("scripted success: %v", err)
	}
}

func TestBadScriptIs400(t *testing.T) {
	_, srv := start(t, Options{})
	_, err := anthropicClient(srv).Messages.New(context.Background(), messageParams("claude-x"), script("529,200:evnets=3"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Type() != "invalid_request_error" || !strings.Contains(apiErr.RawJSON(), "evnets") {
		t.Fatalf("err = %v", err)
	}
	for _, bad := range []string{"", "abc", "302", "600", "200:cut=1:end=2", "200:events=-1", "200:delay=soon",
		"429:quota=yes", "429:should-retry=maybe", "429:retry-after=2:retry-after-date=2", "200:bytes", "hang:x=1",
		"429:retry-after=-1", "429:retry-after=1.2.3", "429:retry-after=.", "429:retry-after-ms=1e3", "429:nest=x",
		"200:framing=crlf+tabs", "200:inband=Overloaded", "200:at=2", "200:inband=api_error:cut=1", "200:stall=1:end=2", "200:ping=0s"} {
		if _, err := parseScript(bad); err == nil {
			t.Errorf("parseScript(%q) accepted", bad)
		}
	}
	if _, err := parseScript("hang, drop ,200:events=0:interval=0s,429:quota:retry-after=0.5:reset=1,200:framing=cr+dataonly+comments+multiline:inband=api_error:at=2,200:stall=0:ping=5ms,200:failed=server_error"); err != nil {
		t.Errorf("valid script rejected: %v", err)
	}
}

func TestNotFound(t *testing.T) {
	_, srv := start(t, Options{})
	for _, tc := range []struct{ method, path, want string }{
		{http.MethodPost, "/v1/models", `{"error":{"message":`},
		{http.MethodPost, "/v1/messages/count_tokens", `{"type":"error","error":{"type":"not_found_error"`},
		{http.MethodGet, "/v1/chat/completions", `{"error":{"message":`},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(`{}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 404 || !strings.HasPrefix(string(b), tc.want) {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, b)
		}
	}
}

// TestNestedErrorBody checks the hostile body: nothing but '['.
func TestNestedErrorBody(t *testing.T) {
	_, srv := start(t, Options{})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	req.Header.Set(ScriptHeader, "429:nest=1000")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 429 || string(b) != strings.Repeat("[", 1000) {
		t.Errorf("status %d, body %.20q… (%d bytes)", resp.StatusCode, b, len(b))
	}
}

// TestDotSegmentsRoute checks that the mock routes a path as a provider's
// normalising front end would: dot segments and doubled slashes removed.
func TestDotSegmentsRoute(t *testing.T) {
	p, srv := start(t, Options{})
	for _, path := range []string{"/v1/x/../messages", "/v1/./messages", "//v1//messages"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{"model":"m","max_tokens":5,"messages":[]}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d, want the Messages endpoint's 200", path, resp.StatusCode)
		}
	}
	if calls := p.Calls(); len(calls) != 3 || calls[0].Path != "/v1/x/../messages" {
		t.Errorf("recorded %+v; want each path as received", calls)
	}
}

func TestPaddingAndPrefixes(t *testing.T) {
	_, srv := start(t, Options{})
	client := anthropic.NewClient(aoption.WithBaseURL(srv.URL+"/anthropic"), aoption.WithAPIKey("test"), aoption.WithMaxRetries(0))
	msg, err := client.Messages.New(context.Background(), messageParams("claude-x"), script("200:bytes=10000"))
	if err != nil {
		t.Fatal(err)
	}
	text := msg.Content[0].Text
	if len(text) < 10000 || len(text) > 10010 || msg.Usage.OutputTokens != int64(len(strings.Fields(text))) {
		t.Errorf("%d bytes, %d output tokens for %d words", len(text), msg.Usage.OutputTokens, len(strings.Fields(text)))
	}
}

func TestLogAndRecording(t *testing.T) {
	var buf bytes.Buffer
	p, srv := start(t, Options{Logger: log.New(&buf, "", 0)})
	client := anthropicClient(srv, aoption.WithAPIKey("sk-ant-very-secret"))
	_, _ = client.Messages.New(context.Background(), messageParams("claude-x"), script("529"))
	line := buf.String()
	if !strings.Contains(line, "POST /v1/messages") || !strings.Contains(line, `model="claude-x"`) || !strings.Contains(line, "status=529") {
		t.Errorf("log = %q", line)
	}
	if strings.Contains(line, "secret") {
		t.Errorf("log leaks a secret: %q", line)
	}
	calls := p.Calls()
	if len(calls) != 1 || calls[0].Header.Get("X-Api-Key") != "sk-ant-very-secret" || !bytes.Contains(calls[0].Body, []byte("a secret prompt")) {
		t.Errorf("calls = %+v", calls)
	}

	quiet, qsrv := start(t, Options{NoRecord: true})
	if _, err := anthropicClient(qsrv).Messages.New(context.Background(), messageParams("claude-x")); err != nil {
		t.Fatal(err)
	}
	if n := len(quiet.Calls()); n != 0 {
		t.Errorf("NoRecord recorded %d calls", n)
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{
		{FailModels: map[string]int{"m": 200}},
		{Flaky: map[string]float64{"m": 1.5}},
		{Mix: &FaultMix{RateLimited: 0.7, Overloaded: 0.7}},
	} {
		if o.Validate() == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
}

func BenchmarkChatStream(b *testing.B) {
	p := New(Options{NoRecord: true})
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		req.Header.Set(ScriptHeader, "200:events=20")
		p.ServeHTTP(httptest.NewRecorder(), req)
	}
}

// TestFramingsReadBySDKs: every framing the script offers is a correct
// stream, read to its end by the official SDKs (openai-go reads lines by
// LF, so CR-only framing is checked raw).
func TestFramingsReadBySDKs(t *testing.T) {
	_, srv := start(t, Options{})
	ctx := context.Background()
	for _, f := range []string{"crlf", "comments+multiline", "crlf+comments+multiline"} {
		stream := anthropicClient(srv).Messages.NewStreaming(ctx, messageParams("claude-x"), script("200:events=3:framing="+f))
		var msg anthropic.Message
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
		if stream.Err() != nil || msg.StopReason != "end_turn" || msg.Usage.OutputTokens != 3 {
			t.Errorf("anthropic %s: err %v, message %+v", f, stream.Err(), msg)
		}
	}
	for _, f := range []string{"dataonly", "dataonly+crlf+comments+multiline"} {
		rs := openAIClient(srv).Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "gpt-5"}, oscript("200:events=3:framing="+f))
		var completed bool
		for rs.Next() {
			if ev := rs.Current(); ev.Type == "response.completed" {
				completed = ev.Response.Usage.OutputTokens == 3
			}
		}
		if rs.Err() != nil || !completed {
			t.Errorf("responses %s: err %v, completed with usage %v", f, rs.Err(), completed)
		}
	}
	body := rawStream(t, srv, "/v1/chat/completions", "200:events=2:framing=cr+comments")
	if strings.Contains(body, "\n") || strings.Count(body, "\r\r") != 4 || !strings.Contains(body, ": keep-alive\rid: 0\rretry: 3000\r") {
		t.Errorf("cr body = %q", body)
	}
}

// TestInbandErrorsReachSDKs: each API's in-band error, first or after
// deltas, is the error the SDKs raise.
func TestInbandErrorsReachSDKs(t *testing.T) {
	_, srv := start(t, Options{})
	ctx := context.Background()
	for _, step := range []string{"200:inband=overloaded_error", "200:inband=overloaded_error:at=2"} {
		stream := anthropicClient(srv).Messages.NewStreaming(ctx, messageParams("claude-x"), script(step))
		for stream.Next() {
		}
		var apiErr *anthropic.Error
		if !errors.As(stream.Err(), &apiErr) || apiErr.Type() != "overloaded_error" {
			t.Errorf("anthropic %s: err %v", step, stream.Err())
		}
		cs := openAIClient(srv).Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"), oscript(strings.Replace(step, "overloaded_error", "server_error", 1)))
		for cs.Next() {
		}
		if cs.Err() == nil || !strings.Contains(cs.Err().Error(), "server_error") {
			t.Errorf("chat %s: err %v", step, cs.Err())
		}
	}
	body := rawStream(t, srv, "/v1/responses", "200:inband=rate_limit_exceeded")
	if !strings.HasPrefix(body, "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\"") {
		t.Errorf("responses error body = %s", body)
	}
	body = rawStream(t, srv, "/v1/responses", "200:events=2:failed=server_error")
	if !strings.Contains(body, "event: response.failed\ndata: {\"type\":\"response.failed\"") || !strings.Contains(body, `"error":{"code":"server_error"`) || strings.Contains(body, "response.completed") {
		t.Errorf("responses failed body = %s", body)
	}
}

// TestStallHoldsTheConnection: a stalled answer sends its start, then
// nothing but pings when asked, until the client leaves, which the
// recorded call shows.
func TestStallHoldsTheConnection(t *testing.T) {
	p, srv := start(t, Options{})
	for _, c := range []struct{ path, body, step, want string }{
		{"/v1/messages", `{"model":"m","stream":true}`, "200:stall=1:ping=20ms", "event: ping"},
		{"/v1/chat/completions", `{"model":"m"}`, "200:stall=10", `{"id":"cha`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+c.path, strings.NewReader(c.body))
		req.Header.Set(ScriptHeader, c.step)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		cancel()
		resp.Body.Close()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(string(b), c.want) {
			t.Errorf("%s %s: read %q, %v", c.path, c.step, b, err)
		}
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if calls := p.Calls(); calls[0].Canceled && calls[1].Canceled {
			return
		}
	}
	t.Errorf("calls %+v, want both cancelled", p.Calls())
}

// TestJSONCutAndEndAreIncomplete: a JSON reply cut or ended short of its
// Content-Length reaches the client as an incomplete body.
func TestJSONCutAndEndAreIncomplete(t *testing.T) {
	_, srv := start(t, Options{})
	for _, step := range []string{"200:cut=20", "200:end=20"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/messages", strings.NewReader(`{"model":"m"}`))
		req.Header.Set(ScriptHeader, step)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != 20 || resp.ContentLength <= 20 {
			t.Errorf("%s: read %d of %d bytes, %v", step, len(b), resp.ContentLength, err)
		}
	}
}

// TestFaultMix: the mix answers in its proportions, 429s carry a
// retry-after within the bound, the same seed gives the same sequence, and
// scripts and model faults still win.
func TestFaultMix(t *testing.T) {
	mix := FaultMix{RateLimited: 0.3, RetryAfterMax: time.Second, Overloaded: 0.1, ServerError: 0.05, Seed: 42}
	sequence := func(route string) (seq []int, counts map[int]int) {
		p := New(Options{Mix: &mix, NoRecord: true})
		counts = map[int]int{}
		for range 4000 {
			req := httptest.NewRequest(http.MethodPost, route, strings.NewReader(`{"model":"m","max_tokens":1}`))
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, req)
			seq = append(seq, rec.Code)
			counts[rec.Code]++
			if rec.Code == 429 {
				ra, err := strconv.ParseFloat(rec.Header().Get("Retry-After"), 64)
				if err != nil || ra < 0 || ra >= 1 {
					t.Fatalf("429 retry-after %q, want seconds in [0, 1)", rec.Header().Get("Retry-After"))
				}
			}
		}
		return seq, counts
	}
	seq, counts := sequence("/v1/messages")
	for status, share := range map[int]float64{429: 0.3, 529: 0.1, 500: 0.05, 200: 0.55} {
		if got := float64(counts[status]) / 4000; got < share-0.03 || got > share+0.03 {
			t.Errorf("status %d answered %.3f of requests, want about %.2f", status, got, share)
		}
	}
	again, _ := sequence("/v1/messages")
	if fmt.Sprint(seq) != fmt.Sprint(again) {
		t.Error("the same seed gave another sequence")
	}
	if _, counts := sequence("/v1/chat/completions"); counts[503] == 0 || counts[529] != 0 {
		t.Errorf("openai route answered %v, want overloads as 503", counts)
	}

	// With an id, each request's answer is the mix's Answer for it,
	// whatever else arrives in between.
	p := New(Options{Mix: &mix, NoRecord: true})
	for i := range 200 {
		id := fmt.Sprint("req-", i%10)
		req := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(`{"model":"m","max_tokens":1}`))
		req.Header.Set(ScriptIDHeader, id)
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		status, retryAfter := mix.Answer(id, i/10)
		if status == 0 {
			status = 200
		}
		if rec.Code != status || status == 429 && rec.Header().Get("Retry-After") != strconv.FormatFloat(retryAfter.Seconds(), 'f', 3, 64) {
			t.Fatalf("%s, request %d: %d retry-after %q; Answer says %d, %v", id, i/10, rec.Code, rec.Header().Get("Retry-After"), status, retryAfter)
		}
	}

	_, srv := start(t, Options{Mix: &FaultMix{ServerError: 1}, FailModels: map[string]int{"claude-opus-4-5": 529}})
	client := anthropicClient(srv)
	if _, err := client.Messages.New(context.Background(), messageParams("claude-x"), script("200")); err != nil {
		t.Errorf("a script lost to the mix: %v", err)
	}
	var apiErr *anthropic.Error
	if _, err := client.Messages.New(context.Background(), messageParams("claude-opus-4-5")); !errors.As(err, &apiErr) || apiErr.StatusCode != 529 {
		t.Errorf("a model fault lost to the mix: %v", err)
	}
}

func TestParseFaultMix(t *testing.T) {
	m, err := ParseFaultMix("rate_limited=0.3, retry_after_max=1s,overloaded=0.1,server_error=0,seed=7")
	if err != nil || m != (FaultMix{RateLimited: 0.3, RetryAfterMax: time.Second, Overloaded: 0.1, Seed: 7}) {
		t.Errorf("ParseFaultMix = %+v, %v", m, err)
	}
	for _, bad := range []string{"", "rate_limited", "rate_limited=x", "rate_limited=1.5", "rate_limited=0.6,overloaded=0.6",
		"overloaded=NaN", "retry_after_max=-1s", "seed=-1", "errors=0.1"} {
		if _, err := ParseFaultMix(bad); err == nil {
			t.Errorf("ParseFaultMix(%q) accepted", bad)
		}
	}
}
