package wire

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// The fixed costs the estimator charges for blocks it cannot read as text
// (tokens.imageBlockTokens and tokens.documentBlockTokens, unexported
// there): one image, and one PDF, file or audio block.
const (
	imageBlockTokens    = 1600
	documentBlockTokens = 3000
)

func TestEstimateInputTokensShapes(t *testing.T) {
	text := strings.Repeat("The lighthouse keeper wrote every fault in the log. ", 20)
	textTok := tokens.EstimateTextTokens([]byte(text))
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	base64Image := strings.Repeat("iVBORw0KGgoAAAANSUhEUgAA", 4000)

	for _, tc := range []struct {
		name     string
		api      API
		body     string
		min, max int64
	}{
		{"not an object", Messages, `[1,2,3]`, 0, 0},
		{"not JSON", Messages, `hello`, 0, 0},
		{"anthropic string content", Messages,
			`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":` + q(text) + `}]}`,
			textTok + 7, textTok + 8},
		{"anthropic block content", Messages,
			`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":` + q(text) + `,"cache_control":{"type":"ephemeral"}}]}]}`,
			textTok + 7, textTok + 8},
		{"anthropic system string", Messages,
			`{"system":` + q(text) + `,"messages":[]}`, textTok + 3, textTok + 3},
		{"anthropic system blocks", Messages,
			`{"system":[{"type":"text","text":` + q(text) + `}],"messages":[]}`, textTok + 3, textTok + 3},
		{"image costs a fixed amount, not its base64", Messages,
			`{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + base64Image + `"}}]}]}`,
			3 + 4 + imageBlockTokens, 3 + 4 + imageBlockTokens},
		{"pdf document", Messages,
			`{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}}]}]}`,
			3 + 4 + documentBlockTokens, 3 + 4 + documentBlockTokens},
		{"text document is read", Messages,
			`{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":` + q(text) + `}}]}]}`,
			textTok + 7, textTok + 8},
		{"thinking signature is not text", Messages,
			`{"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"ok","signature":"` + base64Image + `"}]}]}`,
			8, 10},
		{"tool_use input and tool_result content", Messages,
			`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":` + q(text) + `}]}]}`,
			textTok + 11 + 5, textTok + 11 + 14},
		{"anthropic tools add the tool system prompt", Messages,
			`{"tools":[{"name":"get_weather","description":"Weather for a city.","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],"messages":[]}`,
			3 + anthropicToolsTokens + 20, 3 + anthropicToolsTokens + 45},
		{"chat string and parts", ChatCompletions,
			`{"messages":[{"role":"system","content":` + q(text) + `},{"role":"user","content":[{"type":"text","text":` + q(text) + `},{"type":"image_url","image_url":{"url":"data:image/png;base64,` + base64Image + `"}}]}]}`,
			2*textTok + 11 + imageBlockTokens, 2*textTok + 13 + imageBlockTokens},
		{"chat tool calls", ChatCompletions,
			`{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"18C and sunny"}]}`,
			20, 50},
		{"responses string input", Responses,
			`{"instructions":` + q(text) + `,"input":` + q(text) + `}`, 2*textTok + 3, 2*textTok + 4},
		{"responses item input", Responses,
			`{"input":[{"role":"user","content":[{"type":"input_text","text":` + q(text) + `}]},{"type":"function_call","call_id":"c1","name":"lookup","arguments":"{\"q\":\"x\"}"},{"type":"function_call_output","call_id":"c1","output":"done"}]}`,
			textTok + 3 + 12 + 5, textTok + 3 + 12 + 14},
		{"legacy completions prompt", Completions, `{"prompt":` + q(text) + `}`, textTok + 3, textTok + 3},
		{"embeddings strings and token ids", Embeddings, `{"input":[` + q(text) + `,[1,2,3]]}`, textTok + 6, textTok + 6},
	} {
		got := inputTokens(tc.api, []byte(tc.body))
		if got < tc.min || got > tc.max {
			t.Errorf("%s: InputTokens = %d, want %d..%d", tc.name, got, tc.min, tc.max)
		}
	}
	// A request of an unknown endpoint is not estimated: the gateway does
	// not guard its API at all, nor reserves tokens for it.
	if Passthrough.Guarded() {
		t.Error("Passthrough is guarded, so its requests would be estimated")
	}
}

// inputTokens reads b as a request of api and estimates its input tokens,
// as the gateway does.
func inputTokens(api API, b []byte) int64 {
	r := body.Read(b, api.WalkContent())
	return api.InputTokens(&r)
}

// TestEstimateIsAdditive pins what Truncate relies on: the estimate of a
// body is the rest of the request plus tokens.Message of each message.
func TestEstimateIsAdditive(t *testing.T) {
	m1 := `{"role":"user","content":"What is the tide at Carrow Point?"}`
	m2 := `{"role":"assistant","content":[{"type":"text","text":"High water is at 15:30."}]}`
	one := `{"model":"m","system":"Be brief.","messages":[` + m1 + `]}`
	two := `{"model":"m","system":"Be brief.","messages":[` + m1 + `,` + m2 + `]}`
	d := inputTokens(Messages, []byte(two)) - inputTokens(Messages, []byte(one))
	if want := tokens.Message([]byte(m2)); d != want {
		t.Errorf("adding a message added %d tokens, want tokens.Message = %d", d, want)
	}
}

func TestEstimateInputTokensDoesNotAllocate(t *testing.T) {
	raw := []byte(`{"model":"m","system":"Be brief.\nReally.","messages":[{"role":"user","content":"line\nline \"quoted\" \u4e2d"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"a":"b\nc"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x\ny"}]}]}],"tools":[{"name":"n","input_schema":{"type":"object"}}]}`)
	r := body.Read(raw, Messages.WalkContent())
	if n := testing.AllocsPerRun(100, func() { Messages.InputTokens(&r) }); n != 0 {
		t.Errorf("InputTokens allocates %.0f times per call, want 0", n)
	}
}

func BenchmarkEstimateInputTokens(b *testing.B) {
	data, err := os.ReadFile("../tokens/testdata/estimate/english.txt")
	if err != nil {
		b.Fatal(err)
	}
	text, _ := json.Marshal(string(data))
	var buf bytes.Buffer
	buf.WriteString(`{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are terse.","messages":[`)
	for i := 0; i < 20; i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		buf.WriteString(`{"role":"` + role + `","content":[{"type":"text","text":` + string(text) + `}]}`)
	}
	buf.WriteString(`]}`)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		r := body.Read(buf.Bytes(), Messages.WalkContent())
		Messages.InputTokens(&r)
	}
}

func FuzzEstimateInputTokens(f *testing.F) {
	f.Add([]byte(`{"model":"m","max_tokens":5,"system":"s","messages":[{"role":"user","content":"hi"}]}`), "more text")
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"a\nb"},{"type":"image","source":{}}]}],"tools":[{}]}`), "\u4e2d")
	f.Add([]byte(`{"input":[{"type":"function_call","arguments":"{\"a\":1}"},{"type":"function_call_output","output":[{"type":"input_text","text":"x"}]}],"instructions":"i"}`), `\u`)
	f.Add([]byte(`{"messages":[{"content":[[[[[[[[[[[["deep"]]]]]]]]]]]]}]}`), "")
	f.Add([]byte(`{"messages":[{"role":"user","content":"unterminated`), "x")
	f.Fuzz(func(t *testing.T, in []byte, extra string) {
		for _, api := range []API{Messages, ChatCompletions, Responses, Completions, Embeddings} {
			n := inputTokens(api, in)
			if n < 0 {
				t.Fatalf("%s: negative estimate %d", api.Name(), n)
			}
			// Adding a message never lowers the estimate.
			key := api.Conversation().String()
			if key == "" || !json.Valid(in) || !gjson.GetBytes(in, key).IsArray() {
				continue
			}
			msg, _ := json.Marshal(map[string]string{"role": "user", "content": extra})
			more, err := sjson.SetRawBytes(in, key+".-1", msg)
			if err != nil {
				continue
			}
			if m := inputTokens(api, more); m < n {
				t.Fatalf("%s: appending %s lowered the estimate from %d to %d", api.Name(), msg, n, m)
			}
		}
		// Appending text never lowers the text estimate.
		a := tokens.EstimateTextTokens(in)
		if ab := tokens.EstimateTextTokens(append(in[:len(in):len(in)], extra...)); ab < a || a < 0 {
			t.Fatalf("EstimateTextTokens: %d for the text, %d with %q appended", a, ab, extra)
		}
	})
}
