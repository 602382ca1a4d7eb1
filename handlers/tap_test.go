package handlers

import (
	"net/http"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

const anthropicStream = "event: message_start\n" +
	"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n" +
	"event: content_block_delta\n" +
	"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
	"event: message_delta\n" +
	"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
	"event: message_stop\n" +
	"data: {\"type\":\"message_stop\"}\n\n"

// TestTapFollowsStreamsAtEverySplit checks usage, stop reason and the
// terminal event for every way of splitting a stream into two writes, with
// \n, \r\n and \r line ends.
func TestTapFollowsStreamsAtEverySplit(t *testing.T) {
	h := http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}
	for name, stream := range map[string]string{"lf": anthropicStream, "crlf": crlf(anthropicStream), "cr": cr(anthropicStream)} {
		for i := 0; i <= len(stream); i++ {
			tap := responseTap{dialect: policy.Anthropic, endpoint: policy.Messages}
			tap.start(200, h)
			tap.write([]byte(stream[:i]))
			tap.write([]byte(stream[i:]))
			tap.finish()
			u := tap.progress.Usage
			if u.InputTokens != 30 || u.OutputTokens != 15 || u.StopReason != "end_turn" || tap.incompleteStream() {
				t.Fatalf("%s split at %d: usage %+v, incomplete %v", name, i, u, tap.incompleteStream())
			}
		}
	}
}

// TestTapSeesACutStream: without message_stop the stream is incomplete.
func TestTapSeesACutStream(t *testing.T) {
	h := http.Header{"Content-Type": {"text/event-stream"}}
	cut := anthropicStream[:len(anthropicStream)-len("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")]
	tap := responseTap{dialect: policy.Anthropic, endpoint: policy.Messages}
	tap.start(200, h)
	tap.write([]byte(cut))
	tap.finish()
	if !tap.incompleteStream() {
		t.Fatal("a stream without message_stop was taken as complete")
	}
}

// TestTapReadsJSONUsageAndErrors covers non-stream bodies.
func TestTapReadsJSONUsageAndErrors(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}}
	tap := responseTap{dialect: policy.OpenAI, endpoint: policy.ChatCompletions}
	tap.start(200, h)
	tap.write([]byte(`{"choices":[{"finish_reason":"length"}],"usage":{"prompt_tokens":7,`))
	tap.write([]byte(`"completion_tokens":3}}`))
	tap.finish()
	if u := tap.progress.Usage; u.InputTokens != 7 || u.OutputTokens != 3 || u.StopReason != "length" {
		t.Fatalf("usage %+v", u)
	}
	tap.release()
	tap.start(400, h)
	tap.write([]byte(`{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`))
	tap.finish()
	if tap.errorType != "invalid_request_error" {
		t.Fatalf("error type %q", tap.errorType)
	}
}

func cr(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == '\n' {
			b[i] = '\r'
		}
	}
	return string(b)
}
