// Package integration tests ai_resilience end to end: a real Caddy loaded
// from a Caddyfile, the real reverse_proxy, the bundled mock provider as the
// upstream, and the official Go SDKs as clients with their own retries off,
// so that "compatible" means what the SDKs see.
package integration

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
)

// testAPIKey is a recognisable secret: no log line may contain it.
const testAPIKey = "sk-test-SECRET-5f3c9a"

// gateway is a Caddy with ai_resilience in front of a mock provider.
type gateway struct {
	*testcaddy.Server
	mock *mockprovider.Provider
}

// startGateway runs Caddy with `ai_resilience { <options> }` and a
// reverse_proxy to a fresh mock provider in one route, as the README says.
func startGateway(t *testing.T, options string, mockOpts mockprovider.Options) *gateway {
	t.Helper()
	return startGatewayWith(t, setup{options: options, mock: mockOpts})
}

// setup describes a test gateway beyond its ai_resilience options.
type setup struct {
	// options are the lines inside `ai_resilience { }`.
	options string
	mock    mockprovider.Options
	// path is the route's matcher; empty means /v1/*.
	path string
	// before are directives placed in the route ahead of ai_resilience,
	// such as log_append, which must wrap it to see its placeholders.
	before string
	// site are more directives of the site block, such as log or metrics.
	site string
	// upstream wraps the mock provider, for example to rewrite paths; nil
	// serves the mock as it is.
	upstream func(http.Handler) http.Handler
	// global holds lines for the global options block, such as a
	// servers block or the `ai_resilience { redis … }` option.
	global string
	// proxy are lines inside the reverse_proxy block.
	proxy string
}

// startGatewayWith runs Caddy with ai_resilience and a reverse_proxy to a
// fresh mock provider in one route, shaped by s.
func startGatewayWith(t *testing.T, s setup) *gateway {
	t.Helper()
	mock := mockprovider.New(s.mock)
	var h http.Handler = mock
	if s.upstream != nil {
		h = s.upstream(mock)
	}
	upstream := httptest.NewServer(h)
	t.Cleanup(upstream.Close)
	path := cmp.Or(s.path, "/v1/*")
	return &gateway{Server: testcaddy.StartGlobal(t, s.global, fmt.Sprintf(`%s
	route %s {
%s
		ai_resilience {
%s
		}
		reverse_proxy %s {
%s
		}
	}`, s.site, path, s.before, s.options, upstream.URL, s.proxy)), mock: mock}
}

// directives joins ai_resilience subdirectives, one per line.
func directives(lines ...string) string {
	return "\t\t\t" + strings.Join(lines, "\n\t\t\t")
}

func startSite(t *testing.T, site string) *testcaddy.Server {
	t.Helper()
	return testcaddy.Start(t, site)
}

// anthropicClient is the official SDK pointed at the gateway, its own
// retries off so that every retry seen is the gateway's.
func (g *gateway) anthropicClient(opts ...anthropicoption.RequestOption) anthropic.Client {
	base := []anthropicoption.RequestOption{
		anthropicoption.WithBaseURL(g.URL),
		anthropicoption.WithAPIKey(testAPIKey),
		anthropicoption.WithMaxRetries(0),
	}
	return anthropic.NewClient(append(base, opts...)...)
}

// openaiClient is the official SDK pointed at the gateway, retries off.
func (g *gateway) openaiClient(opts ...openaioption.RequestOption) openai.Client {
	base := []openaioption.RequestOption{
		openaioption.WithBaseURL(g.URL + "/v1"),
		openaioption.WithAPIKey(testAPIKey),
		openaioption.WithMaxRetries(0),
	}
	return openai.NewClient(append(base, opts...)...)
}

// script returns the request option that scripts the mock's answers.
func script(steps string) anthropicoption.RequestOption {
	return anthropicoption.WithHeader(mockprovider.ScriptHeader, steps)
}

func openaiScript(steps string) openaioption.RequestOption {
	return openaioption.WithHeader(mockprovider.ScriptHeader, steps)
}

// anthropicHeader and openaiHeader set one more request header.
func anthropicHeader(name, value string) anthropicoption.RequestOption {
	return anthropicoption.WithHeader(name, value)
}

func openaiHeader(name, value string) openaioption.RequestOption {
	return openaioption.WithHeader(name, value)
}

// haiku is a small valid Messages request.
func haiku(model string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.Model(model),
		MaxTokens: 256,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(thePrompt))},
	}
}

// thePrompt is the user text of every request built here; no log line may
// contain it.
const thePrompt = "Write a haiku about retries."

// chatParams is a small Chat Completions request.
func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    openai.ChatModel(model),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(thePrompt)},
	}
}

// responsesParams is a small Responses API request.
func responsesParams(model string) responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model: model,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(thePrompt)},
	}
}

// mockText is the text the mock streams in n deltas for model: its reply
// words, cycled.
func mockText(model string, n int) string {
	words := [...]string{"mock", "reply", "from", model}
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[i%len(words)])
	}
	return b.String()
}

// post sends a raw JSON request to the gateway, bypassing the SDKs, so that
// the test sees the exact headers and body. header holds extra headers.
func (g *gateway) post(t *testing.T, path, body string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

// do sends a request and reads the whole body. A body cut short is not an
// error here: what arrived before the cut is returned, and the read error
// is logged.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := testcaddy.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Logf("%s %s: body ended with %v", req.Method, req.URL.Path, err)
	}
	return resp, body
}

// anthropicJSON is a raw Messages request body.
func anthropicJSON(model string, stream bool) string {
	return testbody.Body{Model: model, MaxTokens: 256, Stream: stream, Prompt: thePrompt}.String()
}

// chatJSON is a raw Chat Completions request body.
func chatJSON(model string, stream bool) string {
	return testbody.Body{API: testbody.Chat, Model: model, Stream: stream, Prompt: thePrompt}.String()
}

// logEntries waits up to two seconds for at least n entries of the
// module's logger with message msg, and returns all of them. A call logs
// when it ends, which may be just after the client has its answer.
func (g *gateway) logEntries(t *testing.T, msg string, n int) []map[string]any {
	t.Helper()
	var found []map[string]any
	for deadline := time.Now().Add(2 * time.Second); ; {
		found = found[:0]
		for _, e := range g.Logs(t, moduleLogger) {
			if e["msg"] == msg {
				found = append(found, e)
			}
		}
		if len(found) >= n || time.Now().After(deadline) {
			return found
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// moduleLogger is the name of the module's own logger.
const moduleLogger = "http.handlers.ai_resilience"
