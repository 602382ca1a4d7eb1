package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	bigmath "math/big"
	"slices"
	"strings"
	"testing"
)

// TestIntegrityDuplicates checks that a member the gateway reads or
// rewrites, given twice, is refused with its path, however the second one
// is spelled, and that repeats the gateway does not read pass.
func TestIntegrityDuplicates(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    Endpoint
		body string
		dup  string // "" means the body passes
	}{
		{"max_tokens twice", Messages, `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[],"max_tokens":50000}`, "max_tokens"},
		{"model twice", Messages, `{"model":"claude-opus-4-5","max_tokens":10,"messages":[],"model":"claude-haiku-4-5"}`, "model"},
		{"stream twice", ChatCompletions, `{"model":"m","stream":false,"messages":[],"stream":true}`, "stream"},
		{"max_completion_tokens twice", ChatCompletions, `{"model":"m","max_completion_tokens":1,"max_completion_tokens":2}`, "max_completion_tokens"},
		{"max_output_tokens twice", Responses, `{"model":"m","max_output_tokens":1,"max_output_tokens":2}`, "max_output_tokens"},
		{"messages twice", Messages, `{"model":"m","max_tokens":1,"messages":[],"messages":[]}`, "messages"},
		{"input twice", Responses, `{"model":"m","input":"a","input":"b"}`, "input"},
		{"system twice", Messages, `{"model":"m","max_tokens":1,"system":"a","messages":[],"system":"b"}`, "system"},
		{"thinking twice", Messages, `{"model":"m","thinking":{"type":"disabled"},"thinking":{"type":"enabled","budget_tokens":2000}}`, "thinking"},
		{"budget twice", Messages, `{"model":"m","thinking":{"type":"enabled","budget_tokens":1024,"budget_tokens":9000}}`, "thinking.budget_tokens"},
		{"include_usage twice", ChatCompletions, `{"model":"m","stream_options":{"include_usage":false,"include_usage":true}}`, "stream_options.include_usage"},
		{"escaped spelling", Messages, `{"model":"m","max_tokens":10,"max_tok\u0065ns":50000}`, "max_tokens"},
		{"escaped model", Messages, `{"model":"a","\u006dodel":"b"}`, "model"},
		{"after a syntax error is not seen", Messages, `{"model":"m","max_tokens":1,} "max_tokens":2`, ""},

		{"one of each", Messages, `{"model":"m","max_tokens":1,"stream":true,"system":"s","messages":[],"thinking":{"type":"enabled","budget_tokens":1}}`, ""},
		{"an unknown member twice", Messages, `{"model":"m","max_tokens":1,"messages":[],"metadata":{},"metadata":{}}`, ""},
		{"nested members of the same name", Messages, `{"model":"m","max_tokens":1,"metadata":{"model":"x","max_tokens":2},"messages":[{"role":"user","content":"a","content":"b"}]}`, ""},
		{"a repeated key inside a block", ChatCompletions, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","type":"text","text":"x"}]}]}`, ""},
	} {
		r := ReadRequest(OpenAI, tc.e, []byte(tc.body))
		if tc.e == Messages {
			r = ReadRequest(Anthropic, tc.e, []byte(tc.body))
		}
		err := r.Integrity()
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
		{"at the bound", strings.Repeat("m", maxModelBytes), 0},
		{"one over", strings.Repeat("m", maxModelBytes+1), maxModelBytes + 1},
		{"a mebibyte", strings.Repeat("m", 1<<20), 1 << 20},
		{"escapes count unescaped", strings.Repeat(`\u006d`, maxModelBytes), 0},
		{"escapes over the bound", strings.Repeat(`\u006d`, maxModelBytes+1), 6 * (maxModelBytes + 1)},
		{"multi-byte runes cut at a boundary", strings.Repeat("é", maxModelBytes), 2 * maxModelBytes},
	} {
		r := ReadRequest(Anthropic, Messages, []byte(`{"model":"`+tc.model+`","max_tokens":1,"messages":[]}`))
		err := r.Integrity()
		if len(r.Model) > maxModelBytes || !strings.HasPrefix(strings.ReplaceAll(tc.model, `\u006d`, "m"), r.Model) && !strings.HasPrefix(tc.model, r.Model) {
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

func TestNumberValue(t *testing.T) {
	for raw, want := range map[string]int64{
		"50000": 50000, "50000.0": 50000, "5e4": 50000, "5E+4": 50000, "500000e-1": 50000, "0.5e5": 50000,
		"100.5": 101, "-0": 0, "-0.5": 0, "-1.5": -1, "0": 0, "1e-400": 0,
		"9223372036854775807": math.MaxInt64, "9223372036854775808": math.MaxInt64, "9e18": 9e18, "9.3e18": math.MaxInt64,
		"1e400": math.MaxInt64, "-1e400": math.MinInt64, "-9223372036854775809": math.MinInt64,
	} {
		if got, ok := numberValue([]byte(raw)); !ok || got != want {
			t.Errorf("numberValue(%s) = %d, %v; want %d", raw, got, ok, want)
		}
	}
	for _, raw := range []string{`"5"`, "null", "true", "[1]", `{"a":1}`, ""} {
		if _, ok := numberValue([]byte(raw)); ok {
			t.Errorf("numberValue(%s) reads a number", raw)
		}
	}
}

// TestEditsKeepOffsets chains every kind of edit and checks, after each,
// that the recorded offsets are the ones a fresh read of the edited body
// finds, and that nothing else moved.
func TestEditsKeepOffsets(t *testing.T) {
	for _, body := range []string{
		`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}],"max_tokens":9000,"max_completion_tokens":9000}`,
		`{ "stream" : true , "stream_options" : { } , "model" : "gpt-4o-mini" , "messages" : [ ] }`,
		`{"stream":true,"stream_options":{"x":1},"model":"gpt-4o-mini"}`,
		`{"stream":true,"stream_options":{"include_usage":false,"x":1},"model":"gpt-4o-mini","max_tokens":5e4}`,
		`{"stream":true,"stream_options":null,"model":"gpt-4o-mini"}`,
		`{"stream":true}`,
	} {
		r := ReadRequest(OpenAI, ChatCompletions, []byte(body))
		steps := []func(){
			func() { r.ApplyOutputCap(OutputCapRule{Ceiling: 100, Default: 50}, 0) },
			func() { r.RequestStreamUsage() },
			func() { r.SetModel(`gpt-5-mini "quoted"`) },
			func() { r.SetModel("m") },
		}
		for i, step := range steps {
			step()
			checkOffsets(t, fmt.Sprintf("%s, step %d", body, i), &r)
		}
		var got map[string]any
		if err := json.Unmarshal(r.Body(), &got); err != nil {
			t.Fatalf("%s: edited body %s is not JSON: %v", body, r.Body(), err)
		}
		if got["model"] != "m" || got["stream_options"].(map[string]any)["include_usage"] != true {
			t.Errorf("%s: edited body %s", body, r.Body())
		}
	}
	// A clone is edited apart from its original.
	r := ReadRequest(Anthropic, Messages, []byte(`{"model":"a","max_tokens":10}`))
	c := r.Clone()
	c.SetModel("b")
	if string(r.Body()) != `{"model":"a","max_tokens":10}` || string(c.Body()) != `{"model":"b","max_tokens":10}` {
		t.Errorf("original %s, clone %s", r.Body(), c.Body())
	}
}

// checkOffsets compares r's offsets with a fresh read of its body.
func checkOffsets(t *testing.T, what string, r *Request) {
	t.Helper()
	fresh := ReadRequest(r.d, r.e, r.Body())
	if !fresh.json {
		t.Fatalf("%s: edited body %s is not JSON", what, r.Body())
	}
	for f := range numFields {
		if !bytes.Equal(fresh.raw(f), r.raw(f)) {
			t.Fatalf("%s: %s is %q after the edits, %q when read again from %s", what, fieldPaths[f], r.raw(f), fresh.raw(f), r.Body())
		}
	}
	if fresh.closer != r.closer || fresh.members != r.members {
		t.Fatalf("%s: the object's end is %d (members %v), %d (members %v) when read again", what, r.closer, r.members, fresh.closer, fresh.members)
	}
}

// oracleFields decodes body with encoding/json and returns, for every field
// the gateway reads, its last raw value and how often it occurs (the nested
// ones counted inside every object value of their parent), and whether the
// body is a JSON object at all.
func oracleFields(body []byte) (last map[string][]byte, count map[string]int, ok bool) {
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
	if !json.Valid(body) || !bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")) {
		return nil, nil, false
	}
	return last, count, members(body, "", true)
}

// topMembers lists a JSON object's members in order, leaving out keys.
func topMembers(t *testing.T, body []byte, skip ...string) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", body)
	}
	var out []string
	for dec.More() {
		tok, _ := dec.Token()
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decoding %s: %v", body, err)
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
	endpoints := []struct {
		d Dialect
		e Endpoint
	}{{Anthropic, Messages}, {OpenAI, ChatCompletions}, {OpenAI, Responses}, {OpenAI, Completions}, {OpenAI, Embeddings}}
	f.Fuzz(func(t *testing.T, body []byte, ceiling, def, modelMax int64, reject bool, which uint8, model string) {
		ep := endpoints[int(which)%len(endpoints)]
		orig := slices.Clone(body)
		r := ReadRequest(ep.d, ep.e, body)
		if r.json != json.Valid(body) {
			t.Fatalf("%q: JSON %v, encoding/json says %v", body, r.json, !r.json)
		}
		if !r.json {
			// A body that is not JSON is edited only in the values read
			// before its fault: never extended, nothing else moved.
			first, end := len(body), 0
			for f := range numFields {
				if r.at[f].present() {
					first, end = min(first, r.at[f].start), max(end, r.at[f].end)
				}
			}
			probe := ReadRequest(ep.d, ep.e, body)
			probe.ApplyOutputCap(OutputCapRule{Ceiling: 1, Default: 1}, 1)
			probe.SetModel(model)
			probe.RequestStreamUsage()
			out := probe.Body()
			if !bytes.HasPrefix(out, body[:first]) || !bytes.HasSuffix(out, body[max(end, first):]) {
				t.Fatalf("%q, not JSON, was edited outside the values read: %q", body, out)
			}
		}
		last, count, isObject := oracleFields(body)
		if r.json && r.object != isObject {
			t.Fatalf("%q: object %v, encoding/json says %v", body, r.object, isObject)
		}
		if !isObject {
			return
		}
		dup := false
		for _, n := range count {
			dup = dup || n > 1
		}
		for f := range numFields {
			if r.dups&(1<<f) != 0 != (count[fieldPaths[f]] > 1) {
				t.Fatalf("%q: %s duplicated %v, encoding/json counts %v", body, fieldPaths[f], r.dups&(1<<f) != 0, count)
			}
		}
		for f := range numFields {
			if !bytes.Equal(r.raw(f), last[fieldPaths[f]]) {
				t.Fatalf("%q: %s is %q, encoding/json reads %q", body, fieldPaths[f], r.raw(f), last[fieldPaths[f]])
			}
		}
		if dup {
			return // refused before any guard: nothing is edited
		}

		rule := OutputCapRule{Ceiling: max(ceiling, 0) % 100000, Default: max(def, 0) % 100000}
		if reject {
			rule.Mode = CapReject
		}
		modelMax = max(modelMax, 0) % 100000
		limit := rule.Ceiling
		if modelMax > 0 && (limit == 0 || modelMax < limit) {
			limit = modelMax
		}
		_, changed, err := r.ApplyOutputCap(rule, modelMax)
		if err != nil {
			return
		}
		if !changed && !bytes.Equal(r.Body(), orig) {
			t.Fatalf("%q: unchanged, yet the body is now %q", orig, r.Body())
		}
		checkOffsets(t, "after the cap", &r)
		skip := []string{"thinking"}
		for _, cf := range capFields(ep.d, ep.e) {
			skip = append(skip, fieldPaths[cf])
			raw := r.raw(cf)
			n, isNum := numberValue(raw)
			if was, wasNum := numberValue(last[fieldPaths[cf]]); wasNum && limit > 0 && was > limit && (!isNum || n > limit || !bytes.Equal(raw, fmt.Append(nil, n))) {
				t.Fatalf("%q: %s is %s after the guard, want an integer of at most %d", orig, fieldPaths[cf], raw, limit)
			}
		}
		if !slices.Equal(topMembers(t, orig, skip...), topMembers(t, r.Body(), skip...)) {
			t.Fatalf("members other than the caps changed:\n in  %s\n out %s", orig, r.Body())
		}
		if b, ok := numberValue(r.raw(fieldThinkingBudget)); changed && ok && ep.d == Anthropic && string(r.raw(fieldThinkingType)) == `"enabled"` {
			if capNow, _ := numberValue(r.raw(fieldMaxTokens)); b >= capNow || b < minThinkingBudget && b != mustNumber(last["thinking.budget_tokens"]) {
				t.Fatalf("%q: thinking budget %d left with max_tokens %d: %s", orig, b, capNow, r.Body())
			}
		}

		before := r.Body()
		r.SetModel(model)
		checkOffsets(t, "after the model", &r)
		var m struct{ Model string }
		var want string
		quoted, _ := json.Marshal(model)
		_ = json.Unmarshal(quoted, &want) // as encoding/json writes it: invalid UTF-8 replaced
		if json.Unmarshal(r.Body(), &m) != nil || m.Model != want {
			t.Fatalf("model %q set in %q gives %q", model, before, r.Body())
		}
		if ep.e == ChatCompletions && r.RequestStreamUsage() {
			checkOffsets(t, "after include_usage", &r)
			if string(r.raw(fieldIncludeUsage)) != "true" {
				t.Fatalf("include_usage is %q in %s", r.raw(fieldIncludeUsage), r.Body())
			}
		}
	})
}

// mustNumber is numberValue for a value known to be a number, else 0.
func mustNumber(raw []byte) int64 {
	n, _ := numberValue(raw)
	return n
}

// FuzzNumberValue compares numberValue with exact arithmetic (math/big) on
// every JSON number: the value rounded up, saturated to int64. Values whose
// float64 rounding shows (beyond 2^53, or below 1 in magnitude) are held to
// the bounds that rounding allows.
func FuzzNumberValue(f *testing.F) {
	for _, s := range []string{"50000", "50000.0", "5e4", "5E+4", "-0.5", "1e400", "9223372036854775808", "123.456e-2", "1e-400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 64 || !json.Valid([]byte(s)) || !isNumber([]byte(s)) {
			return
		}
		got, ok := numberValue([]byte(s))
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
