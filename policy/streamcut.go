package policy

// streamCutMessage tells a person what happened when an upstream stream
// ends without its terminal event.
const streamCutMessage = "the upstream stream ended before its final event, so this answer is incomplete; send the request again"

// Each event is complete, ends with a blank line, and is written once per
// cut stream, so they are prepared here rather than per request.
var (
	// Anthropic streams fail in every SDK on `event: error` (reference
	// §1.6); the Go SDK drops events that have no `event:` line.
	anthropicStreamCut = []byte("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"" + streamCutMessage + "\"}}\n\n")
	// OpenAI SDKs fail a stream on any data payload with an "error" key
	// (openai-go packages/ssestream). Chat streams carry it as plain data.
	openAIChatStreamCut = []byte("data: {\"error\":{\"message\":\"" + streamCutMessage + "\",\"type\":\"server_error\",\"param\":null,\"code\":\"stream_incomplete\"}}\n\n")
	// Responses streams name their events; this one has the documented
	// error-event fields and, so that every SDK raises it, an "error" object.
	openAIResponsesStreamCut = []byte("event: error\ndata: {\"type\":\"error\",\"code\":\"stream_incomplete\",\"message\":\"" + streamCutMessage + "\",\"param\":null,\"error\":{\"type\":\"server_error\",\"code\":\"stream_incomplete\",\"message\":\"" + streamCutMessage + "\"}}\n\n")
)

// StreamCutEvent returns the in-band error event the gateway appends when an
// upstream stream breaks before its proper end, so that the client never
// takes a cut answer for a complete one (SPEC "Streaming").
func StreamCutEvent(d Dialect, e Endpoint) []byte {
	switch {
	case d == Anthropic:
		return anthropicStreamCut
	case e == Responses:
		return openAIResponsesStreamCut
	default:
		return openAIChatStreamCut
	}
}
