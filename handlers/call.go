package handlers

import (
	"context"
	"errors"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// call is one client request on its way through the gateway: its buffered
// body, its attempts, waits and fallbacks, and what it ended as.
type call struct {
	g        *Gateway
	w        http.ResponseWriter
	r        *http.Request
	dialect  policy.Dialect
	endpoint policy.Endpoint

	start    time.Time
	deadline time.Time      // set once the body has been read
	body     *[]byte        // the request body as received (decoded), pooled
	charge   bufferCharge   // the body and held responses, in max_buffered
	req      policy.Request // the body read once, then guarded; fallbacks copy it
	payload  []byte         // the body sent upstream: req's, or a copy naming the fallback model
	model    string         // the model now being tried
	snapshot http.Header    // the client's response headers before any attempt

	aw     attemptWriter
	tap    responseTap
	bodies *openBodies // the attempts' body readers not yet closed
	dog    watchdog
	// headersBy is when the current attempt must have its response
	// headers: attempt_timeout after it began, or the deadline.
	headersBy time.Time
	// watchHeaders is true when the arrival of the headers changes what
	// the watchdog waits for (attempt_timeout or idle_timeout is set).
	watchHeaders bool

	attempts     int
	cut          timeoutCause  // what the current attempt's timer stands for
	upstreamTime time.Duration // time inside the next handler
	waitTime     time.Duration // time sitting out backoff
	last         failure       // the latest retryable failure
	skipped      time.Duration // until a skipped model's circuit lets a probe through

	permit policy.Permit  // the circuit's permit for the attempt in progress
	health policy.Outcome // what that attempt says about its model's health

	outputCap int64            // the output cap the request names, after the guards
	estimate  int64            // estimated input tokens, when a zone counts tokens
	reserved  int64            // tokens reserved in the zones
	demands   []policy.Demand  // the zones and keys this request is in
	demandBuf [4]policy.Demand // room for demands without an allocation
	admission policy.Admission // what the zones reserved, to settle
	admitted  bool             // admission holds a reservation
	end       ending
}

// failure describes an attempt that failed in a retryable way.
type failure struct {
	reason policy.Reason
	// held is true when the failure is an upstream response, kept in the
	// attempt writer with its headers in the client's header map.
	held bool
	// kind is the gateway error written if this was the last failure and
	// no upstream response is held.
	kind   policy.ErrorKind
	err    error
	hint   time.Duration
	hinted bool
	// cut says which bound ended an attempt that timed out.
	cut timeoutCause
}

// timeoutCause is what ended an attempt, or a call, for lack of time.
type timeoutCause uint8

const (
	// cutByProxy: the proxy's own timeout (a 504 from reverse_proxy).
	cutByProxy timeoutCause = iota
	// cutByAttempt: attempt_timeout ran out before response headers.
	cutByAttempt
	// cutByDeadline: the request's deadline ran out.
	cutByDeadline
	// cutByIdle: the response went silent for idle_timeout.
	cutByIdle
)

// ending is how the call ended, for its log line, metrics and placeholders.
type ending struct {
	status    int
	errorType string // empty on success
	finished  bool
}

func newCall(g *Gateway, w http.ResponseWriter, r *http.Request, d policy.Dialect, e policy.Endpoint) *call {
	now := time.Now()
	c := &call{
		g: g, w: w, r: r, dialect: d, endpoint: e,
		start:    now,
		deadline: now.Add(g.cfg.Deadline),
		body:     getBody(),
		charge:   bufferCharge{limit: g.cfg.MaxBuffered},
		bodies:   new(openBodies),
		snapshot: w.Header().Clone(),
		tap:      responseTap{dialect: d, endpoint: e},
	}
	c.aw = attemptWriter{rw: w, retryOn: g.cfg.RetryOn, tap: &c.tap, dog: &c.dog, idle: g.cfg.IdleTimeout > 0, charge: &c.charge}
	c.dog.c = c
	c.watchHeaders = g.cfg.IdleTimeout > 0 || g.cfg.AttemptTimeout > 0
	return c
}

// release returns the call's pooled memory. The request body goes back to
// the pool only when every attempt's reader has been closed: the transport
// may go on writing a body after the response came back (net/http
// RoundTripper contract), and must not read a buffer another request reuses.
func (c *call) release() {
	c.aw.reset(nil)
	if c.bodies.n.Load() == 0 {
		putBody(c.body)
	}
	c.charge.give(c.charge.held)
}

// run sends the request to the requested model and then down its fallback
// chain until an answer reaches the client or nothing is left to try.
func (c *call) run(next caddyhttp.Handler) error {
	c.req = policy.ReadRequest(c.dialect, c.endpoint, *c.body)
	c.model = c.req.Model
	if rerr := c.req.Integrity(); rerr != nil {
		c.guardAction("integrity")
		c.writeError(policy.InvalidRequest, rerr.Message, rerr.Param)
		c.finish()
		return nil
	}
	if !c.guard() {
		c.finish()
		return nil
	}
	if !c.admit() {
		c.finish()
		return nil
	}
	c.payload = c.req.Body()
	if !sameBytes(c.payload, *c.body) {
		c.charge.add(int64(len(c.payload))) // the guards' edited copy
	}
	if !c.awaitUpstream() {
		c.finish()
		return nil
	}
	prepareUpstreamHeader(c.r.Header)
	if !time.Now().Before(c.deadline) {
		// Queueing for a zone took the whole deadline.
		c.last = failure{reason: policy.ReasonTimeout, kind: policy.UpstreamTimeout, cut: cutByDeadline}
		return c.giveUp()
	}
	for {
		outcome, err := c.tryModel(next)
		switch outcome {
		case callEnded:
			c.finish()
			return err
		case budgetSpent:
			return c.giveUp()
		}
		to, ok := c.g.cfg.Fallbacks.Next(c.model)
		if !ok || !time.Now().Before(c.deadline) {
			return c.giveUp()
		}
		if c.attempts > 0 && !c.takeRetry(false) {
			return c.giveUp()
		}
		from := c.model
		fallback := c.req.Clone()
		c.charge.add(int64(len(fallback.Body())))
		if !c.retarget(&fallback, to) {
			c.finish()
			return nil
		}
		c.payload = fallback.Body()
		fallbacksTotal.WithLabelValues(modelLabel(from), modelLabel(to)).Inc()
		if ce := c.g.cfg.Logger.Check(zapcore.InfoLevel, "falling back"); ce != nil {
			ce.Write(zap.String("from", from), zap.String("to", to), zap.String("reason", string(c.last.reason)))
		}
	}
}

// guard checks and prepares the request before any upstream call (SPEC
// "Guards"): output caps and defaults, validation, and the context window.
// It reports false when it has answered the request itself.
func (c *call) guard() bool {
	cfg := &c.g.cfg
	facts, _ := cfg.Models.Lookup(c.model)
	outputCap, changed, capErr := c.req.ApplyOutputCap(cfg.OutputCap, facts.MaxOutput)
	c.outputCap = outputCap
	if capErr != nil {
		c.guardAction("max_tokens_rejected")
		c.writeError(policy.InvalidRequest, capErr.Message, capErr.Param)
		return false
	}
	if changed {
		c.guardAction("output_cap")
	}
	if cfg.Validate {
		if rerr := c.req.Validate(); rerr != nil {
			c.guardAction("invalid")
			c.writeError(policy.InvalidRequest, rerr.Message, rerr.Param)
			return false
		}
	}
	if cfg.ContextGuard == policy.ContextOff || facts.ContextWindow == 0 {
		return true
	}
	// A request naming no output cap reserves none: the provider accepts it
	// and stops at the window, so counting the model's maximum here would
	// refuse requests the provider serves.
	if policy.FitsByBodySize(int64(len(c.req.Body())), outputCap, facts.ContextWindow) {
		return true
	}
	input := policy.EstimateInputTokens(c.dialect, c.endpoint, c.req.Body())
	c.estimate = input // a tpm zone reserves the same estimate
	if policy.FitsContext(input, outputCap, facts.ContextWindow) {
		return true
	}
	if cfg.ContextGuard == policy.ContextTruncate {
		if out, dropped, ok := policy.Truncate(c.dialect, c.endpoint, c.req.Body(), facts.ContextWindow-outputCap); ok {
			c.guardAction("context_truncated")
			if ce := cfg.Logger.Check(zapcore.InfoLevel, "truncated conversation"); ce != nil {
				ce.Write(zap.String("model", c.model), zap.Int("dropped_messages", dropped), zap.Int64("estimated_input_tokens", input), zap.Int64("context_window", facts.ContextWindow))
			}
			if !sameBytes(out, c.req.Body()) {
				// Offsets moved: read the shorter body again, once.
				c.charge.add(int64(len(out)))
				c.req = policy.ReadRequest(c.dialect, c.endpoint, out)
			}
			c.estimate = 0 // shorter now: estimate again if needed
			return true
		}
	} else if to, ok := policy.ChooseModel(c.model, cfg.Fallbacks, input, outputCap, cfg.Models); ok {
		c.guardAction("context_fallback")
		if ce := cfg.Logger.Check(zapcore.InfoLevel, "context window fallback"); ce != nil {
			ce.Write(zap.String("from", c.model), zap.String("to", to), zap.Int64("estimated_input_tokens", input), zap.Int64("context_window", facts.ContextWindow))
		}
		return c.retarget(&c.req, to)
	}
	c.guardAction("context_rejected")
	c.writeError(policy.ContextOverflow, policy.ContextOverflowMessage(c.dialect, c.endpoint, c.model, input, outputCap, facts.ContextWindow), "messages")
	return false
}

// retarget makes r name model to, clamping its output cap to that model's
// max_output (and a thinking budget with it); every other byte is kept. It
// reports false when it has answered the request itself: the cap that model
// allows leaves no room for the request's thinking budget.
func (c *call) retarget(r *policy.Request, to string) bool {
	r.SetModel(to)
	facts, _ := c.g.cfg.Models.Lookup(to)
	if _, _, err := r.ApplyOutputCap(policy.OutputCapRule{}, facts.MaxOutput); err != nil {
		c.guardAction("max_tokens_rejected")
		c.writeError(policy.InvalidRequest, "model "+to+" (a fallback of "+c.req.Model+"): "+err.Message, err.Param)
		return false
	}
	c.model = to
	return true
}

func (c *call) guardAction(action string) {
	guardActionsTotal.WithLabelValues(c.dialect.String(), action).Inc()
}

// sameBytes reports whether a and b are the same slice (an unchanged body).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// reasonCircuitOpen is why a model was skipped without an attempt.
const reasonCircuitOpen policy.Reason = "circuit_open"

// modelOutcome is how the attempts on one model ended.
type modelOutcome uint8

const (
	// callEnded: an answer reached the client, or the client left.
	callEnded modelOutcome = iota
	// modelUnavailable: the model failed or was skipped; try the fallback.
	modelUnavailable
	// budgetSpent: a retry was due but the retry budget refused it.
	budgetSpent
)

// tryModel runs the attempts of one model: the first and up to `retries`
// more, each while its circuit lets it through.
func (c *call) tryModel(next caddyhttp.Handler) (modelOutcome, error) {
	for retry := 0; ; retry++ {
		if !c.allowAttempt() {
			return modelUnavailable, nil
		}
		if retry == 0 {
			c.g.cfg.Budget.Request(c.model)
		}
		if done, err := c.attempt(next); done {
			return callEnded, err
		}
		if retry >= c.g.cfg.Retries {
			return modelUnavailable, nil
		}
		wait, ok := c.plan(retry)
		if !ok {
			return modelUnavailable, nil
		}
		if !c.takeRetry(c.last.paced()) {
			return budgetSpent, nil
		}
		retriesTotal.WithLabelValues(c.dialect.String(), modelLabel(c.model), string(c.last.reason)).Inc()
		c.logRetry(wait)
		if !c.sleep(wait) {
			c.end = ending{errorType: "client_closed", status: statusClientClosed}
			return callEnded, nil
		}
	}
}

// takeRetry asks the retry budget for one more attempt (a retry or a
// fallback) and counts a refusal. A retry paced by the upstream's hint is
// never refused.
func (c *call) takeRetry(paced bool) bool {
	if paced {
		c.g.cfg.Budget.Paced(c.model)
		return true
	}
	if c.g.cfg.Budget.TryRetry(c.model) {
		return true
	}
	retryBudgetDeniedTotal.WithLabelValues(c.dialect.String()).Inc()
	if ce := c.g.cfg.Logger.Check(zapcore.WarnLevel, "retry budget spent"); ce != nil {
		ce.Write(zap.String("model", c.model), zap.Int("attempts", c.attempts))
	}
	return false
}

// plan decides the wait before the next retry of the same model: the
// larger of the backoff and the upstream's hint (SPEC "Retries"). It
// reports false when the model is unavailable instead: the hint is beyond
// max_wait, or the wait would cross the deadline.
func (c *call) plan(retry int) (time.Duration, bool) {
	wait := c.g.cfg.Backoff.Delay(retry, rand.Int64N)
	if c.last.hinted {
		if c.last.hint > c.g.cfg.MaxWait {
			return 0, false
		}
		wait = max(wait, c.last.hint)
	}
	if !time.Now().Add(wait).Before(c.deadline) {
		return 0, false
	}
	return wait, true
}

// sleep sits out a wait, or returns false at once when the client leaves.
func (c *call) sleep(d time.Duration) bool {
	began := time.Now()
	defer func() { c.waitTime += time.Since(began) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.r.Context().Done():
		return false
	}
}

// attempt sends the request once through next. It reports done when the
// call has ended; otherwise c.last holds the retryable failure.
func (c *call) attempt(next caddyhttp.Handler) (done bool, err error) {
	defer c.reportHealth()
	c.restoreHeaders()
	ctx, cancel := context.WithCancel(c.r.Context())
	c.aw.reset(cancel)
	c.attempts++
	c.publishAttempt()
	attemptsTotal.WithLabelValues(c.dialect.String(), modelLabel(c.model)).Inc()

	c.headersBy = c.deadline
	c.cut = cutByDeadline
	if t := c.g.cfg.AttemptTimeout; t > 0 && c.aw.began.Add(t).Before(c.headersBy) {
		c.headersBy, c.cut = c.aw.began.Add(t), cutByAttempt
	}
	c.dog.arm(time.Until(c.headersBy))
	// Deferred too, for a cut body whose abort panics on through serve:
	// the watchdog must never outlive its attempt (the call is reused).
	defer c.endAttempt(cancel)
	began := time.Now()
	aborted, err := c.serve(next, c.upstreamRequest(ctx))
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
// over the payload: reverse_proxy reads the body once per call
// (caddy-modules.md §0.5).
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

// serve runs next and reports whether the proxy aborted
// (http.ErrAbortHandler, its signal that the upstream response broke off).
// Before anything reached the client that is a failed attempt. A stream
// already on its way is ended in-band by judge, and the abort stops here:
// the stream then closes cleanly, with every byte and the error event
// delivered (an abort reaching Caddy's HTTP/2 server would reset the
// stream and drop what it still buffers). A plain body has no in-band
// form, so its abort goes on, for the client to see a short body.
func (c *call) serve(next caddyhttp.Handler, r *http.Request) (aborted bool, err error) {
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
		c.finish()
		panic(v)
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
		c.end = ending{errorType: "client_closed", status: statusClientClosed}
		return true, nil
	}
	switch state {
	case stateHeaded:
		if aborted || c.tap.sse {
			// The body broke off before its first byte, or the stream
			// ended before its first event: nothing reached the client.
			return c.fail(failure{reason: policy.ReasonConnection, kind: policy.UpstreamUnreachable, err: errNoFirstEvent})
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
		return c.fail(failure{reason: policy.ReasonTimeout, kind: policy.UpstreamTimeout, err: err, cut: cut})
	}
	// Nothing was written.
	if aborted {
		return c.fail(failure{reason: policy.ReasonConnection, kind: policy.UpstreamUnreachable, err: http.ErrAbortHandler})
	}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		switch he.StatusCode {
		case http.StatusBadGateway:
			return c.fail(failure{reason: policy.ReasonConnection, kind: policy.UpstreamUnreachable, err: err})
		case http.StatusGatewayTimeout:
			return c.fail(failure{reason: policy.ReasonTimeout, kind: policy.UpstreamTimeout, err: err})
		}
	}
	if err != nil {
		// Not a proxy failure the gateway can retry: leave it to Caddy's
		// error handling, as if the gateway were not there.
		c.end = ending{errorType: "handler_error", status: statusOf(err)}
		return true, err
	}
	// next returned without writing: retrying would loop forever.
	c.end = ending{errorType: "no_response", status: http.StatusInternalServerError}
	return true, caddyhttp.Error(http.StatusInternalServerError, errNoResponse)
}

// errNoFirstEvent is why an answer that broke off before anything reached
// the client is retried.
var errNoFirstEvent = errors.New("the upstream response ended before its first byte or event")

// errNoResponse explains the usual cause of an empty answer from next.
var errNoResponse = errors.New("the handler after ai_resilience wrote no response; put ai_resilience in the same route or handle block as reverse_proxy")

// judgeHeld classifies a held retryable response once its body is in.
func (c *call) judgeHeld() (done bool, _ error) {
	// An OpenAI 429 for an exhausted quota will not pass with time
	// (SPEC "retry_on"); neither gateway nor client should retry it. Every
	// SDK would retry it on its status alone, so it says so even under
	// `client_retries allow`, which concerns failures that may pass
	// (reference §2.6, §7.3).
	if c.aw.status == http.StatusTooManyRequests && c.dialect == policy.OpenAI && policy.QuotaExhausted(c.dialect, c.aw.buf.Bytes()) {
		c.w.Header().Set("X-Should-Retry", "false")
		c.writeHeld()
		return true, nil
	}
	hint, hinted := policy.WaitHint(c.dialect, c.w.Header(), time.Now())
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

// giveUp ends a call whose models are all unavailable with the last
// failure: the upstream's own error as it came, or a gateway 502/504 when
// the last attempt got no response at all (SPEC "When all attempts fail").
func (c *call) giveUp() error {
	defer c.finish()
	if c.attempts == 0 && c.last.reason == reasonCircuitOpen {
		// Every model's circuit is open: nothing was sent. The client may
		// come back when the first cooldown ends.
		secs := int64(math.Ceil(c.skipped.Seconds()))
		c.w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
		c.w.Header().Set("Retry-After-Ms", strconv.FormatInt(max(c.skipped.Milliseconds(), 1), 10))
		c.writeError(policy.ModelUnavailable, "model "+c.req.Model+" is failing upstream and its circuit breaker is open, with no fallback model available; retry after the cooldown", "")
		return nil
	}
	if c.last.held {
		c.writeHeld()
		return nil
	}
	c.restoreHeaders()
	c.markNoClientRetry()
	c.writeError(c.last.kind, c.failureMessage(), "")
	return nil
}

// failureMessage says what happened to a call that ends with a gateway 502
// or 504: what failed, and how many attempts reached the upstream.
func (c *call) failureMessage() string {
	made := "1 attempt made"
	if c.attempts != 1 {
		made = strconv.Itoa(c.attempts) + " attempts made"
	}
	switch {
	case c.last.kind == policy.UpstreamUnreachable:
		return "the upstream API could not be reached (" + made + "); try again later"
	case c.last.cut == cutByDeadline && c.attempts == 0:
		return "this request's deadline of " + c.g.cfg.Deadline.String() + " ran out before any attempt was made; try again later"
	case c.last.cut == cutByDeadline:
		return "the upstream API had not answered when this request's deadline of " + c.g.cfg.Deadline.String() + " ran out (" + made + "); try again later"
	case c.last.cut == cutByAttempt:
		return "the upstream API sent no response within the attempt_timeout of " + c.g.cfg.AttemptTimeout.String() + " (" + made + "); try again later"
	case c.last.cut == cutByIdle:
		return "the upstream API sent nothing for the idle_timeout of " + c.g.cfg.IdleTimeout.String() + " (" + made + "); try again later"
	}
	return "the upstream API timed out (" + made + "); try again later"
}

// writeHeld sends the held upstream response to the client unchanged, but
// for `x-should-retry: false` when the gateway has already done the
// retrying (or retrying cannot help).
func (c *call) writeHeld() {
	c.markNoClientRetry()
	c.w.WriteHeader(c.aw.status)
	_, _ = c.w.Write(c.aw.buf.Bytes())
	c.end = ending{status: c.aw.status}
	if c.aw.inband {
		// The stream as it came: the error event the SDKs raise, and
		// never retry, in place of an answer.
		c.end.errorType = c.tap.progress.Err.Type
	} else {
		c.end.errorType = policy.UpstreamErrorType(c.aw.buf.Bytes())
	}
}

// markNoClientRetry tells the official SDKs not to retry a failure the
// gateway gave up on, so their retries do not multiply the gateway's
// (reference §7.3), unless `client_retries allow`.
func (c *call) markNoClientRetry() {
	if !c.g.cfg.ClientRetries {
		c.w.Header().Set("X-Should-Retry", "false")
	}
}

// reject answers the request with a gateway error before any attempt.
func (c *call) reject(kind policy.ErrorKind, msg string) {
	c.writeError(kind, msg, "")
	c.finish()
}

// writeError writes a gateway error in the dialect's shape; param names
// the offending request field for OpenAI clients, or is empty.
func (c *call) writeError(kind policy.ErrorKind, msg, param string) {
	body := policy.ErrorBody(c.dialect, kind, msg, param)
	h := c.w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	status := kind.Status(c.dialect)
	c.publishAttempt()
	c.w.WriteHeader(status)
	_, _ = c.w.Write(body)
	c.end = ending{status: status, errorType: kind.String()}
}

// completeResponse ends a response that reached the client: it reads the
// tapped usage and judges the response. A stream that stopped before its
// proper end gets the dialect's in-band error event, so the client cannot
// take the cut answer for a whole one; a stream that carried an error event
// and a body cut short (aborted) are errors too. Each such failure counts
// against the model's circuit like the status it stands for.
func (c *call) completeResponse(aborted bool) {
	t := &c.tap
	t.finish(c.w)
	c.end = ending{status: c.aw.status, errorType: t.errorType}
	cut, cutType, cutReason := policy.CutIncomplete, "stream_incomplete", policy.ReasonConnection
	if c.aw.silent.Load() {
		cut, cutType, cutReason = policy.CutIdle, policy.UpstreamTimeout.String(), policy.ReasonTimeout
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
		c.end.errorType = t.progress.Err.Type
		c.recordHealth(t.progress.Err.Status, "")
	case t.incompleteStream():
		sep, event := t.cutEvent(cut)
		_, _ = c.w.Write(sep)
		_, _ = c.w.Write(event)
		_ = http.NewResponseController(c.w).Flush()
		c.end.errorType = cutType
		c.recordHealth(c.aw.status, cutReason)
	case aborted && !t.sse:
		c.end.errorType = "response_incomplete"
		if cut == policy.CutIdle {
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
