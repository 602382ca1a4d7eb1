package testbody

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestShortBodies pins the bytes of short bodies: the integration tests
// compute offsets and sizes from them.
func TestShortBodies(t *testing.T) {
	for _, c := range []struct {
		b    Body
		want string
	}{
		{Body{Model: "claude-haiku-4-5", MaxTokens: 256, Prompt: "Hi."},
			`{"model":"claude-haiku-4-5","max_tokens":256,"stream":false,"messages":[{"role":"user","content":"Hi."}]}`},
		{Body{API: Chat, Model: "gpt-4o-mini", Stream: true, Prompt: "Hi."},
			`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi."}]}`},
		{Body{API: Chat, Stream: true, IncludeUsage: true, MaxTokens: 9, System: "Be <brief>.", Prompt: "Hi."},
			`{"model":"gpt-4o","max_completion_tokens":9,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"Be <brief>."},{"role":"user","content":"Hi."}]}`},
		{Body{API: Responses, Model: "gpt-5", Stream: true, Prompt: "Hi."},
			`{"model":"gpt-5","stream":true,"input":"Hi."}`},
		{Body{API: Responses, MaxTokens: 5, System: "Be brief.\n", ModelLast: true},
			`{"instructions":"Be brief.\n","input":"Summarise the above.","model":"gpt-4o","max_output_tokens":5,"stream":false}`},
	} {
		if got := c.b.String(); got != c.want {
			t.Errorf("%+v:\n got %s\nwant %s", c.b, got, c.want)
		}
	}
}

// TestSizedBodies checks that padded bodies of every API are valid JSON of
// the requested shape, at most the requested size and within one turn of
// it, with the members the gateway reads where they were asked to be.
func TestSizedBodies(t *testing.T) {
	for _, api := range []API{Messages, Chat, Responses} {
		for _, size := range []int{0, 200, 1 << 10, 100 << 10} {
			for _, last := range []bool{false, true} {
				for _, filler := range []string{"", `a \"quoted\" line\n`} {
					b := Body{API: api, Size: size, Stream: true, System: "You are a helpful assistant.", ModelLast: last, Filler: filler}
					name := fmt.Sprintf("api %d size %d last %v filler %q", api, size, last, filler)
					raw := b.Bytes()
					var doc map[string]any
					if err := json.Unmarshal(raw, &doc); err != nil {
						t.Fatalf("%s: not JSON: %v\n%s", name, err, raw)
					}
					if len(raw) > max(size, len(Body{API: api, System: b.System, Stream: true}.Bytes())) {
						t.Errorf("%s: %d bytes, over the size", name, len(raw))
					}
					if size >= 1<<10 && len(raw) < size-2*maxTurnText {
						t.Errorf("%s: %d bytes, far below the size", name, len(raw))
					}
					if doc["stream"] != true || doc["model"] == nil {
						t.Errorf("%s: stream %v model %v", name, doc["stream"], doc["model"])
					}
					first := raw[2:7]
					if (string(first) == "model") == last {
						t.Errorf("%s: starts with %q", name, raw[:12])
					}
					turns := doc["messages"]
					if api == Responses {
						turns = doc["input"]
					}
					if list, ok := turns.([]any); size >= 1<<10 && (!ok || len(list) < 3) {
						t.Errorf("%s: turns %T %d", name, turns, len(list))
					}
				}
			}
		}
	}
}
