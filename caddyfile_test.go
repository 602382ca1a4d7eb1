package airesilience

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/tidwall/gjson"

	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// parse runs UnmarshalCaddyfile on an `ai_resilience { … }` block.
func parse(t *testing.T, block string) (*Handler, error) {
	t.Helper()
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(block))
	return &h, err
}

// caddyfileCases pairs each subdirective with the JSON it must produce.
var caddyfileCases = []struct {
	name, block, json string
}{
	{"empty", "ai_resilience", `{}`},
	{"empty block", "ai_resilience {\n}", `{}`},
	{"provider", "ai_resilience {\n\tprovider openai\n}", `{"provider":"openai"}`},
	{"provider anthropic", "ai_resilience {\n\tprovider anthropic\n}", `{"provider":"anthropic"}`},
	{"max_body decimal", "ai_resilience {\n\tmax_body 1KB\n}", `{"max_body":1000}`},
	{"max_body binary", "ai_resilience {\n\tmax_body 32MiB\n}", `{"max_body":33554432}`},
	{"max_buffered", "ai_resilience {\n\tmax_buffered 256MB\n}", `{"max_buffered":256000000}`},
	{"retries", "ai_resilience {\n\tretries 5\n}", `{"retries":5}`},
	{"retries zero", "ai_resilience {\n\tretries 0\n}", `{"retries":0}`},
	{"backoff base", "ai_resilience {\n\tbackoff 100ms\n}", `{"backoff":{"base":100000000}}`},
	{"backoff base max", "ai_resilience {\n\tbackoff 100ms 2s\n}", `{"backoff":{"base":100000000,"max":2000000000}}`},
	{"retry_on", "ai_resilience {\n\tretry_on 429 503 529\n}", `{"retry_on":[429,503,529]}`},
	{"max_wait", "ai_resilience {\n\tmax_wait 10s\n}", `{"max_wait":10000000000}`},
	{"deadline", "ai_resilience {\n\tdeadline 2m\n}", `{"deadline":120000000000}`},
	{"deadline in days", "ai_resilience {\n\tdeadline 1d\n}", `{"deadline":86400000000000}`},
	{"attempt_timeout", "ai_resilience {\n\tattempt_timeout 300ms\n}", `{"attempt_timeout":300000000}`},
	{"idle_timeout", "ai_resilience {\n\tidle_timeout 45s\n}", `{"idle_timeout":45000000000}`},
	{"fallback chains", "ai_resilience {\n\tfallback a b c\n\tfallback x y\n}", `{"fallback":[["a","b","c"],["x","y"]]}`},
	{"client_retries", "ai_resilience {\n\tclient_retries allow\n}", `{"client_retries":"allow"}`},
	{"client_retries deny", "ai_resilience {\n\tclient_retries deny\n}", `{"client_retries":"deny"}`},
	{"max_tokens", "ai_resilience {\n\tmax_tokens 4096\n}", `{"max_tokens":{"limit":4096}}`},
	{"max_tokens reject", "ai_resilience {\n\tmax_tokens 4096 reject\n}", `{"max_tokens":{"limit":4096,"mode":"reject"}}`},
	{"default_max_tokens", "ai_resilience {\n\tdefault_max_tokens 1024\n}", `{"default_max_tokens":1024}`},
	{"model", "ai_resilience {\n\tmodel claude-x* {\n\t\tcontext_window 200000\n\t\tmax_output 64000\n\t}\n\tmodel gpt-y {\n\t\tmax_output 100\n\t}\n}",
		`{"model":[{"name":"claude-x*","context_window":200000,"max_output":64000},{"name":"gpt-y","max_output":100}]}`},
	{"context_guard", "ai_resilience {\n\tcontext_guard truncate\n}", `{"context_guard":"truncate"}`},
	{"validate off", "ai_resilience {\n\tvalidate off\n}", `{"validate":false}`},
	{"validate on", "ai_resilience {\n\tvalidate on\n}", `{"validate":true}`},
	{"limit", "ai_resilience {\n\tlimit org {\n\t\tkey {http.request.header.X-Team}\n\t\trpm 50\n\t\ttpm 100000\n\t\twait 5s\n\t\tmax_keys 10\n\t\tscope instance\n\t}\n\tlimit all {\n\t\trpm 1000\n\t\tscope fleet\n\t}\n}",
		`{"limit":[{"zone":"org","key":"{http.request.header.X-Team}","rpm":50,"tpm":100000,"wait":5000000000,"max_keys":10,"scope":"instance"},{"zone":"all","rpm":1000,"scope":"fleet"}]}`},
	{"pace_upstream off", "ai_resilience {\n\tpace_upstream off\n}", `{"pace_upstream":false}`},
	{"circuit_breaker", "ai_resilience {\n\tcircuit_breaker 3 10s\n}", `{"circuit_breaker":{"failures":3,"cooldown":10000000000}}`},
	{"circuit_breaker off", "ai_resilience {\n\tcircuit_breaker off\n}", `{"circuit_breaker":{"off":true}}`},
	{"circuit_breaker block", "ai_resilience {\n\tcircuit_breaker 5 30s {\n\t\tfailure_rate 60%\n\t\twindow 20s\n\t\tmin_calls 50\n\t\tprobes 2\n\t}\n}",
		`{"circuit_breaker":{"failures":5,"cooldown":30000000000,"failure_rate":60,"window":20000000000,"min_calls":50,"probes":2}}`},
	{"circuit_breaker rate zero", "ai_resilience {\n\tcircuit_breaker 5 30s {\n\t\tfailure_rate 0\n\t}\n}", `{"circuit_breaker":{"failures":5,"cooldown":30000000000,"failure_rate":0}}`},
	{"retry_budget", "ai_resilience {\n\tretry_budget 20% 10\n}", `{"retry_budget":{"percent":20,"min_per_second":10}}`},
	{"retry_budget off", "ai_resilience {\n\tretry_budget off\n}", `{"retry_budget":{"off":true}}`},
	{"everything", `ai_resilience {
	provider auto
	max_body 2MB
	retries 3
	backoff 250ms 4s
	retry_on 429 529
	max_wait 30s
	deadline 90s
	attempt_timeout 20s
	fallback claude-opus-4-5 claude-sonnet-4-5 claude-haiku-4-5
	client_retries deny
}`, `{"provider":"auto","max_body":2000000,"retries":3,"backoff":{"base":250000000,"max":4000000000},"retry_on":[429,529],"max_wait":30000000000,"deadline":90000000000,"attempt_timeout":20000000000,"fallback":[["claude-opus-4-5","claude-sonnet-4-5","claude-haiku-4-5"]],"client_retries":"deny"}`},
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, c := range caddyfileCases {
		t.Run(c.name, func(t *testing.T) {
			h, err := parse(t, c.block)
			if err != nil {
				t.Fatalf("parsing:\n%s\n%v", c.block, err)
			}
			got, err := json.Marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.json {
				t.Errorf("JSON\n got %s\nwant %s", got, c.json)
			}
			// The JSON twin loads back to the same configuration.
			var back Handler
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if again, _ := json.Marshal(&back); string(again) != string(got) {
				t.Errorf("JSON round trip changed the config:\n %s\n %s", got, again)
			}
		})
	}
}

// TestEveryJSONFieldHasASubdirective keeps the table above complete: each
// JSON field of the handler is set by some Caddyfile case.
func TestEveryJSONFieldHasASubdirective(t *testing.T) {
	typ := reflect.TypeFor[Handler]()
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag.Get("json")
		if tag == "" || tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		found := false
		for _, c := range caddyfileCases {
			if gjson.Get(c.json, name).Exists() {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("JSON field %q is set by no Caddyfile case", name)
		}
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		lines string // the block's body, starting on line 2
		line  int
		hints []string
	}{
		{"unknown subdirective", "\tretries 2\n\tretry 3", 3, []string{`"retry"`, "unrecognized"}},
		{"bad duration", "\tmax_wait soon", 2, []string{"max_wait", `"soon"`, "500ms"}},
		{"negative duration", "\tretries 1\n\tdeadline -1s", 3, []string{"deadline", "-1s"}},
		{"duration missing", "\tattempt_timeout", 2, []string{"attempt_timeout", "needs a value"}},
		{"bad idle_timeout", "\tretries 1\n\tidle_timeout forever", 3, []string{"idle_timeout", `"forever"`, "30s"}},
		{"duration twice", "\tdeadline 1s 2s", 2, []string{"deadline", "one value", `"2s"`}},
		{"bad size", "\tmax_body huge", 2, []string{"max_body", `"huge"`, "16MB"}},
		{"zero size", "\tmax_body 0", 2, []string{"max_body", `"0"`}},
		{"bad max_buffered", "\tmax_buffered lots", 2, []string{"max_buffered", `"lots"`, "16MB"}},
		{"retries not a number", "\tretries many", 2, []string{"retries", `"many"`, "0 to 100"}},
		{"retries negative", "\tretries -1", 2, []string{"retries", `"-1"`}},
		{"backoff missing", "\tbackoff", 2, []string{"backoff", "500ms 8s"}},
		{"backoff three values", "\tbackoff 1s 2s 3s", 2, []string{"backoff"}},
		{"backoff zero", "\tbackoff 0s", 2, []string{"backoff", `"0s"`, "positive"}},
		{"backoff max below base", "\tbackoff 2s 1s", 2, []string{"backoff", "below", "2s"}},
		{"status too low", "\tretry_on 429 99", 2, []string{"retry_on", "99", "400 to 599"}},
		{"status too high", "\tretry_on 600", 2, []string{"retry_on", "600", "400 to 599"}},
		{"success status", "\tretry_on 429 200", 2, []string{"retry_on", "200", "not an error", "400 to 599"}},
		{"redirect status", "\tretry_on 304", 2, []string{"retry_on", "304", "not an error"}},
		{"status not a number", "\tretry_on rate_limit", 2, []string{"retry_on", `"rate_limit"`}},
		{"retry_on empty", "\tretry_on", 2, []string{"retry_on", "at least one"}},
		{"fallback with one model", "\tfallback claude-opus-4-5", 2, []string{"fallback", "at least one model"}},
		{"model in two chains", "\tfallback a b\n\tretries 1\n\tfallback c a", 4, []string{`"a"`, "line 2", "one chain"}},
		{"model twice in a chain", "\tfallback a b a", 2, []string{`"a"`, "twice"}},
		{"client_retries other", "\tclient_retries sometimes", 2, []string{"client_retries", "allow or deny", `"sometimes"`}},
		{"client_retries missing", "\tclient_retries", 2, []string{"client_retries", "needs a value"}},
		{"provider other", "\tprovider gemini", 2, []string{"provider", `"gemini"`, "auto, anthropic or openai"}},
		{"max_tokens zero", "\tmax_tokens 0", 2, []string{"max_tokens", `"0"`, "positive"}},
		{"max_tokens mode", "\tmax_tokens 10 cut", 2, []string{"max_tokens", `"cut"`, "clamp or reject"}},
		{"default_max_tokens negative", "\tdefault_max_tokens -5", 2, []string{"default_max_tokens", `"-5"`}},
		{"model without name", "\tmodel", 2, []string{"model", "name"}},
		{"model setting unknown", "\tmodel x {\n\t\tcontext_window 10\n\t\twindow 5\n\t}", 4, []string{`"window"`, "context_window or max_output"}},
		{"model output over window", "\tretries 1\n\tmodel x {\n\t\tcontext_window 10\n\t\tmax_output 20\n\t}", 6, []string{"max_output", "context_window"}},
		{"context_guard other", "\tcontext_guard maybe", 2, []string{"context_guard", `"maybe"`, "reject, truncate or off"}},
		{"validate other", "\tvalidate yes", 2, []string{"validate", `"yes"`, "on or off"}},
		{"limit without zone", "\tlimit", 2, []string{"limit", "zone name"}},
		{"limit setting unknown", "\tlimit org {\n\t\trpm 5\n\t\trps 1\n\t}", 4, []string{`"rps"`, "key, rpm, tpm, wait"}},
		{"limit bad rpm", "\tlimit org {\n\t\trpm many\n\t}", 3, []string{"rpm", `"many"`}},
		{"limit scope other", "\tlimit org {\n\t\trpm 5\n\t\tscope global\n\t}", 4, []string{"scope", `"global"`, "fleet or instance"}},
		{"limit bad wait", "\tlimit org {\n\t\trpm 5\n\t\twait later\n\t}", 4, []string{"wait", `"later"`}},
		{"limit sets nothing", "\tlimit org {\n\t\twait 5s\n\t}", 4, []string{"org", "neither rpm nor tpm"}},
		{"limit zone twice", "\tlimit org {\n\t\trpm 5\n\t}\n\tlimit org {\n\t\ttpm 5\n\t}", 5, []string{`"org"`, "twice"}},
		{"pace_upstream other", "\tretries 1\n\tpace_upstream sometimes", 3, []string{"pace_upstream", `"sometimes"`, "on or off"}},
		{"circuit_breaker count", "\tcircuit_breaker 0 10s", 2, []string{"circuit_breaker", `"0"`}},
		{"circuit_breaker cooldown", "\tcircuit_breaker 5 soon", 2, []string{"circuit_breaker", `"soon"`}},
		{"circuit_breaker one value", "\tcircuit_breaker 5", 2, []string{"circuit_breaker", "30s"}},
		{"circuit_breaker rate", "\tcircuit_breaker 5 30s {\n\t\tfailure_rate 150%\n\t}", 3, []string{"failure_rate", `"150%"`, "0% to 100%"}},
		{"circuit_breaker window", "\tcircuit_breaker 5 30s {\n\t\twindow 0s\n\t}", 3, []string{"window", "longer than 0"}},
		{"circuit_breaker probes", "\tcircuit_breaker 5 30s {\n\t\tprobes none\n\t}", 3, []string{"probes", `"none"`}},
		{"circuit_breaker min_calls", "\tcircuit_breaker 5 30s {\n\t\tmin_calls 0\n\t}", 3, []string{"min_calls", `"0"`}},
		{"circuit_breaker setting unknown", "\tcircuit_breaker 5 30s {\n\t\tprobe 2\n\t}", 3, []string{`"probe"`, "failure_rate, window, min_calls or probes"}},
		{"retry_budget percent", "\tretry_budget lots", 2, []string{"retry_budget", `"lots"`}},
		{"retry_budget floor", "\tretry_budget 20% -1", 2, []string{"retry_budget", `"-1"`}},
		// Settings that cannot work together are reported at the block's end.
		{"max_buffered below max_body", "\tmax_body 1MB\n\tmax_buffered 512KB", 4, []string{"max_buffered", "below max_body"}},
		{"attempt_timeout over deadline", "\tdeadline 1m\n\tattempt_timeout 10m", 4, []string{"attempt_timeout", "deadline"}},
		{"default over the ceiling", "\tmax_tokens 1000\n\tdefault_max_tokens 100000", 4, []string{"default_max_tokens", "100000", "1000"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			block := "ai_resilience {\n" + c.lines + "\n}"
			_, err := parse(t, block)
			checkLineError(t, block, err, c.line, c.hints)
		})
	}
}

// checkLineError wants err, from parsing block, to end with the line it is
// about and to contain every hint.
func checkLineError(t *testing.T, block string, err error, line int, hints []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error for:\n%s", block)
	}
	msg := err.Error()
	if want := "Testfile:" + strconv.Itoa(line); !strings.HasSuffix(msg, want) {
		t.Errorf("error %q does not end with the line %s", msg, want)
	}
	for _, hint := range hints {
		if !strings.Contains(msg, hint) {
			t.Errorf("error %q lacks %q", msg, hint)
		}
	}
}

func TestDirectiveTakesNoArguments(t *testing.T) {
	if _, err := parse(t, "ai_resilience extra {\n}"); err == nil {
		t.Error("ai_resilience accepted an argument")
	}
}

// TestDirectiveOrdersItselfBeforeReverseProxy adapts a site with no global
// `order` line and reverse_proxy written first: ai_resilience must still
// run first, as the module registers its own order.
func TestDirectiveOrdersItselfBeforeReverseProxy(t *testing.T) {
	src := `:8080 {
	reverse_proxy 127.0.0.1:9
	ai_resilience {
		retries 1
	}
}
`
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	var handlers []string
	for _, h := range gjson.GetBytes(cfg, "apps.http.servers.srv0.routes.0.handle.#.handler").Array() {
		handlers = append(handlers, h.Str)
	}
	if got := strings.Join(handlers, " "); got != "ai_resilience reverse_proxy" {
		t.Errorf("handler order %q, want ai_resilience before reverse_proxy\n%s", got, cfg)
	}
	if r := gjson.GetBytes(cfg, "apps.http.servers.srv0.routes.0.handle.0.retries"); r.Int() != 1 {
		t.Errorf("retries did not reach the JSON: %s", cfg)
	}
}

// TestScopeFleetWithoutStoreNamesItsLine: a zone of scope fleet in a
// Caddyfile without the ai_resilience global option (or with one that
// names no store) fails to adapt at the zone's scope line, saying what to
// add; with a store it adapts.
func TestScopeFleetWithoutStoreNamesItsLine(t *testing.T) {
	site := `:8080 {
	ai_resilience {
		limit org {
			rpm 10
			scope fleet
		}
	}
	reverse_proxy 127.0.0.1:9
}
`
	for _, global := range []string{"", "{\n\tai_resilience {\n\t}\n}\n"} {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global+site), map[string]any{"filename": "Caddyfile"})
		line := 5 + strings.Count(global, "\n")
		if err == nil || !strings.Contains(err.Error(), "ai_resilience { redis <url> }") || !strings.Contains(err.Error(), fmt.Sprintf("Caddyfile:%d", line)) {
			t.Errorf("global %q: got %v, want the missing store named at Caddyfile:%d", global, err, line)
		}
	}
	withStore := "{\n\tai_resilience {\n\t\tredis redis://127.0.0.1:9\n\t}\n}\n"
	if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(withStore+site), map[string]any{"filename": "Caddyfile"}); err != nil {
		t.Errorf("with a store: %v", err)
	}
}
