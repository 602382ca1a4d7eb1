package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestOutputCapFields(t *testing.T) {
	for _, tc := range []struct {
		d    Dialect
		e    Endpoint
		want []string
	}{
		{Anthropic, Messages, []string{"max_tokens"}},
		{OpenAI, ChatCompletions, []string{"max_completion_tokens", "max_tokens"}},
		{OpenAI, Responses, []string{"max_output_tokens"}},
		{OpenAI, Completions, []string{"max_tokens"}},
		{OpenAI, Embeddings, nil},
		{Passthrough, EndpointOther, nil},
	} {
		if got := OutputCapFields(tc.d, tc.e); !slices.Equal(got, tc.want) {
			t.Errorf("OutputCapFields(%v, %v) = %v, want %v", tc.d, tc.e, got, tc.want)
		}
	}
}

func TestParseCapMode(t *testing.T) {
	for s, want := range map[string]CapMode{"": CapClamp, "clamp": CapClamp, "reject": CapReject} {
		if got, err := ParseCapMode(s); err != nil || got != want {
			t.Errorf("ParseCapMode(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseCapMode("truncate"); err == nil || !strings.Contains(err.Error(), "clamp or reject") {
		t.Errorf("ParseCapMode(truncate) error = %v", err)
	}
}

func TestApplyOutputCap(t *testing.T) {
	clamp := OutputCapRule{Ceiling: 4096}
	reject := OutputCapRule{Ceiling: 4096, Mode: CapReject}
	for _, tc := range []struct {
		name      string
		d         Dialect
		e         Endpoint
		body      string
		rule      OutputCapRule
		modelMax  int64
		want      string // expected body; "" means unchanged
		effective int64
		errField  string
	}{
		{"anthropic clamp", Anthropic, Messages, `{"model":"m", "max_tokens" : 100000 ,"messages":[]}`, clamp, 0,
			`{"model":"m", "max_tokens" : 4096 ,"messages":[]}`, 4096, ""},
		{"under the ceiling", Anthropic, Messages, `{"model":"m","max_tokens":1000}`, clamp, 0, "", 1000, ""},
		{"at the ceiling", Anthropic, Messages, `{"model":"m","max_tokens":4096}`, reject, 0, "", 4096, ""},
		{"reject above ceiling", Anthropic, Messages, `{"model":"m","max_tokens":4097}`, reject, 0, "", 0, "max_tokens"},
		{"reject mode still clamps to the model max", Anthropic, Messages, `{"max_tokens":4000}`, reject, 2048,
			`{"max_tokens":2048}`, 2048, ""},
		{"model max alone clamps", OpenAI, Responses, `{"max_output_tokens":200000}`, OutputCapRule{}, 128000,
			`{"max_output_tokens":128000}`, 128000, ""},
		{"model max below ceiling wins", Anthropic, Messages, `{"max_tokens":8000}`, clamp, 2000,
			`{"max_tokens":2000}`, 2000, ""},
		{"chat clamps both fields", OpenAI, ChatCompletions, `{"max_tokens":9000,"max_completion_tokens":5000,"n":1}`, clamp, 0,
			`{"max_tokens":4096,"max_completion_tokens":4096,"n":1}`, 4096, ""},
		{"chat deprecated field alone", OpenAI, ChatCompletions, `{"max_tokens":9000}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"chat rejects the deprecated field too", OpenAI, ChatCompletions, `{"max_completion_tokens":10,"max_tokens":9000}`, reject, 0, "", 0, "max_tokens"},
		{"chat effective is the larger", OpenAI, ChatCompletions, `{"max_completion_tokens":10,"max_tokens":300}`, clamp, 0, "", 300, ""},
		{"completions", OpenAI, Completions, `{"prompt":"x","max_tokens":5000}`, clamp, 0, `{"prompt":"x","max_tokens":4096}`, 4096, ""},
		{"huge integer", Anthropic, Messages, `{"max_tokens":123456789012345678901234567890}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"huge integer rejected", Anthropic, Messages, `{"max_tokens":123456789012345678901234567890}`, reject, 0, "", 0, "max_tokens"},

		{"default inserted anthropic", Anthropic, Messages, `{"model":"m","messages":[]}`, OutputCapRule{Default: 1024}, 0,
			`{"model":"m","messages":[],"max_tokens":1024}`, 1024, ""},
		{"default inserted chat", OpenAI, ChatCompletions, `{"model":"m"}`, OutputCapRule{Default: 1024}, 0,
			`{"model":"m","max_completion_tokens":1024}`, 1024, ""},
		{"default inserted responses", OpenAI, Responses, `{"model":"m"}`, OutputCapRule{Default: 1024}, 0,
			`{"model":"m","max_output_tokens":1024}`, 1024, ""},
		{"default into an empty object", OpenAI, Completions, `{}`, OutputCapRule{Default: 7}, 0, `{"max_tokens":7}`, 7, ""},
		{"default into a spaced object", OpenAI, Completions, "{\n}", OutputCapRule{Default: 7}, 0, "{\n\"max_tokens\":7}", 7, ""},
		{"default replaces null", OpenAI, ChatCompletions, `{"max_completion_tokens":null}`, OutputCapRule{Default: 64}, 0,
			`{"max_completion_tokens":64}`, 64, ""},
		{"default clamped to the model max", Anthropic, Messages, `{}`, OutputCapRule{Ceiling: 9000, Default: 8192, Mode: CapReject}, 4096,
			`{"max_tokens":4096}`, 4096, ""},
		{"no default, no field", Anthropic, Messages, `{"model":"m"}`, clamp, 0, "", 0, ""},
		{"a named cap blocks the default", OpenAI, ChatCompletions, `{"max_tokens":100}`, OutputCapRule{Default: 50}, 0, "", 100, ""},

		{"embeddings have no cap", OpenAI, Embeddings, `{"max_tokens":100000}`, clamp, 0, "", 0, ""},
		{"not an object", Anthropic, Messages, `[{"max_tokens":100000}]`, clamp, 0, "", 0, ""},
		{"not JSON", Anthropic, Messages, `max_tokens=100000`, OutputCapRule{Ceiling: 1, Default: 1}, 0, "", 0, ""},
		{"fraction left to validation", Anthropic, Messages, `{"max_tokens":5000.5}`, clamp, 0, "", 0, ""},
		{"string left to validation", Anthropic, Messages, `{"max_tokens":"5000"}`, OutputCapRule{Ceiling: 10, Default: 5}, 0, "", 0, ""},
		{"nested field is not the cap", Anthropic, Messages, `{"metadata":{"max_tokens":99999}}`, clamp, 0, "", 0, ""},
	} {
		body := []byte(tc.body)
		out, effective, err := ApplyOutputCap(tc.d, tc.e, body, tc.rule, tc.modelMax)
		want := tc.want
		if want == "" {
			want = tc.body
		}
		if string(out) != want {
			t.Errorf("%s: body = %s, want %s", tc.name, out, want)
		}
		if tc.want == "" && len(body) > 0 && &out[0] != &body[0] {
			t.Errorf("%s: unchanged body was copied", tc.name)
		}
		if effective != tc.effective {
			t.Errorf("%s: effective cap = %d, want %d", tc.name, effective, tc.effective)
		}
		switch {
		case tc.errField == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.errField != "" && (err == nil || err.Field != tc.errField):
			t.Errorf("%s: error = %v, want one naming %s", tc.name, err, tc.errField)
		}
	}
}

func TestCapErrorMessage(t *testing.T) {
	_, _, err := ApplyOutputCap(OpenAI, ChatCompletions, []byte(`{"max_completion_tokens":100000}`), OutputCapRule{Ceiling: 8192, Mode: CapReject}, 0)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{"max_completion_tokens", "100000", "8192", "at most 8192"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
	if err.Value != 100000 || err.Limit != 8192 {
		t.Errorf("error = %+v", err)
	}
}

func TestApplyOutputCapUnchangedDoesNotAllocate(t *testing.T) {
	body := []byte(`{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}`)
	rule := OutputCapRule{Ceiling: 4096, Default: 512}
	if n := testing.AllocsPerRun(100, func() { ApplyOutputCap(Anthropic, Messages, body, rule, 64000) }); n != 0 {
		t.Errorf("ApplyOutputCap allocates %.0f times on a body it leaves alone, want 0", n)
	}
}

func BenchmarkApplyOutputCap(b *testing.B) {
	body := []byte(`{"model":"gpt-5.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the incident report in three bullet points, naming the failing component and the fix."}],"max_completion_tokens":100000,"stream":true}`)
	rule := OutputCapRule{Ceiling: 4096}
	b.ReportAllocs()
	for b.Loop() {
		ApplyOutputCap(OpenAI, ChatCompletions, body, rule, 128000)
	}
}

// topLevel lists the members of a JSON object in order, leaving out keys.
func topLevel(body []byte, skip []string) [][2]string {
	it, ok := iterJSON(bytesView(body))
	if !ok {
		return nil
	}
	var out [][2]string
	for {
		k, v, _, ok := it.next()
		if !ok {
			return out
		}
		if !slices.Contains(skip, k) {
			out = append(out, [2]string{k, v})
		}
	}
}

func FuzzApplyOutputCap(f *testing.F) {
	f.Add([]byte(`{"model":"m","max_tokens":100000,"messages":[]}`), int64(4096), int64(0), int64(0), false, uint8(0))
	f.Add([]byte(`{"max_completion_tokens":5,"max_tokens":9e9}`), int64(10), int64(3), int64(8), true, uint8(1))
	f.Add([]byte(`{"input":"x","max_output_tokens":null}`), int64(0), int64(100), int64(50), false, uint8(2))
	f.Add([]byte(`{}`), int64(1), int64(2), int64(0), false, uint8(3))
	f.Add([]byte(`{"a":{"max_tokens":1},"max_tokens":-5,"max_tokens":7}`), int64(3), int64(0), int64(0), false, uint8(0))
	endpoints := []struct {
		d Dialect
		e Endpoint
	}{{Anthropic, Messages}, {OpenAI, ChatCompletions}, {OpenAI, Responses}, {OpenAI, Completions}}
	f.Fuzz(func(t *testing.T, body []byte, ceiling, def, modelMax int64, reject bool, which uint8) {
		de := endpoints[int(which)%len(endpoints)]
		rule := OutputCapRule{Ceiling: max(ceiling, 0), Default: max(def, 0)}
		if reject {
			rule.Mode = CapReject
		}
		modelMax = max(modelMax, 0)
		orig := string(body)
		out, effective, err := ApplyOutputCap(de.d, de.e, body, rule, modelMax)
		if string(body) != orig {
			t.Fatal("the input body was modified")
		}
		if err != nil {
			if string(out) != orig || effective != 0 {
				t.Fatalf("a rejected request came back edited: %s", out)
			}
			return
		}
		limit := rule.Ceiling
		if modelMax > 0 && (limit == 0 || modelMax < limit) {
			limit = modelMax
		}
		if limit > 0 && effective > limit {
			t.Fatalf("effective cap %d above the limit %d", effective, limit)
		}
		if !json.Valid(body) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("valid input %s became invalid output %s", body, out)
		}
		fields := OutputCapFields(de.d, de.e)
		if a, b := topLevel(body, fields), topLevel(out, fields); !slices.Equal(a, b) {
			t.Fatalf("fields other than %v changed:\n in  %s\n out %s", fields, body, out)
		}
		for _, field := range fields {
			in, got := gjson.GetBytes(body, field), gjson.GetBytes(out, field)
			n, isInt := parseJSONInt(got.Raw)
			if _, wasInt := parseJSONInt(in.Raw); wasInt && limit > 0 && isInt && n > limit {
				t.Fatalf("%s is %d after the guard, above the limit %d: %s", field, n, limit, out)
			}
		}
	})
}
