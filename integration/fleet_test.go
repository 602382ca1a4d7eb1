package integration

// The fleet store through one real Caddy, in process: the global option,
// fleet zones in a real redis-server, reloads, and what clients get when
// the store is gone. Tests of several instances, which need several Caddy
// processes, are in fleet_process_test.go.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/caddyserver/caddy/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/fleet"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testproc"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
)

// appLogger is the name of the ai_resilience app's logger, which logs the
// fleet store's transitions.
const appLogger = "ai_resilience"

// fleetGlobal is the global option that makes an instance a fleet member,
// with the store's settings as lines of the redis block.
func fleetGlobal(urls []string, settings ...string) string {
	return fmt.Sprintf("\tai_resilience {\n\t\tredis %s {\n\t\t\t%s\n\t\t}\n\t}\n", strings.Join(urls, " "), strings.Join(settings, "\n\t\t\t"))
}

// storeKeys returns every key in the store, and every value of its string
// keys.
func storeKeys(t *testing.T, srv *testredis.Server) (keys, values []string) {
	t.Helper()
	rdb := srv.Client()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if v, err := rdb.Get(ctx, k).Result(); err == nil {
			values = append(values, v)
		}
	}
	return keys, values
}

// TestFleetZoneThroughCaddy runs a Caddy whose zones live in Redis: a burst
// against `rpm 3` admits 3 and refuses the rest with the zone's state in
// the headers; the store holds the zone under the prefix, keyed by a hash
// of the API key, never the key; the gauges say the store is healthy.
func TestFleetZoneThroughCaddy(t *testing.T) {
	srv := testredis.Start(t)
	g := startGatewayWith(t, setup{
		global:  fleetGlobal([]string{srv.URL}, "prefix fleet_through_caddy", "timeout 500ms"),
		options: limitOptions(limitBlock("fleet-org", "rpm 3"), limitBlock("fleet-per-key", "key {http.request.header.X-Api-Key}", "rpm 100")),
		site:    "\tmetrics /metrics",
	})
	client := g.anthropicClient()
	errs, took := limitBurst(6, func(int) error {
		_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"))
		return err
	})
	for i, err := range checkBurstAdmitted(t, g, errs, took, 3) {
		checkAnthropicLimited(t, fmt.Sprintf("refusal %d", i+1), err, 3)
	}
	// Two zone keys, the live instances' and the key fingerprint once the
	// first heartbeat is in, the epoch once the first read after it is,
	// and the circuits' once the outcomes are.
	keys, values := storeKeys(t, srv)
	for deadline := time.Now().Add(2 * time.Second); len(keys) != 6 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		keys, values = storeKeys(t, srv)
	}
	if len(keys) != 6 {
		t.Errorf("store keys %q, want the two zones', the instances', the fingerprint, the epoch and the circuits", keys)
	}
	for _, k := range slices.Concat(keys, values) {
		if strings.Contains(k, testAPIKey) {
			t.Errorf("the store holds the API key in %q", k)
		}
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "{fleet_through_caddy}:") {
			t.Errorf("key %q does not start with the prefix's hash tag", k)
		}
	}
	m := scrape(t, g.URL+"/metrics")
	if m["caddy_ai_resilience_fleet_store_healthy"] != 1 || m["caddy_ai_resilience_fleet_instances"] != 1 {
		t.Errorf("fleet gauges: healthy %v, instances %v", m["caddy_ai_resilience_fleet_store_healthy"], m["caddy_ai_resilience_fleet_instances"])
	}
}

// TestFleetReloadKeepsStoreAndZones reloads a Caddy that has a fleet zone
// and an instance zone: the store is the same one (same connections, same
// heartbeat id), the instance zone spent before the reload still refuses
// after it, and the fleet zone's buckets are still in the store.
func TestFleetReloadKeepsStoreAndZones(t *testing.T) {
	srv := testredis.Start(t)
	g := startGatewayWith(t, setup{
		global:  fleetGlobal([]string{srv.URL}, "prefix fleet_reload", "timeout 500ms"),
		options: limitOptions(limitBlock("fleet-reload-shared", "rpm 2"), limitBlock("fleet-reload-local", "rpm 1", "scope instance")),
	})
	rdb := srv.Client()
	ctx := context.Background()
	members := func() []string {
		ids, err := rdb.ZRange(ctx, "{fleet_reload}:instances", 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	connections := func() []string {
		var ids []string
		for line := range strings.SplitSeq(rdb.ClientList(ctx).Val(), "\n") {
			if id, _, ok := strings.Cut(strings.TrimPrefix(line, "id="), " "); ok && !strings.Contains(line, "cmd=client|list") {
				ids = append(ids, id)
			}
		}
		return ids
	}
	client := g.anthropicClient()
	if _, err := client.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
		t.Fatal(err)
	}
	before := members()
	for deadline := time.Now().Add(time.Second); len(before) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		before = members() // the first heartbeat
	}
	conns := connections()
	if len(before) != 1 || len(conns) == 0 {
		t.Fatalf("instances %q, store connections %q", before, conns)
	}

	g.Reload(t)
	time.Sleep(600 * time.Millisecond) // a heartbeat or more
	if after := members(); !slices.Equal(after, before) {
		t.Errorf("instances after the reload %q, want the same store's %q", after, before)
	}
	if after := connections(); !slices.ContainsFunc(after, func(id string) bool { return slices.Contains(conns, id) }) {
		t.Errorf("connections after the reload %q share none with %q: the store was made anew", after, conns)
	}
	// The instance zone's one request was spent before the reload.
	_, err := client.Messages.New(ctx, haiku("claude-haiku-4-5"))
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || !strings.Contains(aErr.RawJSON(), "fleet-reload-local") {
		t.Fatalf("after the reload: %v, want refused by the instance zone it spent before", err)
	}
	// The fleet zone's state is in the store, which kept it too.
	if ttl := rdb.PTTL(ctx, "{fleet_reload}:zone:fleet-reload-shared:"+fleet.HashKey("")).Val(); ttl <= 0 {
		t.Errorf("the fleet zone's key has TTL %v after the reload", ttl)
	}
}

// TestFleetDenyAnswers503 kills the store under `on_unavailable deny`: both
// SDKs get a 503 in their API's shape that says why and invites a retry,
// the upstream sees nothing, and the gauge drops.
func TestFleetDenyAnswers503(t *testing.T) {
	srv := testredis.Start(t)
	g := startGatewayWith(t, setup{
		global:  fleetGlobal([]string{srv.URL}, "prefix fleet_deny", "on_unavailable deny"),
		options: limitOptions(limitBlock("fleet-deny", "rpm 100")),
		site:    "\tmetrics /metrics",
	})
	srv.Kill()
	ctx := context.Background()
	for i := range 4 {
		ac := g.anthropicClient()
		_, err := ac.Messages.New(ctx, haiku("claude-haiku-4-5"))
		var aErr *anthropic.Error
		if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusServiceUnavailable || aErr.Type() != "api_error" {
			t.Fatalf("anthropic request %d: %v, want the SDK's 503 api_error", i, err)
		}
		if msg := gjson.Get(aErr.RawJSON(), "error.message").Str; !strings.Contains(msg, "fleet-deny") || !strings.Contains(msg, "store") {
			t.Errorf("message %q does not say which zone and why", msg)
		}
		checkLimitRetryHints(t, "anthropic 503", aErr.Response.Header)

		oc := g.openaiClient()
		_, err = oc.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"))
		var oErr *openai.Error
		if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusServiceUnavailable || oErr.Type != "server_error" || oErr.Code != "service_unavailable" {
			t.Fatalf("openai request %d: %v, want the SDK's 503 server_error", i, err)
		}
	}
	if n := len(g.mock.Calls()); n != 0 {
		t.Errorf("the upstream saw %d calls", n)
	}
	unavailable := 0
	for _, e := range g.Logs(t, appLogger) {
		if e["msg"] == "fleet store unavailable" {
			unavailable++
			if e["level"] != "warn" || e["on_unavailable"] != "deny" {
				t.Errorf("log line %v", e)
			}
		}
	}
	if unavailable != 1 {
		t.Errorf("%d \"fleet store unavailable\" lines, want 1", unavailable)
	}
	if m := scrape(t, g.URL+"/metrics"); m["caddy_ai_resilience_fleet_store_healthy"] != 0 {
		t.Errorf("healthy gauge %v after the outage", m["caddy_ai_resilience_fleet_store_healthy"])
	}
}

// TestFleetScopeNeedsStore adapts a Caddyfile with a zone of `scope fleet`
// and no global option: the Caddyfile is refused at the scope's line, with
// a message that says what to add. The same zone in JSON, where no line
// exists, fails to load with the same message.
func TestFleetScopeNeedsStore(t *testing.T) {
	site := `http://127.0.0.1:` + itoa(testproc.FreePort(t)) + ` {
	ai_resilience {
		limit org {
			rpm 5
			scope fleet
		}
	}
	reverse_proxy 127.0.0.1:9
}
`
	const global = "{\n\tadmin off\n}\n"
	_, _, err := testcaddy.Adapt(global + site)
	if err == nil || !strings.Contains(err.Error(), "ai_resilience { redis <url> }") || !strings.Contains(err.Error(), "Caddyfile:8") {
		t.Errorf("adapt: %v, want an error naming the global option at Caddyfile:8", err)
	}
	cfg, _, err := testcaddy.Adapt(global + strings.Replace(site, "scope fleet", "scope instance", 1))
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), `"scope":"instance"`, `"scope":"fleet"`, 1))
	err = caddy.Load(cfg, true)
	t.Cleanup(func() { _ = caddy.Stop() })
	if err == nil || !strings.Contains(err.Error(), "ai_resilience { redis <url> }") {
		t.Errorf("load: %v, want an error naming the global option", err)
	}
}

// TestFleetCluster runs the gateway against a three-node Redis Cluster with
// the `cluster` setting: requests in a keyed and an unkeyed zone are decided
// in one script (all their keys in one slot, no CROSSSLOT), and the limits
// hold; a model's failures open its circuit through the cluster's scripts.
func TestFleetCluster(t *testing.T) {
	nodes := testredis.StartCluster(t, 3)
	g := startGatewayWith(t, setup{
		global: fleetGlobal([]string{nodes[0].URL, nodes[1].URL, nodes[2].URL}, "prefix fleet_cluster", "timeout 500ms", "cluster"),
		options: limitOptions([]string{"retries 0", "circuit_breaker 2 30s"},
			limitBlock("cluster-org", "rpm 10"), limitBlock("cluster-team", "key {http.request.header.X-Team}", "rpm 2")),
	})
	ctx := context.Background()
	red := g.anthropicClient(anthropicHeader("X-Team", "red"))
	blue := g.anthropicClient(anthropicHeader("X-Team", "blue"))
	admitted := 0
	for i := range 6 {
		c := red
		if i%2 == 1 {
			c = blue
		}
		if _, err := c.Messages.New(ctx, haiku("claude-haiku-4-5")); err == nil {
			admitted++
		} else {
			checkAnthropicLimited(t, fmt.Sprintf("request %d", i), err, 2)
		}
	}
	if admitted != 4 {
		t.Errorf("admitted %d, want each team's 2", admitted)
	}
	for i := range 2 {
		failing := g.anthropicClient(anthropicHeader("X-Team", "failing-"+itoa(i)))
		if _, err := failing.Messages.New(ctx, haiku("claude-opus-4-1"), script("529")); err == nil {
			t.Fatal("the scripted failure succeeded")
		}
	}
	// The store decides, from outcomes sent in batches a few milliseconds
	// apart.
	for deadline := time.Now().Add(time.Second); len(g.logLines(t, "circuit open")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the circuit did not open within a second of the second failure")
		}
	}
	probe := g.anthropicClient(anthropicHeader("X-Team", "probe"))
	var aErr *anthropic.Error
	if _, err := probe.Messages.New(ctx, haiku("claude-opus-4-1")); !errors.As(err, &aErr) || !strings.Contains(aErr.RawJSON(), "circuit breaker is open") {
		t.Errorf("after two failures: %v, want the open circuit's refusal", err)
	}
	for _, e := range g.Logs(t, appLogger) {
		if e["msg"] == "fleet store unavailable" {
			t.Errorf("the cluster store failed: %v", e)
		}
	}
}

// TestStateSurvivesReload spends a keyed zone, opens a circuit and records
// a pacing hold, then reloads Caddy with the same config: the zone still
// refuses, the circuit still refuses its model, and the hold still holds
// its model and key, none with a call upstream, with and without a fleet
// store. Each part uses its own zone key, so that only its own state can
// refuse it.
func TestStateSurvivesReload(t *testing.T) {
	for _, c := range []struct{ name, global string }{
		{"instance", ""},
		{"fleet", "store"},
	} {
		t.Run(c.name, func(t *testing.T) {
			global := ""
			if c.global != "" {
				srv := testredis.Start(t)
				global = fleetGlobal([]string{srv.URL}, "prefix reload_state", "timeout 500ms")
			}
			g := startGatewayWith(t, setup{
				global: global,
				options: limitOptions([]string{"retries 0", "max_wait 1s", "circuit_breaker 2 30s"},
					limitBlock("reload-team", "key {http.request.header.X-Team}", "rpm 2")),
			})
			ctx := context.Background()
			team := func(name string) anthropic.Client { return g.anthropicClient(anthropicHeader("X-Team", name)) }
			spent := team("spent")
			for range 2 {
				if _, err := spent.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
					t.Fatal(err)
				}
			}
			failing := team("failing")
			for range 2 {
				if _, err := failing.Messages.New(ctx, haiku("claude-opus-4-1"), script("529")); err == nil {
					t.Fatal("the scripted failure succeeded")
				}
			}
			paced := team("paced")
			if _, err := paced.Messages.New(ctx, haiku("claude-sonnet-4-5"), script("200:reset=30")); err != nil {
				t.Fatal(err)
			}

			// With a store, the store opens the circuit from outcomes sent
			// a few milliseconds later.
			for deadline := time.Now().Add(time.Second); len(g.logLines(t, "circuit open")) == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the circuit did not open")
				}
			}

			g.Reload(t)
			// For a moment after a reload, the old config's server may
			// still accept a connection on the shared listener and close
			// it, and it has closed the clients' idle connections; the
			// SDKs' retries are off.
			time.Sleep(300 * time.Millisecond)
			http.DefaultTransport.(*http.Transport).CloseIdleConnections()
			calls := len(g.mock.Calls())
			_, err := spent.Messages.New(ctx, haiku("claude-haiku-4-5"))
			checkAnthropicLimited(t, "the spent zone key after the reload", err, 2)
			var aErr *anthropic.Error
			probe, held, fresh := team("probe"), team("held"), team("fresh")
			if _, err := probe.Messages.New(ctx, haiku("claude-opus-4-1")); !errors.As(err, &aErr) || !strings.Contains(aErr.RawJSON(), "circuit breaker is open") {
				t.Errorf("the failing model after the reload: %v, want its open circuit's refusal", err)
			}
			if _, err := held.Messages.New(ctx, haiku("claude-sonnet-4-5")); !errors.As(err, &aErr) || !strings.Contains(aErr.RawJSON(), "upstream reports the rate limit") {
				t.Errorf("the held model and key after the reload: %v, want the hold's refusal", err)
			}
			if n := len(g.mock.Calls()) - calls; n != 0 {
				t.Errorf("%d calls upstream after the reload, want none", n)
			}
			if _, err := fresh.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
				t.Errorf("a fresh key and model after the reload: %v", err)
			}
		})
	}
}

// TestFleetOutageCircuitsLocal kills the store under a gateway whose zones
// and circuits are the fleet's: no request fails because of it, and the
// circuit breaker keeps working on this instance alone: two failures open
// the model's circuit, and the next request for it is refused without a
// call upstream, while another model is served.
func TestFleetOutageCircuitsLocal(t *testing.T) {
	srv := testredis.Start(t)
	g := startGatewayWith(t, setup{
		global:  fleetGlobal([]string{srv.URL}, "prefix outage_circuits", "timeout 200ms"),
		options: limitOptions([]string{"retries 0", "circuit_breaker 2 30s"}, limitBlock("outage-org", "rpm 1000")),
	})
	client := g.anthropicClient()
	ctx := context.Background()
	srv.Kill()
	for i := range 5 {
		if _, err := client.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
			t.Fatalf("request %d with the store gone: %v", i+1, err)
		}
	}
	for range 2 {
		var aErr *anthropic.Error
		if _, err := client.Messages.New(ctx, haiku("claude-opus-4-1"), script("529")); !errors.As(err, &aErr) || aErr.StatusCode != 529 || strings.Contains(aErr.RawJSON(), "circuit") {
			t.Fatalf("scripted failure: %v, want the upstream's 529", err)
		}
	}
	calls := len(g.mock.Calls())
	var aErr *anthropic.Error
	if _, err := client.Messages.New(ctx, haiku("claude-opus-4-1")); !errors.As(err, &aErr) || !strings.Contains(aErr.RawJSON(), "circuit breaker is open") {
		t.Errorf("the failing model with the store gone: %v, want its open circuit's refusal", err)
	}
	if n := len(g.mock.Calls()) - calls; n != 0 {
		t.Errorf("%d calls upstream for the open circuit", n)
	}
	if _, err := client.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
		t.Errorf("another model with the store gone: %v", err)
	}
	if !slices.ContainsFunc(g.Logs(t, appLogger), func(e map[string]any) bool { return e["msg"] == "fleet store unavailable" }) {
		t.Error("no warn line for the outage")
	}
}
