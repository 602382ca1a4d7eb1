package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/tidwall/gjson"
)

// Real-shaped bodies, written the way the official SDKs write them
// (anthropic-sdk-go MessageNewParams, openai-go ChatCompletionNewParams,
// ResponseNewParams, CompletionNewParams, EmbeddingNewParams): the nearest
// valid request to each rejected one below.
const (
	anthropicOK = `{"max_tokens":1024,"messages":[` +
		`{"role":"user","content":"What is the weather in Paris?"},` +
		`{"role":"assistant","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"city":"Paris"}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01A09q90qw90lq917835lq9","content":[{"type":"text","text":"18°C, cloudy"}]},{"type":"text","text":"And tomorrow?"}]}` +
		`],"model":"claude-sonnet-4-5-20250929","system":[{"type":"text","text":"You are a weather bot.","cache_control":{"type":"ephemeral"}}],` +
		`"tools":[{"name":"get_weather","description":"Current weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]}`
	chatOK = `{"messages":[{"role":"developer","content":"You are terse."},` +
		`{"role":"user","content":[{"type":"text","text":"What is in this image?"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"low"}}]},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc","type":"function","function":{"name":"describe","arguments":"{\"subject\":\"cat\"}"}}]},` +
		`{"role":"tool","tool_call_id":"call_abc","content":"A cat."}],` +
		`"model":"gpt-4o-mini","max_completion_tokens":256,"stream":true,"stream_options":{"include_usage":true}}`
	responsesOK   = `{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_text","text":"Hi"}]}],"max_output_tokens":100}`
	completionsOK = `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7}`
	embeddingsOK  = `{"input":["The food was delicious."],"model":"text-embedding-3-small","encoding_format":"float"}`
)

func TestValidateRequest(t *testing.T) {
	// Each rejected row cites why the provider rejects it too; each has a
	// pass-through twin, the nearest request the provider accepts.
	cases := []struct {
		name  string
		api   API
		body  string
		param string // expected Param; "-" means the request passes
		fail  bool
	}{
		// Real-shaped bodies pass.
		{"anthropic/real", Messages, anthropicOK, "-", false},
		{"chat/real", ChatCompletions, chatOK, "-", false},
		{"responses/real", Responses, responsesOK, "-", false},
		{"completions/real", Completions, completionsOK, "-", false},
		{"embeddings/real", Embeddings, embeddingsOK, "-", false},

		// Body not JSON: both providers answer 400 (Anthropic "There was an
		// error parsing the body"; OpenAI "We could not parse the JSON body").
		{"anthropic/not_json", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[}`, "", true},
		{"anthropic/not_json_twin", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[]}`, "-", false},
		{"chat/not_json_trailing_comma", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],}`, "", true},
		{"chat/not_json_twin", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}`, "-", false},
		{"chat/empty_body", ChatCompletions, ``, "", true},
		{"chat/truncated_string", ChatCompletions, `{"model":"gpt-4o-mi`, "", true},
		{"chat/trailing_garbage", ChatCompletions, `{"model":"gpt-4o-mini","messages":[]} x`, "", true},
		{"chat/trailing_whitespace_twin", ChatCompletions, " \n{\"model\":\"gpt-4o-mini\",\"messages\":[]}\r\n\t", "-", false},

		// Body not an object: both SDKs send an object (MessageNewParams,
		// ChatCompletionNewParams); the APIs reject anything else with 400.
		{"anthropic/array_body", Messages, `[{"role":"user","content":"Hi"}]`, "", true},
		{"embeddings/string_body", Embeddings, `"Hello"`, "", true},

		// model missing: api:"required" in anthropic-sdk-go MessageNewParams
		// and openai-go ChatCompletionNewParams, CompletionNewParams,
		// EmbeddingNewParams.
		{"anthropic/no_model", Messages, `{"max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}`, "model", true},
		{"anthropic/no_model_twin", Messages, `{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}`, "-", false},
		{"chat/no_model", ChatCompletions, `{"messages":[{"role":"user","content":"Hi"}]}`, "model", true},
		{"completions/no_model", Completions, `{"prompt":"Say this is a test"}`, "model", true},
		{"completions/no_model_twin", Completions, `{"prompt":"Say this is a test","model":"gpt-3.5-turbo-instruct"}`, "-", false},
		{"embeddings/no_model", Embeddings, `{"input":"Hello"}`, "model", true},
		{"embeddings/no_model_twin", Embeddings, `{"input":"Hello","model":"text-embedding-3-small"}`, "-", false},
		// Responses: model is optional (a stored prompt can name it).
		{"responses/no_model_prompt", Responses, `{"prompt":{"id":"pmpt_123","version":"2"},"input":"Hi"}`, "-", false},

		// model not a string: every SDK types it as a string.
		{"anthropic/model_number", Messages, `{"model":4,"max_tokens":1024,"messages":[]}`, "model", true},
		{"anthropic/model_number_twin", Messages, `{"model":"4","max_tokens":1024,"messages":[]}`, "-", false},
		{"chat/model_null", ChatCompletions, `{"model":null,"messages":[]}`, "model", true},
		{"responses/model_object", Responses, `{"model":{"id":"gpt-4.1"},"input":"Hi"}`, "model", true},
		{"responses/model_object_twin", Responses, `{"model":"gpt-4.1","input":"Hi"}`, "-", false},

		// messages missing or not an array: api:"required", typed as a list
		// (MessageNewParams.Messages, ChatCompletionNewParams.Messages).
		{"anthropic/no_messages", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024}`, "messages", true},
		{"anthropic/messages_string", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":"Hi"}`, "messages", true},
		{"anthropic/messages_string_twin", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}`, "-", false},
		{"chat/no_messages", ChatCompletions, `{"model":"gpt-4o-mini"}`, "messages", true},
		{"chat/messages_object", ChatCompletions, `{"model":"gpt-4o-mini","messages":{"role":"user","content":"Hi"}}`, "messages", true},
		{"chat/messages_object_twin", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}`, "-", false},

		// OpenAI output caps: optional int64 (param.Opt[int64] in openai-go
		// v3, null when unset); the API answers 400 "Invalid type for
		// 'max_completion_tokens': expected an integer" to anything else.
		{"chat/cap_string", ChatCompletions, `{"model":"gpt-4o-mini","messages":[],"max_completion_tokens":"99999"}`, "max_completion_tokens", true},
		{"chat/cap_string_twin", ChatCompletions, `{"model":"gpt-4o-mini","messages":[],"max_completion_tokens":99999}`, "-", false},
		{"chat/cap_negative", ChatCompletions, `{"model":"gpt-4o-mini","messages":[],"max_completion_tokens":-5}`, "max_completion_tokens", true},
		{"chat/cap_fraction", ChatCompletions, `{"model":"gpt-4o-mini","messages":[],"max_completion_tokens":1.5}`, "max_completion_tokens", true},
		{"chat/cap_fraction_twin", ChatCompletions, `{"model":"gpt-4o-mini","messages":[],"max_completion_tokens":2.0}`, "-", false},
		{"chat/deprecated_cap_bool", ChatCompletions, `{"model":"gpt-4o-mini","messages":[],"max_tokens":true}`, "max_tokens", true},
		{"chat/cap_null_twin", ChatCompletions, `{"model":"gpt-4o-mini","messages":[],"max_tokens":null}`, "-", false},
		{"responses/cap_string", Responses, `{"model":"gpt-4.1","input":"Hi","max_output_tokens":"99999"}`, "max_output_tokens", true},
		{"responses/cap_string_twin", Responses, `{"model":"gpt-4.1","input":"Hi","max_output_tokens":99999}`, "-", false},
		{"completions/cap_object", Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":"Hi","max_tokens":{"n":5}}`, "max_tokens", true},
		// Legacy Completions score a prompt with max_tokens 0 and echo.
		{"completions/cap_zero_twin", Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":"Hi","max_tokens":0,"echo":true}`, "-", false},

		// max_tokens (Anthropic): api:"required" int64; the API answers
		// "max_tokens: Field required" and rejects values below 1.
		{"anthropic/no_max_tokens", Messages, `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Hi"}]}`, "max_tokens", true},
		{"anthropic/max_tokens_zero", Messages, `{"model":"claude-sonnet-4-5","max_tokens":0,"messages":[]}`, "max_tokens", true},
		{"anthropic/max_tokens_negative", Messages, `{"model":"claude-sonnet-4-5","max_tokens":-1,"messages":[]}`, "max_tokens", true},
		{"anthropic/max_tokens_fraction", Messages, `{"model":"claude-sonnet-4-5","max_tokens":0.5,"messages":[]}`, "max_tokens", true},
		{"anthropic/max_tokens_string", Messages, `{"model":"claude-sonnet-4-5","max_tokens":"1024","messages":[]}`, "max_tokens", true},
		{"anthropic/max_tokens_null", Messages, `{"model":"claude-sonnet-4-5","max_tokens":null,"messages":[]}`, "max_tokens", true},
		{"anthropic/max_tokens_one_twin", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}`, "-", false},
		{"anthropic/max_tokens_integral_float_twin", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024.0,"messages":[]}`, "-", false},
		{"anthropic/max_tokens_exponent_twin", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1e3,"messages":[]}`, "-", false},
		// OpenAI chat has no required cap.
		{"chat/no_max_tokens", ChatCompletions, `{"model":"gpt-4o-mini","messages":[]}`, "-", false},

		// Embeddings input missing: EmbeddingNewParams.Input api:"required".
		{"embeddings/no_input", Embeddings, `{"model":"text-embedding-3-small"}`, "input", true},
		{"embeddings/no_input_twin", Embeddings, `{"model":"text-embedding-3-small","input":[[1,2,3]]}`, "-", false},
		// Responses input is optional: previous_response_id or a prompt can
		// supply the conversation.
		{"responses/no_input", Responses, `{"model":"gpt-4.1","previous_response_id":"resp_123"}`, "-", false},
		{"responses/input_string", Responses, `{"model":"gpt-4.1","input":"Hi"}`, "-", false},

		// A content block that is not an object: ContentBlockParamUnion and
		// ChatCompletionContentPartUnionParam are objects.
		{"anthropic/block_string", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":["Hi"]}]}`, "messages.0.content.0", true},
		{"anthropic/block_string_twin", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}`, "-", false},
		{"chat/part_number", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"},{"role":"user","content":[{"type":"text","text":"a"},42]}]}`, "messages.1.content.1", true},
		{"chat/part_number_twin", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"42"}]}]}`, "-", false},

		// A content block without "type": both APIs discriminate blocks by it.
		{"anthropic/block_no_type", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":[{"text":"Hi"}]}]}`, "messages.2.content.0.type", true},
		{"anthropic/block_no_type_twin", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":[{"type":"text","text":"Hi"}]}]}`, "-", false},
		{"chat/part_no_type", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"image_url":{"url":"https://example.com/a.png"}}]}]}`, "messages.0.content.0.type", true},
		{"chat/part_no_type_twin", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}`, "-", false},
		{"anthropic/block_type_number", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":1,"text":"Hi"}]}]}`, "messages.0.content.0.type", true},
		{"anthropic/nested_tool_result_block_not_checked", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"ok"}]}]}]}`, "-", false},

		// What the provider accepts passes: system messages, consecutive
		// or assistant-first turns, new roles, block types and members
		// (https://docs.anthropic.com/en/api/messages).
		{"anthropic/system_role", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}`, "-", false},
		{"anthropic/consecutive_user_turns", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi"},{"role":"user","content":"Still there?"}]}`, "-", false},
		{"anthropic/first_turn_assistant", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"assistant","content":"Hello"}]}`, "-", false},
		{"anthropic/unknown_role", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"narrator","content":"x"}]}`, "-", false},
		{"anthropic/empty_text", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":""},{"role":"user","content":[{"type":"text","text":""}]}]}`, "-", false},
		{"anthropic/new_block_type", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"hologram_2031","data":{}}]}]}`, "-", false},
		{"anthropic/unknown_fields", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi","future":true}],"output_config":{"effort":"max"},"speed":"fast","x_new":[1,{"a":null}]}`, "-", false},
		{"anthropic/thinking_blocks", Messages, `{"model":"claude-sonnet-4-5","max_tokens":2048,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"…","signature":"sig"},{"type":"redacted_thinking","data":"abc"}]}]}`, "-", false},
		{"anthropic/message_not_object", Messages, `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":["Hi"]}`, "-", false},
		{"chat/function_role", ChatCompletions, `{"model":"gpt-4o-mini","messages":[{"role":"function","name":"f","content":"{}"},{"role":"system","content":[{"type":"text","text":"x"}]}]}`, "-", false},
		{"chat/pretty_printed", ChatCompletions, "{\n  \"model\" : \"gpt-4o-mini\",\n  \"messages\" : [\n    { \"role\" : \"user\", \"content\" : [ { \"type\" : \"text\", \"text\" : \"Hi\" } ] }\n  ]\n}\n", "-", false},

		// A repeated key is judged by its last value, as the providers'
		// parsers keep it.
		{"anthropic/duplicate_model_last_good", Messages, `{"model":1,"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[]}`, "-", false},
		{"anthropic/duplicate_model_last_bad", Messages, `{"model":"claude-sonnet-4-5","model":1,"max_tokens":1024,"messages":[]}`, "model", true},
		{"anthropic/duplicate_content_last_good", Messages, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"x"}],"content":"Hi"}]}`, "-", false},
		{"anthropic/duplicate_messages_last_good", Messages, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[1]}],"messages":[]}`, "-", false},
		{"anthropic/duplicate_type_last_good", Messages, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":1,"text":"x","type":"text"}]}]}`, "-", false},
		{"anthropic/escaped_key", Messages, `{"mod\u0065l":"m","max_tokens":1,"messages":[{"role":"user","content":[{"typ\u0065":"text","text":"x"}]}]}`, "-", false},
	}
	// Bodies the gateway does not understand are not judged: it does not
	// guard their API at all, so never validates them.
	if Passthrough.Guarded() {
		t.Error("Passthrough is guarded, so its bodies would be judged")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := validateBody(c.api, []byte(c.body))
			if !c.fail {
				if err != nil {
					t.Fatalf("rejected a request the provider accepts: %v (param %q)", err, err.Param)
				}
				return
			}
			if err == nil {
				t.Fatalf("passed; want a rejection at %q", c.param)
			}
			if err.Param != c.param {
				t.Errorf("Param = %q, want %q (message %q)", err.Param, c.param, err.Message)
			}
			// The message must say where and how to fix it.
			if c.param != "" && !strings.Contains(err.Message, strings.TrimSuffix(c.param, ".type")) {
				t.Errorf("message %q does not name %q", err.Message, c.param)
			}
			if !strings.Contains(err.Message, "for example") && !strings.Contains(err.Message, "such as") {
				t.Errorf("message %q shows no example of the fix", err.Message)
			}
			if err.Error() != err.Message {
				t.Errorf("Error() = %q, want the message", err.Error())
			}
		})
	}
}

// TestValidateRequestDescribesValue checks that messages quote what was sent.
func TestValidateRequestDescribesValue(t *testing.T) {
	for body, want := range map[string]string{
		`{"model":"m","max_tokens":"1024","messages":[]}`: `the string "1024"`,
		`{"model":"m","max_tokens":0,"messages":[]}`:      `the number 0`,
		`{"model":"m","max_tokens":true,"messages":[]}`:   `a boolean (true)`,
		`{"model":["m"],"max_tokens":1,"messages":[]}`:    `an array`,
		`{"model":"m","max_tokens":1,"messages":{}}`:      `an object`,
		`[1]`: `an array`,
	} {
		err := validateBody(Messages, []byte(body))
		if err == nil || !strings.Contains(err.Message, want) {
			t.Errorf("%s: got %v, want a message containing %q", body, err, want)
		}
	}
}

// TestValidateRequestDeepNesting checks that nesting costs no goroutine
// stack: a deep but valid unknown field passes, a deep unclosed one is not
// JSON, and neither crashes.
func TestValidateRequestDeepNesting(t *testing.T) {
	const depth = 1 << 20
	deep := `{"model":"m","max_tokens":1,"messages":[],"x":` + strings.Repeat(`[{"a":`, depth) + `1` +
		strings.Repeat(`}]`, depth) + `}`
	if err := validateBody(Messages, []byte(deep)); err != nil {
		t.Fatalf("deeply nested valid body rejected: %v", err)
	}
	open := strings.Repeat(`[`, depth)
	if err := validateBody(Messages, []byte(open)); err == nil || err.Param != "" {
		t.Fatalf("unclosed nesting: got %v, want not-JSON", err)
	}
}

// validateBody reads b and validates it as a request of api, as the
// gateway does.
func validateBody(api API, b []byte) *body.RequestError {
	r := body.Read(b, api.WalkContent())
	return api.Validate(&r)
}

// TestValidateRequestNoAllocs checks the success path allocates nothing but
// the copy of the model's name.
func TestValidateRequestNoAllocs(t *testing.T) {
	for _, c := range []struct {
		api  API
		body []byte
	}{
		{Messages, sizedMessagesBody(100<<10, false)},
		{Messages, []byte(anthropicOK)},
		{ChatCompletions, []byte(chatOK)},
		{Responses, []byte(responsesOK)},
		{Embeddings, []byte(embeddingsOK)},
	} {
		// The gateway reads into a Request it already holds (the call's),
		// so the Request itself is not counted.
		var r body.Request
		if n := testing.AllocsPerRun(20, func() { r = body.Read(c.body, c.api.WalkContent()); c.api.Validate(&r) }); n > 1 {
			t.Errorf("%v: %v allocations per valid request, want at most 1", c.api.Name(), n)
		}
	}
}

// FuzzValidateRequest checks, for any body and every endpoint, that
// ValidateRequest never panics, calls a body JSON exactly when encoding/json
// does, and rejects exactly what an independent reading of the rules over
// encoding/json's decoding rejects, at the same Param. It also builds an
// Anthropic body from a string model, a positive max_tokens and any JSON
// array of messages, which must never be rejected except for one of its
// content blocks.
func FuzzValidateRequest(f *testing.F) {
	for _, s := range []string{anthropicOK, chatOK, responsesOK, completionsOK, embeddingsOK,
		`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"x"}]}]}`,
		`{"model":1,"model":"m","messages":[{"content":[1],"content":[{"type":"a"}]}]}`,
		`{"mod\u0065l":"m","max_tokens":1e3,"messages":[{"role":"user","content":[{"typ\u0065":1}]}]}`,
		`[[[{"a":[]}]]]`, `-0.0e+1`, `"\ud800"`, "{\"a\":\"\x01\"}", `{"a":tru}`, `{"a":01}`,
	} {
		f.Add([]byte(s), "claude-sonnet-4-5", uint32(1024), []byte(`[{"role":"user","content":"Hi"}]`))
	}
	apis := []API{Messages, ChatCompletions, Responses, Completions, Embeddings}
	f.Fuzz(func(t *testing.T, in []byte, model string, maxTokens uint32, messages []byte) {
		for _, api := range apis {
			got := validateBody(api, in)
			want, wantJSON := validateOracle(api, in)
			if !wantJSON {
				if got == nil || got.Param != "" || !strings.Contains(got.Message, "not valid JSON") {
					t.Fatalf("%v %q: got %v, want not valid JSON", api.Name(), in, got)
				}
				continue
			}
			switch {
			case got == nil && want == "-":
			case got == nil:
				t.Fatalf("%v %q: passed, want rejection at %q", api.Name(), in, want)
			case want == "-":
				t.Fatalf("%v %q: rejected at %q (%s), want pass", api.Name(), in, got.Param, got.Message)
			case got.Param != want:
				t.Fatalf("%v %q: rejected at %q, want %q", api.Name(), in, got.Param, want)
			}
		}

		if !json.Valid(messages) || !bytes.HasPrefix(bytes.TrimLeft(messages, " \t\r\n"), []byte("[")) {
			return
		}
		m, _ := json.Marshal(model)
		built := fmt.Appendf(nil, `{"model":%s,"max_tokens":%d,"messages":%s}`, m, uint64(maxTokens)+1, messages)
		if err := validateBody(Messages, built); err != nil && !strings.Contains(err.Param, ".content.") {
			t.Fatalf("%s: rejected at %q (%s); only a content block may be", built, err.Param, err.Message)
		}
	})
}

// validateOracle applies the validation rules of api to in as encoding/json
// decodes it: it returns the Param of the first rule broken, "-" when none
// is, and whether the body is JSON at all.
func validateOracle(e API, in []byte) (string, bool) {
	if !json.Valid(in) {
		return "", false
	}
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	var doc any
	if d.Decode(&doc) != nil {
		return "", false
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return "", true
	}
	model, hasModel := top["model"]
	if _, isString := model.(string); (!hasModel && e != Responses) || (hasModel && !isString) {
		return "model", true
	}
	if e == Messages || e == ChatCompletions {
		msgs, ok := top["messages"].([]any)
		if !ok {
			return "messages", true
		}
		for i, m := range msgs {
			obj, _ := m.(map[string]any)
			blocks, _ := obj["content"].([]any)
			for j, b := range blocks {
				at := "messages." + strconv.Itoa(i) + ".content." + strconv.Itoa(j)
				blk, ok := b.(map[string]any)
				if !ok {
					return at, true
				}
				if _, ok := blk["type"].(string); !ok {
					return at + ".type", true
				}
			}
		}
	}
	if e == Messages {
		n, ok := top["max_tokens"].(json.Number)
		if !ok {
			return "max_tokens", true
		}
		v, _ := strconv.ParseFloat(string(n), 64)
		if v < 1 || v != math.Trunc(v) {
			return "max_tokens", true
		}
	}
	if _, ok := top["input"]; e == Embeddings && !ok {
		return "input", true
	}
	return "-", true
}

// sizedMessagesBody returns an Anthropic Messages body of about size bytes, with
// the model last (as anthropic-sdk-go orders fields) and prose that carries
// the escapes real prompts have: newlines and the odd quote. With dense, the
// text has an escape every few bytes instead, the worst case for the scan.
func sizedMessagesBody(size int, dense bool) []byte {
	para := `The quarterly report shows revenue grew 12% year over year, driven by strong demand in the ` +
		`enterprise segment. Operating margin improved to 18%, although \"other expenses\" rose because of ` +
		`one-off legal costs.\n\nPlease summarise the key drivers and list any risks the board should watch.\n`
	if dense {
		para = strings.Repeat(`a \"b\"\n`, 30)
	}
	return testbody.Body{Size: size, Filler: para, ModelLast: true, System: "You are helpful.\nBe brief.", Prompt: "Summarise."}.Bytes()
}

// BenchmarkValidateRequest measures validation of Anthropic bodies; compare
// with BenchmarkValidBytes, gjson's syntax check alone on the same bodies.
//
//	go test -run '^$' -bench 'ValidateRequest|ValidBytes' -benchmem ./policy/wire/
func BenchmarkValidateRequest(b *testing.B) {
	for _, c := range []struct {
		name  string
		size  int
		dense bool
	}{{"1KB", 1 << 10, false}, {"100KB", 100 << 10, false}, {"100KB_dense_escapes", 100 << 10, true}} {
		body := sizedMessagesBody(c.size, c.dense)
		b.Run(c.name, func(b *testing.B) {
			if err := validateBody(Messages, body); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				validateBody(Messages, body)
			}
		})
	}
}

func BenchmarkValidBytes(b *testing.B) {
	for _, c := range []struct {
		name  string
		dense bool
	}{{"100KB", false}, {"100KB_dense_escapes", true}} {
		body := sizedMessagesBody(100<<10, c.dense)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				gjson.ValidBytes(body)
			}
		})
	}
}
