package airesilience

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ai-resilience/caddy-ai-resilience/handlers"
)

// provision runs Provision on h with a bare Caddy context, as Caddy does
// for a handler in a config.
func provision(t *testing.T, h *Handler) (caddy.Context, error) {
	t.Helper()
	ctx, err := caddy.ProvisionContext(&caddy.Config{
		StorageRaw: caddyconfig.JSONModuleObject(map[string]string{"root": t.TempDir()}, "module", "file_system", nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := caddy.NewContext(ctx)
	t.Cleanup(cancel)
	return cctx, h.Provision(cctx)
}

func TestProvisionDefaultsAreTheSpec(t *testing.T) {
	var h Handler
	if _, err := provision(t, &h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"provider", h.Provider, "auto"},
		{"retries", *h.Retries, 2},
		{"backoff base", time.Duration(h.Backoff.Base), 500 * time.Millisecond},
		{"backoff max", time.Duration(h.Backoff.Max), 8 * time.Second},
		{"max_wait", time.Duration(h.MaxWait), 60 * time.Second},
		{"deadline", time.Duration(h.Deadline), 5 * time.Minute},
		{"attempt_timeout", time.Duration(h.AttemptTimeout), time.Duration(0)},
		{"idle_timeout", time.Duration(h.IdleTimeout), time.Duration(0)},
		{"max_body", h.MaxBody, int64(16_000_000)}, // "16MB" as the Caddyfile reads it
		{"max_buffered", h.MaxBuffered, int64(512_000_000)},
		{"client_retries", h.ClientRetries, "deny"},
		{"context_guard", h.ContextGuard, "reject"},
		{"validate", *h.ValidateRequests, true},
		{"pace_upstream", *h.PaceUpstream, true},
		{"circuit_breaker failures", h.CircuitBreaker.Failures, 5},
		{"circuit_breaker cooldown", time.Duration(h.CircuitBreaker.Cooldown), 30 * time.Second},
		{"circuit_breaker failure_rate", *h.CircuitBreaker.FailureRate, 50.0},
		{"circuit_breaker window", time.Duration(h.CircuitBreaker.Window), 10 * time.Second},
		{"circuit_breaker min_calls", h.CircuitBreaker.MinCalls, 20},
		{"circuit_breaker probes", h.CircuitBreaker.Probes, 3},
		{"retry_budget percent", h.RetryBudget.Percent, 20.0},
		{"retry_budget floor", *h.RetryBudget.MinPerSecond, 10.0},
	} {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if h.gateway == nil {
		t.Error("Provision prepared no gateway")
	}
}

func TestProvisionKeepsWhatIsSet(t *testing.T) {
	zero := 0
	h := Handler{Config: handlers.Config{Retries: &zero, Backoff: &handlers.Backoff{Base: caddy.Duration(10 * time.Second)}, ClientRetries: "allow"}}
	if _, err := provision(t, &h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if *h.Retries != 0 {
		t.Errorf("retries 0 became %d: zero means no retries, not the default", *h.Retries)
	}
	if h.Backoff.Max != h.Backoff.Base {
		t.Errorf("backoff base 10s got max %v: an unset max below the base must rise to it", time.Duration(h.Backoff.Max))
	}
	if h.ClientRetries != "allow" {
		t.Errorf("client_retries %q, want allow kept", h.ClientRetries)
	}
}

func TestProvisionRegistersMetricsOnce(t *testing.T) {
	var a, b Handler
	ctx, err := provision(t, &a)
	if err != nil {
		t.Fatal(err)
	}
	// A second handler in the same config shares the collectors.
	if err := b.Provision(ctx); err != nil {
		t.Fatalf("a second handler in the same config: %v", err)
	}
	reg := ctx.GetMetricsRegistry()
	for _, c := range handlers.Collectors() {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); !errors.As(err, &already) {
			t.Errorf("collector not in the config's registry (register gave %v)", err)
		}
	}
}

func TestProvisionRejectsBadJSON(t *testing.T) {
	for _, c := range []struct {
		name string
		h    Handler
		hint string
	}{
		{"provider", Handler{Config: handlers.Config{Provider: "gemini"}}, "provider"},
		{"retry_on status", Handler{Config: handlers.Config{RetryOn: []int{429, 600}}}, "600"},
		{"retry_on success", Handler{Config: handlers.Config{RetryOn: []int{200}}}, "not an error"},
		{"fallback of one", Handler{Config: handlers.Config{Fallback: [][]string{{"a"}}}}, "at least two"},
		{"model in two chains", Handler{Config: handlers.Config{Fallback: [][]string{{"a", "b"}, {"c", "a"}}}}, `"a"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := provision(t, &c.h)
			if err == nil || !strings.Contains(err.Error(), c.hint) {
				t.Errorf("got %v, want an error naming %s", err, c.hint)
			}
		})
	}
}

func TestValidateRejectsBadCombinations(t *testing.T) {
	negative, thousand := -1, 1000
	overHundred := 150.0
	for _, c := range []struct {
		name string
		h    Handler
		hint string
	}{
		{"attempt_timeout over deadline", Handler{Config: handlers.Config{AttemptTimeout: caddy.Duration(2 * time.Minute), Deadline: caddy.Duration(time.Minute)}}, "attempt_timeout"},
		{"backoff max below base", Handler{Config: handlers.Config{Backoff: &handlers.Backoff{Base: caddy.Duration(2 * time.Second), Max: caddy.Duration(time.Second)}}}, "below its base"},
		{"client_retries", Handler{Config: handlers.Config{ClientRetries: "sometimes"}}, "allow or deny"},
		{"negative retries", Handler{Config: handlers.Config{Retries: &negative}}, "retries"},
		// The bounds the Caddyfile names on its line hold for JSON too.
		{"retries above 100", Handler{Config: handlers.Config{Retries: &thousand}}, "0 to 100"},
		{"circuit_breaker min_calls", Handler{Config: handlers.Config{CircuitBreaker: &handlers.CircuitBreaker{Failures: 5, Cooldown: caddy.Duration(time.Second), MinCalls: 2_000_000}}}, "min_calls"},
		{"negative max_body", Handler{Config: handlers.Config{MaxBody: -1}}, "max_body"},
		{"negative max_buffered", Handler{Config: handlers.Config{MaxBuffered: -1}}, "max_buffered"},
		{"max_buffered below max_body", Handler{Config: handlers.Config{MaxBody: 64 << 20, MaxBuffered: 32 << 20}}, "below max_body"},
		{"negative deadline", Handler{Config: handlers.Config{Deadline: caddy.Duration(-time.Second)}}, "deadline"},
		{"negative max_wait", Handler{Config: handlers.Config{MaxWait: caddy.Duration(-time.Second)}}, "max_wait"},
		{"negative attempt_timeout", Handler{Config: handlers.Config{AttemptTimeout: caddy.Duration(-time.Second)}}, "attempt_timeout"},
		{"negative idle_timeout", Handler{Config: handlers.Config{IdleTimeout: caddy.Duration(-time.Second)}}, "idle_timeout"},
		{"circuit_breaker failure_rate", Handler{Config: handlers.Config{CircuitBreaker: &handlers.CircuitBreaker{FailureRate: &overHundred}}}, "failure_rate"},
		{"circuit_breaker probes", Handler{Config: handlers.Config{CircuitBreaker: &handlers.CircuitBreaker{Probes: -1}}}, "probes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := provision(t, &c.h); err != nil {
				t.Fatalf("provision: %v", err)
			}
			err := c.h.Validate()
			if err == nil || !strings.Contains(err.Error(), c.hint) {
				t.Errorf("got %v, want an error naming %s", err, c.hint)
			}
		})
	}
}
