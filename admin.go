package airesilience

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the state of this Caddy instance's gateways on Caddy's
// admin API, at GET /ai_resilience/state: the zones' recent keys and what
// they have left, each model's circuit, the pacing holds, the fleet store's
// health and the live instances. Keys appear only as their keyed hashes
// (the key_hash of the logs). Each list holds at most maxStateEntries
// entries (zones at most 128 keys each, the ones seen most recently),
// and "truncated" says when one was cut.
type adminAPI struct{}

// maxStateEntries bounds each list of the state.
const maxStateEntries = 1000

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.ai_resilience",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes implements caddy.AdminRouter.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/ai_resilience/state", Handler: caddy.AdminHandlerFunc(serveState)}}
}

// state is the reply of GET /ai_resilience/state.
type state struct {
	Zones     []zoneState    `json:"zones"`
	Budgets   []struct{}     `json:"budgets"`
	Circuits  []circuitState `json:"circuits"`
	Pacing    []holdState    `json:"pacing"`
	Store     storeState     `json:"store"`
	Instances []instance     `json:"instances"`
	Truncated bool           `json:"truncated,omitempty"`
}

type zoneState struct {
	Zone string `json:"zone"`
	// Scope is fleet or instance.
	Scope   string `json:"scope"`
	KeyHash string `json:"key_hash"`
	// Remaining counts are absent for what the zone does not limit.
	RequestsRemaining *int64 `json:"requests_remaining,omitempty"`
	TokensRemaining   *int64 `json:"tokens_remaining,omitempty"`
}

type circuitState struct {
	Model string `json:"model"`
	State string `json:"state"`
	// Until is, when open, the end of the cooldown; when half-open, the end
	// of the probes' allowance, absent when no probe has gone yet.
	Until string `json:"until,omitempty"`
}

type holdState struct {
	Model   string `json:"model"`
	KeyHash string `json:"key_hash"`
	Until   string `json:"until"`
}

type storeState struct {
	// Kind is redis, redis_cluster, or none without a fleet store.
	Kind    string `json:"kind"`
	Healthy bool   `json:"healthy"`
}

type instance struct {
	ID       string `json:"id"`
	LastSeen string `json:"last_seen,omitempty"`
	Self     bool   `json:"self,omitempty"`
}

// serveState answers GET /ai_resilience/state.
func serveState(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed; use GET")}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(collectState(r.Context(), time.Now()))
}

// collectState gathers the state of every loaded config's pools at now.
func collectState(ctx context.Context, now time.Time) state {
	st := state{Budgets: []struct{}{}}
	st.Zones = zoneStates(now)
	st.Circuits = circuitStates()
	st.Pacing = holdStates(now)
	st.Store, st.Instances = fleetState(ctx)
	st.Truncated = len(st.Zones) > maxStateEntries || len(st.Circuits) > maxStateEntries || len(st.Pacing) > maxStateEntries
	st.Zones = st.Zones[:min(len(st.Zones), maxStateEntries)]
	st.Circuits = st.Circuits[:min(len(st.Circuits), maxStateEntries)]
	st.Pacing = st.Pacing[:min(len(st.Pacing), maxStateEntries)]
	return st
}

// zoneStates reports the recent keys of every zone, by zone and key hash.
// A fleet zone reads its store, so the zones are read outside the pool's
// lock, which a config load needs.
func zoneStates(now time.Time) []zoneState {
	var all []*policy.Zone
	zones.Range(func(_, v any) bool {
		all = append(all, v.(sharedZone).Zone)
		return true
	})
	out := []zoneState{}
	for _, z := range all {
		cfg := z.Config()
		scope := "instance"
		if z.Shared() {
			scope = "fleet"
		}
		for _, k := range z.Keys(now) {
			zs := zoneState{Zone: cfg.Name, Scope: scope, KeyHash: k.Label}
			if cfg.RPM > 0 {
				zs.RequestsRemaining = &k.Status.RequestsRemaining
			}
			if cfg.TPM > 0 {
				zs.TokensRemaining = &k.Status.TokensRemaining
			}
			out = append(out, zs)
		}
		if len(out) > maxStateEntries {
			break
		}
	}
	slices.SortFunc(out, func(a, b zoneState) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.KeyHash, b.KeyHash))
	})
	return out
}

// circuitStates reports each model's circuit once: when breakers of
// different settings track it, the one that refuses most (open, then
// half-open) with the latest end.
func circuitStates() []circuitState {
	byModel := map[string]policy.CircuitStatus{}
	circuits.Range(func(_, v any) bool {
		for _, c := range v.(pooledCircuits).Snapshot() {
			prev, seen := byModel[c.Model]
			if !seen || severity(c.State) > severity(prev.State) || c.State == prev.State && c.Until.After(prev.Until) {
				byModel[c.Model] = c
			}
		}
		return len(byModel) <= maxStateEntries
	})
	out := make([]circuitState, 0, len(byModel))
	for _, c := range byModel {
		cs := circuitState{Model: c.Model, State: c.State.String()}
		if !c.Until.IsZero() {
			cs.Until = c.Until.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b circuitState) int { return cmp.Compare(a.Model, b.Model) })
	return out
}

// severity orders circuit states by how much they refuse.
func severity(s policy.CircuitState) int {
	switch s {
	case policy.CircuitOpen:
		return 2
	case policy.CircuitHalfOpen:
		return 1
	}
	return 0
}

// holdStates reports the live pacing holds, by model and key hash.
func holdStates(now time.Time) []holdState {
	byKey := map[policy.HoldKey]int64{}
	holds.Range(func(_, v any) bool {
		for _, h := range v.(pooledHolds).Snapshot(now) {
			byKey[h.HoldKey] = max(byKey[h.HoldKey], h.Until)
		}
		return len(byKey) <= maxStateEntries
	})
	out := make([]holdState, 0, len(byKey))
	for k, until := range byKey {
		out = append(out, holdState{Model: k.Model, KeyHash: k.Credential, Until: time.Unix(0, until).UTC().Format(time.RFC3339Nano)})
	}
	slices.SortFunc(out, func(a, b holdState) int {
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(a.KeyHash, b.KeyHash))
	})
	return out
}

// fleetState reports the running config's store and the live instances:
// from the store when it answers, else this instance alone.
func fleetState(ctx context.Context) (storeState, []instance) {
	app := activeApp.Load()
	if app == nil || app.store == nil {
		return storeState{Kind: "none", Healthy: true}, []instance{}
	}
	s := app.store
	st := storeState{Kind: s.Kind(), Healthy: !s.Health().Down}
	self := []instance{{ID: s.ID(), Self: true}}
	if !st.Healthy {
		return st, self
	}
	live, err := s.Instances(ctx, maxStateEntries)
	if err != nil {
		return st, self
	}
	out := make([]instance, len(live))
	for i, in := range live {
		out[i] = instance{ID: in.ID, LastSeen: in.LastSeen.UTC().Format(time.RFC3339Nano), Self: in.Self}
	}
	return st, out
}

// Interface guard
var _ caddy.AdminRouter = adminAPI{}
