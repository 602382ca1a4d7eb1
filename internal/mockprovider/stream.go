package mockprovider

import (
	"strings"

	"github.com/tidwall/gjson"
)

// streamer returns the event sequence for the request's endpoint.
func (ex *exchange) streamer() streamer {
	includeUsage := gjson.GetBytes(ex.body, "stream_options.include_usage").Bool()
	switch ex.endpoint {
	case endpointMessages:
		return anthropicStream{ex}
	case endpointResponses:
		return &responsesStream{ex: ex}
	case endpointCompletions:
		return openAIStream[completionChoice]{ex: ex, idPrefix: "cmpl-", object: "text_completion", includeUsage: includeUsage,
			choice: func(_ bool, text string, finish *string) completionChoice {
				return completionChoice{Text: text, FinishReason: finish}
			}}
	default:
		return openAIStream[chatChoice]{ex: ex, idPrefix: "chatcmpl-", object: "chat.completion.chunk", includeUsage: includeUsage,
			choice: func(first bool, text string, finish *string) chatChoice {
				d := &chatMessage{Content: text}
				if first {
					d.Role = "assistant"
				}
				return chatChoice{Delta: d, FinishReason: finish}
			}}
	}
}

// Anthropic stream events
// (https://docs.anthropic.com/en/docs/build-with-claude/streaming). Every
// event has an `event:` line equal to its type: anthropic-sdk-go's decoder
// drops events without one.

// anthropicStart is message_start.
type anthropicStart struct {
	Type    string           `json:"type"`
	Message anthropicMessage `json:"message"`
}

// anthropicBlock is content_block_start, content_block_delta or
// content_block_stop.
type anthropicBlock struct {
	Type         string         `json:"type"`
	Index        int            `json:"index"`
	ContentBlock *anthropicText `json:"content_block,omitempty"`
	Delta        *anthropicText `json:"delta,omitempty"`
}

// anthropicMessageDelta is message_delta, whose usage is cumulative.
type anthropicMessageDelta struct {
	Type  string `json:"type"`
	Delta struct {
		StopReason   *string `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
	} `json:"delta"`
	Usage struct {
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

// typeOnly is an event with nothing but its type: ping, message_stop.
type typeOnly struct {
	Type string `json:"type"`
}

// anthropicStream is the Messages stream: one text block.
type anthropicStream struct{ ex *exchange }

func (a anthropicStream) open(s *sse) error {
	start := anthropicStart{Type: "message_start", Message: a.ex.anthropicMessage([]anthropicText{}, nil, 1)}
	if err := s.send(start.Type, start); err != nil {
		return err
	}
	block := anthropicBlock{Type: "content_block_start", ContentBlock: &anthropicText{Type: "text"}}
	if err := s.send(block.Type, block); err != nil {
		return err
	}
	return s.send("ping", typeOnly{Type: "ping"})
}

func (a anthropicStream) delta(s *sse, text string) error {
	return s.send("content_block_delta", anthropicBlock{Type: "content_block_delta", Delta: &anthropicText{Type: "text_delta", Text: text}})
}

func (a anthropicStream) close(s *sse, deltas int) error {
	if err := s.send("content_block_stop", anthropicBlock{Type: "content_block_stop"}); err != nil {
		return err
	}
	md := anthropicMessageDelta{Type: "message_delta"}
	md.Delta.StopReason = &stopEndTurn
	md.Usage.OutputTokens = deltas
	if err := s.send(md.Type, md); err != nil {
		return err
	}
	return s.send("message_stop", typeOnly{Type: "message_stop"})
}

// openAIStream is a Chat Completions or legacy Completions stream: data-only
// chunks, a chunk with the finish reason, the usage chunk (empty choices)
// when the request set stream_options.include_usage, then `data: [DONE]`
// (https://platform.openai.com/docs/guides/streaming-responses?api-mode=chat).
type openAIStream[C any] struct {
	ex           *exchange
	idPrefix     string
	object       string
	includeUsage bool
	// choice builds the chunk's choice; first marks the first delta.
	choice func(first bool, text string, finish *string) C
}

// chunk builds a stream chunk around the given choices and usage.
func (o openAIStream[C]) chunk(choices []C, usage *openAIUsage) openAIObject[C] {
	return openAIObject[C]{ID: o.ex.objectID(o.idPrefix), Object: o.object, Created: o.ex.start.Unix(), Model: o.ex.model,
		Choices: choices, Usage: usage}
}

func (o openAIStream[C]) open(*sse) error { return nil }

func (o openAIStream[C]) delta(s *sse, text string) error {
	// open writes nothing, so the first delta is the first event.
	return s.send("", o.chunk([]C{o.choice(s.sent == 0, text, nil)}, nil))
}

func (o openAIStream[C]) close(s *sse, deltas int) error {
	if err := s.send("", o.chunk([]C{o.choice(false, "", &finishStop)}, nil)); err != nil {
		return err
	}
	if o.includeUsage {
		if err := s.send("", o.chunk([]C{}, o.ex.openAIUsage(deltas))); err != nil {
			return err
		}
	}
	return s.done()
}

// Responses API stream events
// (https://platform.openai.com/docs/guides/streaming-responses). Every
// event has an `event:` line equal to its type and a sequence number.

// responseLifecycleEvent is response.created, response.in_progress or
// response.completed.
type responseLifecycleEvent struct {
	Type           string         `json:"type"`
	SequenceNumber int            `json:"sequence_number"`
	Response       responseObject `json:"response"`
}

// responseItemEvent is response.output_item.added or .done.
type responseItemEvent struct {
	Type           string       `json:"type"`
	SequenceNumber int          `json:"sequence_number"`
	OutputIndex    int          `json:"output_index"`
	Item           responseItem `json:"item"`
}

// responsePartEvent is response.content_part.added or .done.
type responsePartEvent struct {
	Type           string       `json:"type"`
	SequenceNumber int          `json:"sequence_number"`
	ItemID         string       `json:"item_id"`
	OutputIndex    int          `json:"output_index"`
	ContentIndex   int          `json:"content_index"`
	Part           responsePart `json:"part"`
}

// responseTextEvent is response.output_text.delta (with delta) or
// response.output_text.done (with text).
type responseTextEvent struct {
	Type           string     `json:"type"`
	SequenceNumber int        `json:"sequence_number"`
	ItemID         string     `json:"item_id"`
	OutputIndex    int        `json:"output_index"`
	ContentIndex   int        `json:"content_index"`
	Delta          *string    `json:"delta,omitempty"`
	Text           *string    `json:"text,omitempty"`
	Logprobs       []struct{} `json:"logprobs"`
}

// responsesStream is the Responses API stream of one output message. It keeps
// the text sent so far for the closing snapshots.
type responsesStream struct {
	ex   *exchange
	text strings.Builder
}

func (r *responsesStream) open(s *sse) error {
	for _, typ := range [...]string{"response.created", "response.in_progress"} {
		ev := responseLifecycleEvent{Type: typ, SequenceNumber: s.sent, Response: r.ex.responseObject("in_progress", []responseItem{}, 0)}
		if err := s.send(typ, ev); err != nil {
			return err
		}
	}
	if err := r.item(s, "response.output_item.added", "in_progress"); err != nil {
		return err
	}
	return r.part(s, "response.content_part.added", "")
}

func (r *responsesStream) delta(s *sse, text string) error {
	r.text.WriteString(text)
	return r.textEvent(s, responseTextEvent{Type: "response.output_text.delta", Delta: &text})
}

func (r *responsesStream) close(s *sse, deltas int) error {
	text := r.text.String()
	if err := r.textEvent(s, responseTextEvent{Type: "response.output_text.done", Text: &text}); err != nil {
		return err
	}
	if err := r.part(s, "response.content_part.done", text); err != nil {
		return err
	}
	if err := r.item(s, "response.output_item.done", "completed"); err != nil {
		return err
	}
	done := responseLifecycleEvent{Type: "response.completed", SequenceNumber: s.sent,
		Response: r.ex.responseObject("completed", []responseItem{r.ex.responseItem("completed", text)}, deltas)}
	return s.send(done.Type, done)
}

// item writes an output_item event for the message in the given status.
func (r *responsesStream) item(s *sse, typ, status string) error {
	return s.send(typ, responseItemEvent{Type: typ, SequenceNumber: s.sent, Item: r.ex.responseItem(status, r.text.String())})
}

// part writes a content_part event with the given text.
func (r *responsesStream) part(s *sse, typ, text string) error {
	return s.send(typ, responsePartEvent{Type: typ, SequenceNumber: s.sent, ItemID: r.ex.objectID("msg_"), Part: outputText(text)})
}

// textEvent numbers and writes an output_text event.
func (r *responsesStream) textEvent(s *sse, ev responseTextEvent) error {
	ev.SequenceNumber = s.sent
	ev.ItemID = r.ex.objectID("msg_")
	ev.Logprobs = []struct{}{}
	return s.send(ev.Type, ev)
}

// inbandMessage is the message of a scripted in-band error.
func inbandMessage(errType string) string {
	if errType == "overloaded_error" {
		return "Overloaded"
	}
	return "The mock provider's script sent an in-band " + errType + "."
}

// anthropicStreamError is Anthropic's in-band `event: error`, in the shape
// of an error response.
type anthropicStreamError struct {
	Type  string             `json:"type"`
	Error anthropicErrorInfo `json:"error"`
}

func (a anthropicStream) inband(s *sse, errType string) error {
	return s.send("error", anthropicStreamError{Type: "error", Error: anthropicErrorInfo{Type: errType, Message: inbandMessage(errType)}})
}

// A chat or completions stream reports an error as a data-only chunk with
// an error object.
func (o openAIStream[C]) inband(s *sse, errType string) error {
	return s.send("", openAIError{Error: openAIErrorInfo{Message: inbandMessage(errType), Type: errType}})
}

// responseErrorEvent is the Responses API's `error` event.
type responseErrorEvent struct {
	Type           string  `json:"type"`
	Code           string  `json:"code"`
	Message        string  `json:"message"`
	Param          *string `json:"param"`
	SequenceNumber int     `json:"sequence_number"`
}

func (r *responsesStream) inband(s *sse, code string) error {
	return s.send("error", responseErrorEvent{Type: "error", Code: code, Message: inbandMessage(code), SequenceNumber: s.sent})
}

// fail ends the stream with response.failed, the final response carrying
// the error with the given code.
func (r *responsesStream) fail(s *sse, code string, deltas int) error {
	resp := r.ex.responseObject("failed", []responseItem{}, deltas)
	resp.Error = &responseError{Code: code, Message: inbandMessage(code)}
	ev := responseLifecycleEvent{Type: "response.failed", SequenceNumber: s.sent, Response: resp}
	return s.send(ev.Type, ev)
}
