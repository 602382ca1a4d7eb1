package airesilience

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ai_resilience", parseCaddyfile)
	// The module orders itself, so a Caddyfile needs no global `order` line.
	httpcaddyfile.RegisterDirectiveOrder("ai_resilience", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	ai_resilience [<matcher>] {
//		provider        auto|anthropic|openai
//		max_body        <size>
//		retries         <n>
//		backoff         <base> [<max>]
//		retry_on        <status>...
//		max_wait        <duration>
//		deadline        <duration>
//		attempt_timeout <duration>
//		fallback        <model> <next>...
//		client_retries  allow|deny
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	chainOf := make(map[string]int) // model → the line of the fallback chain naming it
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "provider":
			var v string
			if v, err = oneArg(d); err == nil {
				if _, perr := policy.ParseProvider(v); perr != nil {
					err = d.Errf("%v", perr)
				}
				h.Provider = v
			}
		case "max_body":
			err = h.parseMaxBody(d)
		case "retries":
			err = h.parseRetries(d)
		case "backoff":
			err = h.parseBackoff(d)
		case "retry_on":
			err = h.parseRetryOn(d)
		case "max_wait":
			err = parseDuration(d, &h.MaxWait)
		case "deadline":
			err = parseDuration(d, &h.Deadline)
		case "attempt_timeout":
			err = parseDuration(d, &h.AttemptTimeout)
		case "fallback":
			err = h.parseFallback(d, chainOf)
		case "client_retries":
			var v string
			if v, err = oneArg(d); err == nil && v != "allow" && v != "deny" {
				err = d.Errf("client_retries must be allow or deny, not %q", v)
			}
			h.ClientRetries = v
		default:
			err = d.Errf("unrecognized ai_resilience subdirective %q; see the README for the list", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
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

func (h *Handler) parseMaxBody(d *caddyfile.Dispenser) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	size, err := humanize.ParseBytes(v)
	if err != nil || size == 0 || size > 1<<40 {
		return d.Errf("bad max_body size %q: use a size such as 512KB, 16MB or 32MiB", v)
	}
	h.MaxBody = int64(size)
	return nil
}

func (h *Handler) parseRetries(d *caddyfile.Dispenser) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 100 {
		return d.Errf("bad retries count %q: use a whole number from 0 to 100", v)
	}
	h.Retries = &n
	return nil
}

func (h *Handler) parseBackoff(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.Errf("backoff takes a base and an optional max duration, e.g. `backoff 500ms 8s`")
	}
	b := &Backoff{}
	for i, dst := range []*caddy.Duration{&b.Base, &b.Max}[:len(args)] {
		dur, err := caddy.ParseDuration(args[i])
		if err != nil || dur <= 0 {
			return d.Errf("bad backoff duration %q: use a positive duration such as 500ms or 8s", args[i])
		}
		*dst = caddy.Duration(dur)
	}
	if b.Max != 0 && b.Max < b.Base {
		return d.Errf("backoff max %s is below its base %s", args[1], args[0])
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
		if err != nil || code < 100 || code > 599 {
			return d.Errf("bad retry_on status %q: use HTTP status codes from 100 to 599", a)
		}
		h.RetryOn = append(h.RetryOn, code)
	}
	return nil
}

func (h *Handler) parseFallback(d *caddyfile.Dispenser, chainOf map[string]int) error {
	line := d.Line()
	chain := d.RemainingArgs()
	if len(chain) < 2 {
		return d.Errf("fallback needs a model and at least one model to use when it is unavailable, e.g. `fallback claude-opus-4-5 claude-sonnet-4-5`")
	}
	for _, model := range chain {
		if prev, dup := chainOf[model]; dup {
			if prev == line {
				return d.Errf("model %q appears twice in this fallback chain (%s)", model, strings.Join(chain, " "))
			}
			return d.Errf("model %q is already in the fallback chain on line %d; a model may appear in one chain only, so merge the chains", model, prev)
		}
		chainOf[model] = line
	}
	h.Fallback = append(h.Fallback, chain)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
