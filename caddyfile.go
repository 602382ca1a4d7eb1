package airesilience

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/handlers"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ai_resilience", parseCaddyfile)
	// The module orders itself, so a Caddyfile needs no global `order` line.
	httpcaddyfile.RegisterDirectiveOrder("ai_resilience", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := Handler{noStore: !hasStore(h.Option("ai_resilience"))}
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// hasStore reports whether the ai_resilience global option, as its parser
// returned it (nil when absent), names a fleet store.
func hasStore(option any) bool {
	app, ok := option.(httpcaddyfile.App)
	return ok && gjson.GetBytes(app.Value, "redis").Exists()
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	ai_resilience [<matcher>] {
//		provider        auto|anthropic|openai
//		max_body        <size>
//		max_buffered    <size>
//		retries         <n>
//		backoff         <base> [<max>]
//		retry_on        <status>...
//		max_wait        <duration>
//		deadline        <duration>
//		attempt_timeout <duration>
//		idle_timeout    <duration>
//		fallback        <model> <next>...
//		client_retries  allow|deny
//		max_tokens      <n> [clamp|reject]
//		default_max_tokens <n>
//		model <name> {
//			context_window <n>
//			max_output     <n>
//		}
//		context_guard   reject|truncate|off
//		validate        on|off
//		pace_upstream   on|off
//		limit <zone> {
//			key      <placeholder>
//			rpm      <n>
//			tpm      <n>
//			wait     <duration>
//			max_keys <n>
//			scope    fleet|instance
//		}
//		circuit_breaker <failures> <cooldown> | off
//		circuit_breaker <failures> <cooldown> {
//			failure_rate <percent>
//			window       <duration>
//			min_calls    <n>
//			probes       <n>
//		}
//		retry_budget    <percent> [<min_per_second>] | off
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	var chainLines []int // the line of each fallback chain
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "provider":
			var v string
			if v, err = oneArg(d); err == nil {
				if _, perr := wire.ParseProvider(v); perr != nil {
					err = d.Errf("%v", perr)
				}
				h.Provider = v
			}
		case "max_body":
			err = parseSize(d, &h.MaxBody)
		case "max_buffered":
			err = parseSize(d, &h.MaxBuffered)
		case "retries":
			err = h.parseRetries(d)
		case "backoff":
			err = h.parseBackoff(d)
		case "retry_on":
			err = h.parseRetryOn(d)
		case "max_wait", "deadline":
			// Zero would read as "use the default" in JSON; say so here
			// rather than quietly waiting 60s or 5m.
			name, dst := d.Val(), &h.MaxWait
			if name == "deadline" {
				dst = &h.Deadline
			}
			if err = parseDuration(d, dst); err == nil && *dst == 0 {
				hint := "to give up on every wait hint use a short max_wait such as 1ms"
				if name == "deadline" {
					hint = "a deadline is how long a call may take in all, such as 2m"
				}
				err = d.Errf("%s must be longer than 0 (0 would mean the default); %s", name, hint)
			}
		case "attempt_timeout":
			err = parseDuration(d, &h.AttemptTimeout)
		case "idle_timeout":
			err = parseDuration(d, &h.IdleTimeout)
		case "fallback":
			err = h.parseFallback(d, &chainLines)
		case "client_retries":
			var v string
			if v, err = oneArg(d); err == nil && v != "allow" && v != "deny" {
				err = d.Errf("client_retries must be allow or deny, not %q", v)
			}
			h.ClientRetries = v
		case "max_tokens":
			err = h.parseMaxTokens(d)
		case "default_max_tokens":
			err = parseCount(d, &h.DefaultMaxTokens)
		case "model":
			err = h.parseModel(d)
		case "context_guard":
			var v string
			if v, err = oneArg(d); err == nil {
				if _, perr := policy.ParseContextMode(v); perr != nil {
					err = d.Errf("%v", perr)
				}
			}
			h.ContextGuard = v
		case "validate":
			var on bool
			if on, err = onOff(d); err == nil {
				h.ValidateRequests = &on
			}
		case "limit":
			err = h.parseLimit(d)
		case "pace_upstream":
			var on bool
			if on, err = onOff(d); err == nil {
				h.PaceUpstream = &on
			}
		case "circuit_breaker":
			err = h.parseCircuitBreaker(d)
		case "retry_budget":
			err = h.parseRetryBudget(d)
		default:
			err = d.Errf("unrecognized ai_resilience subdirective %q; see the README for the list", d.Val())
		}
		if err != nil {
			return err
		}
	}
	// The settings that cannot work together: the same checks as the
	// module's, run on a copy so that the defaults they fill in stay out
	// of the adapted JSON, and reported at the block's end.
	if err := checkCombination(h.Config); err != nil {
		return d.Errf("%v", err)
	}
	return nil
}

// checkCombination provisions and validates a deep copy of cfg.
func checkCombination(cfg handlers.Config) error {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	var c handlers.Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	if err := c.Provision(); err != nil {
		return err
	}
	return c.Validate()
}

// oneArg returns the single argument of the current subdirective.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	name := d.Val()
	if !d.NextArg() {
		return "", d.Errf("%s needs a value", name)
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.Errf("%s takes one value, got another: %q", name, d.Val())
	}
	return v, nil
}

func parseDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur < 0 {
		return d.Errf("bad %s duration %q: use a Go duration such as 500ms, 30s or 5m", name, v)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// parseSize reads a size subdirective (max_body, max_buffered) the way
// Caddy reads sizes: 16MB, 512KB, 32MiB.
func parseSize(d *caddyfile.Dispenser, dst *int64) error {
	name := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	size, err := humanize.ParseBytes(v)
	if err != nil || size == 0 || size > 1<<40 {
		return d.Errf("bad %s size %q: use a size such as 512KB, 16MB or 32MiB", name, v)
	}
	*dst = int64(size)
	return nil
}

func (h *Handler) parseRetries(d *caddyfile.Dispenser) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(v)
	if err == nil {
		err = handlers.CheckRetries(n)
	}
	if err != nil {
		return d.Errf("bad retries count %q: use a whole number from 0 to %d", v, handlers.MaxRetries)
	}
	h.Retries = &n
	return nil
}

func (h *Handler) parseBackoff(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.Errf("backoff takes a base and an optional max duration, e.g. `backoff 500ms 8s`")
	}
	b := &handlers.Backoff{}
	for i, dst := range []*caddy.Duration{&b.Base, &b.Max}[:len(args)] {
		dur, err := caddy.ParseDuration(args[i])
		if err != nil || dur <= 0 {
			return d.Errf("bad backoff duration %q: use a positive duration such as 500ms or 8s", args[i])
		}
		*dst = caddy.Duration(dur)
	}
	if err := b.Check(); err != nil {
		return d.Errf("%v", err)
	}
	h.Backoff = b
	return nil
}

func (h *Handler) parseRetryOn(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("retry_on needs at least one status code, e.g. `retry_on 429 529`")
	}
	for _, a := range args {
		code, err := strconv.Atoi(a)
		if err != nil {
			return d.Errf("bad retry_on status %q: use HTTP error statuses from 400 to 599", a)
		}
		if _, err := policy.NewRetryOn([]int{code}); err != nil {
			return d.Err(err.Error())
		}
		h.RetryOn = append(h.RetryOn, code)
	}
	return nil
}

func (h *Handler) parseFallback(d *caddyfile.Dispenser, chainLines *[]int) error {
	chain := d.RemainingArgs()
	if len(chain) < 2 {
		return d.Errf("fallback needs a model and at least one model to use when it is unavailable, e.g. `fallback claude-opus-4-5 claude-sonnet-4-5`")
	}
	chains := append(h.Fallback[:len(h.Fallback):len(h.Fallback)], chain)
	if _, err := policy.NewFallbacks(chains); err != nil {
		var repeated *policy.RepeatedModelError
		if errors.As(err, &repeated) && repeated.Chain != repeated.Earlier {
			return d.Errf("model %q is already in the fallback chain on line %d; a model may appear in one chain only, so merge the chains", repeated.Model, (*chainLines)[repeated.Earlier])
		}
		return d.Errf("%v", err)
	}
	h.Fallback = chains
	*chainLines = append(*chainLines, d.Line())
	return nil
}

// parseCount reads a positive whole number: of tokens, or of requests for
// rpm, or of keys for max_keys.
func parseCount(d *caddyfile.Dispenser, dst *int64) error {
	name := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		unit := "tokens"
		switch name {
		case "rpm":
			unit = "requests a minute"
		case "max_keys":
			unit = "keys"
		}
		return d.Errf("bad %s %q: use a positive whole number of %s", name, v, unit)
	}
	*dst = n
	return nil
}

// onOff reads a single on or off.
func onOff(d *caddyfile.Dispenser) (bool, error) {
	name := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return false, err
	}
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("%s must be on or off, not %q", name, v)
}

func (h *Handler) parseMaxTokens(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.Errf("max_tokens takes a ceiling and an optional mode, e.g. `max_tokens 4096 clamp`")
	}
	n, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || n <= 0 {
		return d.Errf("bad max_tokens %q: use a positive whole number of tokens", args[0])
	}
	mt := &handlers.MaxTokens{Limit: n}
	if len(args) == 2 {
		if _, err := policy.ParseCapMode(args[1]); err != nil {
			return d.Errf("%v", err)
		}
		mt.Mode = args[1]
	}
	h.MaxTokens = mt
	return nil
}

func (h *Handler) parseModel(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("model needs a name, e.g. `model claude-opus-4-5* { context_window 200000 }`")
	}
	facts := handlers.ModelFacts{Name: d.Val()}
	if d.NextArg() {
		return d.Errf("model takes one name and a block, got another argument: %q", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "context_window":
			err = parseCount(d, &facts.ContextWindow)
		case "max_output":
			err = parseCount(d, &facts.MaxOutput)
		default:
			err = d.Errf("unrecognized model setting %q: use context_window or max_output", d.Val())
		}
		if err != nil {
			return err
		}
	}
	if err := facts.Check(); err != nil {
		return d.Errf("%v", err)
	}
	h.Model = append(h.Model, facts)
	return nil
}

func (h *Handler) parseCircuitBreaker(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		h.CircuitBreaker = &handlers.CircuitBreaker{Off: true}
		return nil
	}
	if len(args) != 2 {
		return d.Errf("circuit_breaker takes a failure count and a cooldown, e.g. `circuit_breaker 5 30s`, or `off`")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return d.Errf("bad circuit_breaker failure count %q: use a whole number of 1 or more", args[0])
	}
	cooldown, err := caddy.ParseDuration(args[1])
	if err != nil || cooldown <= 0 {
		return d.Errf("bad circuit_breaker cooldown %q: use a duration such as 30s", args[1])
	}
	cb := &handlers.CircuitBreaker{Failures: n, Cooldown: caddy.Duration(cooldown)}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "failure_rate":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			rate, ok := parsePercent(v)
			if !ok || rate > 100 {
				return d.Errf("bad circuit_breaker failure_rate %q: use a percentage from 0%% to 100%%, such as 50%%", v)
			}
			cb.FailureRate = &rate
		case "window":
			if err := parseDuration(d, &cb.Window); err != nil {
				return err
			}
			if cb.Window <= 0 {
				return d.Errf("circuit_breaker window must be longer than 0, such as 10s")
			}
		case "min_calls", "probes":
			name := d.Val()
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > handlers.MaxCircuitCount {
				return d.Errf("bad circuit_breaker %s %q: use a whole number from 1 to %d", name, v, handlers.MaxCircuitCount)
			}
			if name == "probes" {
				cb.Probes = n
			} else {
				cb.MinCalls = n
			}
		default:
			return d.Errf("unrecognized circuit_breaker setting %q: use failure_rate, window, min_calls or probes", d.Val())
		}
	}
	h.CircuitBreaker = cb
	return nil
}

// parsePercent reads a number from 0 to 1000 with an optional % sign.
func parsePercent(v string) (float64, bool) {
	pct, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	return pct, err == nil && pct >= 0 && pct <= 1000
}

func (h *Handler) parseRetryBudget(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		h.RetryBudget = &handlers.RetryBudget{Off: true}
		return nil
	}
	if len(args) < 1 || len(args) > 2 {
		return d.Errf("retry_budget takes a percentage and an optional floor per second, e.g. `retry_budget 20%% 10`, or `off`")
	}
	pct, ok := parsePercent(args[0])
	if !ok {
		return d.Errf("bad retry_budget percentage %q: use a number such as 20%%", args[0])
	}
	b := &handlers.RetryBudget{Percent: pct}
	if len(args) == 2 {
		floor, err := strconv.ParseFloat(args[1], 64)
		if err != nil || floor < 0 {
			return d.Errf("bad retry_budget floor %q: use retries per second, such as 10", args[1])
		}
		b.MinPerSecond = &floor
	}
	h.RetryBudget = b
	return nil
}

func (h *Handler) parseLimit(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("limit needs a zone name and a block, e.g. `limit org { rpm 50 }`")
	}
	z := handlers.LimitZone{Zone: d.Val()}
	if d.NextArg() {
		return d.Errf("limit takes one zone name and a block, got another argument: %q", d.Val())
	}
	if err := handlers.CheckZoneName(h.Limit, z.Zone); err != nil {
		return d.Errf("%v", err)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "key":
			z.Key, err = oneArg(d)
		case "rpm":
			err = parseCount(d, &z.RPM)
		case "tpm":
			err = parseCount(d, &z.TPM)
		case "wait":
			err = parseDuration(d, &z.Wait)
		case "max_keys":
			var n int64
			if err = parseCount(d, &n); err == nil {
				z.MaxKeys = int(n)
			}
		case "scope":
			if z.Scope, err = oneArg(d); err == nil && z.Scope != "fleet" && z.Scope != "instance" {
				err = d.Errf("limit scope must be fleet or instance, not %q", z.Scope)
			} else if err == nil && z.Scope == "fleet" && h.noStore {
				err = d.Err(errFleetWithoutStore(z.Zone).Error())
			}
		default:
			err = d.Errf("unrecognized limit setting %q: use key, rpm, tpm, wait, max_keys or scope", d.Val())
		}
		if err != nil {
			return err
		}
	}
	if err := z.Config().Check(); err != nil {
		return d.Errf("%v", err)
	}
	h.Limit = append(h.Limit, z)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
