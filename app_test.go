package airesilience

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/fleet"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testredis"
	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// parseGlobal runs the global option's parser on an `ai_resilience { … }`
// block and returns the app's JSON.
func parseGlobal(t *testing.T, block string) (string, error) {
	t.Helper()
	var app App
	if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(block)); err != nil {
		return "", err
	}
	out, err := json.Marshal(app)
	return string(out), err
}

// globalCases pairs each global setting with the JSON it must produce.
var globalCases = []struct {
	name, block, json string
}{
	{"empty", "ai_resilience {\n}", `{}`},
	{"url", "ai_resilience {\n\tredis redis://10.0.0.5:6379\n}", `{"redis":{"urls":["redis://10.0.0.5:6379"]}}`},
	{"tls url with a block", "ai_resilience {\n\tredis rediss://user@cache.internal:6380/2 {\n\t\ttimeout 20ms\n\t}\n}",
		`{"redis":{"urls":["rediss://user@cache.internal:6380/2"],"timeout":20000000}}`},
	{"everything", `ai_resilience {
	redis redis://10.0.0.5:6379 redis://10.0.0.6:6379 {env.REDIS_SEED} {
		password       {env.AI_RESILIENCE_REDIS_PASSWORD}
		prefix         fleet_a
		timeout        80ms
		on_unavailable deny
		cluster
	}
}`, `{"redis":{"urls":["redis://10.0.0.5:6379","redis://10.0.0.6:6379","{env.REDIS_SEED}"],"password":"{env.AI_RESILIENCE_REDIS_PASSWORD}","prefix":"fleet_a","timeout":80000000,"on_unavailable":"deny","cluster":true}}`},
}

func TestGlobalOption(t *testing.T) {
	for _, c := range globalCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseGlobal(t, c.block)
			if err != nil {
				t.Fatalf("parsing:\n%s\n%v", c.block, err)
			}
			if got != c.json {
				t.Errorf("JSON\n got %s\nwant %s", got, c.json)
			}
			var back App
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatal(err)
			}
			if again, _ := json.Marshal(back); string(again) != got {
				t.Errorf("JSON round trip changed the config:\n %s\n %s", got, again)
			}
		})
	}
}

// TestEveryRedisFieldHasASetting keeps the table above complete: each JSON
// field of the app's redis block is set by some Caddyfile case.
func TestEveryRedisFieldHasASetting(t *testing.T) {
	typ := reflect.TypeFor[Redis]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		found := false
		for _, c := range globalCases {
			found = found || gjson.Get(c.json, "redis."+name).Exists()
		}
		if !found {
			t.Errorf("JSON field redis.%s is set by no Caddyfile case", name)
		}
	}
}

func TestGlobalOptionErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		lines string // the block's body, from line 2
		line  int
		hints []string
	}{
		{"unknown setting", "\tstore redis://x:1", 2, []string{`"store"`, "use redis"}},
		{"redis without url", "\tredis", 2, []string{"redis", "URL", "redis://"}},
		{"bad scheme", "\tredis http://10.0.0.5:6379", 2, []string{"http://10.0.0.5:6379", "redis://host:port"}},
		{"url without host", "\tredis redis://", 2, []string{"redis://host:port"}},
		{"password in an error stays out", "\tredis https://u:hunter2@x:1", 2, []string{"xxxxx"}},
		{"redis twice", "\tredis redis://a:1\n\tredis redis://b:1", 3, []string{"twice"}},
		{"several urls without cluster", "\tredis redis://a:1 redis://b:1 {\n\t\ttimeout 1s\n\t}", 4, []string{"2 URLs", "cluster"}},
		{"unknown redis setting", "\tredis redis://a:1 {\n\t\tdb 2\n\t}", 3, []string{`"db"`, "password, prefix, timeout, on_unavailable or cluster"}},
		{"bad timeout", "\tredis redis://a:1 {\n\t\ttimeout soon\n\t}", 3, []string{"timeout", `"soon"`}},
		{"zero timeout", "\tredis redis://a:1 {\n\t\ttimeout 0s\n\t}", 3, []string{"timeout", "longer than 0"}},
		{"bad fallback", "\tredis redis://a:1 {\n\t\ton_unavailable retry\n\t}", 3, []string{"on_unavailable", "local, deny or allow", `"retry"`}},
		{"prefix with a brace", "\tredis redis://a:1 {\n\t\tprefix a{b}\n\t}", 3, []string{"prefix", "brace"}},
		{"cluster with a value", "\tredis redis://a:1 {\n\t\tcluster yes\n\t}", 3, []string{"cluster", "no value"}},
		{"password missing", "\tredis redis://a:1 {\n\t\tpassword\n\t}", 3, []string{"password", "needs a value"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			block := "ai_resilience {\n" + c.lines + "\n}"
			_, err := parseGlobal(t, block)
			checkLineError(t, block, err, c.line, c.hints)
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// TestGlobalOptionBecomesTheApp adapts a whole Caddyfile: the global option
// lands in apps.ai_resilience, beside the http app, and a second one is an
// error naming its line.
func TestGlobalOptionBecomesTheApp(t *testing.T) {
	src := `{
	ai_resilience {
		redis redis://127.0.0.1:6379 {
			on_unavailable allow
		}
	}
}

:8080 {
	ai_resilience {
		limit org {
			rpm 10
			scope instance
		}
	}
	reverse_proxy 127.0.0.1:9
}
`
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, _, err := adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(cfg, "apps.ai_resilience").Raw; got != `{"redis":{"urls":["redis://127.0.0.1:6379"],"on_unavailable":"allow"}}` {
		t.Errorf("apps.ai_resilience = %s\n%s", got, cfg)
	}
	if got := gjson.GetBytes(cfg, "apps.http.servers.srv0.routes.0.handle.0.limit.0.scope").Str; got != "instance" {
		t.Errorf("the zone's scope did not reach the JSON: %s", cfg)
	}
	twice := strings.Replace(src, "{\n\tai_resilience {", "{\n\tai_resilience {\n\t}\n\tai_resilience {", 1)
	if _, _, err := adapter.Adapt([]byte(twice), map[string]any{"filename": "Caddyfile"}); err == nil || !strings.Contains(err.Error(), "twice") || !strings.Contains(err.Error(), "Caddyfile:4") {
		t.Errorf("a second global option: %v", err)
	}
}

// provisionApp runs Provision on an app with a bare Caddy context.
func provisionApp(t *testing.T, a *App) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return a.Provision(ctx)
}

// TestAppDefaults provisions the app: the store gets the documented
// defaults, and placeholders in the URL and password are replaced.
func TestAppDefaults(t *testing.T) {
	srv := testredis.Start(t)
	t.Setenv("AI_RESILIENCE_TEST_REDIS", srv.URL)
	a := &App{Redis: &Redis{URLs: []string{"{env.AI_RESILIENCE_TEST_REDIS}"}}}
	if err := provisionApp(t, a); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	r := a.Redis
	if r.Prefix != "ai_resilience" || time.Duration(r.Timeout) != 50*time.Millisecond || r.OnUnavailable != "local" || r.Cluster {
		t.Errorf("defaults: %+v", r)
	}
	if a.store == nil {
		t.Fatal("no store")
	}
	if h := a.store.Health(); h.Down {
		t.Errorf("store health %+v", h)
	}
}

// TestAppStoreSurvivesReload provisions the app twice with the same
// settings, as a reload does (the new config before the old one is cleaned
// up): both get the same store, it outlives the old config, and it closes
// with the last one. Other settings get another store.
func TestAppStoreSurvivesReload(t *testing.T) {
	srv := testredis.Start(t)
	settings := func() *Redis { return &Redis{URLs: []string{srv.URL}, Prefix: "reload"} }
	old, next := &App{Redis: settings()}, &App{Redis: settings()}
	if err := provisionApp(t, old); err != nil {
		t.Fatal(err)
	}
	if err := provisionApp(t, next); err != nil {
		t.Fatal(err)
	}
	if old.store != next.store {
		t.Fatal("a reload with the same settings made a second store")
	}
	store := next.store
	_ = old.Cleanup()
	if store.Health().Down {
		t.Fatal("the store closed with the old config")
	}
	other := &App{Redis: &Redis{URLs: []string{srv.URL}, Prefix: "other"}}
	if err := provisionApp(t, other); err != nil {
		t.Fatal(err)
	}
	if other.store == store {
		t.Error("other settings share the store")
	}
	_ = other.Cleanup()
	_ = next.Cleanup()
	if _, ok := stores.References(next.storeKey); ok || next.store != nil {
		t.Error("the store is still pooled after the last config let go")
	}
}

func TestAppRejectsBadSettings(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Redis
		want string
	}{
		{"no url", Redis{}, "no store URL"},
		{"bad scheme", Redis{URLs: []string{"tcp://127.0.0.1:1"}}, "redis://host:port"},
		{"unset environment variable", Redis{URLs: []string{"{env.AI_RESILIENCE_TEST_UNSET}"}}, "may be unset"},
		{"several without cluster", Redis{URLs: []string{"redis://a:1", "redis://b:1"}}, "without cluster"},
		{"fallback", Redis{URLs: []string{"redis://a:1"}, OnUnavailable: "maybe"}, "local, deny or allow"},
		{"prefix", Redis{URLs: []string{"redis://a:1"}, Prefix: "{x}"}, "brace"},
		{"cluster database", Redis{URLs: []string{"redis://a:1/3"}, Cluster: true}, "database 3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := provisionApp(t, &App{Redis: &c.r})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Provision: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestZoneScopes checks where each scope puts a zone: fleet by default
// with a store, instance without one, and scope fleet without a store is
// an error that says what to add.
func TestZoneScopes(t *testing.T) {
	srv := testredis.Start(t)
	a := &App{Redis: &Redis{URLs: []string{srv.URL}, Prefix: "scopes"}}
	if err := provisionApp(t, a); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	var none *App
	for _, c := range []struct {
		app    *App
		scope  string
		shared bool
	}{
		{a, "", true}, {a, "fleet", true}, {a, "instance", false},
		{none, "", false}, {none, "instance", false},
	} {
		s, key, err := c.app.zoneStore("org", c.scope)
		if err != nil || (s != nil) != c.shared || (key != "") != c.shared {
			t.Errorf("store %v, scope %q: %v %q %v; want shared %v", c.app != nil, c.scope, s, key, err, c.shared)
		}
	}
	if _, _, err := none.zoneStore("org", "fleet"); err == nil || !strings.Contains(err.Error(), "ai_resilience { redis <url> }") {
		t.Errorf("scope fleet without a store: %v", err)
	}
	if _, _, err := a.zoneStore("org", "global"); err == nil || !strings.Contains(err.Error(), "fleet or instance") {
		t.Errorf("scope global: %v", err)
	}
}

// FuzzGlobalOption parses arbitrary text as the global option: it never
// panics, and what it accepts is valid JSON that loads back unchanged, with
// URLs the store accepts (or placeholders, checked at load) and a fallback
// it knows.
func FuzzGlobalOption(f *testing.F) {
	for _, c := range globalCases {
		f.Add(c.block)
	}
	f.Add("ai_resilience {\n\tredis redis://a:1 redis://b:2 {\n\t\tcluster\n\t\ttimeout 1ms\n\t}\n}")
	f.Add("ai_resilience {\n\tredis rediss://:p@h:1/0 {\n\t\tprefix {x}\n\t}\n}")
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > 4096 {
			return
		}
		tokens, err := caddyfile.Tokenize([]byte(src), "Fuzzfile")
		if err != nil {
			return
		}
		var app App
		if err := app.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		out, err := json.Marshal(app)
		if err != nil {
			t.Fatal(err)
		}
		var back App
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if again, _ := json.Marshal(back); string(again) != string(out) {
			t.Fatalf("round trip: %s → %s", out, again)
		}
		if r := app.Redis; r != nil {
			for _, u := range r.URLs {
				if !strings.Contains(u, "{") && fleet.CheckURL(u) != nil {
					t.Fatalf("accepted URL %q", u)
				}
			}
			if r.OnUnavailable != "" {
				if _, err := policy.ParseFallback(r.OnUnavailable); err != nil {
					t.Fatalf("accepted on_unavailable %q", r.OnUnavailable)
				}
			}
			if len(r.URLs) > 1 && !r.Cluster {
				t.Fatalf("accepted %d URLs without cluster", len(r.URLs))
			}
		}
	})
}
