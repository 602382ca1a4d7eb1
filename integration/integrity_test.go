package integration

// End-to-end tests of request integrity: the rules that hold whatever the
// other settings are, so that no spelling of a request goes around the
// guards (duplicate members, number forms, unclean paths, compressed and
// short bodies), through a real Caddy and the real reverse_proxy.

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

const (
	responsesPath   = "/v1/responses"
	completionsPath = "/v1/completions"
)

// wantGatewayError checks a gateway error: its status and the dialect's
// shape, with a message containing each of says.
func wantGatewayError(t *testing.T, what, path string, resp *http.Response, body []byte, status int, says ...string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s: status %d, want %d: %s", what, resp.StatusCode, status, body)
		return
	}
	if path == anthropicPath && gjson.GetBytes(body, "type").Str != "error" || path != anthropicPath && !gjson.GetBytes(body, "error.type").Exists() {
		t.Errorf("%s: body %s is not the dialect's error shape", what, body)
	}
	msg := gjson.GetBytes(body, "error.message").Str
	for _, s := range says {
		if !strings.Contains(msg, s) {
			t.Errorf("%s: message %q does not say %q", what, msg, s)
		}
	}
}

// TestDuplicateMembersAreRefused sends bodies that name a member the
// gateway reads twice. Providers keep the last one, so each would slip past
// a guard that judged the first: a second max_tokens past the ceiling, a
// second model past the fallback rewrite.
func TestDuplicateMembersAreRefused(t *testing.T) {
	g := startGateway(t, directives("max_tokens 100", "backoff 1ms 2ms", "fallback claude-opus-4-5 claude-haiku-4-5"),
		mockprovider.Options{FailModels: map[string]int{"claude-opus-4-5": 529}})
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, c := range []struct{ name, path, body, member string }{
		{"anthropic max_tokens", anthropicPath, `{"model":"claude-haiku-4-5","max_tokens":10,` + msgs + `,"max_tokens":50000}`, "max_tokens"},
		{"anthropic model under fallback", anthropicPath, `{"model":"claude-opus-4-5","max_tokens":10,` + msgs + `,"model":"claude-opus-4-5"}`, "model"},
		{"anthropic escaped spelling", anthropicPath, `{"model":"claude-haiku-4-5","max_tokens":10,` + msgs + `,"max_tok\u0065ns":50000}`, "max_tokens"},
		{"anthropic thinking budget", anthropicPath, `{"model":"claude-haiku-4-5","max_tokens":100,` + msgs + `,"thinking":{"type":"enabled","budget_tokens":50,"budget_tokens":99999}}`, "thinking.budget_tokens"},
		{"chat max_completion_tokens", chatPath, `{"model":"gpt-4o-mini","max_completion_tokens":10,` + msgs + `,"max_completion_tokens":50000}`, "max_completion_tokens"},
		{"chat stream", chatPath, `{"model":"gpt-4o-mini","stream":false,` + msgs + `,"stream":true}`, "stream"},
		{"chat messages", chatPath, `{"model":"gpt-4o-mini",` + msgs + `,` + msgs + `}`, "messages"},
		{"responses input", responsesPath, `{"model":"gpt-4o-mini","input":"a","input":"b"}`, "input"},
	} {
		g.mock.Reset()
		resp, body := g.post(t, c.path, c.body, nil)
		wantGatewayError(t, c.name, c.path, resp, body, http.StatusBadRequest, "`"+c.member+"` appears more than once")
		if c.path != anthropicPath && gjson.GetBytes(body, "error.param").Str != c.member {
			t.Errorf("%s: param %s, want %s", c.name, gjson.GetBytes(body, "error.param").Raw, c.member)
		}
		noCalls(t, g, c.name)
	}
	// The refusal is logged as the guard that made it.
	if e := g.logEntries(t, "api_call_error", 8); len(e) < 8 || e[0]["error_type"] != "invalid_request_error" {
		t.Errorf("log lines %v", e)
	}
}

// TestNumberFormsAreJudgedByValue sends output caps in every JSON number
// form: each is judged by its value, and a clamped one reaches the upstream
// as an integer, with every other byte of the body as sent.
func TestNumberFormsAreJudgedByValue(t *testing.T) {
	clamp := startGateway(t, directives("max_tokens 100"), mockprovider.Options{})
	forms := []string{"50000.0", "5e4", "5E+4", "500000e-1", "1e400", "100.5"}
	for _, form := range forms {
		for _, c := range []struct{ path, field, body string }{
			{anthropicPath, "max_tokens", `{"model":"claude-haiku-4-5","max_tokens":%s,"messages":[{"role":"user","content":"hi"}]}`},
			{chatPath, "max_completion_tokens", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":%s}`},
			{chatPath, "max_tokens", `{"model":"gpt-4o-mini","max_tokens":%s,"messages":[{"role":"user","content":"hi"}]}`},
			{responsesPath, "max_output_tokens", `{"model":"gpt-4o-mini","input":"hi","max_output_tokens":%s}`},
		} {
			clamp.mock.Reset()
			sent := fmt.Sprintf(c.body, form)
			resp, body := clamp.post(t, c.path, sent, nil)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s %s: status %d %s", c.path, c.field, form, resp.StatusCode, body)
				continue
			}
			sameBodyBut(t, c.path+" "+form, []byte(sent), onlyCall(t, clamp).Body, `"`+c.field+`":`+form, `"`+c.field+`":100`)
		}
	}
	// Below the ceiling, a form is left as the client wrote it.
	clamp.mock.Reset()
	sent := `{"model":"claude-haiku-4-5","max_tokens":5e1,"messages":[{"role":"user","content":"hi"}]}`
	clamp.post(t, anthropicPath, sent, nil)
	if got := onlyCall(t, clamp).Body; string(got) != sent {
		t.Errorf("a cap under the ceiling was rewritten: %s", got)
	}

	// A second Caddy replaces the first: Caddy's configuration is the
	// process's.
	reject := startGateway(t, directives("max_tokens 100 reject"), mockprovider.Options{})
	for _, form := range forms {
		resp, body := reject.post(t, anthropicPath, `{"model":"claude-haiku-4-5","max_tokens":`+form+`,"messages":[{"role":"user","content":"hi"}]}`, nil)
		wantGatewayError(t, "reject "+form, anthropicPath, resp, body, http.StatusBadRequest, "max_tokens is "+form, "at most 100")
		resp, body = reject.post(t, chatPath, `{"model":"gpt-4o-mini","max_completion_tokens":`+form+`,"messages":[{"role":"user","content":"hi"}]}`, nil)
		wantGatewayError(t, "reject chat "+form, chatPath, resp, body, http.StatusBadRequest, "max_completion_tokens is "+form)
	}
	noCalls(t, reject, "reject mode")
}

// TestCapsTheCeilingCannotReadAreRefused sends output caps that are not
// whole numbers to the OpenAI APIs under a max_tokens ceiling. A
// compatible upstream might read "99999" as the number, so none may pass
// unjudged: with validation on, each is a 400 naming the field, in
// OpenAI's shape; with it off, the ceiling refuses what it cannot judge.
// An unset cap (null, as the SDKs send it) passes as sent.
func TestCapsTheCeilingCannotReadAreRefused(t *testing.T) {
	for _, validate := range []string{"on", "off"} {
		g := startGateway(t, directives("max_tokens 4096", "validate "+validate), mockprovider.Options{})
		for _, c := range []struct{ path, field, value string }{
			{chatPath, "max_completion_tokens", `"99999"`},
			{chatPath, "max_tokens", `"99999"`},
			{chatPath, "max_completion_tokens", `true`},
			{chatPath, "max_completion_tokens", `{"n":99999}`},
			{responsesPath, "max_output_tokens", `"99999"`},
			{completionsPath, "max_tokens", `["99999"]`},
		} {
			body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"input":"hi","prompt":"hi","` + c.field + `":` + c.value + `}`
			resp, answer := g.post(t, c.path, body, nil)
			wantGatewayError(t, "validate "+validate+" "+c.path+" "+c.field+" "+c.value, c.path, resp, answer, http.StatusBadRequest, c.field)
		}
		if validate == "on" {
			// What only validation refuses: numbers the ceiling lets
			// through, but that are no number of tokens.
			for _, value := range []string{"-5", "1.5"} {
				resp, answer := g.post(t, chatPath, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":`+value+`}`, nil)
				wantGatewayError(t, "max_completion_tokens "+value, chatPath, resp, answer, http.StatusBadRequest, "max_completion_tokens")
			}
		}
		noCalls(t, g, "validate "+validate)
		sent := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":null}`
		if resp, answer := g.post(t, chatPath, sent, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("validate %s: a null cap got status %d %s", validate, resp.StatusCode, answer)
		}
	}
}

// TestUncleanPathsAreGuarded sends API calls under paths that a
// provider's router cleans to the API's path: each is detected as that API
// and guarded (clamped, validated), not forwarded raw.
func TestUncleanPathsAreGuarded(t *testing.T) {
	g := startGateway(t, directives("max_tokens 100"), mockprovider.Options{})
	sent := `{"model":"claude-haiku-4-5","max_tokens":50000,"messages":[{"role":"user","content":"hi"}]}`
	for _, path := range []string{"/v1/x/../messages", "/v1/./messages", "/v1//messages", "/v1/messages/", "/v1/messages/.", "/v1/chat/../messages"} {
		g.mock.Reset()
		resp, body := g.post(t, path, sent, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d %s", path, resp.StatusCode, body)
			continue
		}
		call := onlyCall(t, g)
		if call.Path != path {
			t.Errorf("%s: the upstream got path %s; the path is forwarded as sent", path, call.Path)
		}
		sameBodyBut(t, path, []byte(sent), call.Body, `"max_tokens":50000`, `"max_tokens":100`)

		// Validation applies too: a body the provider would refuse is
		// answered here.
		g.mock.Reset()
		resp, body = g.post(t, path, `{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}]}`, nil)
		wantGatewayError(t, path+" validation", anthropicPath, resp, body, http.StatusBadRequest, "max_tokens")
		noCalls(t, g, path+" validation")
	}
	// The same holds for OpenAI paths.
	g.mock.Reset()
	resp, body := g.post(t, "/v1/chat/./completions", `{"model":"gpt-4o-mini","max_completion_tokens":50000,"messages":[{"role":"user","content":"hi"}]}`, nil)
	if resp.StatusCode != http.StatusOK || gjson.GetBytes(onlyCall(t, g).Body, "max_completion_tokens").Int() != 100 {
		t.Errorf("/v1/chat/./completions: status %d %s, not clamped", resp.StatusCode, body)
	}
}

// rawExchange sends a request as raw bytes on a fresh connection, then
// half-closes it after halfCloseAfter when that is not negative, and reads
// the answer for up to wait: the status and body, or status 0 when the
// connection ended without one.
func rawExchange(t *testing.T, url, request string, halfCloseAfter, wait time.Duration) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(max(halfCloseAfter, 0) + wait))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	if halfCloseAfter >= 0 {
		time.Sleep(halfCloseAfter)
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// noHalfClose is rawExchange's halfCloseAfter for a client that keeps its
// side of the connection open.
const noHalfClose = -1

// TestShortBodyIs400 sends bodies shorter than they claim: a Content-Length
// the client never fills (it half-closes, or stalls until the server's read
// timeout) and a chunked body without its last chunk. Each is answered 400
// in the dialect's shape, with no upstream call, and logged.
func TestShortBodyIs400(t *testing.T) {
	g := startGatewayWith(t, setup{options: directives("backoff 1ms 2ms"), global: "servers {\n\t\ttimeouts {\n\t\t\tread_body 1s\n\t\t}\n\t}"})
	head := "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
	for _, c := range []struct {
		name, path, request string
		halfClose           bool
		says                string
	}{
		{"anthropic half-close", anthropicPath, head + "Content-Length: 1000\r\n\r\n{\"model\":\"claude-haiku-4-5\"", true, "short of the 1000 bytes its Content-Length declares"},
		{"chat half-close", chatPath, head + "Content-Length: 1000\r\n\r\n{\"model\":", true, "short of the 1000 bytes"},
		{"chunked without its end", anthropicPath, head + "Transfer-Encoding: chunked\r\n\r\n9\r\n{\"model\":\r\n", true, "before it was complete"},
		{"anthropic stall until the read timeout", anthropicPath, head + "Content-Length: 1000\r\n\r\n{\"model\":", false, "read timeout"},
		// The client is still there, waiting: a framing the server cannot
		// read is the client's mistake, and it gets an answer.
		{"malformed chunk size", anthropicPath, head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{\"model\":\"claude-x\"}\r\n0\r\n\r\n", false, "could not be read"},
		{"chunk longer than its size", chatPath, head + "Transfer-Encoding: chunked\r\n\r\n2\r\n{\"model\":\"gpt-4o\"}\r\n0\r\n\r\n", false, "could not be read"},
	} {
		g.mock.Reset()
		halfClose := time.Duration(noHalfClose)
		if c.halfClose {
			halfClose = 0
		}
		status, body := rawExchange(t, g.URL, fmt.Sprintf(c.request, c.path), halfClose, 10*time.Second)
		wantGatewayError(t, c.name, c.path, &http.Response{StatusCode: status}, body, http.StatusBadRequest, c.says)
		noCalls(t, g, c.name)
	}
	entries := g.logEntries(t, "api_call_error", 6)
	for _, e := range entries {
		if e["error_type"] != "incomplete_request_body" || e["status"] != float64(400) {
			t.Errorf("log line %v, want error_type incomplete_request_body and status 400", e)
		}
	}
	if len(entries) < 6 {
		t.Errorf("%d api_call_error lines, want 6", len(entries))
	}
}

// TestCompressedBodiesAreDecoded sends bodies with Content-Encoding gzip
// and deflate (zlib, and the raw deflate some clients send under that
// name): each is decoded, guarded, and forwarded decoded. Other encodings
// are 415, a body that does not decode is 400, and a small body that
// decodes past max_body (a zip bomb) is 413 without decoding the rest.
func TestCompressedBodiesAreDecoded(t *testing.T) {
	g := startGateway(t, directives("max_tokens 100", "max_body 1MB"), mockprovider.Options{})
	sent := `{"model":"claude-haiku-4-5","max_tokens":50000,"messages":[{"role":"user","content":"` + thePrompt + `"}]}`
	compress := map[string]func(io.Writer) io.WriteCloser{
		"gzip":    func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) },
		"x-gzip":  func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) },
		"deflate": func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) },
		"deflate (raw)": func(w io.Writer) io.WriteCloser {
			fw, _ := flate.NewWriter(w, flate.BestSpeed)
			return fw
		},
	}
	packed := func(name string, body []byte) []byte {
		var b bytes.Buffer
		w := compress[name](&b)
		_, _ = w.Write(body)
		_ = w.Close()
		return b.Bytes()
	}
	for name := range compress {
		g.mock.Reset()
		encoding, _, _ := strings.Cut(name, " ")
		resp, body := g.post(t, anthropicPath, string(packed(name, []byte(sent))), map[string]string{"Content-Encoding": encoding})
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d %s", name, resp.StatusCode, body)
			continue
		}
		call := onlyCall(t, g)
		if call.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: forwarded with Content-Encoding %q, but the body is decoded", name, call.Header.Get("Content-Encoding"))
		}
		sameBodyBut(t, name, []byte(sent), call.Body, `"max_tokens":50000`, `"max_tokens":100`)
	}

	g.mock.Reset()
	for _, c := range []struct {
		name, path, encoding string
		body                 []byte
		status               int
		says                 string
	}{
		{"brotli", anthropicPath, "br", []byte(sent), http.StatusUnsupportedMediaType, `"br"`},
		{"brotli openai", chatPath, "br", []byte(sent), http.StatusUnsupportedMediaType, "gzip or deflate"},
		{"stacked codings", anthropicPath, "gzip, gzip", packed("gzip", packed("gzip", []byte(sent))), http.StatusUnsupportedMediaType, "gzip"},
		{"not gzip", anthropicPath, "gzip", []byte(sent), http.StatusBadRequest, "not valid gzip"},
		{"not deflate", chatPath, "deflate", []byte("\x78\x9c not deflate at all"), http.StatusBadRequest, "not valid deflate"},
		{"gzip cut short", anthropicPath, "gzip", packed("gzip", []byte(sent))[:30], http.StatusBadRequest, "ended"},
		{"zip bomb", anthropicPath, "gzip", packed("gzip", []byte(`{"model":"claude-haiku-4-5","max_tokens":1,"messages":[{"role":"user","content":"`+strings.Repeat("a", 64<<20)+`"}]}`)),
			http.StatusRequestEntityTooLarge, "max_body"},
	} {
		resp, body := g.post(t, c.path, string(c.body), map[string]string{"Content-Encoding": c.encoding})
		wantGatewayError(t, c.name, c.path, resp, body, c.status, c.says)
		// One sentence, said once: no line break, no repeated clause.
		if msg := string(body); strings.Contains(msg, `\n`) || strings.Count(msg, "Content-Encoding says") > 1 {
			t.Errorf("%s: message %s", c.name, body)
		}
	}
	noCalls(t, g, "refused encodings")
}

// TestDeadlineCountsFromReadBody uploads a body more slowly than the
// deadline allows for the whole call: the deadline starts once the body is
// in, so the call succeeds (a slow upload is the server's read timeouts'
// business).
func TestDeadlineCountsFromReadBody(t *testing.T) {
	g := startGateway(t, directives("deadline 1s"), mockprovider.Options{})
	body := chatJSON("gpt-4o-mini", false)
	body = strings.Replace(body, thePrompt, thePrompt+strings.Repeat(" pad", 50000), 1)
	pr, pw := io.Pipe()
	go func() {
		chunk := len(body)/10 + 1
		for i := 0; i < len(body); i += chunk {
			_, _ = io.WriteString(pw, body[i:min(i+chunk, len(body))])
			time.Sleep(150 * time.Millisecond) // 1.5s in all
		}
		_ = pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, g.URL+chatPath, pr)
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	began := time.Now()
	resp, got := do(t, req)
	if time.Since(began) < time.Second {
		t.Fatalf("the upload took %v; the test needs it slower than the deadline", time.Since(began))
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d %s, want 200: the deadline runs from the read body", resp.StatusCode, got)
	}
	if n := len(g.mock.Calls()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1", n)
	}
}
