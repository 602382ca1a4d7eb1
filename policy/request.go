package policy

import (
	"fmt"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Request is what the gateway reads from a request body before the first
// attempt.
type Request struct {
	// Model is the body's top-level "model" string, or empty.
	Model string
}

// ReadRequest reads the fields the gateway needs from a JSON request body,
// walking the top level only until it finds them: the SDKs put "model" near
// the start, so a long conversation after it is not scanned. A body that is
// not a JSON object yields the zero Request: such a request is still
// proxied (or refused by validation), only without fallback.
func ReadRequest(body []byte) Request {
	var req Request
	// The body stays alive for the whole call; the view avoids copying a
	// large body into a string just to scan it.
	doc := gjson.Parse(bytesView(body))
	if !doc.IsObject() {
		return req
	}
	doc.ForEach(func(key, value gjson.Result) bool {
		if key.Str != "model" {
			return true
		}
		if value.Type == gjson.String {
			req.Model = string([]byte(value.Str)) // copy: the body buffer is pooled
		}
		return false
	})
	return req
}

// RewriteModel returns body with its top-level "model" value replaced by
// model. Every other byte is kept as it was: fallback must not change what
// the client asked for beyond the model (SPEC "fallback").
func RewriteModel(body []byte, model string) ([]byte, error) {
	out, err := sjson.SetBytes(body, "model", model)
	if err != nil {
		return nil, fmt.Errorf("rewriting model to %q: %w", model, err)
	}
	return out, nil
}

// bytesView returns a string sharing b's memory. The caller must not change
// b while the string, or anything sliced from it, is in use.
func bytesView(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// RequestStreamUsage makes an OpenAI Chat Completions stream request ask for
// the final usage chunk (`stream_options.include_usage`), which the gateway
// needs to settle token limits to real usage. It reports whether it changed
// the body: only then is the extra chunk the client's to lose, and the
// gateway strips it again (reference §7.6).
func RequestStreamUsage(body []byte) ([]byte, bool) {
	r := gjson.GetManyBytes(body, "stream", "stream_options.include_usage")
	if r[0].Type != gjson.True || r[1].Type == gjson.True {
		return body, false
	}
	out, err := sjson.SetBytes(body, "stream_options.include_usage", true)
	if err != nil {
		return body, false
	}
	return out, true
}
