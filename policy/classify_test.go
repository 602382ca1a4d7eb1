package policy

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// defaultReasons is the SPEC's default retry_on list with the reason each
// status must be reported under, written out independently of the code.
var defaultReasons = map[int]Reason{
	408: ReasonRequestTimeout,
	409: ReasonConflict,
	429: ReasonRateLimited,
	500: ReasonServerError,
	502: ReasonServerError,
	503: ReasonOverloaded,
	504: ReasonServerError,
	529: ReasonOverloaded,
}

func TestDefaultRetryOnEveryStatus(t *testing.T) {
	r := DefaultRetryOn()
	for status := 100; status <= 599; status++ {
		reason, listed := defaultReasons[status]
		if got := r.Has(status); got != listed {
			t.Errorf("Has(%d) = %v, want %v", status, got, listed)
		}
		want := Verdict{Retry: listed, Reason: reason}
		if got := r.Classify(status, nil); got != want {
			t.Errorf("Classify(%d, nil) = %+v, want %+v", status, got, want)
		}
		if got := r.Classify(status, http.Header{}); got != want {
			t.Errorf("Classify(%d, empty) = %+v, want %+v", status, got, want)
		}
	}
}

func TestRetryOnHasOutOfRange(t *testing.T) {
	r, err := NewRetryOn([]int{100, 599})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{math.MinInt, -1, 0, 1, 63, 64, 99, 600, 639, 640, 1000, math.MaxInt} {
		if r.Has(s) {
			t.Errorf("Has(%d) = true, want false", s)
		}
		if v := r.Classify(s, hdr("X-Should-Retry", "true")); s < 400 && v.Retry {
			t.Errorf("Classify(%d) with x-should-retry: true = %+v, want no retry", s, v)
		}
	}
}

func TestNewRetryOn(t *testing.T) {
	r, err := NewRetryOn([]int{100, 199, 400, 418, 418, 501, 575, 576, 599})
	if err != nil {
		t.Fatalf("NewRetryOn: %v", err)
	}
	in := map[int]bool{100: true, 199: true, 400: true, 418: true, 501: true, 575: true, 576: true, 599: true}
	for s := 100; s <= 599; s++ {
		if got := r.Has(s); got != in[s] {
			t.Errorf("Has(%d) = %v, want %v", s, got, in[s])
		}
	}
	tests := []struct {
		status int
		want   Verdict
	}{
		{100, Verdict{}}, // listed, but an informational response is no failure
		{199, Verdict{}},
		{400, Verdict{true, ReasonOther}},
		{418, Verdict{true, ReasonOther}},
		{501, Verdict{true, ReasonServerError}},
		{575, Verdict{true, ReasonServerError}},
		{599, Verdict{true, ReasonServerError}},
		{429, Verdict{}}, // not listed: the default set is replaced, not extended
		{500, Verdict{}},
	}
	for _, tt := range tests {
		if got := r.Classify(tt.status, nil); got != tt.want {
			t.Errorf("Classify(%d) = %+v, want %+v", tt.status, got, tt.want)
		}
	}

	empty, err := NewRetryOn(nil)
	if err != nil {
		t.Fatalf("NewRetryOn(nil): %v", err)
	}
	for s := 100; s <= 599; s++ {
		if empty.Has(s) {
			t.Errorf("empty set Has(%d)", s)
		}
	}
}

func TestNewRetryOnErrors(t *testing.T) {
	for _, s := range []int{math.MinInt, -429, 0, 99, 600, 1000, math.MaxInt} {
		_, err := NewRetryOn([]int{429, s, 503})
		if err == nil {
			t.Errorf("NewRetryOn with %d: no error", s)
			continue
		}
		msg := err.Error()
		for _, part := range []string{strconv.Itoa(s), "100", "599"} {
			if !strings.Contains(msg, part) {
				t.Errorf("NewRetryOn with %d: error %q does not mention %q", s, msg, part)
			}
		}
	}
}

func TestClassifyShouldRetryHeader(t *testing.T) {
	def := DefaultRetryOn()
	no500, err := NewRetryOn([]int{429, 529})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		set    RetryOn
		status int
		value  string // "" means no header
		want   Verdict
	}{
		{"true on unlisted 400", def, 400, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on unlisted 401", def, 401, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on unlisted 501", def, 501, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on 500 removed from set", no500, 500, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on listed 429 keeps status reason", def, 429, "true", Verdict{true, ReasonRateLimited}},
		{"true on listed 529", def, 529, "true", Verdict{true, ReasonOverloaded}},
		{"uppercase TRUE", def, 400, "TRUE", Verdict{true, ReasonUpstreamHint}},
		{"mixed case True", def, 400, "True", Verdict{true, ReasonUpstreamHint}},
		{"padded true", def, 400, " true ", Verdict{true, ReasonUpstreamHint}},
		{"false on listed 529", def, 529, "false", Verdict{}},
		{"false on listed 429", def, 429, "false", Verdict{}},
		{"false on listed 500", def, 500, "false", Verdict{}},
		{"uppercase FALSE", def, 503, "FALSE", Verdict{}},
		{"false on unlisted 400", def, 400, "false", Verdict{}},
		{"true on 200", def, 200, "true", Verdict{}},
		{"true on 204", def, 204, "true", Verdict{}},
		{"true on 101", def, 101, "true", Verdict{}},
		{"true on 304", def, 304, "true", Verdict{}},
		{"true on 399", def, 399, "true", Verdict{}},
		{"other value on 429 falls back to status", def, 429, "yes", Verdict{true, ReasonRateLimited}},
		{"other value on 400 falls back to status", def, 400, "1", Verdict{}},
		{"prefix of true is not true", def, 400, "tru", Verdict{}},
		{"truex is not true", def, 400, "truex", Verdict{}},
		{"falsey is not false", def, 529, "falsey", Verdict{true, ReasonOverloaded}},
		{"no header on 400", def, 400, "", Verdict{}},
		{"no header on 502", def, 502, "", Verdict{true, ReasonServerError}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.value != "" {
				// Set with a lowercase name, as proxies write it; Set
				// canonicalises the key the same way net/http does on read.
				h.Set("x-should-retry", tt.value)
			}
			if got := tt.set.Classify(tt.status, h); got != tt.want {
				t.Errorf("Classify(%d, x-should-retry=%q) = %+v, want %+v", tt.status, tt.value, got, tt.want)
			}
		})
	}
}

func TestClassifyFirstShouldRetryValueWins(t *testing.T) {
	h := http.Header{"X-Should-Retry": {"false", "true"}}
	if got := DefaultRetryOn().Classify(429, h); got.Retry {
		t.Errorf("Classify with [false true] = %+v, want the first value, false, to win", got)
	}
}

func TestClassifyNoAlloc(t *testing.T) {
	r := DefaultRetryOn()
	h := http.Header{}
	h.Set("X-Should-Retry", "True")
	h.Set("Retry-After", "1")
	allocs := testing.AllocsPerRun(200, func() {
		r.Classify(429, h)
		r.Classify(400, h)
		r.Classify(503, nil)
	})
	if allocs != 0 {
		t.Errorf("Classify allocates %v times per run, want 0", allocs)
	}
}

// Real-shaped bodies from provider-semantics.md §2.6, §6 and §1.4.
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
		d    Dialect
		body string
		want bool
	}{
		{"openai rate limit", OpenAI, openAIRateLimitBody, false},
		{"openai quota", OpenAI, openAIQuotaBody, true},
		{"openai request too large", OpenAI, openAITooLargeBody, false},
		{"openai slow_down", OpenAI, `{"error":{"message":"slow down","type":"requests","param":null,"code":"slow_down"}}`, false},
		{"quota by type only", OpenAI, `{"error":{"message":"x","type":"insufficient_quota","param":null,"code":null}}`, true},
		{"quota by code only", OpenAI, `{"error":{"message":"x","type":"requests","code":"insufficient_quota"}}`, true},
		{"credit balance exhausted", OpenAI, `{"error":{"type":"insufficient_quota","code":"credit_balance_exhausted"}}`, true},
		{"credit balance code alone", OpenAI, `{"error":{"type":"tokens","code":"credit_balance_exhausted"}}`, true},
		{"organization spend limit", OpenAI, `{"error":{"code":"organization_spend_limit_exceeded"}}`, true},
		{"project spend limit", OpenAI, `{"error":{"code":"project_spend_limit_exceeded"}}`, true},
		{"organization usage limit", OpenAI, `{"error":{"code":"organization_usage_limit_exceeded"}}`, true},
		{"surrounding whitespace", OpenAI, "\n\t " + openAIQuotaBody + "\r\n", true},
		{"azure rate limit", OpenAI, azureRateLimitBody, false},
		{"gemini compat array rate limit", OpenAI, geminiCompatBody, false},
		{"array wrapped quota", OpenAI, `[{"error":{"code":"insufficient_quota","message":"x"}}]`, true},
		{"array wrapped quota by type", OpenAI, `[{"error":{"type":"insufficient_quota"}}]`, true},
		{"array quota in second element", OpenAI, `[{"error":{"code":"rate_limit_exceeded"}},{"error":{"code":"insufficient_quota"}}]`, true},
		{"array quota in first element", OpenAI, `[{"error":{"code":"insufficient_quota"}},{"error":{"code":"rate_limit_exceeded"}}]`, true},
		{"array of non-objects", OpenAI, `[1,"insufficient_quota",null]`, false},
		{"empty array", OpenAI, `[]`, false},
		{"anthropic body on openai route", OpenAI, anthropicRateBody, false},
		{"anthropic dialect with quota body", Anthropic, openAIQuotaBody, false},
		{"passthrough with quota body", Passthrough, openAIQuotaBody, false},
		{"unknown dialect with quota body", Dialect(200), openAIQuotaBody, false},
		{"quota only in message", OpenAI, `{"error":{"message":"insufficient_quota","code":"rate_limit_exceeded"}}`, false},
		{"quota at top level", OpenAI, `{"code":"insufficient_quota","type":"insufficient_quota"}`, false},
		{"quota nested deeper", OpenAI, `{"error":{"details":{"code":"insufficient_quota"}}}`, false},
		{"quota as error string", OpenAI, `{"error":"insufficient_quota"}`, false},
		{"code not a string", OpenAI, `{"error":{"code":["insufficient_quota"]}}`, false},
		{"code as object", OpenAI, `{"error":{"code":{"insufficient_quota":true}}}`, false},
		{"different case", OpenAI, `{"error":{"code":"INSUFFICIENT_QUOTA"}}`, false},
		{"padded code", OpenAI, `{"error":{"code":" insufficient_quota"}}`, false},
		{"escaped code", OpenAI, `{"error":{"code":"insufficient\u005fquota"}}`, true},
		{"truncated json", OpenAI, openAIQuotaBody[:len(openAIQuotaBody)-2], false},
		{"trailing garbage", OpenAI, openAIQuotaBody + "x", false},
		{"two documents", OpenAI, openAIQuotaBody + openAIQuotaBody, false},
		{"unquoted key", OpenAI, `{error:{"code":"insufficient_quota"}}`, false},
		{"html error page", OpenAI, "<html><body>429 Too Many Requests insufficient_quota</body></html>", false},
		{"plain text", OpenAI, "insufficient_quota", false},
		{"json string", OpenAI, `"insufficient_quota"`, false},
		{"null", OpenAI, `null`, false},
		{"empty object", OpenAI, `{}`, false},
		{"empty", OpenAI, "", false},
		{"whitespace", OpenAI, "  \n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := QuotaExhausted(tt.d, []byte(tt.body)); got != tt.want {
				t.Errorf("QuotaExhausted(%v, %s) = %v, want %v", tt.d, tt.body, got, tt.want)
			}
		})
	}
	if QuotaExhausted(OpenAI, nil) {
		t.Error("QuotaExhausted(OpenAI, nil) = true")
	}
}

// TestQuotaExhaustedDeepNesting checks that a hostile 429 body, a million
// '[' (or as many nested arrays, closed), is judged with a small stack: the
// goroutine's stack is capped for the test, so a check that recursed once
// per level would end the test binary with a stack overflow.
func TestQuotaExhaustedDeepNesting(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(1 << 20))
	const depth = 1 << 20
	for _, body := range [][]byte{
		bytes.Repeat([]byte("["), depth),
		append(bytes.Repeat([]byte("["), depth), bytes.Repeat([]byte("]"), depth)...),
		append(append([]byte(`[{"error":{"code":"insufficient_quota"}},`), bytes.Repeat([]byte("["), depth)...), append(bytes.Repeat([]byte("]"), depth), ']')...),
	} {
		done := make(chan bool)
		go func() { done <- QuotaExhausted(OpenAI, body) }()
		if got, want := <-done, body[1] == '{'; got != want {
			t.Errorf("QuotaExhausted(%.20s…) = %v, want %v", body, got, want)
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
		f.Add(uint8(OpenAI), []byte(s))
	}
	f.Add(uint8(Anthropic), []byte(openAIQuotaBody))
	f.Fuzz(func(t *testing.T, d uint8, body []byte) {
		got := QuotaExhausted(Dialect(d), body)
		if Dialect(d) != OpenAI {
			if got {
				t.Fatalf("QuotaExhausted(%v) = true; only the OpenAI dialect has quota errors", Dialect(d))
			}
			return
		}
		if want := quotaOracle(body); got != want {
			t.Fatalf("QuotaExhausted(%q) = %v, encoding/json oracle says %v", body, got, want)
		}
	})
}

// quotaOracle re-implements QuotaExhausted's rule with encoding/json, as an
// independent check for the fuzzer. It decodes with first-key-wins objects,
// as gjson resolves duplicate keys (encoding/json alone keeps the last).
func quotaOracle(body []byte) bool {
	if !json.Valid(body) {
		// The decoder below would stop after the first value and miss
		// trailing garbage.
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	doc, err := decodeFirstWins(dec)
	if err != nil {
		return false
	}
	objs := []any{doc}
	if arr, ok := doc.([]any); ok {
		objs = arr
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

// decodeFirstWins decodes one JSON value, keeping the first of duplicate
// object keys.
func decodeFirstWins(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		m := map[string]any{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := decodeFirstWins(dec)
			if err != nil {
				return nil, err
			}
			if _, dup := m[k.(string)]; !dup {
				m[k.(string)] = v
			}
		}
		_, err = dec.Token()
		return m, err
	case json.Delim('['):
		var a []any
		for dec.More() {
			v, err := decodeFirstWins(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err = dec.Token()
		return a, err
	}
	return tok, nil
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}
