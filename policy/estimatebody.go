package policy

// Fixed costs, in tokens, for what the estimator cannot read as text.
const (
	// requestOverheadTokens primes the reply: OpenAI's token-counting
	// cookbook adds 3 tokens per request ("every reply is primed with
	// <|start|>assistant<|message|>").
	requestOverheadTokens = 3
	// messageOverheadTokens frames each message or input item: the role and
	// separators. The cookbook counts 3 for gpt-4o-era chat models; 4
	// leaves room for Anthropic's framing, which is not published.
	messageOverheadTokens = 4
	// imageBlockTokens is one image. Anthropic: tokens ≈ width×height/750,
	// and larger images are scaled down to about 1.15 megapixels, so about
	// 1,600 tokens is the most one image costs (docs: "Vision", "Evaluate
	// image size"). OpenAI high-detail images cost at most 85 + 170×tiles,
	// 1,105 tokens for the largest tiling, which the same bound covers.
	imageBlockTokens = 1600
	// documentBlockTokens is one PDF, file or audio block whose text the
	// gateway cannot read without decoding it. Anthropic counts 1,500–3,000
	// tokens of text per PDF page plus the page image (docs: "PDF support",
	// "Estimate your costs"); one page's upper bound is charged, so a
	// multi-page document is undercounted and left to the provider to judge.
	documentBlockTokens = 3000
	// anthropicToolsTokens is the system prompt Anthropic adds when a
	// request defines tools: 346 tokens for tool_choice auto or none on the
	// Claude 4 models (docs: "Tool use with Claude", "Pricing").
	anthropicToolsTokens = 346
)

// maxContentDepth bounds how deep the estimator follows nested content
// (message → tool_result → content → block). Real requests nest four
// levels; anything deeper is counted as raw JSON instead of recursed into,
// so a hostile body cannot make the walk recurse without bound.
const maxContentDepth = 8

// EstimateInputTokens estimates the input tokens of a request body in the
// given dialect and endpoint: the text the model will read (system prompt,
// instructions, every message or input item, tool results and tool calls),
// the tool definitions and output schemas as raw JSON, a fixed cost per
// image or document, and a small framing cost per message
// (reference: provider-semantics.md §1.2, §2.2, §2.5). Fields the model does
// not read (ids, signatures, base64 data, cache_control) are skipped. It
// walks the JSON once without unmarshalling or allocating. A body that is
// not a JSON object, or an endpoint the gateway does not know, estimates to
// 0.
//
// The estimate is a sum of independent parts, one per message, so dropping
// a message lowers it by exactly messageTokens of that message: Truncate
// relies on this.
func EstimateInputTokens(d Dialect, e Endpoint, body []byte) int64 {
	if e == EndpointOther {
		return 0
	}
	it, ok := iterJSON(bytesView(body))
	if !ok || !it.obj {
		return 0
	}
	total := int64(requestOverheadTokens)
	for {
		key, val, _, ok := it.next()
		if !ok {
			return total
		}
		total += fieldTokens(d, e, key, val)
	}
}

// conversationField names the top-level array of turns that the context
// guard may shorten: `messages` for Anthropic Messages and Chat Completions,
// `input` (when it is a list of items) for the Responses API (reference
// §1.2, §2.2, §2.5). Other endpoints have none.
func conversationField(e Endpoint) string {
	switch e {
	case Messages, ChatCompletions:
		return "messages"
	case Responses:
		return "input"
	}
	return ""
}

// fieldTokens estimates one top-level member of a request body.
func fieldTokens(d Dialect, e Endpoint, key, val string) int64 {
	if key == conversationField(e) && len(val) > 0 && val[0] == '[' {
		return conversationTokens(val)
	}
	switch e {
	case Messages:
		switch key {
		case "system":
			return ceilTokens(contentUnits(val, 0))
		case "tools":
			n := ceilTokens(rawUnits(val))
			if d == Anthropic && nonEmptyArray(val) {
				n += anthropicToolsTokens
			}
			return n
		case "output_config": // carries the structured-output schema
			return ceilTokens(rawUnits(val))
		}
	case ChatCompletions:
		switch key {
		case "tools", "functions", "response_format":
			return ceilTokens(rawUnits(val))
		}
	case Responses:
		switch key {
		case "instructions", "input": // input as a plain string
			return ceilTokens(contentUnits(val, 0))
		case "tools", "text": // text.format carries the output schema
			return ceilTokens(rawUnits(val))
		}
	case Completions:
		switch key {
		case "prompt", "suffix":
			return ceilTokens(contentUnits(val, 0))
		}
	case Embeddings:
		if key == "input" {
			return ceilTokens(contentUnits(val, 0))
		}
	}
	return 0
}

// conversationTokens estimates a JSON array of messages or input items.
func conversationTokens(arr string) int64 {
	it, ok := iterJSON(arr)
	if !ok {
		return 0
	}
	var total int64
	for {
		_, msg, _, ok := it.next()
		if !ok {
			return total
		}
		total += messageTokens(msg)
	}
}

// messageTokens estimates one message (Anthropic, Chat Completions) or input
// item (Responses API) given as raw JSON, including its framing overhead.
// EstimateInputTokens is the sum of this over the conversation plus the
// rest of the request.
func messageTokens(msg string) int64 {
	return messageOverheadTokens + ceilTokens(contentUnits(msg, 0))
}

// contentUnits estimates any content value: a string is text, an array is
// its elements, an object is a content block (or a whole message, which has
// the same shape: a role beside content), a number is one token (token ids
// in legacy prompts and embeddings input), and other literals are nothing.
func contentUnits(val string, depth int) units {
	if val == "" {
		return 0
	}
	if depth > maxContentDepth {
		return rawUnits(val)
	}
	switch c := val[0]; {
	case c == '"':
		s, _ := rawString(val)
		return countText(s, true)
	case c == '[':
		it, _ := iterJSON(val)
		var acc units
		for {
			_, el, _, ok := it.next()
			if !ok {
				return acc
			}
			acc += contentUnits(el, depth+1)
		}
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
// base64 data (reference §1.2 lists the block types).
func blockUnits(obj string, depth int) units {
	it, ok := iterJSON(obj)
	if !ok {
		return 0
	}
	var acc, media units
	var textSource bool
	for {
		key, val, _, ok := it.next()
		if !ok {
			break
		}
		switch key {
		case "type":
			switch t, _ := rawString(val); t {
			case "image", "image_url", "input_image":
				media = imageBlockTokens * unitsPerToken
			case "document", "file", "input_file", "input_audio":
				media = documentBlockTokens * unitsPerToken
			}
		case "text", "thinking", "refusal", "name", "title", "arguments":
			if s, ok := rawString(val); ok {
				acc += countText(s, true)
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
	}
	if textSource {
		media = 0
	}
	return acc + media
}

// textSourceUnits estimates an Anthropic document source that carries text
// rather than a file: {"type":"text","data":"..."} or
// {"type":"content","content":[...]}. ok is false for base64, URL and file
// sources, which get the fixed document cost.
func textSourceUnits(src string, depth int) (units, bool) {
	it, ok := iterJSON(src)
	if !ok || !it.obj {
		return 0, false
	}
	var kind string
	var data, content string
	for {
		key, val, _, ok := it.next()
		if !ok {
			break
		}
		switch key {
		case "type":
			kind, _ = rawString(val)
		case "data":
			data = val
		case "content":
			content = val
		}
	}
	switch kind {
	case "text":
		s, _ := rawString(data)
		return countText(s, true), true
	case "content":
		return contentUnits(content, depth), true
	}
	return 0, false
}

// rawUnits estimates raw JSON (tool schemas, tool inputs) by reading it as
// text, escapes decoded: the provider shows the model a rendering of the
// same structure, and raw JSON is the conservative size of it.
func rawUnits(raw string) units {
	return countText(raw, true)
}

// nonEmptyArray reports whether raw is a JSON array with an element.
func nonEmptyArray(raw string) bool {
	it, ok := iterJSON(raw)
	if !ok || it.obj {
		return false
	}
	_, _, _, ok = it.next()
	return ok
}
