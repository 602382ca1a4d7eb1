package handlers

import (
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// attempt sends the request once through next. It reports done when the
// call has ended; otherwise c.last holds the retryable failure.
func (c *call) attempt(next caddyhttp.Handler) (done bool, err error) {
	defer c.reportHealth()
	c.restoreHeaders()
	ctx, cancel := context.WithCancel(c.r.Context())
	c.aw.reset(cancel)
	c.attempts++
	c.served = c.model
	c.publishAttempt()
	attemptsTotal.WithLabelValues(c.api.Family(), modelLabel(c.model)).Inc()

	c.headersBy = c.deadline
	c.cut = cutByDeadline
	if t := c.g.cfg.attemptTimeout; t > 0 && c.aw.began.Add(t).Before(c.headersBy) {
		c.headersBy, c.cut = c.aw.began.Add(t), cutByAttempt
	}
	c.dog.arm(c, time.Until(c.headersBy))
	// Deferred too, for a cut body whose abort panics on through serve:
	// the watchdog must never outlive its attempt (the call is reused).
	defer c.endAttempt(cancel)
	began := time.Now()
	aborted, err := c.serveNext(next, c.upstreamRequest(ctx))
	c.endAttempt(cancel)
	c.upstreamTime += time.Since(began)
	return c.judge(aborted, err)
}

// endAttempt stops the attempt's watchdog and releases its context.
// Calling it again does nothing more.
func (c *call) endAttempt(cancel context.CancelFunc) {
	c.dog.stop()
	cancel()
}

// upstreamRequest returns the request for one attempt, with a fresh reader
// over the payload: reverse_proxy reads the body once per call (it replays a
// body across its own retries only with request_buffers).
func (c *call) upstreamRequest(ctx context.Context) *http.Request {
	// reverse_proxy writes into the request's vars on every call, and the
	// transport may still be dialing for an earlier attempt, reading them:
	// each retry gets its own copy of the vars, as Caddy's own retries
	// (which prepare the request once) never share them either.
	if vars, ok := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any); ok && c.attempts > 1 {
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, maps.Clone(vars))
	}
	r := c.r.WithContext(ctx)
	payload := c.payload
	r.Body = c.bodies.reader(payload)
	r.ContentLength = int64(len(payload))
	r.TransferEncoding = nil
	bodies := c.bodies
	r.GetBody = func() (io.ReadCloser, error) {
		return bodies.reader(payload), nil
	}
	return r
}

// prepareUpstreamHeader readies the request headers sent on every attempt.
// The body is re-sent whole, so Expect and Content-Length go; Accept-Encoding
// goes too, so the proxy's transport negotiates compression itself and
// hands the gateway plain JSON to read usage and errors from. They are
// removed in place rather than from a copy, a copy per request being the
// largest cost of a small request: handlers before this one (encode among
// them) have read them already, and reverse_proxy copies the headers again
// for each attempt.
func prepareUpstreamHeader(h http.Header) {
	delete(h, "Expect")
	delete(h, "Content-Length")
	delete(h, "Accept-Encoding")
}

// serveNext runs next and reports whether the proxy aborted
// (http.ErrAbortHandler, its signal that the upstream response broke off).
// Before anything reached the client that is a failed attempt. A stream
// already on its way is ended in-band by judge, and the abort stops here:
// the stream then closes cleanly, with every byte and the error event
// delivered (an abort reaching Caddy's HTTP/2 server would reset the
// stream and drop what it still buffers). A plain body has no in-band
// form, so its abort goes on, for the client to see a short body.
func (c *call) serveNext(next caddyhttp.Handler, r *http.Request) (aborted bool, err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v != http.ErrAbortHandler {
			panic(v)
		}
		aborted = true
		if c.aw.state.Load() != stateCommitted || c.tap.sse {
			return
		}
		c.completeResponse(true)
		panic(v) // finish records the call as the panic unwinds
	}()
	return false, next.ServeHTTP(&c.aw, r)
}

// judge reads the outcome of one attempt from the writer's state.
func (c *call) judge(aborted bool, err error) (done bool, _ error) {
	state := c.aw.state.Load()
	if state == stateCommitted || state == stateHeaded || state == stateHeld {
		c.notePace()
	}
	if state == stateCommitted {
		c.completeResponse(aborted)
		return true, nil
	}
	if c.r.Context().Err() != nil {
		c.end = clientGone
		return true, nil
	}
	switch state {
	case stateHeaded:
		if aborted || c.tap.sse {
			// The body broke off before its first byte, or the stream
			// ended before its first event: nothing reached the client.
			return c.fail(failure{reason: policy.ReasonConnection, kind: wire.UpstreamUnreachable, err: errNoFirstEvent})
		}
		c.aw.commit() // a response without a body
		c.completeResponse(false)
		return true, nil
	case stateHeld:
		return c.judgeHeld()
	case stateAbandoned:
		err, cut := error(context.DeadlineExceeded), c.cut
		if c.aw.silent.Load() {
			err, cut = errSilent, cutByIdle
		}
		return c.fail(failure{reason: policy.ReasonTimeout, kind: wire.UpstreamTimeout, err: err, cut: cut})
	}
	// Nothing was written.
	if aborted {
		return c.fail(failure{reason: policy.ReasonConnection, kind: wire.UpstreamUnreachable, err: http.ErrAbortHandler})
	}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		switch he.StatusCode {
		case http.StatusBadGateway:
			return c.fail(failure{reason: policy.ReasonConnection, kind: wire.UpstreamUnreachable, err: err})
		case http.StatusGatewayTimeout:
			return c.fail(failure{reason: policy.ReasonTimeout, kind: wire.UpstreamTimeout, err: err})
		}
	}
	if err != nil {
		// Not a proxy failure the gateway can retry: leave it to Caddy's
		// error handling, as if the gateway were not there.
		c.end = ending{errorType: "handler_error", status: statusOf(err)}
		return true, err
	}
	// next returned without writing: retrying would loop forever.
	c.g.Logger.Error(errNoResponse.Error())
	return true, c.answer(&refusal{kind: wire.Misplaced, message: errNoResponse.Error(), advise: adviseNoRetry, errorType: "no_response"})
}

// errNoFirstEvent is why an answer that broke off before anything reached
// the client is retried.
var errNoFirstEvent = errors.New("the upstream response ended before its first byte or event")

// errNoResponse explains the usual cause of an empty answer from next.
var errNoResponse = errors.New("the handler after ai_resilience wrote no response; put ai_resilience in the same route or handle block as reverse_proxy")

// judgeHeld classifies a held retryable response once its body is in.
func (c *call) judgeHeld() (done bool, _ error) {
	quota := c.tap.readError(c.aw.buf.Bytes())
	// A 429 for an exhausted quota will not pass with time; neither gateway
	// nor client should retry it. Every SDK would retry it on its status
	// alone, so it says so even under `client_retries allow`, which
	// concerns failures that may pass.
	if c.aw.status == http.StatusTooManyRequests && quota {
		c.w.Header().Set("X-Should-Retry", "false")
		c.writeHeld()
		return true, nil
	}
	hint, hinted := wire.WaitHint(c.api, c.w.Header(), time.Now())
	return c.fail(failure{reason: c.aw.verdict.Reason, held: true, hint: hint, hinted: hinted})
}

// fail records a retryable failure of the current model, for the retry
// decision and the model's circuit. It reports that the call goes on.
func (c *call) fail(f failure) (done bool, _ error) {
	c.last = f
	status := 0
	if f.held {
		status = c.aw.failedStatus()
	}
	c.recordHealth(status, f.reason)
	return false, nil
}

// completeResponse ends a response that reached the client: it reads the
// tapped usage and judges the response. A stream that stopped before its
// proper end gets the API's in-band error event, so the client cannot take
// the cut answer for a whole one; a stream that carried an error event and
// a body cut short (aborted) or not whole JSON are errors too. Each such
// failure counts against the model's circuit like the status it stands for.
func (c *call) completeResponse(aborted bool) {
	t := &c.tap
	t.finish()
	c.end = ending{status: c.aw.status, errorType: t.errorType}
	cut, cutType, cutReason := wire.CutIncomplete, "stream_incomplete", policy.ReasonConnection
	if c.aw.silent.Load() {
		cut, cutType, cutReason = wire.CutIdle, wire.UpstreamTimeout.String(), policy.ReasonTimeout
	}
	c.recordHealth(c.aw.status, "")
	switch {
	case !successful(c.aw.status):
	case c.r.Context().Err() != nil && !t.progress.Done:
		// A client that left before the stream's proper end gets no cut
		// event and is logged as gone. One that left after it had the
		// whole answer: the OpenAI SDKs close the connection as soon as
		// they read `data: [DONE]`, often before the upstream's body has
		// ended.
		c.end.errorType = "client_closed"
	case t.progress.Err.Status != 0:
		// The model's health is judged by the status the event stands for.
		t.flush(c.w)
		c.end.errorType = t.progress.Err.Type
		c.recordHealth(t.progress.Err.Status, "")
	case t.incompleteStream():
		t.cut(c.w, cut)
		_ = http.NewResponseController(c.w).Flush()
		c.end.errorType = cutType
		c.recordHealth(c.aw.status, cutReason)
	case t.sse:
		t.flush(c.w)
	case aborted, t.broken:
		c.end.errorType = "response_incomplete"
		if cut == wire.CutIdle {
			c.end.errorType = cutType
		}
		c.recordHealth(c.aw.status, cutReason)
	}
}

// restoreHeaders resets the client's response headers to the snapshot
// taken before the first attempt.
func (c *call) restoreHeaders() {
	if c.attempts == 0 {
		return // nothing has touched them yet
	}
	h := c.w.Header()
	clear(h)
	for k, v := range c.snapshot {
		h[k] = v
	}
}
