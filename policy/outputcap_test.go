package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

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
		api       wire.API
		body      string
		rule      OutputCapRule
		modelMax  int64
		want      string // expected body; "" means unchanged
		effective int64
		errField  string
	}{
		{"anthropic clamp", wire.Messages, `{"model":"m", "max_tokens" : 100000 ,"messages":[]}`, clamp, 0,
			`{"model":"m", "max_tokens" : 4096 ,"messages":[]}`, 4096, ""},
		{"under the ceiling", wire.Messages, `{"model":"m","max_tokens":1000}`, clamp, 0, "", 1000, ""},
		{"at the ceiling", wire.Messages, `{"model":"m","max_tokens":4096}`, reject, 0, "", 4096, ""},
		{"reject above ceiling", wire.Messages, `{"model":"m","max_tokens":4097}`, reject, 0, "", 0, "max_tokens"},
		{"reject mode still clamps to the model max", wire.Messages, `{"max_tokens":4000}`, reject, 2048,
			`{"max_tokens":2048}`, 2048, ""},
		{"model max alone clamps", wire.Responses, `{"max_output_tokens":200000}`, OutputCapRule{}, 128000,
			`{"max_output_tokens":128000}`, 128000, ""},
		{"model max below ceiling wins", wire.Messages, `{"max_tokens":8000}`, clamp, 2000,
			`{"max_tokens":2000}`, 2000, ""},
		{"chat clamps both fields", wire.ChatCompletions, `{"max_tokens":9000,"max_completion_tokens":5000,"n":1}`, clamp, 0,
			`{"max_tokens":4096,"max_completion_tokens":4096,"n":1}`, 4096, ""},
		{"chat deprecated field alone", wire.ChatCompletions, `{"max_tokens":9000}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"chat rejects the deprecated field too", wire.ChatCompletions, `{"max_completion_tokens":10,"max_tokens":9000}`, reject, 0, "", 0, "max_tokens"},
		{"chat effective is the larger", wire.ChatCompletions, `{"max_completion_tokens":10,"max_tokens":300}`, clamp, 0, "", 300, ""},
		{"completions", wire.Completions, `{"prompt":"x","max_tokens":5000}`, clamp, 0, `{"prompt":"x","max_tokens":4096}`, 4096, ""},
		{"huge integer", wire.Messages, `{"max_tokens":123456789012345678901234567890}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"huge integer rejected", wire.Messages, `{"max_tokens":123456789012345678901234567890}`, reject, 0, "", 0, "max_tokens"},

		{"default inserted anthropic", wire.Messages, `{"model":"m","messages":[]}`, OutputCapRule{Default: 1024}, 0,
			`{"model":"m","messages":[],"max_tokens":1024}`, 1024, ""},
		{"default inserted chat", wire.ChatCompletions, `{"model":"m"}`, OutputCapRule{Default: 1024}, 0,
			`{"model":"m","max_completion_tokens":1024}`, 1024, ""},
		{"default inserted responses", wire.Responses, `{"model":"m"}`, OutputCapRule{Default: 1024}, 0,
			`{"model":"m","max_output_tokens":1024}`, 1024, ""},
		{"default into an empty object", wire.Completions, `{}`, OutputCapRule{Default: 7}, 0, `{"max_tokens":7}`, 7, ""},
		{"default into a spaced object", wire.Completions, "{\n}", OutputCapRule{Default: 7}, 0, "{\n\"max_tokens\":7}", 7, ""},
		{"default replaces null", wire.ChatCompletions, `{"max_completion_tokens":null}`, OutputCapRule{Default: 64}, 0,
			`{"max_completion_tokens":64}`, 64, ""},
		{"default clamped to the model max", wire.Messages, `{}`, OutputCapRule{Ceiling: 9000, Default: 8192, Mode: CapReject}, 4096,
			`{"max_tokens":4096}`, 4096, ""},
		{"no default, no field", wire.Messages, `{"model":"m"}`, clamp, 0, "", 0, ""},
		{"a named cap blocks the default", wire.ChatCompletions, `{"max_tokens":100}`, OutputCapRule{Default: 50}, 0, "", 100, ""},

		{"embeddings have no cap", wire.Embeddings, `{"max_tokens":100000}`, clamp, 0, "", 0, ""},
		{"not an object", wire.Messages, `[{"max_tokens":100000}]`, clamp, 0, "", 0, ""},
		{"not JSON", wire.Messages, `max_tokens=100000`, OutputCapRule{Ceiling: 1, Default: 1}, 0, "", 0, ""},
		{"a fraction is judged by value", wire.Messages, `{"max_tokens":5000.5}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"a fraction under the ceiling rounds up", wire.Messages, `{"max_tokens":100.5}`, clamp, 0, "", 101, ""},
		{"an integral float is clamped to an integer", wire.Messages, `{"max_tokens":50000.0}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"an exponent is clamped", wire.Messages, `{"max_tokens":5e4}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"a signed upper-case exponent is clamped", wire.Responses, `{"max_output_tokens":5E+4}`, clamp, 0, `{"max_output_tokens":4096}`, 4096, ""},
		{"an exponent is rejected", wire.Messages, `{"max_tokens":5e4}`, reject, 0, "", 0, "max_tokens"},
		{"an integral float is rejected", wire.ChatCompletions, `{"max_completion_tokens":50000.0}`, reject, 0, "", 0, "max_completion_tokens"},
		{"beyond float64 saturates", wire.Messages, `{"max_tokens":1e400}`, clamp, 0, `{"max_tokens":4096}`, 4096, ""},
		{"an exponent under the ceiling stays as written", wire.Messages, `{"max_tokens":1e3}`, clamp, 0, "", 1000, ""},
		{"negative exponent", wire.Messages, `{"max_tokens":4.097e3}`, reject, 0, "", 0, "max_tokens"},
		{"an escaped key is the same member", wire.Messages, `{"max_tok\u0065ns":50000}`, clamp, 0, `{"max_tok\u0065ns":4096}`, 4096, ""},
		// A value the limit cannot be judged on is refused while a limit
		// applies (validation, when on, refuses it first), and otherwise
		// left to validation and the provider.
		{"string under a ceiling", wire.Messages, `{"max_tokens":"5000"}`, OutputCapRule{Ceiling: 10, Default: 5}, 0, "", 0, "max_tokens"},
		{"chat string under a ceiling", wire.ChatCompletions, `{"max_completion_tokens":"99999"}`, clamp, 0, "", 0, "max_completion_tokens"},
		{"responses bool under the model's limit", wire.Responses, `{"max_output_tokens":true}`, OutputCapRule{}, 8192, "", 0, "max_output_tokens"},
		{"string without a limit left to validation", wire.Messages, `{"max_tokens":"5000"}`, OutputCapRule{Default: 5}, 0, "", 0, ""},
		{"nested field is not the cap", wire.Messages, `{"metadata":{"max_tokens":99999}}`, clamp, 0, "", 0, ""},
	} {
		in := []byte(tc.body)
		out, effective, err := applyCap(tc.api, in, tc.rule, tc.modelMax)
		want := tc.want
		if want == "" {
			want = tc.body
		}
		if string(out) != want {
			t.Errorf("%s: body = %s, want %s", tc.name, out, want)
		}
		if tc.want == "" && len(in) > 0 && &out[0] != &in[0] {
			t.Errorf("%s: unchanged body was copied", tc.name)
		}
		if effective != tc.effective {
			t.Errorf("%s: effective cap = %d, want %d", tc.name, effective, tc.effective)
		}
		switch {
		case tc.errField == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.errField != "" && (err == nil || err.Param != tc.errField):
			t.Errorf("%s: error = %v, want one naming %s", tc.name, err, tc.errField)
		}
	}
}

// applyCap reads b as a request of api and applies the output-cap guard, as
// the gateway does.
func applyCap(api wire.API, b []byte, rule OutputCapRule, modelMax int64) ([]byte, int64, *body.RequestError) {
	r := body.Read(b, api.WalkContent())
	effective, _, err := ApplyOutputCap(api, &r, rule, modelMax)
	return r.Body(), effective, err
}

func TestCapErrorMessage(t *testing.T) {
	_, _, err := applyCap(wire.ChatCompletions, []byte(`{"max_completion_tokens":100000}`), OutputCapRule{Ceiling: 8192, Mode: CapReject}, 0)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"max_completion_tokens", "100000", "8192", "at most 8192"} {
		if !strings.Contains(err.Message, want) {
			t.Errorf("message %q does not mention %q", err.Message, want)
		}
	}
	if err.Param != "max_completion_tokens" {
		t.Errorf("param = %q", err.Param)
	}
}

// TestThinkingBudgetFollowsTheCap checks that a cap the gateway lowers or
// sets keeps an Anthropic thinking budget valid (below max_tokens, at least
// 1024), or refuses the request naming both numbers.
func TestThinkingBudgetFollowsTheCap(t *testing.T) {
	const think = `{"model":"m","max_tokens":%s,"thinking":{"type":"enabled","budget_tokens":%s},"messages":[]}`
	for _, tc := range []struct {
		name     string
		cap      string
		budget   string
		rule     OutputCapRule
		modelMax int64
		want     string // the body after the guard; "" when refused or unchanged
		refused  bool
	}{
		{"ceiling lowers the budget", "32000", "16000", OutputCapRule{Ceiling: 8192}, 0, fmt.Sprintf(think, "8192", "8191"), false},
		{"model max lowers the budget", "32000", "16000", OutputCapRule{}, 8192, fmt.Sprintf(think, "8192", "8191"), false},
		{"a budget that fits is kept", "32000", "4000", OutputCapRule{Ceiling: 8192}, 0, fmt.Sprintf(think, "8192", "4000"), false},
		{"the budget is judged by value", "32000", "1.6e4", OutputCapRule{Ceiling: 8192}, 0, fmt.Sprintf(think, "8192", "8191"), false},
		{"no room for the minimum budget", "32000", "16000", OutputCapRule{Ceiling: 1024}, 0, "", true},
		{"the smallest cap that leaves room", "32000", "16000", OutputCapRule{Ceiling: 1025}, 0, fmt.Sprintf(think, "1025", "1024"), false},
		{"an untouched cap leaves an invalid budget to the provider", "2000", "3000", OutputCapRule{Ceiling: 8192}, 0, "", false},
	} {
		in := []byte(fmt.Sprintf(think, tc.cap, tc.budget))
		out, _, err := applyCap(wire.Messages, in, tc.rule, tc.modelMax)
		switch {
		case tc.refused:
			if err == nil || err.Param != "thinking.budget_tokens" || !strings.Contains(err.Message, "1024") || !strings.Contains(err.Message, tc.budget) {
				t.Errorf("%s: error %v, want a refusal naming the cap and the budget", tc.name, err)
			}
		case err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.want == "" && string(out) != string(in):
			t.Errorf("%s: body changed to %s", tc.name, out)
		case tc.want != "" && string(out) != tc.want:
			t.Errorf("%s: body %s, want %s", tc.name, out, tc.want)
		}
	}
	// Adaptive and disabled thinking have no budget to keep below the cap;
	// OpenAI bodies have no thinking member at all.
	for _, in := range []string{
		`{"max_tokens":32000,"thinking":{"type":"adaptive"}}`,
		`{"max_tokens":32000,"thinking":{"type":"disabled","budget_tokens":16000}}`,
	} {
		out, _, err := applyCap(wire.Messages, []byte(in), OutputCapRule{Ceiling: 1000}, 0)
		if err != nil || !strings.Contains(string(out), `"max_tokens":1000`) || strings.Contains(string(out), "999") {
			t.Errorf("%s: got %s, %v", in, out, err)
		}
	}
}

func TestApplyOutputCapUnchangedDoesNotAllocate(t *testing.T) {
	in := []byte(`{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}`)
	rule := OutputCapRule{Ceiling: 4096, Default: 512}
	r := body.Read(in, wire.Messages.WalkContent())
	if n := testing.AllocsPerRun(100, func() { ApplyOutputCap(wire.Messages, &r, rule, 64000) }); n != 0 {
		t.Errorf("ApplyOutputCap allocates %.0f times on a body it leaves alone, want 0", n)
	}
}

func BenchmarkApplyOutputCap(b *testing.B) {
	in := []byte(`{"model":"gpt-5.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the incident report in three bullet points, naming the failing component and the fix."}],"max_completion_tokens":100000,"stream":true}`)
	rule := OutputCapRule{Ceiling: 4096}
	b.ReportAllocs()
	for b.Loop() {
		r := body.Read(in, wire.ChatCompletions.WalkContent())
		ApplyOutputCap(wire.ChatCompletions, &r, rule, 128000)
	}
}
