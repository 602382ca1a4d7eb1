package handlers_test

// Benchmarks of the gateway's request path with a fake next handler standing
// in for reverse_proxy. Each case runs the same fake upstream twice: called
// directly (baseline) and through Gateway.ServeHTTP (gateway), so the
// difference in ns/op, B/op and allocs/op is what ai_resilience adds.
//
//	go test -run '^$' -bench . -benchmem ./handlers/
//
// The fake next reads the request body and writes headers and body the way
// reverse_proxy does (a header map filled in, one WriteHeader, then body
// writes; for event streams one write and one flush per event). The client's
// ResponseWriter discards what it is given and is reused, so neither side
// pays for a network or a recorder.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ai-resilience/caddy-ai-resilience/handlers"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// benchGateway is the gateway of the benchmarks: what the module builds
// from an empty `ai_resilience` block, but for a short backoff, with
// backoff (when not nil) as the backoff and the retry budget off when
// noBudget is set.
func benchGateway(b *testing.B, backoff *handlers.Backoff, noBudget bool) *handlers.Gateway {
	if backoff == nil {
		backoff = &handlers.Backoff{Base: caddy.Duration(time.Millisecond), Max: caddy.Duration(2 * time.Millisecond)}
	}
	cfg := handlers.Config{Backoff: backoff}
	if err := cfg.Provision(); err != nil {
		b.Fatal(err)
	}
	deps := handlers.Deps{Circuits: policy.NewCircuitBreaker(cfg.CircuitBreaker.Settings(), time.Now)}
	if !noBudget {
		deps.Budget = policy.NewRetryBudget(cfg.RetryBudget.Percent, *cfg.RetryBudget.MinPerSecond, time.Now)
	}
	return handlers.New(&cfg, deps)
}

// requestBody returns an Anthropic Messages request of about size bytes:
// model, max_tokens and stream first (as the SDKs write them), then a
// conversation padded to the size.
func requestBody(size int, stream bool) []byte {
	return testbody.Body{Size: size, Stream: stream, System: "You are a helpful assistant."}.Bytes()
}

// anthropicResponse is a realistic non-streamed Messages answer (~1.6 KB).
var anthropicResponse = func() []byte {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 30)
	return []byte(`{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",` +
		`"content":[{"type":"text","text":"` + text + `"}],"stop_reason":"end_turn","stop_sequence":null,` +
		`"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":503,"service_tier":"standard"}}`)
}()

// anthropicEvents is a 200-delta Messages stream, one slice per event as
// reverse_proxy writes them (each write followed by a flush).
var anthropicEvents = func() [][]byte {
	ev := func(name, data string) []byte { return []byte("event: " + name + "\ndata: " + data + "\n\n") }
	out := [][]byte{
		ev("message_start", `{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}`),
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`),
		ev("ping", `{"type": "ping"}`),
	}
	for i := 0; i < 200; i++ {
		out = append(out, ev("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" word%d"}}`, i)))
	}
	return append(out,
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":200}}`),
		ev("message_stop", `{"type":"message_stop"}`),
	)
}()

// openAIChatEvents is a 200-chunk Chat Completions stream with usage
// (stream_options.include_usage), as OpenAI sends it: data-only events.
var openAIChatEvents = func() [][]byte {
	const head = `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_fc9f1d7035",`
	ev := func(data string) []byte { return []byte("data: " + data + "\n\n") }
	out := [][]byte{ev(head + `"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`)}
	for i := 0; i < 200; i++ {
		out = append(out, ev(fmt.Sprintf(head+`"choices":[{"index":0,"delta":{"content":" word%d"},"logprobs":null,"finish_reason":null}],"usage":null}`, i)))
	}
	return append(out,
		ev(head+`"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`),
		ev(head+`"choices":[],"usage":{"prompt_tokens":1117,"completion_tokens":200,"total_tokens":1317,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`),
		ev(`[DONE]`),
	)
}()

// overloadedBody is Anthropic's 529 body.
var overloadedBody = []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`)

// setUpstreamHeaders adds the headers an Anthropic response carries, as
// reverse_proxy copies them into the client's header map.
func setUpstreamHeaders(h http.Header, contentType string) {
	h["Content-Type"] = []string{contentType}
	h["Date"] = []string{"Mon, 01 Dec 2025 12:00:00 GMT"}
	h["Request-Id"] = []string{"req_011CSHoEeqs5C35K2UUqR7Fy"}
	h["Anthropic-Organization-Id"] = []string{"0a1b2c3d-4e5f-6789-abcd-ef0123456789"}
	h["Anthropic-Ratelimit-Requests-Limit"] = []string{"4000"}
	h["Anthropic-Ratelimit-Requests-Remaining"] = []string{"3999"}
	h["Anthropic-Ratelimit-Requests-Reset"] = []string{"2025-12-01T12:00:01Z"}
	h["Anthropic-Ratelimit-Tokens-Limit"] = []string{"2000000"}
	h["Anthropic-Ratelimit-Tokens-Remaining"] = []string{"1998000"}
	h["Anthropic-Ratelimit-Tokens-Reset"] = []string{"2025-12-01T12:00:01Z"}
	h["Cf-Ray"] = []string{"8f0c1a2b3c4d5e6f-SJC"}
	h["Via"] = []string{"1.1 Caddy"}
}

// jsonNext answers like reverse_proxy relaying a non-streamed Messages answer.
var jsonNext = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	if err := sendBody(r); err != nil {
		return err
	}
	setUpstreamHeaders(w.Header(), "application/json")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(anthropicResponse)
	return err
})

// sseNext answers like reverse_proxy relaying a 200-delta Messages stream:
// one write and one flush per event (flush_interval -1 for event streams).
var sseNext = sseHandler(anthropicEvents)

// sseHandler relays events like reverse_proxy relays an event stream.
func sseHandler(events [][]byte) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := sendBody(r); err != nil {
			return err
		}
		h := w.Header()
		setUpstreamHeaders(h, "text/event-stream; charset=utf-8")
		h["Cache-Control"] = []string{"no-cache"}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return err
		}
		for _, e := range events {
			if _, err := w.Write(e); err != nil {
				return err
			}
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		return nil
	}
}

// flakyNext answers 529 overloaded_error on odd calls and the JSON answer on
// even ones, so each gateway request is one held failure plus one success.
func flakyNext() caddyhttp.Handler {
	n := 0
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		n++
		if n%2 == 1 {
			if err := sendBody(r); err != nil {
				return err
			}
			h := w.Header()
			setUpstreamHeaders(h, "application/json")
			h["X-Should-Retry"] = []string{"true"}
			w.WriteHeader(529)
			_, err := w.Write(overloadedBody)
			return err
		}
		return jsonNext(w, r)
	})
}

// discardWriter is the client connection: it keeps nothing and can flush.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

var serverHeader = []string{"Caddy"}

// reset prepares the writer for the next request: the header map holds what
// Caddy's server sets before the handler chain runs.
func (w *discardWriter) reset() {
	clear(w.h)
	w.h["Server"] = serverHeader
	w.status, w.n = 0, 0
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) Flush()            {}
func (w *discardWriter) FlushError() error { return nil }

// replayBody is a request body that can be rewound without allocating.
type replayBody struct{ bytes.Reader }

func (*replayBody) Close() error { return nil }

// newBenchRequest returns a POST /v1/messages as the Anthropic SDK sends it,
// with a Caddy replacer in its context as the server puts there.
func newBenchRequest(path string, body []byte) (*http.Request, *replayBody) {
	rb := &replayBody{}
	rb.Reset(body)
	ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:8080"+path, rb)
	if err != nil {
		panic(err)
	}
	r.ContentLength = int64(len(body))
	r.Header = http.Header{
		"Accept":                      {"application/json"},
		"Accept-Encoding":             {"gzip"},
		"Anthropic-Version":           {"2023-06-01"},
		"Content-Type":                {"application/json"},
		"User-Agent":                  {"Anthropic/Go 1.84.0"},
		"X-Api-Key":                   {"sk-ant-api03-0000000000000000000000000000000000000000"},
		"X-Stainless-Arch":            {"x64"},
		"X-Stainless-Lang":            {"go"},
		"X-Stainless-Os":              {"Linux"},
		"X-Stainless-Package-Version": {"1.84.0"},
		"X-Stainless-Retry-Count":     {"0"},
		"X-Stainless-Runtime":         {"go"},
		"X-Stainless-Runtime-Version": {"go1.26.0"},
		"X-Stainless-Timeout":         {"600"},
	}
	return r, rb
}

// runPair runs next directly (baseline) and through the gateway (gateway)
// with the same request, writer and answer.
func runPair(b *testing.B, path string, body []byte, next caddyhttp.Handler, wantBytes int) {
	b.Run("baseline", func(b *testing.B) {
		serve(b, path, body, func(w http.ResponseWriter, r *http.Request) error { return next.ServeHTTP(w, r) }, wantBytes)
	})
	b.Run("gateway", func(b *testing.B) {
		g := benchGateway(b, nil, false)
		serve(b, path, body, func(w http.ResponseWriter, r *http.Request) error { return g.ServeHTTP(w, r, next) }, wantBytes)
	})
}

// serve runs one request per iteration through h and checks each answer.
func serve(b *testing.B, path string, body []byte, h func(http.ResponseWriter, *http.Request) error, wantBytes int) {
	r, rb := newBenchRequest(path, body)
	w := &discardWriter{h: make(http.Header, 32)}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.reset()
		rb.Reset(body)
		if err := h(w, r); err != nil {
			b.Fatal(err)
		}
		if w.status != http.StatusOK || w.n != wantBytes {
			b.Fatalf("got status %d and %d bytes, want 200 and %d", w.status, w.n, wantBytes)
		}
	}
}

func streamBytes(events [][]byte) int {
	n := 0
	for _, e := range events {
		n += len(e)
	}
	return n
}

// BenchmarkServeHTTP is the success path: one attempt, the answer passed on.
func BenchmarkServeHTTP(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KB", 1 << 10}, {"100KB", 100 << 10}} {
		b.Run("json/"+size.name, func(b *testing.B) {
			runPair(b, "/v1/messages", requestBody(size.n, false), jsonNext, len(anthropicResponse))
		})
		b.Run("sse200/"+size.name, func(b *testing.B) {
			runPair(b, "/v1/messages", requestBody(size.n, true), sseNext, streamBytes(anthropicEvents))
		})
	}
	// The same 200-delta stream in the OpenAI Chat dialect, whose chunks
	// are all data-only events that the tap parses as JSON. The client asks
	// for the usage chunk itself, so the stream passes whole.
	b.Run("sse200_openai_chat/1KB", func(b *testing.B) {
		runPair(b, "/v1/chat/completions", chatUsageBody(), sseHandler(openAIChatEvents), streamBytes(openAIChatEvents))
	})
}

// BenchmarkServeHTTPRetry is a 529 held back, the headers restored, and the
// retry's 200 passed on. "nowait" sets a zero backoff so ns/op is the
// gateway's own work; "backoff1ms" uses the benchmarks' 1ms–2ms backoff, so
// its ns/op is dominated by the random sleep (mean ~0.5ms). Every request
// retries here, far above the default retry budget (20% of traffic plus
// 10/s), so the budget is off: with it, most iterations would measure the
// budget refusing the retry instead.
//
// Its baseline is two calls of next (the 529 and the 200) written straight
// to the client, which is not a correct answer but costs the same upstream
// work.
func BenchmarkServeHTTPRetry(b *testing.B) {
	body := requestBody(1<<10, false)
	b.Run("baseline", func(b *testing.B) {
		next := flakyNext()
		serve(b, "/v1/messages", body, func(w http.ResponseWriter, r *http.Request) error {
			if err := next.ServeHTTP(w, r); err != nil {
				return err
			}
			w.(*discardWriter).reset()
			r.Body.(*replayBody).Seek(0, io.SeekStart)
			return next.ServeHTTP(w, r)
		}, len(anthropicResponse))
	})
	b.Run("gateway/nowait", func(b *testing.B) {
		g := benchGateway(b, &handlers.Backoff{Base: 1, Max: 1}, true)
		next := flakyNext()
		serve(b, "/v1/messages", body, func(w http.ResponseWriter, r *http.Request) error { return g.ServeHTTP(w, r, next) }, len(anthropicResponse))
	})
	b.Run("gateway/backoff1ms", func(b *testing.B) {
		g := benchGateway(b, nil, true)
		next := flakyNext()
		serve(b, "/v1/messages", body, func(w http.ResponseWriter, r *http.Request) error { return g.ServeHTTP(w, r, next) }, len(anthropicResponse))
	})
}

// sendBody consumes the request body and closes it, as the transport does
// once it has written a body upstream.
func sendBody(r *http.Request) error {
	_, err := io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return err
}

// responsesEvents is a 200-delta Responses API stream with named events,
// ending with response.completed, which repeats the whole answer.
var responsesEvents = func() [][]byte {
	ev := func(name, data string) []byte { return []byte("event: " + name + "\ndata: " + data + "\n\n") }
	const resp = `"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"model":"gpt-5-2025-08-07"`
	out := [][]byte{
		ev("response.created", `{"type":"response.created","sequence_number":0,"response":{`+resp+`,"status":"in_progress","output":[],"usage":null}}`),
		ev("response.in_progress", `{"type":"response.in_progress","sequence_number":1,"response":{`+resp+`,"status":"in_progress","output":[],"usage":null}}`),
	}
	var text strings.Builder
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&text, " word%d", i)
		out = append(out, ev("response.output_text.delta", fmt.Sprintf(`{"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_67ccd2bf17f0819081ff3bb2cf6508e6","output_index":0,"content_index":0,"delta":" word%d","logprobs":[]}`, i+2, i)))
	}
	return append(out, ev("response.completed", `{"type":"response.completed","sequence_number":202,"response":{`+resp+`,"status":"completed","output":[{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e6","status":"completed","role":"assistant","content":[{"type":"output_text","text":"`+text.String()+`","annotations":[]}]}],"usage":{"input_tokens":1117,"input_tokens_details":{"cached_tokens":0},"output_tokens":200,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1317}}}`))
}()

// dataOnly drops the event: lines, as OpenAI-compatible upstreams send
// Responses events; the type is then read from each event's JSON.
func dataOnly(events [][]byte) [][]byte {
	out := make([][]byte, len(events))
	for i, e := range events {
		_, data, _ := bytes.Cut(e, []byte("\n"))
		out[i] = data
	}
	return out
}

// BenchmarkStream is the gateway's cost on the event streams of each API:
// a 200-delta stream relayed one event per write and flush, as
// reverse_proxy relays it, with its usage read and its end judged.
func BenchmarkStream(b *testing.B) {
	// The chat client asks for the usage chunk itself, as in
	// BenchmarkServeHTTP: otherwise the gateway asks for it and keeps it
	// from the client, and the client gets fewer bytes than next sent.
	chatBody := chatUsageBody()
	for _, c := range []struct {
		name, path string
		body       []byte
		events     [][]byte
	}{
		{"anthropic", "/v1/messages", requestBody(1<<10, true), anthropicEvents},
		{"openai_chat", "/v1/chat/completions", chatBody, openAIChatEvents},
		{"openai_responses", "/v1/responses", requestBody(1<<10, true), responsesEvents},
		{"openai_responses_data_only", "/v1/responses", requestBody(1<<10, true), dataOnly(responsesEvents)},
	} {
		b.Run(c.name, func(b *testing.B) {
			runPair(b, c.path, c.body, sseHandler(c.events), streamBytes(c.events))
		})
	}
}

// chatUsageBody is a 1 KB streamed Chat Completions request whose client
// asks for the usage chunk (stream_options.include_usage).
func chatUsageBody() []byte {
	return bytes.Replace(requestBody(1<<10, true), []byte(`"stream":true,`), []byte(`"stream":true,"stream_options":{"include_usage":true},`), 1)
}
