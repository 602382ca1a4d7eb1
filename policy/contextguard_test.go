package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
	"github.com/tidwall/gjson"
)

func TestParseContextMode(t *testing.T) {
	for s, want := range map[string]ContextMode{"": ContextReject, "reject": ContextReject, "truncate": ContextTruncate, "off": ContextOff} {
		if got, err := ParseContextMode(s); err != nil || got != want {
			t.Errorf("ParseContextMode(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseContextMode("clamp"); err == nil || !strings.Contains(err.Error(), "reject, truncate or off") {
		t.Errorf("ParseContextMode(clamp) error = %v", err)
	}
}

func TestFitsContext(t *testing.T) {
	for _, tc := range []struct {
		input, output, window int64
		want                  bool
	}{
		{100, 100, 200, true},
		{100, 101, 200, false},
		{201, 0, 200, false},
		{0, 0, 0, true},                                // unknown window
		{1 << 40, 1 << 40, 0, true},                    // unknown window
		{math.MaxInt64, math.MaxInt64, 200_000, false}, // no overflow
		{100, math.MaxInt64, 200_000, false},
	} {
		if got := FitsContext(tc.input, tc.output, tc.window); got != tc.want {
			t.Errorf("FitsContext(%d, %d, %d) = %v, want %v", tc.input, tc.output, tc.window, got, tc.want)
		}
	}
}

func TestChooseModel(t *testing.T) {
	table, err := NewModelTable([]ModelOverride{
		{Name: "small", ContextWindow: 10_000},
		{Name: "medium", ContextWindow: 100_000},
		{Name: "large", ContextWindow: 1_000_000},
	})
	if err != nil {
		t.Fatal(err)
	}
	fb, err := NewFallbacks([][]string{{"small", "medium", "large"}, {"claude-opus-4-5", "claude-sonnet-4-6"}, {"tiny", "medium-2"}, {"x-unknown", "nowhere"}})
	if err != nil {
		t.Fatal(err)
	}
	var none Fallbacks
	for _, tc := range []struct {
		model         string
		fb            Fallbacks
		input, output int64
		want          string
		ok            bool
	}{
		{"small", fb, 5_000, 1_000, "small", true},
		{"small", fb, 50_000, 1_000, "medium", true},
		{"small", fb, 500_000, 1_000, "large", true},
		{"small", fb, 2_000_000, 1_000, "small", false},
		{"small", none, 50_000, 1_000, "small", false},
		{"claude-opus-4-5-20251101", fb, 205_000, 8_000, "claude-opus-4-5-20251101", false}, // the chain is keyed by the exact id
		{"claude-opus-4-5", fb, 205_000, 8_000, "claude-sonnet-4-6", true},
		{"x-unknown", fb, 1 << 40, 0, "x-unknown", true}, // unknown window: not guarded
		{"tiny", fb, 50_000, 0, "tiny", true},            // tiny is unknown to the table
	} {
		got, ok := ChooseModel(tc.model, tc.fb, tc.input, tc.output, table)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ChooseModel(%q, %d+%d) = %q, %v; want %q, %v", tc.model, tc.input, tc.output, got, ok, tc.want, tc.ok)
		}
	}
}

func TestContextOverflowMessage(t *testing.T) {
	msg := ContextOverflowMessage(wire.Messages, "claude-opus-4-5", 195000, 8000, 200000)
	for _, want := range []string{"estimated 195000 input + 8000 output > 200000 window for claude-opus-4-5", "lower max_tokens to at most 5000", "shorten the conversation"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	msg = ContextOverflowMessage(wire.ChatCompletions, "gpt-4o", 205000, 8000, 128000)
	for _, want := range []string{"estimated 205000 input + 8000 output > 128000 window for gpt-4o", "input alone is over the window", "larger context window"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if msg := ContextOverflowMessage(wire.Responses, "o3", 10, 300000, 200000); !strings.Contains(msg, "max_output_tokens to at most 199990") {
		t.Errorf("responses message names the wrong field: %q", msg)
	}
}

// big returns a JSON string of about n tokens of prose.
func big(n int) string {
	b, _ := json.Marshal(strings.Repeat("The keeper logged the weather. ", n/6))
	return string(b)
}

// conversation returns the raw elements of the conversation array of b, a
// request of api.
func conversation(b []byte, api wire.API) []string {
	var out []string
	gjson.GetBytes(b, api.Conversation().String()).ForEach(func(_, v gjson.Result) bool {
		out = append(out, v.Raw)
		return true
	})
	return out
}

// estimate reads b as a request of api and estimates its input tokens, as
// the gateway does.
func estimate(api wire.API, b []byte) int64 {
	r := body.Read(b, api.WalkContent())
	return api.InputTokens(&r)
}

// truncate reads b as a request of api and truncates it to budget, as the
// gateway does, returning the body then.
func truncate(api wire.API, b []byte, budget int64) ([]byte, int, bool) {
	r := body.Read(b, api.WalkContent())
	dropped, ok := Truncate(api, &r, api.InputTokens(&r), budget)
	return r.Body(), dropped, ok
}

func TestTruncateFitsUntouched(t *testing.T) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	out, dropped, ok := truncate(wire.Messages, body, 1000)
	if !ok || dropped != 0 || &out[0] != &body[0] {
		t.Errorf("a fitting request was changed: %s, %d, %v", out, dropped, ok)
	}
}

func TestTruncateAnthropicTurns(t *testing.T) {
	msgs := []string{
		`{"role":"user","content":` + big(1000) + `}`,
		`{"role":"assistant","content":` + big(1000) + `}`,
		`{"role":"user","content":` + big(1000) + `}`,
		`{"role":"assistant","content":[{"type":"text","text":` + big(1000) + `}]}`,
		`{"role":"user","content":"And now?"}`,
	}
	body := []byte(`{"model":"claude-haiku-4-5", "system":` + big(500) + `, "messages": [` + strings.Join(msgs, ", ") + `], "max_tokens":100}`)
	total := estimate(wire.Messages, body)
	budget := total - 1500 // needs more than one message gone: a whole turn of two goes
	out, dropped, ok := truncate(wire.Messages, body, budget)
	if !ok {
		t.Fatal("did not fit")
	}
	if got := estimate(wire.Messages, out); got > budget {
		t.Errorf("estimate after truncation %d > budget %d", got, budget)
	}
	if dropped != 2 {
		t.Errorf("dropped %d messages, want the first turn of 2", dropped)
	}
	if got := conversation(out, wire.Messages); !slices.Equal(got, msgs[2:]) {
		t.Errorf("kept %v, want the last two turns byte for byte", got)
	}
	if gjson.GetBytes(out, "system").Raw != big(500) || gjson.GetBytes(out, "max_tokens").Int() != 100 {
		t.Errorf("fields outside messages changed: %s", out)
	}
	// Everything outside the array is kept byte for byte.
	if !strings.HasPrefix(string(out), `{"model":"claude-haiku-4-5", "system":`+big(500)+`, "messages": [`) || !strings.HasSuffix(string(out), `], "max_tokens":100}`) {
		t.Errorf("bytes around the array changed: %.80s … %s", out, out[len(out)-30:])
	}

	// A budget only the last turn fits drops everything before it.
	last := estimate(wire.Messages, []byte(`{"system":`+big(500)+`,"messages":[`+msgs[4]+`]}`))
	out, dropped, ok = truncate(wire.Messages, body, last)
	if !ok || dropped != 4 || !slices.Equal(conversation(out, wire.Messages), msgs[4:]) {
		t.Errorf("budget for the last turn only: ok %v, dropped %d, kept %v", ok, dropped, conversation(out, wire.Messages))
	}
	// Below that nothing helps: the system prompt and last turn stay.
	out, dropped, ok = truncate(wire.Messages, body, last-1)
	if ok || dropped != 0 || string(out) != string(body) {
		t.Errorf("impossible budget: ok %v, dropped %d", ok, dropped)
	}
}

func TestTruncateAnthropicToolRounds(t *testing.T) {
	round := func(i int) []string {
		id := fmt.Sprintf("toolu_%d", i)
		return []string{
			`{"role":"assistant","content":[{"type":"text","text":"Reading."},{"type":"tool_use","id":"` + id + `","name":"read","input":{"path":"f` + fmt.Sprint(i) + `"}}]}`,
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + id + `","content":` + big(2000) + `}]}`,
		}
	}
	msgs := []string{`{"role":"user","content":"Fix the failing test."}`}
	for i := 1; i <= 4; i++ {
		msgs = append(msgs, round(i)...)
	}
	body := []byte(`{"model":"m","messages":[` + strings.Join(msgs, ",") + `]}`)
	budget := estimate(wire.Messages, body) - 3000
	out, dropped, ok := truncate(wire.Messages, body, budget)
	if !ok {
		t.Fatal("did not fit")
	}
	// Two rounds go (one is not enough), as pairs; the task and the last round stay.
	want := append([]string{msgs[0]}, msgs[5:]...)
	if got := conversation(out, wire.Messages); dropped != 4 || !slices.Equal(got, want) {
		t.Errorf("dropped %d, kept %d messages: %v", dropped, len(got), got)
	}
	checkToolPairs(t, body, out, wire.Messages)
}

func TestTruncateChat(t *testing.T) {
	msgs := []string{
		`{"role":"system","content":"You are terse."}`,
		`{"role":"developer","content":"Answer in English."}`,
		`{"role":"user","content":` + big(1000) + `}`,
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"a","arguments":"{}"}},{"id":"call_2","type":"function","function":{"name":"b","arguments":"{}"}}]}`,
		`{"role":"tool","tool_call_id":"call_1","content":` + big(1000) + `}`,
		`{"role":"tool","tool_call_id":"call_2","content":` + big(1000) + `}`,
		`{"role":"assistant","content":"Done."}`,
		`{"role":"user","content":"Thanks, and the other one?"}`,
	}
	body := []byte(`{"model":"gpt-5.1","messages":[` + strings.Join(msgs, ",") + `],"max_completion_tokens":10}`)
	budget := estimate(wire.ChatCompletions, body) - 100
	out, dropped, ok := truncate(wire.ChatCompletions, body, budget)
	if !ok {
		t.Fatal("did not fit")
	}
	want := []string{msgs[0], msgs[1], msgs[7]}
	if got := conversation(out, wire.ChatCompletions); dropped != 5 || !slices.Equal(got, want) {
		t.Errorf("dropped %d, kept %v", dropped, got)
	}
	checkToolPairs(t, body, out, wire.ChatCompletions)
}

func TestTruncateResponses(t *testing.T) {
	items := []string{
		`{"role":"developer","content":"Be brief."}`,
		`{"type":"message","role":"user","content":[{"type":"input_text","text":"Look it up."}]}`,
		`{"type":"reasoning","id":"rs_1","summary":[]}`,
		`{"type":"function_call","call_id":"c1","name":"search","arguments":"{\"q\":\"tide\"}"}`,
		`{"type":"function_call_output","call_id":"c1","output":` + big(3000) + `}`,
		`{"type":"function_call","call_id":"c2","name":"search","arguments":"{\"q\":\"wind\"}"}`,
		`{"type":"function_call_output","call_id":"c2","output":"west, moderate"}`,
	}
	body := []byte(`{"model":"gpt-5.1","instructions":"Use tools.","input":[` + strings.Join(items, ",") + `]}`)
	budget := estimate(wire.Responses, body) - 1000
	out, dropped, ok := truncate(wire.Responses, body, budget)
	if !ok {
		t.Fatal("did not fit")
	}
	want := []string{items[0], items[1], items[5], items[6]}
	if got := conversation(out, wire.Responses); dropped != 3 || !slices.Equal(got, want) {
		t.Errorf("dropped %d, kept %v", dropped, got)
	}
	checkToolPairs(t, body, out, wire.Responses)

	// A string input cannot be shortened.
	str := []byte(`{"model":"m","input":` + big(3000) + `}`)
	if _, _, ok := truncate(wire.Responses, str, 100); ok {
		t.Error("a string input was reported as fitting")
	}
}

func TestTruncateOtherEndpoints(t *testing.T) {
	body := []byte(`{"prompt":` + big(3000) + `}`)
	if out, _, ok := truncate(wire.Completions, body, 100); ok || string(out) != string(body) {
		t.Error("completions cannot be truncated")
	}
	if _, _, ok := truncate(wire.Completions, body, 1<<20); !ok {
		t.Error("a fitting completions request must pass")
	}
}

// toolIDs returns, per message of a conversation, the ids of the tool calls
// it makes and the ids of the calls it answers, in any dialect.
func toolIDs(raw string) (calls, answers []string) {
	m := gjson.Parse(raw)
	for _, p := range []string{"content.#(type==\"tool_use\")#.id", "tool_calls.#.id"} {
		for _, v := range m.Get(p).Array() {
			calls = append(calls, v.Str)
		}
	}
	for _, v := range m.Get("content.#(type==\"tool_result\")#.tool_use_id").Array() {
		answers = append(answers, v.Str)
	}
	if id := m.Get("tool_call_id"); id.Exists() {
		answers = append(answers, id.Str)
	}
	if id := m.Get("call_id"); id.Exists() {
		if strings.HasSuffix(m.Get("type").Str, "_output") {
			answers = append(answers, id.Str)
		} else {
			calls = append(calls, id.Str)
		}
	}
	return calls, answers
}

// checkToolPairs fails when truncation kept a tool call without the
// results it had, or a result without its call.
func checkToolPairs(t *testing.T, in, out []byte, api wire.API) {
	t.Helper()
	count := func(b []byte) (map[string]bool, map[string]bool) {
		calls, answers := map[string]bool{}, map[string]bool{}
		for _, m := range conversation(b, api) {
			c, a := toolIDs(m)
			for _, id := range c {
				calls[id] = true
			}
			for _, id := range a {
				answers[id] = true
			}
		}
		return calls, answers
	}
	inCalls, inAnswers := count(in)
	outCalls, outAnswers := count(out)
	for id := range outAnswers {
		if inCalls[id] && !outCalls[id] {
			t.Errorf("result for %s kept without its call", id)
		}
	}
	for id := range outCalls {
		if inAnswers[id] && !outAnswers[id] {
			t.Errorf("call %s kept without its result", id)
		}
	}
}

func BenchmarkTruncate(b *testing.B) {
	var msgs []string
	for i := 0; i < 50; i++ {
		msgs = append(msgs, `{"role":"user","content":`+big(400)+`}`, `{"role":"assistant","content":[{"type":"text","text":`+big(400)+`}]}`)
	}
	body := []byte(`{"model":"m","system":"s","messages":[` + strings.Join(msgs, ",") + `]}`)
	budget := estimate(wire.Messages, body) / 2
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		truncate(wire.Messages, body, budget)
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add([]byte(`{"system":"s","messages":[{"role":"user","content":"a b c d e f g"},{"role":"assistant","content":"ok"},{"role":"user","content":"next"}]}`), int64(20), uint8(0))
	f.Add([]byte(`{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c"}]},{"role":"tool","tool_call_id":"c","content":"long long long long"},{"role":"user","content":"u"}]}`), int64(25), uint8(1))
	f.Add([]byte(`{"input":[{"role":"user","content":"q"},{"type":"reasoning"},{"type":"function_call","call_id":"c"},{"type":"function_call_output","call_id":"c","output":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},{"type":"message","role":"assistant","content":"a"}]}`), int64(30), uint8(2))
	f.Add([]byte(`{"messages":[{"role":"assistant","content":"hi"},{"role":"user","content":[{"type":"tool_result","content":"r"}]}],"messages":[{"role":"user","content":"dup"}]}`), int64(5), uint8(0))
	f.Add([]byte(`{"messages":[{"role":"user","content":"x"},`), int64(0), uint8(0))
	apis := []wire.API{wire.Messages, wire.ChatCompletions, wire.Responses}
	f.Fuzz(func(t *testing.T, in []byte, budget int64, which uint8) {
		api := apis[int(which)%len(apis)]
		orig := string(in)
		out, dropped, ok := truncate(api, in, budget)
		if string(in) != orig {
			t.Fatal("the input body was modified")
		}
		if !ok {
			if string(out) != orig || dropped != 0 {
				t.Fatal("a request that cannot fit came back edited")
			}
			return
		}
		if got := estimate(api, out); got > budget {
			t.Fatalf("estimate %d after truncation is over the budget %d:\n in  %s\n out %s", got, budget, in, out)
		}
		if dropped == 0 {
			if string(out) != orig {
				t.Fatal("nothing dropped, yet the body changed")
			}
			return
		}
		if !json.Valid(in) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("valid input became invalid:\n in  %s\n out %s", in, out)
		}
		// The system prompt is untouched; pinned messages all stay; the
		// first other message is a user turn; tool calls keep their results.
		if a, b := gjson.GetBytes(in, "system").Raw, gjson.GetBytes(out, "system").Raw; a != b {
			t.Fatalf("system changed from %s to %s", a, b)
		}
		kind := func(m string) wire.TurnKind { return api.TurnKind([]byte(m)) }
		var inPinned, outPinned []string
		for _, m := range conversation(in, api) {
			if kind(m) == wire.TurnPinned {
				inPinned = append(inPinned, m)
			}
		}
		first := true
		for _, m := range conversation(out, api) {
			k := kind(m)
			if k == wire.TurnPinned {
				outPinned = append(outPinned, m)
				continue
			}
			if first && k != wire.TurnUser && slices.ContainsFunc(conversation(in, api), func(m string) bool { return kind(m) == wire.TurnUser }) {
				t.Fatalf("the conversation now starts with a %v message: %s", k, m)
			}
			first = false
		}
		if !slices.Equal(inPinned, outPinned) {
			t.Fatalf("system or developer messages changed:\n in  %v\n out %v", inPinned, outPinned)
		}
		checkToolPairs(t, in, out, api)
	})
}
