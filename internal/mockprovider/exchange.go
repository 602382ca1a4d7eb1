package mockprovider

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// exchange is one request being answered.
type exchange struct {
	p     *Provider
	w     http.ResponseWriter
	r     *http.Request
	start time.Time
	call  *Call // nil when recording is off

	requestID   string
	dialect     dialect
	endpoint    endpoint
	body        []byte
	model       string
	inputTokens int
	step        step
	status      int // 0 until the status line is written
	// note is a log suffix for answers that are not plain: " hang", " drop",
	// " cut", " end".
	note string
}

// run answers the request as its step says.
func (ex *exchange) run() {
	ctx := ex.r.Context()
	if sleep(ctx, ex.step.delay) != nil {
		return
	}
	switch {
	case ex.step.action == hang:
		ex.note = " hang"
		<-ctx.Done()
	case ex.step.action == drop:
		ex.note = " drop"
		// Aborting before anything is written closes the connection with no
		// response at all (HTTP/1) or resets the stream (HTTP/2).
		panic(http.ErrAbortHandler)
	case ex.step.status != http.StatusOK:
		ex.writeError(ex.step.status, "")
	case ex.endpoint != endpointEmbeddings && gjson.GetBytes(ex.body, "stream").Bool():
		ex.stream(ex.streamer())
	default:
		ex.writeReply(ex.reply())
	}
}

// writeReply writes a successful JSON answer with its Content-Length, or
// the part of it the step allows: cut= aborts the connection after that
// many bytes, end= returns after them (the server then closes the
// connection, the body being shorter than declared), and stall= sends them
// and then nothing more while holding the connection open.
func (ex *exchange) writeReply(v any) {
	// The wire types in this package always marshal.
	b, _ := json.Marshal(v)
	ex.w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	ex.writeHeader(http.StatusOK, "application/json")
	stop := len(b)
	for _, n := range [...]int{ex.step.cut, ex.step.end, ex.step.stall} {
		if n >= 0 {
			stop = min(stop, n)
		}
	}
	_, _ = ex.w.Write(b[:stop])
	if stop == len(b) {
		return
	}
	_ = http.NewResponseController(ex.w).Flush()
	ex.breakOff(func() { <-ex.r.Context().Done() })
}

// breakOff ends an answer the step cuts short, reporting whether it did:
// cut= aborts the connection (everything so far is flushed, so the client
// sees an unexpected EOF mid-body), end= returns, stall= sits in silence
// until the client leaves.
func (ex *exchange) breakOff(silence func()) bool {
	switch {
	case ex.step.cut >= 0:
		ex.note = " cut"
		if ex.step.midEvent {
			ex.halfEvent()
		}
		panic(http.ErrAbortHandler)
	case ex.step.end >= 0:
		ex.note = " end"
	case ex.step.stall >= 0:
		ex.note = " stall"
		silence()
	default:
		return false
	}
	return true
}

// halfEvent sends the start of a delta event and flushes it, so that a cut
// that follows falls inside the event.
func (ex *exchange) halfEvent() {
	half := `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hal`
	if ex.dialect == anthropicDialect {
		half = "event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hal`
	}
	_, _ = io.WriteString(ex.w, half)
	_ = http.NewResponseController(ex.w).Flush()
}

// writeHeader sets the headers every response carries, records the status
// and sends the status line.
func (ex *exchange) writeHeader(status int, contentType string) {
	h := ex.w.Header()
	h.Set("Content-Type", contentType)
	ex.setRateLimitHeaders(h)
	if st := ex.step; st.retryAfter != "" {
		h.Set("Retry-After", st.retryAfter)
	} else if st.hasDate {
		h.Set("Retry-After", time.Now().Add(st.retryAfterDate).UTC().Format(http.TimeFormat))
	}
	if ex.step.retryAfterMS != "" {
		h.Set("Retry-After-Ms", ex.step.retryAfterMS)
	}
	if ex.step.shouldRetry != "" {
		h.Set("X-Should-Retry", ex.step.shouldRetry)
	}
	ex.p.setStatus(ex, status)
	ex.w.WriteHeader(status)
}

// writeJSON writes a complete JSON response.
func (ex *exchange) writeJSON(status int, v any) {
	// The wire types in this package always marshal.
	b, _ := json.Marshal(v)
	ex.writeHeader(status, "application/json")
	_, _ = ex.w.Write(b)
}

// writeError writes an error response in the route's dialect. An empty
// message uses the provider's usual text for the status.
func (ex *exchange) writeError(status int, message string) {
	if n := ex.step.nest; n > 0 {
		ex.writeHeader(status, "application/json")
		_, _ = ex.w.Write(bytes.Repeat([]byte{'['}, n))
		return
	}
	e := errorFor(status, ex.step.quota)
	e.message = cmp.Or(message, e.message)
	ex.writeJSON(status, e.body(ex.dialect, ex.requestID))
}

// Rate-limit header values: a roomy account, unless a step sets reset=.
const (
	requestsLimit     = 1000
	tokensLimit       = 100000
	inputTokensLimit  = 80000
	outputTokensLimit = 20000
	defaultReset      = time.Second
)

// setRateLimitHeaders sets the request id and the dialect's rate-limit
// headers (https://docs.anthropic.com/en/api/rate-limits#response-headers,
// https://platform.openai.com/docs/guides/rate-limits).
func (ex *exchange) setRateLimitHeaders(h http.Header) {
	reqs := requestsLimit - 1
	toks := max(tokensLimit-ex.inputTokens, 0)
	inToks := max(inputTokensLimit-ex.inputTokens, 0)
	outToks := outputTokensLimit
	reset := defaultReset
	if ex.step.exhausted {
		reqs, toks, inToks, outToks = 0, 0, 0, 0
		reset = ex.step.reset
	}
	if ex.dialect == openAIDialect {
		h.Set("X-Request-Id", ex.requestID)
		h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(requestsLimit))
		h.Set("X-Ratelimit-Remaining-Requests", strconv.Itoa(reqs))
		h.Set("X-Ratelimit-Reset-Requests", reset.String())
		h.Set("X-Ratelimit-Limit-Tokens", strconv.Itoa(tokensLimit))
		h.Set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(toks))
		h.Set("X-Ratelimit-Reset-Tokens", reset.String())
		return
	}
	h.Set("Request-Id", ex.requestID)
	// RFC 3339 has whole seconds here, so round up: never claim a reset that
	// comes before the real one.
	at := time.Now().Add(reset + time.Second - 1).UTC().Truncate(time.Second).Format(time.RFC3339)
	for _, l := range [...]struct {
		name             string
		limit, remaining int
	}{
		{"requests", requestsLimit, reqs},
		{"tokens", tokensLimit, toks},
		{"input-tokens", inputTokensLimit, inToks},
		{"output-tokens", outputTokensLimit, outToks},
	} {
		prefix := "Anthropic-Ratelimit-" + l.name
		h.Set(prefix+"-Limit", strconv.Itoa(l.limit))
		h.Set(prefix+"-Remaining", strconv.Itoa(l.remaining))
		h.Set(prefix+"-Reset", at)
	}
}

// Reply text: a fixed sentence naming the model, never the prompt.
const padWord = " lorem"

// replyWords are the words of the reply; stream deltas cycle through them.
func (ex *exchange) replyWords() [4]string {
	return [4]string{"mock", "reply", "from", cmp.Or(ex.model, "an-unnamed-model")}
}

// replyText returns the non-streamed reply and its output token count (one
// per word), padded to about step.bytes bytes when that is set.
func (ex *exchange) replyText() (string, int) {
	w := ex.replyWords()
	text := strings.Join(w[:], " ")
	pad := max(0, (ex.step.bytes-len(text)+len(padWord)-1)/len(padWord))
	return text + strings.Repeat(padWord, pad), len(w) + pad
}

// piece returns the text of the ith stream delta.
func (ex *exchange) piece(i int) string {
	w := ex.replyWords()
	if i == 0 {
		return w[0]
	}
	return " " + w[i%len(w)]
}

// sleep waits for d, or until ctx is done, which it reports as an error.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
