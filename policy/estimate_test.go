package policy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"github.com/tiktoken-go/tokenizer"
)

func TestEstimateTextTokensBasics(t *testing.T) {
	if got := EstimateTextTokens(nil); got != 0 {
		t.Errorf("empty text: got %d, want 0", got)
	}
	for _, tc := range []struct {
		text     string
		min, max int64
	}{
		{"hello", 1, 2},
		{"Hello, world!", 3, 5},
		{"The quick brown fox jumps over the lazy dog.", 9, 13},
		{"func main() { fmt.Println(\"hi\") }", 9, 16},
		{`{"role":"user","content":"hi"}`, 8, 14},
		{"中文测试", 3, 5},
		{"こんにちは", 3, 6},
		{"🙂🙂", 2, 4},
	} {
		if got := EstimateTextTokens([]byte(tc.text)); got < tc.min || got > tc.max {
			t.Errorf("EstimateTextTokens(%q) = %d, want %d..%d", tc.text, got, tc.min, tc.max)
		}
	}
}

// TestEscapesCountAsTheirCharacters checks that JSON escapes are read as the
// characters they stand for: Python clients send every non-ASCII character
// as \uXXXX, and code arrives full of \n and \".
func TestEscapesCountAsTheirCharacters(t *testing.T) {
	for _, tc := range []struct{ plain, escaped string }{
		{"line one\nline two\n\tindented", `line one\nline two\n\tindented`},
		{`say "hi" now`, `say \"hi\" now`},
		{`C:\path`, `C:\\path`},
		{"中文测试，好的。", `\u4e2d\u6587\u6d4b\u8bd5\uff0c\u597d\u7684\u3002`},
		{"café über", `caf\u00e9 \u00fcber`},
		{"😀 ok", `\ud83d\ude00 ok`},
		{"a/b", `a\/b`},
	} {
		plain, esc := countText(tc.plain, false), countText(tc.escaped, true)
		if plain != esc {
			t.Errorf("%q: plain %d units, escaped %q %d units", tc.plain, plain, tc.escaped, esc)
		}
	}
	// Malformed escapes must not panic or go past the end.
	for _, s := range []string{`\`, `\u`, `\u12`, `\uZZZZ`, `\ud83d`, `\ud83d\u`, `\x`} {
		_ = countText(s, true)
	}
}

func TestEstimateInputTokensShapes(t *testing.T) {
	text := strings.Repeat("The lighthouse keeper wrote every fault in the log. ", 20)
	textTok := EstimateTextTokens([]byte(text))
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	base64Image := strings.Repeat("iVBORw0KGgoAAAANSUhEUgAA", 4000)

	for _, tc := range []struct {
		name     string
		d        Dialect
		e        Endpoint
		body     string
		min, max int64
	}{
		{"not an object", Anthropic, Messages, `[1,2,3]`, 0, 0},
		{"not JSON", Anthropic, Messages, `hello`, 0, 0},
		{"unknown endpoint", Passthrough, EndpointOther, `{"messages":[{"role":"user","content":"hi"}]}`, 0, 0},
		{"anthropic string content", Anthropic, Messages,
			`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":` + q(text) + `}]}`,
			textTok + 7, textTok + 8},
		{"anthropic block content", Anthropic, Messages,
			`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":` + q(text) + `,"cache_control":{"type":"ephemeral"}}]}]}`,
			textTok + 7, textTok + 8},
		{"anthropic system string", Anthropic, Messages,
			`{"system":` + q(text) + `,"messages":[]}`, textTok + 3, textTok + 3},
		{"anthropic system blocks", Anthropic, Messages,
			`{"system":[{"type":"text","text":` + q(text) + `}],"messages":[]}`, textTok + 3, textTok + 3},
		{"image costs a fixed amount, not its base64", Anthropic, Messages,
			`{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + base64Image + `"}}]}]}`,
			3 + 4 + imageBlockTokens, 3 + 4 + imageBlockTokens},
		{"pdf document", Anthropic, Messages,
			`{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}}]}]}`,
			3 + 4 + documentBlockTokens, 3 + 4 + documentBlockTokens},
		{"text document is read", Anthropic, Messages,
			`{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":` + q(text) + `}}]}]}`,
			textTok + 7, textTok + 8},
		{"thinking signature is not text", Anthropic, Messages,
			`{"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"ok","signature":"` + base64Image + `"}]}]}`,
			8, 10},
		{"tool_use input and tool_result content", Anthropic, Messages,
			`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":` + q(text) + `}]}]}`,
			textTok + 11 + 5, textTok + 11 + 14},
		{"anthropic tools add the tool system prompt", Anthropic, Messages,
			`{"tools":[{"name":"get_weather","description":"Weather for a city.","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],"messages":[]}`,
			3 + anthropicToolsTokens + 20, 3 + anthropicToolsTokens + 45},
		{"chat string and parts", OpenAI, ChatCompletions,
			`{"messages":[{"role":"system","content":` + q(text) + `},{"role":"user","content":[{"type":"text","text":` + q(text) + `},{"type":"image_url","image_url":{"url":"data:image/png;base64,` + base64Image + `"}}]}]}`,
			2*textTok + 11 + imageBlockTokens, 2*textTok + 13 + imageBlockTokens},
		{"chat tool calls", OpenAI, ChatCompletions,
			`{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"18C and sunny"}]}`,
			20, 50},
		{"responses string input", OpenAI, Responses,
			`{"instructions":` + q(text) + `,"input":` + q(text) + `}`, 2*textTok + 3, 2*textTok + 4},
		{"responses item input", OpenAI, Responses,
			`{"input":[{"role":"user","content":[{"type":"input_text","text":` + q(text) + `}]},{"type":"function_call","call_id":"c1","name":"lookup","arguments":"{\"q\":\"x\"}"},{"type":"function_call_output","call_id":"c1","output":"done"}]}`,
			textTok + 3 + 12 + 5, textTok + 3 + 12 + 14},
		{"legacy completions prompt", OpenAI, Completions, `{"prompt":` + q(text) + `}`, textTok + 3, textTok + 3},
		{"embeddings strings and token ids", OpenAI, Embeddings, `{"input":[` + q(text) + `,[1,2,3]]}`, textTok + 6, textTok + 6},
	} {
		got := EstimateInputTokens(tc.d, tc.e, []byte(tc.body))
		if got < tc.min || got > tc.max {
			t.Errorf("%s: EstimateInputTokens = %d, want %d..%d", tc.name, got, tc.min, tc.max)
		}
	}
}

// TestEstimateIsAdditive pins what Truncate relies on: the estimate of a
// body is the rest of the request plus messageTokens of each message.
func TestEstimateIsAdditive(t *testing.T) {
	m1 := `{"role":"user","content":"What is the tide at Carrow Point?"}`
	m2 := `{"role":"assistant","content":[{"type":"text","text":"High water is at 15:30."}]}`
	one := `{"model":"m","system":"Be brief.","messages":[` + m1 + `]}`
	two := `{"model":"m","system":"Be brief.","messages":[` + m1 + `,` + m2 + `]}`
	d := EstimateInputTokens(Anthropic, Messages, []byte(two)) - EstimateInputTokens(Anthropic, Messages, []byte(one))
	if want := messageTokens(m2); d != want {
		t.Errorf("adding a message added %d tokens, want messageTokens = %d", d, want)
	}
}

func TestEstimateInputTokensDoesNotAllocate(t *testing.T) {
	body := []byte(`{"model":"m","system":"Be brief.\nReally.","messages":[{"role":"user","content":"line\nline \"quoted\" \u4e2d"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"a":"b\nc"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x\ny"}]}]}],"tools":[{"name":"n","input_schema":{"type":"object"}}]}`)
	if n := testing.AllocsPerRun(100, func() { EstimateInputTokens(Anthropic, Messages, body) }); n != 0 {
		t.Errorf("EstimateInputTokens allocates %.0f times per call, want 0", n)
	}
}

// estimateSample is one paragraph of a testdata/estimate file.
type estimateSample struct {
	class string
	text  []byte
}

// estimateSamples splits every testdata/estimate/<class>.txt file into
// paragraphs of at least 400 bytes: about the size of one message, and small
// enough that a class's worst paragraph shows real spread.
func estimateSamples(t testing.TB) []estimateSample {
	files, err := filepath.Glob("testdata/estimate/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in testdata/estimate: %v", err)
	}
	var out []estimateSample
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		class := strings.TrimSuffix(filepath.Base(f), ".txt")
		var cur []byte
		for _, p := range bytes.Split(data, []byte("\n\n")) {
			if len(cur) > 0 {
				cur = append(cur, "\n\n"...)
			}
			cur = append(cur, p...)
			if len(cur) >= 400 {
				out = append(out, estimateSample{class, cur})
				cur = nil
			}
		}
		if len(cur) > 0 {
			out = append(out, estimateSample{class, cur})
		}
	}
	return out
}

// TestEstimateAccuracy compares the estimate with OpenAI's o200k_base BPE
// tokenizer on prose, code, JSON, Chinese and Japanese. An undercount lets
// requests past the rate limiter that the provider then answers with 429,
// so no class may undercount by more than 10 %; an overcount makes the
// context guard refuse requests that fit, so none may overcount by more
// than 60 % (issue 3 and 4 accuracy targets).
func TestEstimateAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the o200k vocabulary")
	}
	enc, err := tokenizer.Get(tokenizer.O200kBase)
	if err != nil {
		t.Fatal(err)
	}
	errs := map[string][]float64{}
	totals := map[string][2]int64{}
	for _, s := range estimateSamples(t) {
		real, err := enc.Count(string(s.text))
		if err != nil {
			t.Fatal(err)
		}
		est := EstimateTextTokens(s.text)
		errs[s.class] = append(errs[s.class], float64(est)/float64(real)-1)
		tot := totals[s.class]
		totals[s.class] = [2]int64{tot[0] + est, tot[1] + int64(real)}
	}
	classes := make([]string, 0, len(errs))
	for c := range errs {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		e := errs[c]
		sort.Float64s(e)
		low, high, med := e[0], e[len(e)-1], e[len(e)/2]
		t.Logf("%-9s %2d paragraphs: whole file %+5.1f%%, median %+5.1f%%, worst under %+5.1f%%, worst over %+5.1f%% (%d estimated / %d o200k tokens)",
			c, len(e), 100*(float64(totals[c][0])/float64(totals[c][1])-1), 100*med, 100*low, 100*high, totals[c][0], totals[c][1])
		if low < -0.10 {
			t.Errorf("%s: a paragraph is undercounted by %.1f%%, limit 10%%", c, -100*low)
		}
		if high > 0.60 {
			t.Errorf("%s: a paragraph is overcounted by %.1f%%, limit 60%%", c, 100*high)
		}
	}
	for _, want := range []string{"english", "gocode", "json", "chinese", "japanese"} {
		if _, ok := errs[want]; !ok {
			t.Errorf("no %s sample in testdata/estimate", want)
		}
	}
}

func BenchmarkEstimateTextTokens(b *testing.B) {
	var ascii []byte
	for _, f := range []string{"english.txt", "gocode.txt", "json.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata/estimate", f))
		if err != nil {
			b.Fatal(err)
		}
		ascii = append(ascii, data...)
	}
	for len(ascii) < 256<<10 {
		ascii = append(ascii, ascii...)
	}
	b.SetBytes(int64(len(ascii)))
	b.ReportAllocs()
	for b.Loop() {
		EstimateTextTokens(ascii)
	}
}

func BenchmarkEstimateInputTokens(b *testing.B) {
	data, err := os.ReadFile("testdata/estimate/english.txt")
	if err != nil {
		b.Fatal(err)
	}
	text, _ := json.Marshal(string(data))
	var body bytes.Buffer
	body.WriteString(`{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are terse.","messages":[`)
	for i := 0; i < 20; i++ {
		if i > 0 {
			body.WriteByte(',')
		}
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		body.WriteString(`{"role":"` + role + `","content":[{"type":"text","text":` + string(text) + `}]}`)
	}
	body.WriteString(`]}`)
	b.SetBytes(int64(body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		EstimateInputTokens(Anthropic, Messages, body.Bytes())
	}
}

func FuzzEstimateInputTokens(f *testing.F) {
	f.Add([]byte(`{"model":"m","max_tokens":5,"system":"s","messages":[{"role":"user","content":"hi"}]}`), "more text")
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"a\nb"},{"type":"image","source":{}}]}],"tools":[{}]}`), "\u4e2d")
	f.Add([]byte(`{"input":[{"type":"function_call","arguments":"{\"a\":1}"},{"type":"function_call_output","output":[{"type":"input_text","text":"x"}]}],"instructions":"i"}`), `\u`)
	f.Add([]byte(`{"messages":[{"content":[[[[[[[[[[[["deep"]]]]]]]]]]]]}]}`), "")
	f.Add([]byte(`{"messages":[{"role":"user","content":"unterminated`), "x")
	f.Fuzz(func(t *testing.T, body []byte, extra string) {
		for _, de := range []struct {
			d Dialect
			e Endpoint
		}{{Anthropic, Messages}, {OpenAI, ChatCompletions}, {OpenAI, Responses}, {OpenAI, Completions}, {OpenAI, Embeddings}} {
			n := EstimateInputTokens(de.d, de.e, body)
			if n < 0 {
				t.Fatalf("%v %v: negative estimate %d", de.d, de.e, n)
			}
			// Adding a message never lowers the estimate.
			key := conversationField(de.e)
			if key == "" || !json.Valid(body) || !gjson.GetBytes(body, key).IsArray() {
				continue
			}
			msg, _ := json.Marshal(map[string]string{"role": "user", "content": extra})
			more, err := sjson.SetRawBytes(body, key+".-1", msg)
			if err != nil {
				continue
			}
			if m := EstimateInputTokens(de.d, de.e, more); m < n {
				t.Fatalf("%v %v: appending %s lowered the estimate from %d to %d", de.d, de.e, msg, n, m)
			}
		}
		// Appending text never lowers the text estimate.
		a := EstimateTextTokens(body)
		if ab := EstimateTextTokens(append(body[:len(body):len(body)], extra...)); ab < a || a < 0 {
			t.Fatalf("EstimateTextTokens: %d for the text, %d with %q appended", a, ab, extra)
		}
	})
}
