package handlers

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tidwall/gjson"
)

// TestGatewayErrorsSayWhatHappened checks the message of each gateway 504
// and 502 against what really happened: no attempt at all, attempts cut by
// the deadline or by attempt_timeout, and an unreachable upstream.
func TestGatewayErrorsSayWhatHappened(t *testing.T) {
	hang := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		<-r.Context().Done()
		return nil
	})
	unreachable := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		return caddyhttp.Error(http.StatusBadGateway, nil)
	})
	for _, c := range []struct {
		name              string
		deadline, attempt time.Duration
		retries           int
		next              caddyhttp.Handler
		status            int
		says              string
	}{
		{"deadline before any attempt", time.Nanosecond, 0, 0, hang, 504, "deadline of 1ns ran out before any attempt was made"},
		{"deadline during the attempt", 100 * time.Millisecond, 0, 0, hang, 504, "had not answered when this request's deadline of 100ms ran out (1 attempt made)"},
		{"attempt timeouts", time.Minute, 20 * time.Millisecond, 2, hang, 504, "within the attempt_timeout of 20ms (3 attempts made)"},
		{"unreachable", time.Minute, 0, 1, unreachable, 502, "could not be reached (2 attempts made)"},
	} {
		g := testGateway(t, Config{
			MaxBody: 1 << 20, MaxBuffered: 1 << 30, Retries: ptr(c.retries),
			Backoff: &Backoff{Base: caddy.Duration(time.Millisecond), Max: caddy.Duration(time.Millisecond)},
			MaxWait: caddy.Duration(time.Second), Deadline: caddy.Duration(c.deadline), AttemptTimeout: caddy.Duration(c.attempt),
			CircuitBreaker: &CircuitBreaker{Off: true}, RetryBudget: &RetryBudget{Off: true},
		})
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(`{"model":"m","max_tokens":5,"messages":[]}`))
		if err := g.ServeHTTP(rec, r, c.next); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		msg := gjson.Get(rec.Body.String(), "error.message").Str
		if rec.Code != c.status || !strings.Contains(msg, c.says) {
			t.Errorf("%s: %d %q, want %d saying %q", c.name, rec.Code, msg, c.status, c.says)
		}
		if strings.Contains(msg, "attempt(s)") {
			t.Errorf("%s: %q counts attempts vaguely", c.name, msg)
		}
	}
}

// testGateway prepares cfg as the module does and returns a gateway with
// no zones, circuits or budget.
func testGateway(t testing.TB, cfg Config) *Gateway {
	t.Helper()
	if err := cfg.Provision(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return New(&cfg, Deps{})
}

func ptr[T any](v T) *T { return &v }

// TestWatchdogOutlivesReusedCalls runs attempts whose attempt_timeout fires
// about when they end, so that a watchdog callback is often still waiting
// for its lock when the call goes back to the pool and is reused. Under the
// race detector it fails if resetting a call touches the watchdog a late
// callback reads.
func TestWatchdogOutlivesReusedCalls(t *testing.T) {
	g := testGateway(t, Config{
		MaxBody: 1 << 20, MaxBuffered: 1 << 30, Retries: ptr(0),
		MaxWait: caddy.Duration(time.Second), Deadline: caddy.Duration(time.Minute),
		AttemptTimeout: caddy.Duration(time.Millisecond),
		CircuitBreaker: &CircuitBreaker{Off: true}, RetryBudget: &RetryBudget{Off: true},
	})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-time.After(time.Duration(r.ContentLength%3) * 500 * time.Microsecond):
		case <-r.Context().Done():
			return r.Context().Err()
		}
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write([]byte(`{"type":"message","usage":{"input_tokens":1,"output_tokens":1}}`))
		return err
	})
	var wg sync.WaitGroup
	for worker := 0; worker < 4; worker++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				body := `{"model":"m","max_tokens":5,"messages":[]}` + strings.Repeat(" ", i%3)
				r := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body))
				if err := g.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
