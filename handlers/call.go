package handlers

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// call is one client request on its way through the gateway: its body,
// read once and guarded, its place in the rate-limit zones, its attempts,
// waits and fallbacks, and what it ended as.
type call struct {
	g   *Gateway
	w   http.ResponseWriter
	r   *http.Request
	api wire.API

	start    time.Time
	deadline time.Time    // set once the body has been read
	raw      *[]byte      // the request body as received (decoded), pooled
	charge   bufferCharge // the body and held responses, in max_buffered
	req      body.Request // the body read once, then guarded; fallbacks copy it
	payload  []byte       // the body sent upstream: req's, or a copy naming the fallback model
	model    string       // the model now being tried
	served   string       // the model of the last attempt, or the guarded request's
	snapshot http.Header  // the client's response headers before any attempt

	outputCap int64 // the output cap the request names, after the guards
	estimate  int64 // estimated input tokens, once made
	limits    admission

	aw     attemptWriter
	tap    responseTap
	bodies *openBodies // the attempts' body readers not yet closed
	// dog outlives the call's reuse, as its timer's callback may still
	// be waiting for the lock when the call is reset: only its lock
	// guards it, and a late callback finds it stopped.
	dog *watchdog
	// logFields holds the fields of the call's log line, so that the
	// pooled call carries them rather than a new slice per line.
	logFields [11]zap.Field
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

	end ending
}

// ending is how the call ended, for its log line, metrics and placeholders.
type ending struct {
	status    int
	errorType string // empty on success
}

// statusClientClosed is the status Caddy records for a client that left
// (nginx's 499, used by reverse_proxy too).
const statusClientClosed = 499

// clientGone is how a call ends whose client has left.
var clientGone = ending{errorType: "client_closed", status: statusClientClosed}

// calls recycles calls: a call is a few kilobytes of state, and zeroing a
// new one per request cost more than anything the gateway does with it.
// What a call's attempts leave running (a transport still reading a body)
// holds only objects of its own (openBodies), never the call.
var calls = sync.Pool{New: func() any { return new(call) }}

func (g *Gateway) newCall(w http.ResponseWriter, r *http.Request, api wire.API) *call {
	c := calls.Get().(*call)
	now := time.Now()
	dog := c.dog
	if dog == nil {
		dog = new(watchdog)
	}
	*c = call{
		dog: dog,
		g:   g, w: w, r: r, api: api,
		start:    now,
		deadline: now.Add(g.cfg.deadline),
		raw:      getBody(),
		charge:   bufferCharge{limit: g.cfg.MaxBuffered},
		bodies:   new(openBodies),
		snapshot: snapshotHeader(w.Header()),
		tap:      responseTap{api: api, hold: c.tap.hold[:0], vals: c.tap.vals[:0]},
	}
	c.aw = attemptWriter{rw: w, retryOn: g.cfg.retryOn, tap: &c.tap, dog: c.dog, idle: g.cfg.idleTimeout > 0, charge: &c.charge}
	c.watchHeaders = g.cfg.idleTimeout > 0 || g.cfg.attemptTimeout > 0
	return c
}

// release returns the call's pooled memory. The request body goes back to
// the pool only when every attempt's reader has been closed: the transport
// may go on reading a body after the response came back (net/http
// RoundTripper contract), and must not read a buffer another request reuses.
func (c *call) release() {
	c.aw.reset(nil)
	if c.bodies.n.Load() == 0 {
		putBody(c.raw)
	}
	c.charge.give(c.charge.held)
	if cap(c.tap.hold) > maxHeldEvent || cap(c.tap.vals) > 64 {
		c.tap.hold, c.tap.vals = nil, nil // no pinning of rare large buffers
	}
	hold, vals, dog := c.tap.hold, c.tap.vals, c.dog
	*c = call{dog: dog}
	c.tap.hold, c.tap.vals = hold, vals
	calls.Put(c)
}

// serve takes the request through the gateway's stages, in order, each of
// which either lets it go on or decides the answer itself: the body is
// read whole, the guards check and prepare it, it takes its place in its
// rate-limit zones, it waits out an upstream that said its limit is spent,
// and then it is sent, down its fallback chain if need be. Whatever the
// way out, finish records the call once.
func (c *call) serve(next caddyhttp.Handler) error {
	defer c.finish()
	if ref := c.readBody(); ref != nil {
		return c.answer(ref)
	}
	if ref := c.guard(); ref != nil {
		return c.answer(ref)
	}
	if ref := c.limits.admit(c); ref != nil {
		return c.answer(ref)
	}
	if ref := c.pace(); ref != nil {
		c.limits.cancel() // it never goes upstream, so it takes no place in the zones
		return c.answer(ref)
	}
	if err := c.send(next); err != nil {
		return err
	}
	return c.unanswered()
}

// unanswered returns, for a call whose client left before anything was
// written to it, the error reverse_proxy returns in that case: status
// 499, which Caddy records and, were anyone still reading, writes. A nil
// error there would have Go's server send an empty 200, an answer the
// client could take for a whole one.
func (c *call) unanswered() error {
	if c.end != clientGone {
		return nil
	}
	err := context.Cause(c.r.Context())
	if err == nil {
		err = errClientLeft
	}
	return caddyhttp.Error(statusClientClosed, err)
}

// errClientLeft is why a call ended whose client left without its
// context saying so.
var errClientLeft = errors.New("the client left")

// refusal is an answer the gateway decides on itself, instead of (or
// after) the upstream: a gateway error in the API's shape, or nothing at
// all when the client has gone.
type refusal struct {
	kind           wire.ErrorKind
	message, param string
	// retry, when set, is sent as retry-after-ms and retry-after; advise
	// says what x-should-retry tells the client.
	retry  time.Duration
	advise advice
	// limits, when set, are described in the API's rate-limit headers.
	limits *wire.RateLimits
	// errorType, when set, is logged instead of the kind's name.
	errorType string
	// gone means the client has left: nobody is there to answer.
	gone bool
}

// advice is what a refusal's x-should-retry says.
type advice uint8

const (
	adviseNothing advice = iota
	adviseRetry
	adviseNoRetry
)

// maxRetryAfter bounds the wait hints the gateway sends: the official SDKs
// ignore, or give up entirely on, a retry-after above 60 s (for example
// openai-go's retry delay bound).
const maxRetryAfter = 60 * time.Second

// answer writes a refusal to the client: the API's error body and status,
// with the wait hints every official SDK reads (retry-after-ms first, then
// retry-after in whole seconds, at least 1 and never 0, which some SDKs
// take as "retry now") and x-should-retry saying whether waiting can help
// at all. It returns nil, for the stages' convenience, or, when the client
// has gone, the error of unanswered.
func (c *call) answer(ref *refusal) error {
	if ref.gone {
		c.end = clientGone
		return c.unanswered()
	}
	h := c.w.Header()
	if ref.limits != nil {
		c.api.WriteRateLimits(h, *ref.limits, time.Now())
	}
	if ref.retry > 0 {
		retry := min(ref.retry, maxRetryAfter)
		h.Set("Retry-After-Ms", strconv.FormatInt(max(retry.Milliseconds(), 1), 10))
		h.Set("Retry-After", strconv.FormatInt(max(int64(math.Ceil(retry.Seconds())), 1), 10))
	}
	switch ref.advise {
	case adviseRetry:
		h.Set("X-Should-Retry", "true")
	case adviseNoRetry:
		h.Set("X-Should-Retry", "false")
	}
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	status := c.api.ErrorStatus(ref.kind)
	c.publishAttempt()
	c.w.WriteHeader(status)
	_, _ = c.w.Write(c.api.ErrorBody(ref.kind, ref.message, ref.param))
	c.end = ending{status: status, errorType: ref.kind.String()}
	if ref.errorType != "" {
		c.end.errorType = ref.errorType
	}
	return nil
}

// invalid is the refusal of a request the provider would refuse anyway.
func invalid(err *body.RequestError) *refusal {
	return &refusal{kind: wire.InvalidRequest, message: err.Message, param: err.Param}
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

// snapshotHeader copies the client's response headers before any attempt,
// or returns nil when there are none, the common case, which needs no map.
func snapshotHeader(h http.Header) http.Header {
	if len(h) == 0 {
		return nil
	}
	return h.Clone()
}
