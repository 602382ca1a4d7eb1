package integration

import (
	"net/http"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

// TestDefaultGuardsPassWhatProvidersAccept sends valid requests that are
// unusual in form through the default configuration (validate on): each
// must reach the upstream. A gateway stricter than its provider breaks
// clients: `validate` must never reject what the provider accepts.
func TestDefaultGuardsPassWhatProvidersAccept(t *testing.T) {
	g := startGateway(t, directives("backoff 1ms 2ms"), mockprovider.Options{})
	for _, c := range []struct{ name, path, body string }{
		{"anthropic escapes and unicode", "/v1/messages",
			`{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"h\u00e9llo \ud83d\ude00 \"quoted\" \\ back\/slash \n\t"}]}`},
		{"anthropic pretty printed, keys reordered", "/v1/messages",
			"{\r\n\t\"messages\" : [ {\r\n\t\t\"content\" : [ { \"type\" : \"text\", \"text\" : \"hi\" } ],\r\n\t\t\"role\" : \"user\" } ],\r\n\t\"max_tokens\" : 64 ,\r\n\t\"model\" : \"claude-haiku-4-5\"\r\n}\r\n"},
		{"anthropic unknown fields and numbers", "/v1/messages",
			`{"model":"claude-haiku-4-5","max_tokens":64,"temperature":0.5e0,"top_p":-0.0,"x":[null,true,false,{"a":[[]]},1E-3],"metadata":{"user_id":"u"},"messages":[{"role":"user","content":"hi"}]}`},
		{"anthropic system role, blocks, tools", "/v1/messages",
			`{"model":"claude-haiku-4-5","max_tokens":64,"system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],"tools":[{"name":"get","input_schema":{"type":"object","properties":{}}}],"messages":[{"role":"system","content":"also brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get","input":{"type":"not a block"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"ok"}]}]},{"role":"assistant","content":""}]}`},
		// A repeated member the gateway does not read is the provider's
		// business (one it reads is refused: see TestIntegrity*).
		{"anthropic repeated unread key, last wins", "/v1/messages",
			`{"model":"claude-haiku-4-5","max_tokens":64,"temperature":"x","temperature":0.5,"messages":[{"role":"user","content":"hi","role":"user"}]}`},
		{"openai chat parts, tool calls, null content", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","max_tokens":null,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}]}`},
		{"openai responses input items", "/v1/responses",
			`{"model":"gpt-5","instructions":"be brief","input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c1","name":"get","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"ok"},{"type":"message","role":"user","content":[{"type":"input_text","text":"go on"}]}]}`},
		{"openai responses without model or input", "/v1/responses",
			`{"prompt":{"id":"pmpt_1"},"previous_response_id":"resp_1"}`},
		{"openai embeddings token arrays", "/v1/embeddings",
			`{"model":"text-embedding-3-small","input":[[1,2,3],[4,5]]}`},
		{"openai legacy completions", "/v1/completions",
			`{"model":"gpt-3.5-turbo-instruct","prompt":["a","b"],"max_tokens":5}`},
	} {
		g.mock.Reset()
		resp, body := g.post(t, c.path, c.body, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d, want the upstream's 200: %s", c.name, resp.StatusCode, body)
			continue
		}
		calls := g.mock.Calls()
		if len(calls) != 1 || string(calls[0].Body) != c.body {
			t.Errorf("%s: the upstream did not get the body as sent", c.name)
		}
	}
}
