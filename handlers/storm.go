package handlers

import (
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// The storm guards on the request path: each attempt asks the model's
// circuit first and reports what it says about the model's health after;
// each retry the gateway schedules on its own asks the retry budget.

// allowAttempt asks the model's circuit whether the next attempt may go
// upstream, and keeps the permit that the attempt's outcome is reported
// with. A refusal is counted; the call then moves on to the fallback, or
// gives up.
func (c *call) allowAttempt() bool {
	cb := c.g.Circuits
	if cb == nil {
		return true
	}
	p, tr := cb.Allow(c.model)
	c.g.circuitChanged(tr)
	if p.Allowed {
		c.permit = p
		return true
	}
	guardActionsTotal.WithLabelValues(c.api.Family(), "circuit_open").Inc()
	c.skipped = p.RetryIn
	c.last.reason = reasonCircuitOpen
	return false
}

// recordHealth notes what the attempt in progress says about its model's
// health: status is what the upstream answered with, or what an in-band
// error event stands for (0 when nothing answered), and reason why the
// attempt failed, if it did (policy.HealthOutcome decides). It may be called
// more than once for one attempt, a 200 whose stream then breaks for
// example; the worst outcome is reported.
func (c *call) recordHealth(status int, reason policy.Reason) {
	c.health = c.health.Worse(policy.HealthOutcome(status, reason))
}

// reportHealth hands the attempt's outcome to the circuit breaker, with the
// permit the attempt started under, and readies both for the next attempt.
func (c *call) reportHealth() {
	p, o := c.permit, c.health
	c.permit, c.health = policy.Permit{}, policy.OutcomeNeutral
	if cb := c.g.Circuits; cb != nil && p.Allowed {
		c.g.circuitChanged(cb.Record(p, o))
	}
}

// circuitChanged logs and counts a circuit transition, if there was one.
func (g *Gateway) circuitChanged(tr policy.Transition) {
	CircuitChanged(g.Logger, tr)
}

// CircuitChanged logs a circuit transition to logger and counts it, if
// there was one: those of the request path, and those a fleet's store
// decides, which reach the breaker outside any request.
func CircuitChanged(logger *zap.Logger, tr policy.Transition) {
	if !tr.Changed() {
		return
	}
	circuitTransitionsTotal.WithLabelValues(modelLabel(tr.Model), tr.To.String()).Inc()
	lvl := zap.InfoLevel
	if tr.To == policy.CircuitOpen {
		lvl = zap.WarnLevel
	}
	if ce := logger.Check(lvl, "circuit "+tr.To.String()); ce != nil {
		ce.Write(zap.String("model", tr.Model), zap.String("from", tr.From.String()))
	}
}

// paced reports whether the retry after this failure waits for the
// upstream's own explicit hint (retry-after-ms, retry-after, or an exhausted
// rate-limit window's reset). Such a retry comes when the upstream said it
// may, so the retry budget does not refuse it. A hint of zero paces nothing:
// the gateway's backoff decides that wait.
func (f failure) paced() bool {
	return f.hinted && f.hint > 0
}
