package handlers

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// FuzzEventStream feeds arbitrary upstream bytes, split at an arbitrary
// point, through the stream tap and the usage stripper. Neither may panic;
// the stripper may only ever leave out whole usage events, so its output
// is the input with some events removed, and with no usage event inside it
// is the input unchanged.
func FuzzEventStream(f *testing.F) {
	f.Add([]byte(chatStreamWithUsage), uint16(10))
	f.Add([]byte(crlf(chatStreamWithUsage)), uint16(40))
	f.Add([]byte(anthropicStream), uint16(3))
	f.Add([]byte(cr(anthropicStream)), uint16(100))
	f.Add([]byte("data: {\"choices\":[],\"usage\":{}}\r\n\r\ndata: [DONE]"), uint16(7))
	f.Add([]byte("event: error\ndata: {\"type\":\"error\"}\n\n\n\n:comment\nretry: 5\n"), uint16(0))
	h := http.Header{"Content-Type": {"text/event-stream"}}
	f.Fuzz(func(t *testing.T, stream []byte, split uint16) {
		at := int(split) % (len(stream) + 1)
		for _, api := range []struct {
			d policy.Dialect
			e policy.Endpoint
		}{{policy.Anthropic, policy.Messages}, {policy.OpenAI, policy.ChatCompletions}, {policy.OpenAI, policy.Responses}} {
			tap := responseTap{dialect: api.d, endpoint: api.e}
			tap.start(200, h)
			tap.write(stream[:at])
			tap.write(stream[at:])
			tap.finish()
		}
		var out bytes.Buffer
		s := usageStripper{w: &out}
		_, _ = s.write(stream[:at])
		_, _ = s.write(stream[at:])
		s.flush()
		if !isSubsequence(out.Bytes(), stream) {
			t.Fatalf("stripper output is not the input with parts left out:\n in %q\nout %q", stream, out.Bytes())
		}
		if !bytes.Contains(stream, []byte("usage")) && !bytes.Equal(out.Bytes(), stream) {
			t.Fatalf("stripper changed a stream without usage:\n in %q\nout %q", stream, out.Bytes())
		}
	})
}

// isSubsequence reports whether a can be made from b by leaving bytes out.
func isSubsequence(a, b []byte) bool {
	for _, c := range a {
		i := bytes.IndexByte(b, c)
		if i < 0 {
			return false
		}
		b = b[i+1:]
	}
	return true
}
