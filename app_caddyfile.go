package airesilience

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/ai-resilience/caddy-ai-resilience/fleet"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("ai_resilience", parseGlobalOption)
}

// parseGlobalOption sets up the ai_resilience app from its global option.
// Syntax:
//
//	ai_resilience {
//		redis <url>... {
//			password       <password>
//			prefix         <prefix>
//			timeout        <duration>
//			on_unavailable local|deny|allow
//			cluster
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		d.Next()
		return nil, d.Errf("the ai_resilience global option is given twice; merge the blocks")
	}
	var app App
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "ai_resilience", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from the global option's tokens.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.Errf("ai_resilience takes a block, not %q", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "redis":
			if a.Redis != nil {
				return d.Errf("redis is given twice; an instance has one fleet store")
			}
			r, err := parseRedis(d)
			if err != nil {
				return err
			}
			a.Redis = r
		default:
			return d.Errf("unrecognized ai_resilience global setting %q: use redis", d.Val())
		}
	}
	return nil
}

// parseRedis reads `redis <url>... { … }`.
func parseRedis(d *caddyfile.Dispenser) (*Redis, error) {
	r := &Redis{URLs: d.RemainingArgs()}
	if len(r.URLs) == 0 {
		return nil, d.Errf("redis needs the URL of the store, e.g. `redis redis://10.0.0.5:6379`")
	}
	for _, u := range r.URLs {
		// A placeholder is checked once it is replaced, when the config
		// loads.
		if !strings.Contains(u, "{") {
			if err := fleet.CheckURL(u); err != nil {
				return nil, d.Errf("%v", err)
			}
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "password":
			r.Password, err = oneArg(d)
		case "prefix":
			if r.Prefix, err = oneArg(d); err == nil && strings.ContainsAny(r.Prefix, "{}") {
				err = d.Errf("redis prefix %q contains a brace; the prefix goes inside a hash tag, {<prefix>}, and may not have its own", r.Prefix)
			}
		case "timeout":
			if err = parseDuration(d, &r.Timeout); err == nil && r.Timeout == 0 {
				err = d.Errf("redis timeout must be longer than 0, e.g. 50ms")
			}
		case "on_unavailable":
			if r.OnUnavailable, err = oneArg(d); err == nil {
				if _, perr := policy.ParseFallback(r.OnUnavailable); perr != nil {
					err = d.Errf("%v", perr)
				}
			}
		case "cluster":
			if d.NextArg() {
				err = d.Errf("cluster takes no value, got %q", d.Val())
			}
			r.Cluster = true
		default:
			err = d.Errf("unrecognized redis setting %q: use password, prefix, timeout, on_unavailable or cluster", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	if len(r.URLs) > 1 && !r.Cluster {
		return nil, d.Errf("redis has %d URLs: several URLs are the seed nodes of a Redis Cluster, so add `cluster` to the block, or give one URL", len(r.URLs))
	}
	return r, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)
