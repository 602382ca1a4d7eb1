package body_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	bigmath "math/big"
	"slices"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// TestIntegrityDuplicates checks that a member the gateway reads or
// rewrites, given twice, is refused with its path, however the second one
// is spelled, and that repeats the gateway does not read pass.
func TestIntegrityDuplicates(t *testing.T) {
	for _, tc := range []struct {
		name string
		api  wire.API
		body string
		dup  string // "" means the body passes
	}{
		{"max_tokens twice", wire.Messages, `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[],"max_tokens":50000}`, "max_tokens"},
		{"model twice", wire.Messages, `{"model":"claude-opus-4-5","max_tokens":10,"messages":[],"model":"claude-haiku-4-5"}`, "model"},
		{"stream twice", wire.ChatCompletions, `{"model":"m","stream":false,"messages":[],"stream":true}`, "stream"},
		{"max_completion_tokens twice", wire.ChatCompletions, `{"model":"m","max_completion_tokens":1,"max_completion_tokens":2}`, "max_completion_tokens"},
		{"max_output_tokens twice", wire.Responses, `{"model":"m","max_output_tokens":1,"max_output_tokens":2}`, "max_output_tokens"},
		{"messages twice", wire.Messages, `{"model":"m","max_tokens":1,"messages":[],"messages":[]}`, "messages"},
		{"input twice", wire.Responses, `{"model":"m","input":"a","input":"b"}`, "input"},
		{"system twice", wire.Messages, `{"model":"m","max_tokens":1,"system":"a","messages":[],"system":"b"}`, "system"},
		{"thinking twice", wire.Messages, `{"model":"m","thinking":{"type":"disabled"},"thinking":{"type":"enabled","budget_tokens":2000}}`, "thinking"},
		{"budget twice", wire.Messages, `{"model":"m","thinking":{"type":"enabled","budget_tokens":1024,"budget_tokens":9000}}`, "thinking.budget_tokens"},
		{"include_usage twice", wire.ChatCompletions, `{"model":"m","stream_options":{"include_usage":false,"include_usage":true}}`, "stream_options.include_usage"},
		{"escaped spelling", wire.Messages, `{"model":"m","max_tokens":10,"max_tok\u0065ns":50000}`, "max_tokens"},
		{"escaped model", wire.Messages, `{"model":"a","\u006dodel":"b"}`, "model"},
		{"after a syntax error is not seen", wire.Messages, `{"model":"m","max_tokens":1,} "max_tokens":2`, ""},

		{"one of each", wire.Messages, `{"model":"m","max_tokens":1,"stream":true,"system":"s","messages":[],"thinking":{"type":"enabled","budget_tokens":1}}`, ""},
		{"an unknown member twice", wire.Messages, `{"model":"m","max_tokens":1,"messages":[],"metadata":{},"metadata":{}}`, ""},
		{"nested members of the same name", wire.Messages, `{"model":"m","max_tokens":1,"metadata":{"model":"x","max_tokens":2},"messages":[{"role":"user","content":"a","content":"b"}]}`, ""},
		{"a repeated key inside a block", wire.ChatCompletions, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","type":"text","text":"x"}]}]}`, ""},
	} {
		r := body.Read([]byte(tc.body), tc.api.WalkContent())
		err := r.Integrity(tc.api.ExampleModel())
		switch {
		case tc.dup == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.dup != "" && (err == nil || err.Param != tc.dup):
			t.Errorf("%s: got %v, want a refusal naming %s", tc.name, err, tc.dup)
		case tc.dup != "" && !strings.Contains(err.Message, "`"+tc.dup+"` appears more than once"):
			t.Errorf("%s: message %q does not name the member", tc.name, err.Message)
		}
	}
}

// TestIntegrityModelLength checks the bound on model ids, and that the
// refused id is kept only as a bounded prefix.
func TestIntegrityModelLength(t *testing.T) {
	for _, tc := range []struct {
		name  string
		model string // the JSON string's contents
		bytes int    // 0: accepted
	}{
		{"at the bound", strings.Repeat("m", body.MaxModelBytes), 0},
		{"one over", strings.Repeat("m", body.MaxModelBytes+1), body.MaxModelBytes + 1},
		{"a mebibyte", strings.Repeat("m", 1<<20), 1 << 20},
		{"escapes count unescaped", strings.Repeat(`\u006d`, body.MaxModelBytes), 0},
		{"escapes over the bound", strings.Repeat(`\u006d`, body.MaxModelBytes+1), 6 * (body.MaxModelBytes + 1)},
		{"multi-byte runes cut at a boundary", strings.Repeat("é", body.MaxModelBytes), 2 * body.MaxModelBytes},
	} {
		r := body.Read([]byte(`{"model":"`+tc.model+`","max_tokens":1,"messages":[]}`), wire.Messages.WalkContent())
		err := r.Integrity(wire.Messages.ExampleModel())
		if len(r.Model) > body.MaxModelBytes || !strings.HasPrefix(strings.ReplaceAll(tc.model, `\u006d`, "m"), r.Model) && !strings.HasPrefix(tc.model, r.Model) {
			t.Errorf("%s: Model kept as %d bytes %q…", tc.name, len(r.Model), r.Model[:min(len(r.Model), 16)])
		}
		if tc.bytes == 0 {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		if err == nil || err.Param != "model" || !strings.Contains(err.Message, fmt.Sprint(tc.bytes)) || !strings.Contains(err.Message, "256") {
			t.Errorf("%s: got %v, want a refusal giving the length", tc.name, err)
		}
	}
}

func TestNumber(t *testing.T) {
	for raw, want := range map[string]int64{
		"50000": 50000, "50000.0": 50000, "5e4": 50000, "5E+4": 50000, "500000e-1": 50000, "0.5e5": 50000,
		"100.5": 101, "-0": 0, "-0.5": 0, "-1.5": -1, "0": 0, "1e-400": 0,
		"9223372036854775807": math.MaxInt64, "9223372036854775808": math.MaxInt64, "9e18": 9e18, "9.3e18": math.MaxInt64,
		"1e400": math.MaxInt64, "-1e400": math.MinInt64, "-9223372036854775809": math.MinInt64,
	} {
		if got, ok := body.Number([]byte(raw)); !ok || got != want {
			t.Errorf("Number(%s) = %d, %v; want %d", raw, got, ok, want)
		}
	}
	for _, raw := range []string{`"5"`, "null", "true", "[1]", `{"a":1}`, ""} {
		if _, ok := body.Number([]byte(raw)); ok {
			t.Errorf("Number(%s) reads a number", raw)
		}
	}
}

// TestEditsKeepOffsets chains every kind of edit and checks, after each,
// that the recorded offsets are the ones a fresh read of the edited body
// finds, and that nothing else moved.
func TestEditsKeepOffsets(t *testing.T) {
	for _, raw := range []string{
		`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}],"max_tokens":9000,"max_completion_tokens":9000}`,
		`{ "stream" : true , "stream_options" : { } , "model" : "gpt-4o-mini" , "messages" : [ ] }`,
		`{"stream":true,"stream_options":{"x":1},"model":"gpt-4o-mini"}`,
		`{"stream":true,"stream_options":{"include_usage":false,"x":1},"model":"gpt-4o-mini","max_tokens":5e4}`,
		`{"stream":true,"stream_options":null,"model":"gpt-4o-mini"}`,
		`{"stream":true}`,
	} {
		api := wire.ChatCompletions
		r := body.Read([]byte(raw), api.WalkContent())
		steps := []func(){
			func() { policy.ApplyOutputCap(api, &r, policy.OutputCapRule{Ceiling: 100, Default: 50}, 0) },
			func() { r.SetIncludeUsage() },
			func() { r.SetModel(`gpt-5-mini "quoted"`) },
			func() { r.SetModel("m") },
		}
		for i, step := range steps {
			step()
			checkOffsets(t, fmt.Sprintf("%s, step %d", raw, i), api, &r)
		}
		var got map[string]any
		if err := json.Unmarshal(r.Body(), &got); err != nil {
			t.Fatalf("%s: edited body %s is not JSON: %v", raw, r.Body(), err)
		}
		if got["model"] != "m" || got["stream_options"].(map[string]any)["include_usage"] != true {
			t.Errorf("%s: edited body %s", raw, r.Body())
		}
	}
	// A clone is edited apart from its original.
	r := body.Read([]byte(`{"model":"a","max_tokens":10}`), wire.Messages.WalkContent())
	c := r.Clone()
	c.SetModel("b")
	if string(r.Body()) != `{"model":"a","max_tokens":10}` || string(c.Body()) != `{"model":"b","max_tokens":10}` {
		t.Errorf("original %s, clone %s", r.Body(), c.Body())
	}
}

// checkOffsets compares r's offsets with a fresh read of its body, as a
// request of api.
func checkOffsets(t *testing.T, what string, api wire.API, r *body.Request) {
	t.Helper()
	fresh := body.Read(r.Body(), api.WalkContent())
	if !fresh.JSON() {
		t.Fatalf("%s: edited body %s is not JSON", what, r.Body())
	}
	for f := range body.Field(body.NumFields) {
		if !bytes.Equal(fresh.Raw(f), r.Raw(f)) {
			t.Fatalf("%s: %s is %q after the edits, %q when read again from %s", what, f, r.Raw(f), fresh.Raw(f), r.Body())
		}
	}
	freshCloser, freshMembers := fresh.Closer()
	closer, members := r.Closer()
	if freshCloser != closer || freshMembers != members {
		t.Fatalf("%s: the object's end is %d (members %v), %d (members %v) when read again", what, closer, members, freshCloser, freshMembers)
	}
}

// oracleFields decodes body with encoding/json and returns, for every field
// the gateway reads, its last raw value and how often it occurs (the nested
// ones counted inside every object value of their parent), and whether the
// body is a JSON object at all.
func oracleFields(in []byte) (last map[string][]byte, count map[string]int, ok bool) {
	last, count = map[string][]byte{}, map[string]int{}
	var members func(raw []byte, prefix string, top bool) bool
	members = func(raw []byte, prefix string, top bool) bool {
		dec := json.NewDecoder(bytes.NewReader(raw))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return false
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return false
			}
			var v json.RawMessage
			if dec.Decode(&v) != nil {
				return false
			}
			path := prefix + tok.(string)
			if !slices.Contains(fieldPaths[:], path) {
				continue
			}
			count[path]++
			last[path] = v
			if top && (path == "thinking" || path == "stream_options") && v[0] == '{' {
				members(v, path+".", false)
			}
		}
		return true
	}
	if !json.Valid(in) || !bytes.HasPrefix(bytes.TrimLeft(in, " \t\r\n"), []byte("{")) {
		return nil, nil, false
	}
	return last, count, members(in, "", true)
}

// topMembers lists a JSON object's members in order, leaving out keys.
func topMembers(t *testing.T, in []byte, skip ...string) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(in))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", in)
	}
	var out []string
	for dec.More() {
		tok, _ := dec.Token()
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decoding %s: %v", in, err)
		}
		if !slices.Contains(skip, tok.(string)) {
			out = append(out, tok.(string)+"="+string(v))
		}
	}
	return out
}

// FuzzReadRequest checks the one scan against encoding/json on the same
// bytes: JSON exactly when encoding/json says so; the same last value for
// every field the gateway reads, however deeply the rest nests; a
// duplicate exactly when one of them occurs twice; and then that the edits
// (output cap with thinking budget, model, include_usage) leave valid JSON,
// change only their own values, write caps as integers within the limit,
// and keep every recorded offset right.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"max_tokens":50000}`,
		`{"model":"m","max_tokens":5e4,"thinking":{"type":"enabled","budget_tokens":16000},"messages":[]}`,
		`{"model":"m","max_completion_tokens":50000.0,"max_tokens":1e400,"stream":true,"stream_options":{"x":[1,{"y":2}]}}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_usage":true}}`,
		`{"mod\u0065l":"m","thinking":{"type":"enabled","budget_tokens":2000,"budget_tokens":3000}}`,
		`{"model":"m","x":[[[[[[{"a":[[[{}]]]}]]]]]],"input":[{"role":"user","content":[{"type":"input_text","text":"\"hi\""}]}]}`,
		`{"a":1,}`, `[{"model":"m"}]`, `{"model":"m"} x`, "{\n}", `{"model":"` + strings.Repeat("x", 300) + `"}`,
		`{"model":"m","max_tokens":50000,"stream":true,}`, `{"stream":true,"max_tokens":9`,
	} {
		f.Add([]byte(s), int64(100), int64(50), int64(0), false, uint8(0), "claude-sonnet-4-5")
	}
	apis := []wire.API{wire.Messages, wire.ChatCompletions, wire.Responses, wire.Completions, wire.Embeddings}
	f.Fuzz(func(t *testing.T, in []byte, ceiling, def, modelMax int64, reject bool, which uint8, model string) {
		api := apis[int(which)%len(apis)]
		orig := slices.Clone(in)
		r := body.Read(in, api.WalkContent())
		if r.JSON() != json.Valid(in) {
			t.Fatalf("%q: JSON %v, encoding/json says %v", in, r.JSON(), !r.JSON())
		}
		if !r.JSON() {
			// A body that is not JSON is edited only in the values read
			// before its fault: never extended, nothing else moved.
			first, end := len(in), 0
			for f := range body.Field(body.NumFields) {
				if start, stop := r.Span(f); stop > start {
					first, end = min(first, start), max(end, stop)
				}
			}
			probe := body.Read(in, api.WalkContent())
			policy.ApplyOutputCap(api, &probe, policy.OutputCapRule{Ceiling: 1, Default: 1}, 1)
			probe.SetModel(model)
			probe.SetIncludeUsage()
			out := probe.Body()
			if !bytes.HasPrefix(out, in[:first]) || !bytes.HasSuffix(out, in[max(end, first):]) {
				t.Fatalf("%q, not JSON, was edited outside the values read: %q", in, out)
			}
		}
		last, count, isObject := oracleFields(in)
		if r.JSON() && r.Object() != isObject {
			t.Fatalf("%q: object %v, encoding/json says %v", in, r.Object(), isObject)
		}
		if !isObject {
			return
		}
		dup := false
		for _, n := range count {
			dup = dup || n > 1
		}
		for f := range body.Field(body.NumFields) {
			if r.Duplicated(f) != (count[fieldPaths[f]] > 1) {
				t.Fatalf("%q: %s duplicated %v, encoding/json counts %v", in, fieldPaths[f], r.Duplicated(f), count)
			}
		}
		for f := range body.Field(body.NumFields) {
			if !bytes.Equal(r.Raw(f), last[fieldPaths[f]]) {
				t.Fatalf("%q: %s is %q, encoding/json reads %q", in, fieldPaths[f], r.Raw(f), last[fieldPaths[f]])
			}
		}
		if dup {
			return // refused before any guard: nothing is edited
		}

		rule := policy.OutputCapRule{Ceiling: max(ceiling, 0) % 100000, Default: max(def, 0) % 100000}
		if reject {
			rule.Mode = policy.CapReject
		}
		modelMax = max(modelMax, 0) % 100000
		limit := rule.Ceiling
		if modelMax > 0 && (limit == 0 || modelMax < limit) {
			limit = modelMax
		}
		_, changed, err := policy.ApplyOutputCap(api, &r, rule, modelMax)
		if err != nil {
			return
		}
		if !changed && !bytes.Equal(r.Body(), orig) {
			t.Fatalf("%q: unchanged, yet the body is now %q", orig, r.Body())
		}
		checkOffsets(t, "after the cap", api, &r)
		skip := []string{"thinking"}
		for _, cf := range api.CapFields() {
			skip = append(skip, fieldPaths[cf])
			raw := r.Raw(cf)
			n, isNum := body.Number(raw)
			if was, wasNum := body.Number(last[fieldPaths[cf]]); wasNum && limit > 0 && was > limit && (!isNum || n > limit || !bytes.Equal(raw, fmt.Append(nil, n))) {
				t.Fatalf("%q: %s is %s after the guard, want an integer of at most %d", orig, fieldPaths[cf], raw, limit)
			}
		}
		if !slices.Equal(topMembers(t, orig, skip...), topMembers(t, r.Body(), skip...)) {
			t.Fatalf("members other than the caps changed:\n in  %s\n out %s", orig, r.Body())
		}
		if b, ok := body.Number(r.Raw(body.FieldThinkingBudget)); changed && ok && api == wire.Messages && string(r.Raw(body.FieldThinkingType)) == `"enabled"` {
			if capNow, _ := body.Number(r.Raw(body.FieldMaxTokens)); b >= capNow || b < minThinkingBudget && b != mustNumber(last["thinking.budget_tokens"]) {
				t.Fatalf("%q: thinking budget %d left with max_tokens %d: %s", orig, b, capNow, r.Body())
			}
		}

		before := r.Body()
		r.SetModel(model)
		checkOffsets(t, "after the model", api, &r)
		var m struct{ Model string }
		var want string
		quoted, _ := json.Marshal(model)
		_ = json.Unmarshal(quoted, &want) // as encoding/json writes it: invalid UTF-8 replaced
		if json.Unmarshal(r.Body(), &m) != nil || m.Model != want {
			t.Fatalf("model %q set in %q gives %q", model, before, r.Body())
		}
		if api == wire.ChatCompletions && r.SetIncludeUsage() {
			checkOffsets(t, "after include_usage", api, &r)
			if string(r.Raw(body.FieldIncludeUsage)) != "true" {
				t.Fatalf("include_usage is %q in %s", r.Raw(body.FieldIncludeUsage), r.Body())
			}
		}
	})
}

// minThinkingBudget is the smallest thinking.budget_tokens Anthropic
// accepts (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking),
// below which the guard must not lower a budget.
const minThinkingBudget = 1024

// fieldPaths names every field by its dotted path, indexed by Field.
var fieldPaths = func() (p []string) {
	for f := range body.Field(body.NumFields) {
		p = append(p, f.String())
	}
	return p
}()

// mustNumber is Number for a value known to be a number, else 0.
func mustNumber(raw []byte) int64 {
	n, _ := body.Number(raw)
	return n
}

// FuzzNumberValue compares Number with exact arithmetic (math/big) on
// every JSON number: the value rounded up, saturated to int64. Values whose
// float64 rounding shows (beyond 2^53, or below 1 in magnitude) are held to
// the bounds that rounding allows.
func FuzzNumberValue(f *testing.F) {
	for _, s := range []string{"50000", "50000.0", "5e4", "5E+4", "-0.5", "1e400", "9223372036854775808", "123.456e-2", "1e-400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 64 || !json.Valid([]byte(s)) || !body.IsNumber([]byte(s)) {
			return
		}
		got, ok := body.Number([]byte(s))
		if !ok {
			t.Fatalf("%s: not read as a number", s)
		}
		exact, _, err := bigmath.ParseFloat(s, 10, 256, bigmath.ToNearestEven)
		if err != nil || exact.IsInf() {
			return // an exponent beyond big.Float's range
		}
		want := new(bigmath.Int)
		exact.Int(want) // truncated toward zero
		if exact.IsInt() == false && exact.Sign() > 0 {
			want.Add(want, bigmath.NewInt(1))
		}
		switch {
		case want.IsInt64() && math.Abs(float64(want.Int64())) <= 1<<53:
			abs := new(bigmath.Float).Abs(exact)
			if abs.Sign() != 0 && abs.Cmp(bigmath.NewFloat(1e-300)) < 0 {
				if got != 0 && got != want.Int64() {
					t.Fatalf("%s: %d, want 0 or %d", s, got, want)
				}
				return
			}
			if got != want.Int64() {
				t.Fatalf("%s: %d, want %d", s, got, want)
			}
		case want.Sign() > 0:
			if !want.IsInt64() && got != math.MaxInt64 || want.IsInt64() && math.Abs(float64(got-want.Int64())) > float64(want.Int64())/(1<<50) {
				t.Fatalf("%s: %d, want about %s", s, got, want)
			}
		default:
			if !want.IsInt64() && got != math.MinInt64 || want.IsInt64() && math.Abs(float64(got-want.Int64())) > -float64(want.Int64())/(1<<50) {
				t.Fatalf("%s: %d, want about %s", s, got, want)
			}
		}
	})
}
