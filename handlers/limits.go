package handlers

import (
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
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

// admit takes the request's place in every zone it is in before anything
// is sent (SPEC "Limits"): at once, after queueing up to the zones' wait,
// or not at all, with a 429 the official SDKs understand. It reports false
// when it has answered the request itself.
func (c *call) admit() bool {
	limits := c.g.cfg.Limits
	if len(limits) == 0 {
		return true
	}
	repl, _ := c.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	c.demands = c.demandBuf[:0]
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
		c.demands = append(c.demands, policy.Demand{Zone: l.Zone, Key: key})
	}
	if c.g.tokenZones {
		// tpm reserves the estimated input plus the output cap (OpenAI
		// and Azure count max_tokens against TPM up front, reference §5);
		// a request naming no cap reserves none and settles to its usage.
		if c.estimate == 0 { // the context guard may have made it already
			c.estimate = policy.EstimateInputTokens(c.dialect, c.endpoint, c.req.Body())
		}
		// The cap is the client's number, up to 2^63-1: the sum saturates.
		c.reserved = policy.SaturatingAdd(c.estimate, c.outputCap)
		c.requestStreamUsage()
	}
	maxWait := min(c.g.cfg.MaxWait, time.Until(c.deadline))
	admission, delay, refusal := policy.Admit(c.demands, c.reserved, maxWait, time.Now())
	if refusal != nil {
		limitedTotal.WithLabelValues(refusal.Zone, "rejected").Inc()
		c.refuse(refusal)
		return false
	}
	c.admission, c.admitted = admission, true
	if delay <= 0 {
		// Every zone counts the request, as every zone counts it queued.
		for _, d := range c.demands {
			limitedTotal.WithLabelValues(d.Zone.Config().Name, "admitted").Inc()
		}
		return true
	}
	for _, d := range c.demands {
		limitedTotal.WithLabelValues(d.Zone.Config().Name, "queued").Inc()
	}
	if !c.sleep(delay) {
		c.cancelAdmission()
		c.end = ending{errorType: "client_closed", status: statusClientClosed}
		return false
	}
	return true
}

// cancelAdmission gives back everything admit reserved, for a request that
// will not go upstream after all: its client left, or pacing refused it.
func (c *call) cancelAdmission() {
	if c.admitted {
		c.admission.Cancel(time.Now())
		c.admitted = false
	}
}

// requestStreamUsage asks an OpenAI chat stream for its usage chunk, which
// token settlement needs, and strips it from what the client sees.
func (c *call) requestStreamUsage() {
	if c.dialect != policy.OpenAI || c.endpoint != policy.ChatCompletions {
		return
	}
	if c.req.RequestStreamUsage() {
		c.tap.strip = true
	}
}

// settle corrects the zones' token buckets to what the call really used:
// the usage the upstream reported (streams included), nothing for a call
// that failed without using any, and the reservation when a successful
// answer said nothing.
func (c *call) settle(usage policy.Usage, status int) {
	if !c.g.tokenZones || !c.admitted {
		return
	}
	actual := policy.SaturatingAdd(usage.InputTokens, usage.OutputTokens)
	switch {
	case actual > 0:
	case !successful(status):
		actual = 0
	default:
		return
	}
	c.admission.Settle(actual, time.Now())
	limitTokensTotal.WithLabelValues(modelLabel(c.model), "reserved").Add(float64(c.reserved))
	limitTokensTotal.WithLabelValues(modelLabel(c.model), "settled").Add(float64(actual))
	if usage.InputTokens > 0 && c.estimate > 0 {
		estimateRatio.WithLabelValues(c.dialect.String()).Observe(float64(c.estimate) / float64(usage.InputTokens))
	}
}

// refuse answers a request a zone turned away: 429 in the dialect's shape,
// the zone's state in the dialect's rate-limit headers, and a retry hint,
// or x-should-retry: false for a request too large ever to fit.
func (c *call) refuse(r *policy.Refusal) {
	if r.Unavailable {
		c.writeRateLimited(policy.LimitsUnavailable, "rate-limit zone "+strconv.Quote(r.Zone)+" is shared by a fleet whose store cannot be reached, and this gateway refuses such requests until it is back; retry shortly", r.Retry, true)
		return
	}
	writeZoneHeaders(c.w.Header(), c.dialect, r.Status, time.Now())
	kind := policy.RequestsLimited
	if r.Status.TokensLimit > 0 && (r.Never || c.reserved > r.Status.TokensRemaining) {
		kind = policy.TokensLimited
	}
	var msg string
	if r.Never {
		msg = "this request needs about " + strconv.FormatInt(c.reserved, 10) + " tokens (estimated input plus the output cap), more than rate-limit zone " +
			strconv.Quote(r.Zone) + " allows per minute (" + strconv.FormatInt(r.Status.TokensLimit, 10) + "); it can never be admitted: send a shorter input or a lower output cap"
	} else {
		msg = "rate limit of zone " + strconv.Quote(r.Zone) + " reached; retry in " + r.Retry.Round(time.Millisecond).String()
	}
	if ce := c.g.cfg.Logger.Check(zapcore.InfoLevel, "rate limited"); ce != nil {
		ce.Write(zap.String("zone", r.Zone), zap.String("key_hash", c.g.keyHash(c.demandKey(r.Zone))), zap.Bool("never", r.Never), zap.Int64("tokens", c.reserved), zap.Int64("retry_ms", r.Retry.Milliseconds()))
	}
	c.writeRateLimited(kind, msg, r.Retry, !r.Never)
}

// demandKey returns this request's key in the named zone.
func (c *call) demandKey(zone string) string {
	for _, d := range c.demands {
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
	return policy.KeyHash(g.cfg.HashKey, key)
}

// writeZoneHeaders describes a zone the way the provider describes its own
// limits, so SDKs and clients can pace themselves (reference §1.5, §7.2):
// anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset} with RFC 3339
// resets, or x-ratelimit-{limit,remaining,reset}-{requests,tokens} with
// durations such as 1s or 6m0s.
func writeZoneHeaders(h http.Header, d policy.Dialect, s policy.ZoneStatus, now time.Time) {
	for _, dim := range [...]struct {
		name             string
		limit, remaining int64
		reset            time.Duration
	}{
		{"requests", s.RequestsLimit, s.RequestsRemaining, s.RequestsReset},
		{"tokens", s.TokensLimit, s.TokensRemaining, s.TokensReset},
	} {
		if dim.limit <= 0 {
			continue
		}
		limit, remaining := strconv.FormatInt(dim.limit, 10), strconv.FormatInt(dim.remaining, 10)
		if d == policy.Anthropic {
			h.Set("Anthropic-Ratelimit-"+dim.name+"-Limit", limit)
			h.Set("Anthropic-Ratelimit-"+dim.name+"-Remaining", remaining)
			// RFC 3339 here has whole seconds: round up, so the header
			// never promises capacity before it is there.
			h.Set("Anthropic-Ratelimit-"+dim.name+"-Reset", ceilSecond(now.Add(dim.reset)).UTC().Format(time.RFC3339))
			continue
		}
		h.Set("X-Ratelimit-Limit-"+dim.name, limit)
		h.Set("X-Ratelimit-Remaining-"+dim.name, remaining)
		h.Set("X-Ratelimit-Reset-"+dim.name, dim.reset.Round(time.Millisecond).String())
	}
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}
