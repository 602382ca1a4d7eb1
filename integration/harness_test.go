// Package integration tests ai_resilience end to end: a real Caddy loaded
// from a Caddyfile, the real reverse_proxy, the bundled mock provider as the
// upstream, and the official Go SDKs as clients with their own retries off,
// so that "compatible" means what the SDKs see.
package integration

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
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
	mock := mockprovider.New(mockOpts)
	upstream := httptest.NewServer(mock)
	t.Cleanup(upstream.Close)
	return &gateway{Server: startSite(t, fmt.Sprintf(`	route /v1/* {
		ai_resilience {
%s
		}
		reverse_proxy %s
	}`, options, upstream.URL)), mock: mock}
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

// haiku is a small valid Messages request.
func haiku(model string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.Model(model),
		MaxTokens: 256,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Write a haiku about retries."))},
	}
}
