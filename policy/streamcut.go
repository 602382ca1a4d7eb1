package policy

// StreamCut is why the gateway ends a stream that lacks its proper end.
type StreamCut uint8

const (
	// CutIncomplete is a stream the upstream ended, or broke off, before
	// its proper end.
	CutIncomplete StreamCut = iota
	// CutIdle is a stream the upstream left silent for longer than
	// idle_timeout.
	CutIdle
)

// The messages tell a person what happened to the answer.
const (
	streamCutMessage  = "the upstream stream ended before its final event, so this answer is incomplete; send the request again"
	streamIdleMessage = "the upstream sent nothing for longer than the gateway's idle_timeout, so this answer is incomplete; send the request again"
)

// Each event is complete, ends with a blank line, and is written once per
// cut stream, so they are prepared here rather than per request.
var streamCuts = [...][3][]byte{
	CutIncomplete: streamCutEvents(streamCutMessage, "api_error", "server_error", "stream_incomplete"),
	CutIdle:       streamCutEvents(streamIdleMessage, "timeout_error", "server_error", "timeout"),
}

// streamCutEvents builds the in-band error event of each API: Anthropic,
// Chat Completions and Responses, in that order.
func streamCutEvents(message, anthropicType, openAIType, openAICode string) [3][]byte {
	return [3][]byte{
		// Anthropic streams fail in every SDK on `event: error`; the Go
		// SDK drops events that have no `event:` line.
		[]byte(`event: error` + "\n" + `data: {"type":"error","error":{"type":"` + anthropicType + `","message":"` + message + `"}}` + "\n\n"),
		// OpenAI SDKs fail a stream on any data payload with an "error"
		// key (openai-go packages/ssestream). Chat streams carry it as
		// plain data.
		[]byte(`data: {"error":{"message":"` + message + `","type":"` + openAIType + `","param":null,"code":"` + openAICode + `"}}` + "\n\n"),
		// Responses streams name their events; this one has the documented
		// error-event fields and, so that every SDK raises it, an "error"
		// object.
		[]byte(`event: error` + "\n" + `data: {"type":"error","code":"` + openAICode + `","message":"` + message + `","param":null,"error":{"type":"` + openAIType + `","code":"` + openAICode + `","message":"` + message + `"}}` + "\n\n"),
	}
}

// StreamCutEvent returns the in-band error event the gateway appends when an
// upstream stream stops before its proper end, so that the client never
// takes a cut answer for a complete one.
func StreamCutEvent(d Dialect, e Endpoint, why StreamCut) []byte {
	return streamCuts[why][streamAPIFor(d, e).cutIndex()]
}
