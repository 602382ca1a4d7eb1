package airesilience

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/fleet"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults of the fleet store.
const (
	defaultPrefix = "ai_resilience"
	// defaultStoreTimeout keeps a slow store from slowing requests: a
	// loopback or same-zone Redis answers an admission in well under a
	// millisecond, so a call that takes 50ms means trouble, and the
	// request is decided locally instead.
	defaultStoreTimeout = 50 * time.Millisecond
)

// App makes every `ai_resilience` handler of a Caddy instance a member of a
// fleet: instances behind one load balancer that share their rate-limit
// zones, circuit breakers and pacing holds through one Redis or Valkey, so
// that the fleet admits what each zone allows once, not once per instance,
// and learns a failing model or a spent upstream limit once. Its Caddyfile
// face is the `ai_resilience` global option.
//
// Zones are shared unless a zone says `scope instance`. Each request's
// fleet zones are decided in one atomic script on the store's clock;
// settlements follow in batches off the request path. Circuits and holds
// are read from each instance's memory, which the store keeps up to date;
// their outcomes and holds travel in the same batches. When the store
// cannot be reached, `on_unavailable` decides for zones: by default each
// instance limits alone with its share of every zone (the capacity divided
// by the live instances it last saw) and hands back what it admitted when
// the store returns; circuits and holds work on each instance alone until
// then. A store outage never fails a request by itself.
type App struct {
	// The store the fleet shares. Without it, every zone is limited per
	// instance.
	Redis *Redis `json:"redis,omitempty"`

	store    *fleet.Store
	storeKey string // the store's name in the pool, empty without a store
	logger   *zap.Logger
}

// Redis is how to reach the fleet's store, and what to do without it.
type Redis struct {
	// The store's address: one `redis://` or `rediss://` URL of a standalone
	// Redis or Valkey, or the URLs of several seed nodes of a Redis
	// Cluster, with cluster set. A URL may carry a user, password and
	// database (`redis://user:pass@host:6379/0`). Placeholders such as
	// `{env.REDIS_URL}` are replaced when the config loads.
	URLs []string `json:"urls,omitempty"`

	// The password, overriding any in the URLs. Use a placeholder such as
	// `{env.AI_RESILIENCE_REDIS_PASSWORD}` to keep it out of the config.
	Password string `json:"password,omitempty"`

	// The start of every key the gateway writes, inside a Redis Cluster
	// hash tag: `{<prefix>}:…`. Instances that share a prefix share
	// state; give another fleet on the same store another prefix. It may
	// not contain braces. Default: `ai_resilience`.
	Prefix string `json:"prefix,omitempty"`

	// The longest a request waits for the store. A call that takes longer
	// counts as a failure, and the request is decided as `on_unavailable`
	// says; after 3 failures in a row the store is considered unreachable
	// and is probed in the background until it answers within this time
	// again. Default: 50ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// What fleet zones do while the store cannot be reached: `local`
	// limits each instance alone to its share of each zone (capacity ÷
	// live instances, as last seen) and hands back what it admitted when
	// the store returns; `deny` answers 503 in the API's error shape;
	// `allow` stops limiting fleet zones. Default: local.
	OnUnavailable string `json:"on_unavailable,omitempty"`

	// The URLs are seed nodes of a Redis Cluster.
	Cluster bool `json:"cluster,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "ai_resilience",
		New: func() caddy.Module { return new(App) },
	}
}

// stores holds the fleet stores of every loaded config by settings. A
// reload that keeps the settings finds the store here and keeps its
// connections, heartbeats and pending settlements; Caddy provisions the new
// config before it cleans up the old one.
var stores = caddy.NewUsagePool()

// pooledStore is a store in the pool; the last config to let go closes it.
type pooledStore struct{ *fleet.Store }

// Destruct implements caddy.Destructor.
func (s pooledStore) Destruct() error { return s.Close() }

// Provision checks the settings and connects to the store. It checks them
// here rather than in Validate because handlers need the store while they
// provision their zones, which happens before the app is validated.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if a.Redis == nil {
		return nil
	}
	cfg, err := a.Redis.config()
	if err != nil {
		return err
	}
	cfg.Logger = a.logger
	a.storeKey = storePoolKey(cfg)
	v, _, err := stores.LoadOrNew(a.storeKey, func() (caddy.Destructor, error) {
		s, err := fleet.New(cfg)
		return pooledStore{s}, err
	})
	if err != nil {
		a.storeKey = ""
		return fmt.Errorf("connecting to the fleet store: %w", err)
	}
	a.store = v.(pooledStore).Store
	registerMetrics(ctx.GetMetricsRegistry(), a.logger, fleet.Collectors())
	return nil
}

// config sets defaults, replaces placeholders and reads the fallback; the
// store checks the rest when it is made.
func (r *Redis) config() (fleet.Config, error) {
	if r.Prefix == "" {
		r.Prefix = defaultPrefix
	}
	if r.Timeout == 0 {
		r.Timeout = caddy.Duration(defaultStoreTimeout)
	}
	if r.OnUnavailable == "" {
		r.OnUnavailable = "local"
	}
	fallback, err := policy.ParseFallback(r.OnUnavailable)
	if err != nil {
		return fleet.Config{}, fmt.Errorf("parsing redis on_unavailable: %w", err)
	}
	repl := caddy.NewReplacer()
	urls := make([]string, len(r.URLs))
	for i, u := range r.URLs {
		urls[i] = repl.ReplaceAll(u, "")
	}
	return fleet.Config{
		URLs:          urls,
		Password:      repl.ReplaceAll(r.Password, ""),
		Prefix:        r.Prefix,
		Timeout:       time.Duration(r.Timeout),
		OnUnavailable: fallback,
		Cluster:       r.Cluster,
	}, nil
}

// storePoolKey names a store by everything that makes it a different
// store; the password only as a hash.
func storePoolKey(c fleet.Config) string {
	return fmt.Sprintf("%q\x00%x\x00%s\x00%s\x00%s\x00%t", c.URLs, sha256.Sum256([]byte(c.Password)), c.Prefix, c.Timeout, c.OnUnavailable, c.Cluster)
}

// activeApp is the app of the running config, whose store the admin API
// reports; nil when the running config has none.
var activeApp atomic.Pointer[App]

// Start implements caddy.App. The store runs from Provision: it is shared
// with any config that keeps its settings, so it outlives this app. Caddy
// starts a new config's apps before it stops the old one's.
func (a *App) Start() error {
	activeApp.Store(a)
	return nil
}

// Stop implements caddy.App; Cleanup lets go of the store.
func (a *App) Stop() error {
	activeApp.CompareAndSwap(a, nil)
	return nil
}

// Cleanup gives the store back to the pool, which closes it when no loaded
// config uses it any more.
func (a *App) Cleanup() error {
	if a.storeKey != "" {
		_, _ = stores.Delete(a.storeKey)
		a.storeKey, a.store = "", nil
	}
	return nil
}

// fleetApp returns the ai_resilience app of the config being loaded, or nil
// when the config has none.
func fleetApp(ctx caddy.Context) (*App, error) {
	app, err := ctx.AppIfConfigured("ai_resilience")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading the ai_resilience app: %w", err)
	}
	return app.(*App), nil
}

// zoneStore returns where a zone with the given scope keeps its buckets:
// the fleet store (with its name in the pool, which becomes part of the
// zone's own name there), or nil for this instance's memory. The default
// scope is fleet when there is a store.
func (a *App) zoneStore(zone, scope string) (policy.SharedStore, string, error) {
	switch {
	case scope != "" && scope != "fleet" && scope != "instance":
		return nil, "", fmt.Errorf("zone %q: scope must be fleet or instance, not %q", zone, scope)
	case scope == "instance":
		return nil, "", nil
	case a != nil && a.store != nil:
		return a.store, "\x00store=" + a.storeKey, nil
	case scope == "fleet":
		return nil, "", errFleetWithoutStore(zone)
	}
	return nil, "", nil
}

// errFleetWithoutStore is the error for a zone of scope fleet where there
// is no fleet store.
func errFleetWithoutStore(zone string) error {
	return fmt.Errorf("zone %q has scope fleet, but there is no fleet store: add the global option `ai_resilience { redis <url> }`, or use scope instance", zone)
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
