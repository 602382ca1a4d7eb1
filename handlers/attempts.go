package handlers

import (
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// failure describes an attempt that failed in a retryable way.
type failure struct {
	reason policy.Reason
	// held is true when the failure is an upstream response, kept in the
	// attempt writer with its headers in the client's header map.
	held bool
	// kind is the gateway error written if this was the last failure and
	// no upstream response is held.
	kind   wire.ErrorKind
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

// send sends the request to the requested model and then down its
// fallback chain until an answer reaches the client or nothing is left to
// try, in which case the last failure is the answer.
func (c *call) send(next caddyhttp.Handler) error {
	prepareUpstreamHeader(c.r.Header)
	if !time.Now().Before(c.deadline) {
		// Queueing for a zone took the whole deadline.
		c.last = failure{reason: policy.ReasonTimeout, kind: wire.UpstreamTimeout, cut: cutByDeadline}
		return c.giveUp()
	}
	for {
		outcome, err := c.tryModel(next)
		switch outcome {
		case callEnded:
			return err
		case budgetSpent:
			return c.giveUp()
		}
		if _, ok := c.g.cfg.fallbacks.Next(c.model); !ok || !time.Now().Before(c.deadline) {
			return c.giveUp()
		}
		if c.attempts > 0 && !c.takeRetry(false) {
			return c.giveUp()
		}
		if !c.fallBack() {
			return c.giveUp()
		}
	}
}

// fallBack moves the request to the next model down its chain that can
// take it, and reports false when none is left. A model whose output limit
// leaves no room for what the request needs (a thinking budget) is passed
// over: the client's request is valid, and its failure so far is the
// upstream's, not a 400 of the gateway's.
func (c *call) fallBack() bool {
	from := c.model
	for to, ok := c.g.cfg.fallbacks.Next(from); ok; to, ok = c.g.cfg.fallbacks.Next(to) {
		fallback := c.req.Clone()
		if ref := c.retarget(&fallback, to); ref != nil {
			if ce := c.g.Logger.Check(zapcore.WarnLevel, "fallback passed over"); ce != nil {
				ce.Write(zap.String("from", from), zap.String("to", to), zap.String("reason", ref.message))
			}
			continue
		}
		c.charge.add(int64(len(fallback.Body())))
		c.payload = fallback.Body()
		fallbacksTotal.WithLabelValues(modelLabel(from), modelLabel(to)).Inc()
		if ce := c.g.Logger.Check(zapcore.InfoLevel, "falling back"); ce != nil {
			ce.Write(zap.String("from", from), zap.String("to", to), zap.String("reason", string(c.last.reason)))
		}
		return true
	}
	return false
}

// tryModel runs the attempts of one model: the first and up to `retries`
// more, each while its circuit lets it through.
func (c *call) tryModel(next caddyhttp.Handler) (modelOutcome, error) {
	for retry := 0; ; retry++ {
		if !c.allowAttempt() {
			if retry > 0 {
				if ce := c.g.Logger.Check(zapcore.InfoLevel, "retry dropped"); ce != nil {
					ce.Write(zap.String("model", c.model), zap.String("reason", string(reasonCircuitOpen)))
				}
			}
			return modelUnavailable, nil
		}
		if retry == 0 {
			c.g.Budget.Request(c.model)
		}
		if done, err := c.attempt(next); done {
			return callEnded, err
		}
		if retry >= c.g.cfg.retries {
			return modelUnavailable, nil
		}
		wait, ok := c.plan(retry)
		if !ok {
			return modelUnavailable, nil
		}
		if !c.takeRetry(c.last.paced()) {
			return budgetSpent, nil
		}
		retriesTotal.WithLabelValues(c.api.Family(), modelLabel(c.model), string(c.last.reason)).Inc()
		c.logRetry(wait)
		if !c.sleep(wait) {
			c.end = clientGone
			return callEnded, nil
		}
	}
}

// takeRetry asks the retry budget for one more attempt (a retry or a
// fallback) and counts a refusal. A retry paced by the upstream's hint is
// never refused.
func (c *call) takeRetry(paced bool) bool {
	if paced {
		c.g.Budget.Paced(c.model)
		return true
	}
	if c.g.Budget.TryRetry(c.model) {
		return true
	}
	retryBudgetDeniedTotal.WithLabelValues(c.api.Family()).Inc()
	if ce := c.g.Logger.Check(zapcore.WarnLevel, "retry budget spent"); ce != nil {
		ce.Write(zap.String("model", c.model), zap.Int("attempts", c.attempts))
	}
	return false
}

// plan decides the wait before the next retry of the same model: the
// larger of the backoff and the upstream's hint. It reports false when the
// model is unavailable instead: the hint is beyond max_wait, or the wait
// would cross the deadline.
func (c *call) plan(retry int) (time.Duration, bool) {
	wait := c.g.cfg.backoff.Delay(retry, rand.Int64N)
	if c.last.hinted {
		if c.last.hint > c.g.cfg.maxWait {
			return 0, false
		}
		wait = max(wait, c.last.hint)
	}
	if !time.Now().Add(wait).Before(c.deadline) {
		return 0, false
	}
	return wait, true
}

// giveUp ends a call whose models are all unavailable with the last
// failure: the upstream's own error as it came, or a gateway 502/504 when
// the last attempt got no response at all.
func (c *call) giveUp() error {
	if c.attempts == 0 && c.last.reason == reasonCircuitOpen {
		// Every model's circuit is open: nothing was sent. The client may
		// come back when the first cooldown ends.
		return c.answer(&refusal{kind: wire.ModelUnavailable, retry: max(c.skipped, time.Millisecond),
			message: "model " + c.req.Model + " is failing upstream and its circuit breaker is open, with no fallback model available; retry after the cooldown"})
	}
	if c.last.held {
		c.writeHeld()
		return nil
	}
	c.restoreHeaders()
	ref := &refusal{kind: c.last.kind, message: c.failureMessage()}
	if !c.g.cfg.clientRetries {
		ref.advise = adviseNoRetry
	}
	return c.answer(ref)
}

// failureMessage says what happened to a call that ends with a gateway 502
// or 504: what failed, and how many attempts reached the upstream.
func (c *call) failureMessage() string {
	made := "1 attempt made"
	if c.attempts != 1 {
		made = strconv.Itoa(c.attempts) + " attempts made"
	}
	switch {
	case c.last.kind == wire.UpstreamUnreachable:
		return "the upstream API could not be reached (" + made + "); try again later"
	case c.last.cut == cutByDeadline && c.attempts == 0:
		return "this request's deadline of " + c.g.cfg.deadline.String() + " ran out before any attempt was made; try again later"
	case c.last.cut == cutByDeadline:
		return "the upstream API had not answered when this request's deadline of " + c.g.cfg.deadline.String() + " ran out (" + made + "); try again later"
	case c.last.cut == cutByAttempt:
		return "the upstream API sent no response within the attempt_timeout of " + c.g.cfg.attemptTimeout.String() + " (" + made + "); try again later"
	case c.last.cut == cutByIdle:
		return "the upstream API sent nothing for the idle_timeout of " + c.g.cfg.idleTimeout.String() + " (" + made + "); try again later"
	}
	return "the upstream API timed out (" + made + "); try again later"
}

// writeHeld sends the held upstream response to the client unchanged, but
// for `x-should-retry: false` when the gateway has already done the
// retrying (or retrying cannot help).
func (c *call) writeHeld() {
	if !c.g.cfg.clientRetries {
		c.w.Header().Set("X-Should-Retry", "false")
	}
	c.w.WriteHeader(c.aw.status)
	_, _ = c.w.Write(c.aw.buf.Bytes())
	c.end = ending{status: c.aw.status}
	if c.aw.inband {
		// The stream as it came: the error event the SDKs raise, and
		// never retry, in place of an answer.
		c.end.errorType = c.tap.progress.Err.Type
	} else {
		c.end.errorType = c.tap.errorType
	}
}
