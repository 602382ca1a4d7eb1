package wire

import (
	"bytes"
	"encoding/json"
	"runtime/debug"
	"slices"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
)

// Real-shaped error bodies: OpenAI's rate-limit and quota errors
// (https://platform.openai.com/docs/guides/error-codes), Azure OpenAI's 429,
// Gemini's OpenAI-compatible endpoint, which wraps the error in an array
// (https://ai.google.dev/gemini-api/docs/openai), and Anthropic's
// rate_limit_error (https://docs.anthropic.com/en/api/errors).
const (
	openAIRateLimitBody = `{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min (TPM): Limit 200000, Used 195869, Requested 4412. Please try again in 84ms. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	openAIQuotaBody     = `{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`
	openAITooLargeBody  = `{"error":{"message":"Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 34307.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	azureRateLimitBody  = `{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 37 seconds."}}`
	geminiCompatBody    = `[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]`
	anthropicRateBody   = `{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_011CSLsW7mFqvHHnzrKdKjAE"}`
)

func TestQuotaExhausted(t *testing.T) {
	tests := []struct {
		name string
		apis []API
		body string
		want bool
	}{
		{"openai rate limit", openAIAPIs, openAIRateLimitBody, false},
		{"openai quota", openAIAPIs, openAIQuotaBody, true},
		{"openai request too large", openAIAPIs, openAITooLargeBody, false},
		{"openai slow_down", openAIAPIs, `{"error":{"message":"slow down","type":"requests","param":null,"code":"slow_down"}}`, false},
		{"quota by type only", openAIAPIs, `{"error":{"message":"x","type":"insufficient_quota","param":null,"code":null}}`, true},
		{"quota by code only", openAIAPIs, `{"error":{"message":"x","type":"requests","code":"insufficient_quota"}}`, true},
		{"credit balance exhausted", openAIAPIs, `{"error":{"type":"insufficient_quota","code":"credit_balance_exhausted"}}`, true},
		{"credit balance code alone", openAIAPIs, `{"error":{"type":"tokens","code":"credit_balance_exhausted"}}`, true},
		{"organization spend limit", openAIAPIs, `{"error":{"code":"organization_spend_limit_exceeded"}}`, true},
		{"project spend limit", openAIAPIs, `{"error":{"code":"project_spend_limit_exceeded"}}`, true},
		{"organization usage limit", openAIAPIs, `{"error":{"code":"organization_usage_limit_exceeded"}}`, true},
		{"surrounding whitespace", openAIAPIs, "\n\t " + openAIQuotaBody + "\r\n", true},
		{"azure rate limit", openAIAPIs, azureRateLimitBody, false},
		{"gemini compat array rate limit", openAIAPIs, geminiCompatBody, false},
		{"array wrapped quota", openAIAPIs, `[{"error":{"code":"insufficient_quota","message":"x"}}]`, true},
		{"array wrapped quota by type", openAIAPIs, `[{"error":{"type":"insufficient_quota"}}]`, true},
		{"array quota in second element", openAIAPIs, `[{"error":{"code":"rate_limit_exceeded"}},{"error":{"code":"insufficient_quota"}}]`, true},
		{"array quota in first element", openAIAPIs, `[{"error":{"code":"insufficient_quota"}},{"error":{"code":"rate_limit_exceeded"}}]`, true},
		{"array of non-objects", openAIAPIs, `[1,"insufficient_quota",null]`, false},
		{"empty array", openAIAPIs, `[]`, false},
		{"anthropic body on openai route", openAIAPIs, anthropicRateBody, false},
		{"anthropic dialect with quota body", anthropicAPIs, openAIQuotaBody, false},
		{"quota only in message", openAIAPIs, `{"error":{"message":"insufficient_quota","code":"rate_limit_exceeded"}}`, false},
		{"quota at top level", openAIAPIs, `{"code":"insufficient_quota","type":"insufficient_quota"}`, false},
		{"quota nested deeper", openAIAPIs, `{"error":{"details":{"code":"insufficient_quota"}}}`, false},
		{"quota as error string", openAIAPIs, `{"error":"insufficient_quota"}`, false},
		{"code not a string", openAIAPIs, `{"error":{"code":["insufficient_quota"]}}`, false},
		{"code as object", openAIAPIs, `{"error":{"code":{"insufficient_quota":true}}}`, false},
		{"different case", openAIAPIs, `{"error":{"code":"INSUFFICIENT_QUOTA"}}`, false},
		{"padded code", openAIAPIs, `{"error":{"code":" insufficient_quota"}}`, false},
		{"escaped code", openAIAPIs, `{"error":{"code":"insufficient\u005fquota"}}`, true},
		{"truncated json", openAIAPIs, openAIQuotaBody[:len(openAIQuotaBody)-2], false},
		{"trailing garbage", openAIAPIs, openAIQuotaBody + "x", false},
		{"two documents", openAIAPIs, openAIQuotaBody + openAIQuotaBody, false},
		{"unquoted key", openAIAPIs, `{error:{"code":"insufficient_quota"}}`, false},
		{"html error page", openAIAPIs, "<html><body>429 Too Many Requests insufficient_quota</body></html>", false},
		{"plain text", openAIAPIs, "insufficient_quota", false},
		{"json string", openAIAPIs, `"insufficient_quota"`, false},
		{"null", openAIAPIs, `null`, false},
		{"empty object", openAIAPIs, `{}`, false},
		{"empty", openAIAPIs, "", false},
		{"whitespace", openAIAPIs, "  \n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, api := range tt.apis {
				if got := quotaExhausted(api, []byte(tt.body)); got != tt.want {
					t.Errorf("%s BodyError(%s) says quota %v, want %v", api.Name(), tt.body, got, tt.want)
				}
			}
		})
	}
	for _, api := range openAIAPIs {
		if quotaExhausted(api, nil) {
			t.Errorf("%s BodyError(nil) says quota", api.Name())
		}
	}
}

// TestQuotaExhaustedDeepNesting checks that a hostile 429 body, a million
// '[' (or as many nested arrays, closed), is judged with a small stack: the
// goroutine's stack is capped for the test, so a check that recursed once
// per level would end the test binary with a stack overflow.
func TestQuotaExhaustedDeepNesting(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(1 << 20))
	const depth = 1 << 20
	quota := []byte(`[{"error":{"code":"insufficient_quota"}},`)
	nested := func(n int) []byte {
		return append(append(slices.Clone(quota), bytes.Repeat([]byte("["), n)...), append(bytes.Repeat([]byte("]"), n), ']')...)
	}
	for _, c := range []struct {
		body []byte
		want bool
	}{
		{bytes.Repeat([]byte("["), depth), false},
		{append(bytes.Repeat([]byte("["), depth), bytes.Repeat([]byte("]"), depth)...), false},
		// Nesting deeper than jsonread.MaxDepth, encoding/json's own
		// limit, is not JSON to a Go client either: such a body says
		// nothing, even with a quota error in its first element.
		{nested(depth), false},
		// Nested exactly as deep as that limit, it is read.
		{nested(jsonread.MaxDepth - 1), true},
	} {
		done := make(chan bool)
		go func() { done <- quotaExhausted(ChatCompletions, c.body) }()
		if got := <-done; got != c.want {
			t.Errorf("quota in %.20s… (%d bytes) = %v, want %v", c.body, len(c.body), got, c.want)
		}
	}
}

func FuzzQuotaExhausted(f *testing.F) {
	for _, s := range []string{
		openAIRateLimitBody, openAIQuotaBody, openAITooLargeBody, azureRateLimitBody,
		geminiCompatBody, anthropicRateBody,
		`[{"error":{"code":"insufficient_quota"}}]`,
		`{"error":{"type":"insufficient_quota","code":null}}`,
		`{"error":{"code":"credit_balance_exhausted"}}`,
		`{"error":{"code":"insufficient\u005fquota"}}`,
		``, `[]`, `{}`, `null`, `{"error":`,
	} {
		f.Add(uint8(fuzzChat), []byte(s))
	}
	f.Add(uint8(fuzzMessages), []byte(openAIQuotaBody))
	f.Fuzz(func(t *testing.T, d uint8, body []byte) {
		api := fuzzAPIs[int(d)%len(fuzzAPIs)]
		if api == Passthrough {
			return // its bodies go to the client unread
		}
		got := quotaExhausted(api, body)
		if api.Family() != openAIFamily {
			if got {
				t.Fatalf("%s BodyError says quota; only the OpenAI APIs have quota errors", api.Name())
			}
			return
		}
		if want := quotaOracle(body); got != want {
			t.Fatalf("%s BodyError(%q) says quota %v, encoding/json oracle says %v", api.Name(), body, got, want)
		}
	})
}

// quotaExhausted reads a whole error body as the gateway does, and returns
// what BodyError says of a quota.
func quotaExhausted(api API, b []byte) bool {
	var r jsonread.Reader
	r.Reset(api.BodyPaths())
	r.Feed(b)
	if !r.End() {
		return false
	}
	var buf [16]jsonread.Value
	_, quota := api.BodyError(r.Values(buf[:0]))
	return quota
}

// quotaOracle re-implements BodyError's quota rule with encoding/json, as
// an independent check for the fuzzer. Of duplicate object keys it keeps
// the last, as encoding/json and the providers' own parsers do.
func quotaOracle(body []byte) bool {
	if !json.Valid(body) {
		// The decoder below would stop after the first value and miss
		// trailing garbage.
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if dec.Decode(&doc) != nil {
		return false
	}
	objs := []any{doc}
	if arr, ok := doc.([]any); ok {
		objs = arr[:min(len(arr), maxErrorElements)]
	}
	for _, o := range objs {
		m, _ := o.(map[string]any)
		e, _ := m["error"].(map[string]any)
		if e["type"] == "insufficient_quota" {
			return true
		}
		if c, ok := e["code"].(string); ok && slices.Contains(quotaCodes[:], c) {
			return true
		}
	}
	return false
}
