package mockprovider

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strings"

	"github.com/tidwall/gjson"
)

// The success wire shapes (https://docs.anthropic.com/en/api/messages;
// openai-go v3 ChatCompletion and responses.Response).
// Streams reuse them for their snapshots, so each shape is written once.

// anthropicMessage is an Anthropic Messages response, and the message of a
// stream's message_start.
type anthropicMessage struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Role         string          `json:"role"`
	Model        string          `json:"model"`
	Content      []anthropicText `json:"content"`
	StopReason   *string         `json:"stop_reason"`
	StopSequence *string         `json:"stop_sequence"`
	Usage        anthropicUsage  `json:"usage"`
}

// anthropicText is a text content block, or a text_delta in a stream.
type anthropicText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// anthropicUsage is Anthropic's token usage.
type anthropicUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// openAIObject is the envelope shared by chat completions, legacy completions
// and their stream chunks; C is the choice type.
type openAIObject[C any] struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []C          `json:"choices"`
	Usage   *openAIUsage `json:"usage"`
}

// chatChoice is a Chat Completions choice: with a message in a response, with
// a delta in a stream chunk.
type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatMessage `json:"message,omitempty"`
	Delta        *chatMessage `json:"delta,omitempty"`
	Logprobs     *struct{}    `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

// chatMessage is an assistant message or a stream delta.
type chatMessage struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

// completionChoice is a legacy Completions choice, in a response or a chunk.
type completionChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// openAIUsage is the Chat Completions and Completions token usage.
type openAIUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// responseObject is a Responses API response object.
type responseObject struct {
	ID                string         `json:"id"`
	Object            string         `json:"object"`
	CreatedAt         int64          `json:"created_at"`
	Status            string         `json:"status"`
	Model             string         `json:"model"`
	Output            []responseItem `json:"output"`
	Usage             *responseUsage `json:"usage"`
	Error             *responseError `json:"error"`
	IncompleteDetails *struct{}      `json:"incomplete_details"`
}

// responseError is the error of a failed Responses API response.
type responseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// responseItem is an output message of the Responses API.
type responseItem struct {
	Type    string         `json:"type"`
	ID      string         `json:"id"`
	Status  string         `json:"status"`
	Role    string         `json:"role"`
	Content []responsePart `json:"content"`
}

// responsePart is an output_text content part.
type responsePart struct {
	Type        string     `json:"type"`
	Text        string     `json:"text"`
	Annotations []struct{} `json:"annotations"`
}

// responseUsage is the Responses API token usage.
type responseUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

// embeddingList is an Embeddings response.
type embeddingList struct {
	Object string      `json:"object"`
	Data   []embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// embedding is one vector: a float array, or base64 of little-endian float32
// values when the request asks for encoding_format base64.
type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

// Values used in the shapes.
var (
	stopEndTurn = "end_turn"
	finishStop  = "stop"
)

// reply returns the non-streamed success body for the endpoint.
func (ex *exchange) reply() any {
	text, out := ex.replyText()
	switch ex.endpoint {
	case endpointMessages:
		return ex.anthropicMessage([]anthropicText{{Type: "text", Text: text}}, &stopEndTurn, out)
	case endpointChat:
		return openAIObject[chatChoice]{
			ID: ex.objectID("chatcmpl-"), Object: "chat.completion", Created: ex.start.Unix(), Model: ex.model,
			Choices: []chatChoice{{Message: &chatMessage{Role: "assistant", Content: text}, FinishReason: &finishStop}},
			Usage:   ex.openAIUsage(out),
		}
	case endpointCompletions:
		return openAIObject[completionChoice]{
			ID: ex.objectID("cmpl-"), Object: "text_completion", Created: ex.start.Unix(), Model: ex.model,
			Choices: []completionChoice{{Text: text, FinishReason: &finishStop}},
			Usage:   ex.openAIUsage(out),
		}
	case endpointResponses:
		return ex.responseObject("completed", []responseItem{ex.responseItem("completed", text)}, out)
	default:
		return ex.embeddingList()
	}
}

// objectID makes a response object id from the request's sequence number.
func (ex *exchange) objectID(prefix string) string {
	return prefix + strings.TrimPrefix(ex.requestID, "req_")
}

// anthropicMessage builds a Messages response with the given content.
func (ex *exchange) anthropicMessage(content []anthropicText, stopReason *string, outputTokens int) anthropicMessage {
	return anthropicMessage{
		ID: ex.objectID("msg_"), Type: "message", Role: "assistant", Model: ex.model,
		Content: content, StopReason: stopReason,
		Usage: anthropicUsage{InputTokens: ex.inputTokens, OutputTokens: outputTokens},
	}
}

// openAIUsage builds the usage of a chat or legacy completion.
func (ex *exchange) openAIUsage(outputTokens int) *openAIUsage {
	return &openAIUsage{PromptTokens: ex.inputTokens, CompletionTokens: outputTokens, TotalTokens: ex.inputTokens + outputTokens}
}

// responseObject builds a Responses API response object; usage is only set
// once the response is completed.
func (ex *exchange) responseObject(status string, output []responseItem, outputTokens int) responseObject {
	r := responseObject{
		ID: ex.objectID("resp_"), Object: "response", CreatedAt: ex.start.Unix(), Status: status, Model: ex.model,
		Output: output,
	}
	if status == "completed" {
		r.Usage = &responseUsage{InputTokens: ex.inputTokens, OutputTokens: outputTokens, TotalTokens: ex.inputTokens + outputTokens}
	}
	return r
}

// responseItem builds the one output message of a Responses API reply.
func (ex *exchange) responseItem(status, text string) responseItem {
	item := responseItem{Type: "message", ID: ex.objectID("msg_"), Status: status, Role: "assistant", Content: []responsePart{}}
	if status == "completed" {
		item.Content = append(item.Content, outputText(text))
	}
	return item
}

// outputText builds an output_text content part.
func outputText(text string) responsePart {
	return responsePart{Type: "output_text", Text: text, Annotations: []struct{}{}}
}

// embeddingDims is the length of every mock embedding vector.
const embeddingDims = 8

// embeddingList builds an Embeddings response with one fixed vector per
// input.
func (ex *exchange) embeddingList() embeddingList {
	input := gjson.GetBytes(ex.body, "input")
	n := 1
	if arr := input.Array(); input.IsArray() && (len(arr) == 0 || arr[0].Type != gjson.Number) {
		n = len(arr) // a list of inputs, not one list of token ids
	}
	vec := make([]float32, embeddingDims)
	for i := range vec {
		vec[i] = float32(i+1) / embeddingDims
	}
	var value any = vec
	if gjson.GetBytes(ex.body, "encoding_format").String() == "base64" {
		raw := make([]byte, 0, 4*embeddingDims)
		for _, f := range vec {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
		}
		value = base64.StdEncoding.EncodeToString(raw)
	}
	list := embeddingList{Object: "list", Data: make([]embedding, n), Model: ex.model}
	for i := range list.Data {
		list.Data[i] = embedding{Object: "embedding", Index: i, Embedding: value}
	}
	list.Usage.PromptTokens = ex.inputTokens
	list.Usage.TotalTokens = ex.inputTokens
	return list
}
