package handlers

import (
	"bytes"
	"testing"
)

const chatStreamWithUsage = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
	"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n" +
	"data: [DONE]\n\n"

// TestUsageStripperAtEverySplit feeds the stream in two writes split at
// every byte and checks that exactly the usage chunk is left out.
func TestUsageStripperAtEverySplit(t *testing.T) {
	want := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: [DONE]\n\n"
	for _, stream := range []string{chatStreamWithUsage, crlf(chatStreamWithUsage)} {
		for i := 0; i <= len(stream); i++ {
			var out bytes.Buffer
			s := usageStripper{w: &out}
			if n, err := s.write([]byte(stream[:i])); err != nil || n != i {
				t.Fatalf("write returned %d, %v", n, err)
			}
			_, _ = s.write([]byte(stream[i:]))
			s.flush()
			got := out.String()
			if stream != chatStreamWithUsage {
				want := crlf(want)
				if got != want {
					t.Fatalf("split at %d (CRLF):\n got %q\nwant %q", i, got, want)
				}
				continue
			}
			if got != want {
				t.Fatalf("split at %d:\n got %q\nwant %q", i, got, want)
			}
		}
	}
}

// TestUsageStripperKeepsAnUnfinishedTail passes on bytes of an event whose
// blank line never came, so a cut stream reaches the client as it was.
func TestUsageStripperKeepsAnUnfinishedTail(t *testing.T) {
	var out bytes.Buffer
	s := usageStripper{w: &out}
	_, _ = s.write([]byte("data: {\"choices\":[]}\n\ndata: {\"cho"))
	s.flush()
	if got := out.String(); got != "data: {\"choices\":[]}\n\ndata: {\"cho" {
		t.Fatalf("got %q", got)
	}
}

func crlf(s string) string { return string(bytes.ReplaceAll([]byte(s), []byte("\n"), []byte("\r\n"))) }
