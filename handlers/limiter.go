package handlers

import (
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/tokens"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// Limit is one rate-limit zone a gateway's requests must fit.
type Limit struct {
	Zone *policy.Zone
	// Key is the placeholder that splits the zone per value, or empty.
	Key string
}

// countsTokens reports whether any zone limits tokens, so the request's
// tokens must be estimated and settled.
func countsTokens(limits []Limit) bool {
	for _, l := range limits {
		if l.Zone.Config().TPM > 0 {
			return true
		}
	}
	return false
}

// admission is a call's place in its rate-limit zones: it takes it before
// anything is sent, gives it back when the call never goes upstream, and
// settles it to the call's real usage when the call ends.
type admission struct {
	demands   []policy.Demand  // the zones and keys this request is in
	demandBuf [4]policy.Demand // room for demands without an allocation
	reserved  int64            // tokens reserved in the zones
	held      policy.Admission // what the zones reserved, to settle
	admitted  bool             // held is a reservation
}

// admit takes the request's place in every zone it is in: at once, after
// queueing up to the zones' wait, or not at all, with a 429 the official
// SDKs understand.
func (a *admission) admit(c *call) *refusal {
	limits := c.g.Limits
	if len(limits) == 0 {
		return nil
	}
	repl, _ := c.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	a.demands = a.demandBuf[:0]
	for _, l := range limits {
		key := ""
		if l.Key != "" && repl != nil {
			key = repl.ReplaceAll(l.Key, "")
		}
		if len(key) > maxZoneKey {
			// The value is the client's (a header of up to a megabyte):
			// the zone keeps a fixed-size stand-in instead.
			key = "#" + c.g.keyHash(key)
		}
		a.demands = append(a.demands, policy.Demand{Zone: l.Zone, Key: key})
	}
	if c.g.tokenZones && c.api.Guarded() {
		// tpm reserves the estimated input plus the output cap, as OpenAI
		// and Azure count max_tokens against TPM up front
		// (https://learn.microsoft.com/azure/ai-services/openai/how-to/quota);
		// a request naming no cap reserves none and settles to its usage.
		// The cap is the client's number, up to 2^63-1: the sum saturates.
		a.reserved = tokens.Add(c.inputTokens(), c.outputCap)
	}
	maxWait := min(c.g.cfg.maxWait, time.Until(c.deadline))
	held, delay, refused := policy.Admit(a.demands, a.reserved, maxWait, time.Now())
	if refused != nil {
		limitedTotal.WithLabelValues(refused.Zone, "rejected").Inc()
		return a.refusal(c, refused)
	}
	a.held, a.admitted = held, true
	if delay <= 0 {
		// Every zone counts the request, as every zone counts it queued.
		for _, d := range a.demands {
			limitedTotal.WithLabelValues(d.Zone.Config().Name, "admitted").Inc()
		}
		return nil
	}
	for _, d := range a.demands {
		limitedTotal.WithLabelValues(d.Zone.Config().Name, "queued").Inc()
	}
	if !c.sleep(delay) {
		a.cancel()
		return &refusal{gone: true}
	}
	return nil
}

// cancel gives back everything admit reserved, for a request that will not
// go upstream after all: its client left, or pacing refused it.
func (a *admission) cancel() {
	if a.admitted {
		a.held.Cancel(time.Now())
		a.admitted = false
	}
}

// settle corrects the zones' token buckets to what the call really used:
// the usage the upstream reported (streams included), nothing for a call
// that failed without using any, and the reservation when a successful
// answer said nothing.
func (a *admission) settle(c *call) {
	if !a.admitted || !c.g.tokenZones {
		return
	}
	usage, status := c.tap.progress.Usage, c.end.status
	actual := tokens.Add(usage.InputTokens, usage.OutputTokens)
	switch {
	case actual > 0:
	case !successful(status):
		actual = 0
	default:
		return
	}
	a.held.Settle(actual, time.Now())
	limitTokensTotal.WithLabelValues(modelLabel(c.model), "reserved").Add(float64(a.reserved))
	limitTokensTotal.WithLabelValues(modelLabel(c.model), "settled").Add(float64(actual))
	if usage.InputTokens > 0 && c.estimate > 0 {
		estimateRatio.WithLabelValues(c.api.Family()).Observe(float64(c.estimate) / float64(usage.InputTokens))
	}
}

// refusal answers a request a zone turned away: 429 in the API's shape,
// the zone's state in the API's rate-limit headers, and a retry hint, or
// x-should-retry: false for a request too large ever to fit.
func (a *admission) refusal(c *call, r *policy.Refusal) *refusal {
	if r.Unavailable {
		return &refusal{kind: wire.LimitsUnavailable, retry: r.Retry, advise: adviseRetry,
			message: "rate-limit zone " + strconv.Quote(r.Zone) + " is shared by a fleet whose store cannot be reached, and this gateway refuses such requests until it is back; retry shortly"}
	}
	ref := &refusal{kind: wire.RequestsLimited, limits: &r.Status, retry: r.Retry, advise: adviseRetry}
	if r.Status.TokensLimit > 0 && (r.Never || a.reserved > r.Status.TokensRemaining) {
		ref.kind = wire.TokensLimited
	}
	if r.Never {
		ref.retry, ref.advise = 0, adviseNoRetry
		ref.message = "this request needs about " + strconv.FormatInt(a.reserved, 10) + " tokens (estimated input plus the output cap), more than rate-limit zone " +
			strconv.Quote(r.Zone) + " allows per minute (" + strconv.FormatInt(r.Status.TokensLimit, 10) + "); it can never be admitted: send a shorter input or a lower output cap"
	} else {
		ref.message = "rate limit of zone " + strconv.Quote(r.Zone) + " reached; retry in " + r.Retry.Round(time.Millisecond).String()
	}
	if ce := c.g.Logger.Check(zapcore.InfoLevel, "rate limited"); ce != nil {
		ce.Write(zap.String("zone", r.Zone), zap.String("key_hash", c.g.keyHash(a.key(r.Zone))), zap.Bool("never", r.Never), zap.Int64("tokens", a.reserved), zap.Int64("retry_ms", r.Retry.Milliseconds()))
	}
	return ref
}

// key returns this request's key in the named zone.
func (a *admission) key(zone string) string {
	for _, d := range a.demands {
		if d.Zone.Config().Name == zone {
			return d.Key
		}
	}
	return ""
}

// maxZoneKey is the longest zone key kept as it is; a longer one is kept
// as its keyed hash, so a zone's memory is bounded by its max_keys alone.
const maxZoneKey = 64

// keyHash identifies a key in logs without writing it (policy.KeyHash,
// under the gateway's hash key).
func (g *Gateway) keyHash(key string) string {
	return policy.KeyHash(g.HashKey, key)
}
