package tokens

import (
	"unsafe"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
)

// Fixed costs, in tokens, for what the estimator cannot read as text.
const (
	// RequestOverhead primes the reply: OpenAI's token-counting cookbook
	// adds 3 tokens per request ("every reply is primed with
	// <|start|>assistant<|message|>",
	// https://cookbook.openai.com/examples/how_to_count_tokens_with_tiktoken).
	RequestOverhead = 3
	// messageOverhead frames each message or input item: the role and
	// separators. The cookbook counts 3 for gpt-4o-era chat models; 4 leaves
	// room for Anthropic's framing, which is not published.
	messageOverhead = 4
	// imageBlockTokens is one image. Anthropic: tokens ≈ width×height/750,
	// and larger images are scaled down to about 1.15 megapixels, so about
	// 1,600 tokens is the most one image costs
	// (https://docs.anthropic.com/en/docs/build-with-claude/vision). OpenAI
	// high-detail images cost at most 85 + 170×tiles, 1,105 tokens for the
	// largest tiling, which the same bound covers.
	imageBlockTokens = 1600
	// documentBlockTokens is one PDF, file or audio block whose text the
	// gateway cannot read without decoding it. Anthropic counts 1,500–3,000
	// tokens of text per PDF page plus the page image
	// (https://docs.anthropic.com/en/docs/build-with-claude/pdf-support);
	// one page's upper bound is charged, so a multi-page document is
	// undercounted and left to the provider to judge.
	documentBlockTokens = 3000
)

// maxContentDepth bounds how deep the estimator follows nested content
// (message → tool_result → content → block). Real requests nest four
// levels; anything deeper is counted as raw JSON instead of recursed into,
// so a hostile body cannot make the walk recurse without bound.
const maxContentDepth = 8

// Conversation estimates a JSON array of messages (Anthropic Messages, Chat
// Completions) or input items (Responses): the sum of Message over its
// elements, or 0 when raw is not an array.
//
// The estimate is a sum of independent parts, one per message, so dropping
// a message lowers it by exactly Message of that message: truncation relies
// on this.
func Conversation(raw []byte) int64 {
	var total int64
	body.Elements(raw, func(msg []byte) bool {
		total += Message(msg)
		return true
	})
	return total
}

// Message estimates one message or input item given as raw JSON, including
// its framing overhead.
func Message(msg []byte) int64 {
	return messageOverhead + ceilTokens(contentUnits(msg, 0))
}

// Content estimates any content value: a string is text, an array its
// elements, an object a content block (or a whole message, which has the
// same shape: a role beside content), a number one token (token ids in
// legacy prompts and embeddings input), other literals nothing. Absent
// (nil) content is 0.
func Content(raw []byte) int64 { return ceilTokens(contentUnits(raw, 0)) }

// JSON estimates raw JSON (tool schemas, tool inputs, output schemas) by
// reading it as text, escapes decoded: the provider shows the model a
// rendering of the same structure, and raw JSON is the conservative size
// of it. Absent (nil) JSON is 0.
func JSON(raw []byte) int64 { return ceilTokens(rawUnits(raw)) }

// contentUnits is Content in units, depth levels down.
func contentUnits(val []byte, depth int) units {
	if len(val) == 0 {
		return 0
	}
	if depth > maxContentDepth {
		return rawUnits(val)
	}
	switch c := val[0]; {
	case c == '"':
		s, _ := body.Contents(val)
		return countText(view(s), true)
	case c == '[':
		var acc units
		body.Elements(val, func(el []byte) bool {
			acc += contentUnits(el, depth+1)
			return true
		})
		return acc
	case c == '{':
		return blockUnits(val, depth+1)
	case c == '-' || (c >= '0' && c <= '9'):
		return unitsPerToken
	}
	return 0
}

// blockUnits estimates one content block, message or input item. It counts
// the fields a model reads: text in `text`, `thinking`, `refusal`, `name`,
// `title` and `arguments` (the JSON arguments of a function call, as text);
// nested content in `content`, `output` (function_call_output) and `summary`
// (reasoning); tool input and tool calls as raw JSON; and a text document's
// source. Images and other binary blocks get a fixed cost instead of their
// base64 data.
func blockUnits(obj []byte, depth int) units {
	var acc, media units
	var textSource bool
	body.Members(obj, func(key string, val []byte) bool {
		switch key {
		case "type":
			switch t, _ := body.Contents(val); string(t) {
			case "image", "image_url", "input_image":
				media = imageBlockTokens * unitsPerToken
			case "document", "file", "input_file", "input_audio":
				media = documentBlockTokens * unitsPerToken
			}
		case "text", "thinking", "refusal", "name", "title", "arguments":
			if s, ok := body.Contents(val); ok {
				acc += countText(view(s), true)
			}
		case "content", "output", "summary":
			acc += contentUnits(val, depth)
		case "input": // tool_use input: an object, read as JSON
			if val[0] == '"' {
				acc += contentUnits(val, depth)
			} else {
				acc += rawUnits(val)
			}
		case "tool_calls", "function_call":
			acc += rawUnits(val)
		case "source": // a document whose text is inline
			if u, ok := textSourceUnits(val, depth); ok {
				acc += u
				textSource = true
			}
		}
		return true
	})
	if textSource {
		media = 0
	}
	return acc + media
}

// textSourceUnits estimates an Anthropic document source that carries text
// rather than a file: {"type":"text","data":"..."} or
// {"type":"content","content":[...]}. ok is false for base64, URL and file
// sources, which get the fixed document cost.
func textSourceUnits(src []byte, depth int) (units, bool) {
	var kind, data, content []byte
	body.Members(src, func(key string, val []byte) bool {
		switch key {
		case "type":
			kind, _ = body.Contents(val)
		case "data":
			data = val
		case "content":
			content = val
		}
		return true
	})
	switch string(kind) {
	case "text":
		s, _ := body.Contents(data)
		return countText(view(s), true), true
	case "content":
		return contentUnits(content, depth), true
	}
	return 0, false
}

// rawUnits is JSON in units.
func rawUnits(raw []byte) units {
	return countText(view(raw), true)
}

// NonEmptyArray reports whether raw is a JSON array with an element.
func NonEmptyArray(raw []byte) bool {
	found := false
	body.Elements(raw, func([]byte) bool {
		found = true
		return false
	})
	return found
}

// view returns a string sharing b's memory, for the text counter; b must
// not change while the string is in use.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
