package handlers

import (
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// Defaults of the settings that have one.
const (
	DefaultMaxBody     = 16_000_000  // "16MB", read the way Caddy reads sizes
	DefaultMaxBuffered = 512_000_000 // "512MB"
	defaultRetries     = 2
	defaultBase        = 500 * time.Millisecond
	defaultMax         = 8 * time.Second
	defaultMaxWait     = 60 * time.Second
	defaultDeadline    = 5 * time.Minute

	defaultCircuitFailures = 5
	defaultCircuitCooldown = 30 * time.Second
	defaultCircuitRate     = 50
	defaultCircuitWindow   = 10 * time.Second
	defaultCircuitMinCalls = 20
	defaultCircuitProbes   = 3
	defaultBudgetPercent   = 20
	defaultBudgetFloor     = 10
)

// Config is the configuration of one ai_resilience handler: its JSON
// fields (the Caddy module embeds Config, so they are the module's JSON,
// and its Caddyfile fills them), and the state Provision prepares from them
// for the request path. Every rule about the settings is checked here, once:
// the Caddyfile parser calls the same checks to point at the line.
type Config struct {
	// The API dialect: `auto` (by request path), `anthropic` or `openai`.
	// A fixed dialect treats every request in the route as that API.
	// Default: auto.
	Provider string `json:"provider,omitempty"`

	// The largest request body, in bytes, the gateway buffers (it must hold
	// the body to send it again), counted after decoding a gzip or deflate
	// Content-Encoding. A larger request is answered with 413 in the
	// dialect's error shape. Memory is taken as bytes arrive, never on the
	// strength of a declared Content-Length. Default: 16MB.
	MaxBody int64 `json:"max_body,omitempty"`

	// The most bytes of request bodies and held (retryable) responses that
	// the gateways of this Caddy process keep in memory at once, counted
	// across every request and every handler. A request that would pass it
	// is answered at once with the dialect's overload error (Anthropic 529
	// overloaded_error, OpenAI 503) with `retry-after` and
	// `x-should-retry: true`; a held response that would pass it is sent to
	// the client as it is. Each handler compares the process's count with
	// its own setting. Default: 512MB.
	MaxBuffered int64 `json:"max_buffered,omitempty"`

	// Retries per model after its first attempt. 0 disables retries (a
	// fallback model is still tried). Default: 2.
	Retries *int `json:"retries,omitempty"`

	// Exponential backoff with full jitter between retries of a model: the
	// wait before retry n is random in [0, min(max, base·2^n)). When the
	// upstream sends a wait hint, the wait is the larger of the two.
	// Default: base 500ms, max 8s.
	Backoff *Backoff `json:"backoff,omitempty"`

	// Upstream HTTP statuses that are retried. Connection failures and
	// attempt timeouts are always retried. An upstream `x-should-retry`
	// header overrides this list either way, and an OpenAI 429 for an
	// exhausted quota is never retried. Default: 408 409 429 500 502 503
	// 504 529.
	RetryOn []int `json:"retry_on,omitempty"`

	// The longest single wait the gateway sits out. When the upstream asks
	// for a longer one (retry-after and the like), the model counts as
	// unavailable: the request goes to its fallback, or fails. Default: 60s.
	MaxWait caddy.Duration `json:"max_wait,omitempty"`

	// The total time for all attempts, waits and fallbacks of one request,
	// counted from the moment its body has been read (a slow upload is
	// bounded by the server's read timeouts instead). A wait that would
	// cross it is not started. It applies until the first byte of an
	// answer reaches the client (for a stream, its first event): a
	// response whose headers came but whose body did not is bounded by it
	// too. A response already on its way to the client is never cut by it;
	// idle_timeout bounds that. Default: 5m.
	Deadline caddy.Duration `json:"deadline,omitempty"`

	// The time one attempt has to produce response headers. An attempt that
	// runs out is cancelled and retried. It never cuts a response that has
	// started. Default: off.
	AttemptTimeout caddy.Duration `json:"attempt_timeout,omitempty"`

	// Once an upstream response's headers have arrived, the longest it may
	// go without sending a byte (a stream's pings count). A response that
	// goes silent that long before anything reached the client is retried
	// like a timeout; after that its upstream request is cancelled and the
	// response cut: a stream ends with the dialect's in-band error event
	// (error_type timeout_error), a plain body is aborted so the client
	// sees it incomplete. Either way the call is logged and counted as an
	// error. reverse_proxy's `transport http { read_timeout }` bounds the
	// same silence per read on the connection, and ends a stream with the
	// in-band error too, but it is the same for every route of the proxy
	// and says stream_incomplete rather than timeout_error. Default: off.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// Fallback chains: in each, when a model is unavailable (its retries
	// are spent on retryable failures, or its wait hint is above max_wait),
	// the same request is sent with the body's model set to the next one,
	// which has its own retries. Only the model value changes; every other
	// byte of the body is kept. A model may appear in one chain only.
	Fallback [][]string `json:"fallback,omitempty"`

	// `allow` or `deny`. With deny, a failure the gateway has already
	// retried (or decided not to wait for) carries `x-should-retry: false`,
	// so the official SDKs do not multiply the gateway's retries with their
	// own. Default: deny.
	ClientRetries string `json:"client_retries,omitempty"`

	// The ceiling on requested output tokens, applied to every field the
	// dialect uses for it (`max_tokens`; `max_completion_tokens` and the
	// deprecated `max_tokens`; `max_output_tokens`), judged by value in any
	// JSON number form and written back as an integer. Lowering a cap (this
	// ceiling, or a model's max_output) lowers an Anthropic thinking budget
	// with it, or refuses the request when no budget of at least 1024 fits
	// below the cap. Default: none.
	MaxTokens *MaxTokens `json:"max_tokens,omitempty"`

	// The output cap set when a request names none: `max_tokens`
	// (anthropic), `max_completion_tokens` (openai chat) or
	// `max_output_tokens` (openai responses). Default: none.
	DefaultMaxTokens int64 `json:"default_max_tokens,omitempty"`

	// Facts about models, overriding or extending the built-in table of
	// current Anthropic and OpenAI models. A request asking for more output
	// than a model's max_output is clamped to it.
	Model []ModelFacts `json:"model,omitempty"`

	// What to do when the estimated input plus the output cap exceed the
	// model's context window: `reject` answers 400 (openai code
	// context_length_exceeded) without calling upstream, unless a model
	// later in the fallback chain has a window large enough, which is then
	// used; `truncate` drops the oldest turns until it fits; `off`.
	// Default: reject.
	ContextGuard string `json:"context_guard,omitempty"`

	// Whether to reject locally, with a 400 that says how to fix it, the
	// malformed requests the provider would reject anyway. Default: true.
	ValidateRequests *bool `json:"validate,omitempty"`

	// Rate-limit zones the request must fit, all of them, before it is
	// sent. A zone name is shared by every ai_resilience handler that names
	// it (they must give it the same settings), and its state survives a
	// config reload that keeps those settings.
	Limit []LimitZone `json:"limit,omitempty"`

	// Whether to read the upstream's rate-limit headers
	// (`anthropic-ratelimit-*`, `x-ratelimit-*`) on every response and hold
	// new requests for this route until the reset when the upstream says
	// nothing remains, instead of collecting 429s. Default: true.
	PaceUpstream *bool `json:"pace_upstream,omitempty"`

	// Skips a model that is failing (overloads, server errors, connection
	// failures, timeouts; not rate limits) for a cooldown, then lets a few
	// probes decide. Default: 5 consecutive failures (and 50% of the last
	// 10s once 20 calls are in it), 30s, 3 probes.
	CircuitBreaker *CircuitBreaker `json:"circuit_breaker,omitempty"`

	// Bounds the retries the gateway schedules on its own (not first
	// attempts, and not retries that wait for the upstream's explicit
	// hint) to a share of each model's recent volume plus a floor per
	// second, so an outage cannot turn into a retry storm. Default: 20%
	// plus 10 per second.
	RetryBudget *RetryBudget `json:"retry_budget,omitempty"`

	// Prepared by Provision.
	provider       wire.Provider
	retries        int
	backoff        policy.Backoff
	retryOn        policy.RetryOn
	maxWait        time.Duration
	deadline       time.Duration
	attemptTimeout time.Duration
	idleTimeout    time.Duration
	fallbacks      policy.Fallbacks
	clientRetries  bool
	outputCap      policy.OutputCapRule
	models         policy.ModelTable
	contextGuard   policy.ContextMode
	validate       bool
	paceUpstream   bool
}

// LimitZone is one `limit <zone>` block: token buckets like the providers'
// own, whose capacity is the per-minute number, refilled continuously (a
// 60th of it each second).
type LimitZone struct {
	// The zone's name.
	Zone string `json:"zone,omitempty"`
	// A placeholder whose value splits the zone into one bucket pair per
	// value, e.g. `{http.request.header.X-Team}`. Default: one bucket for
	// the whole zone.
	Key string `json:"key,omitempty"`
	// Requests per minute. Default: not limited.
	RPM int64 `json:"rpm,omitempty"`
	// Tokens per minute: estimated input plus the output cap at admission,
	// settled to the real usage from the response. Default: not limited.
	TPM int64 `json:"tpm,omitempty"`
	// How long a request may queue, in order of arrival, for capacity.
	// Default: 0 (answer 429 at once).
	Wait caddy.Duration `json:"wait,omitempty"`
	// The most keys tracked at once. Default: 100000.
	MaxKeys int `json:"max_keys,omitempty"`
	// Where the zone's buckets live: `fleet`, in the store the
	// `ai_resilience` app shares with every instance (the fleet then
	// admits what one bucket allows), or `instance`, in this instance's
	// memory. Default: fleet when the app has a store, else instance.
	Scope string `json:"scope,omitempty"`
}

// MaxTokens is the output-token ceiling.
type MaxTokens struct {
	// The largest output cap a request may ask for.
	Limit int64 `json:"limit,omitempty"`
	// `clamp` lowers a larger request to the limit; `reject` answers 400.
	// Default: clamp.
	Mode string `json:"mode,omitempty"`
}

// ModelFacts describes one model, or a family when Name ends in `*`.
type ModelFacts struct {
	// The model id, matched exactly, or as a prefix when it ends in `*`.
	Name string `json:"name,omitempty"`
	// The model's context window in tokens (input plus output).
	ContextWindow int64 `json:"context_window,omitempty"`
	// The most output tokens the model produces in one response.
	MaxOutput int64 `json:"max_output,omitempty"`
}

// CircuitBreaker configures the per-model circuit breaker. A closed circuit
// opens when the model's last `failures` outcomes were all failures and,
// once its last `window` holds at least `min_calls` outcomes, at least
// `failure_rate` of those were failures.
type CircuitBreaker struct {
	// Consecutive failures of a model that open its circuit. Default: 5.
	Failures int `json:"failures,omitempty"`
	// How long an open circuit skips the model. Default: 30s.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`
	// The share of failures among the window's outcomes, in percent, that
	// must also be reached once the window holds min_calls outcomes; 0
	// leaves consecutive failures alone to decide. Default: 50.
	FailureRate *float64 `json:"failure_rate,omitempty"`
	// How far back the failure rate looks. Default: 10s.
	Window caddy.Duration `json:"window,omitempty"`
	// Outcomes the window must hold before the failure rate is judged.
	// Default: 20.
	MinCalls int `json:"min_calls,omitempty"`
	// Attempts a half-open circuit lets through after the cooldown; the
	// first failure opens it again, this many successes close it.
	// Default: 3.
	Probes int `json:"probes,omitempty"`
	// Turns the circuit breaker off.
	Off bool `json:"off,omitempty"`
}

// RetryBudget configures the retry budget.
type RetryBudget struct {
	// Retries may add at most this percentage of recent requests.
	Percent float64 `json:"percent,omitempty"`
	// Retries allowed per second whatever the volume. Default: 10.
	MinPerSecond *float64 `json:"min_per_second,omitempty"`
	// Turns the retry budget off.
	Off bool `json:"off,omitempty"`
}

// Backoff configures the exponential backoff between retries.
type Backoff struct {
	// The ceiling of the first retry's random wait; it doubles per retry.
	Base caddy.Duration `json:"base,omitempty"`
	// The largest ceiling the doubling reaches.
	Max caddy.Duration `json:"max,omitempty"`
}

// Provision fills in the defaults and prepares what the request path
// reads. It reports a setting it cannot read; Validate then checks that
// the settings work together.
func (c *Config) Provision() error {
	c.setDefaults()
	var err error
	if c.provider, err = wire.ParseProvider(c.Provider); err != nil {
		return fmt.Errorf("parsing provider: %w", err)
	}
	c.retryOn = policy.DefaultRetryOn()
	if len(c.RetryOn) > 0 {
		if c.retryOn, err = policy.NewRetryOn(c.RetryOn); err != nil {
			return fmt.Errorf("parsing retry_on: %w", err)
		}
	}
	if c.fallbacks, err = policy.NewFallbacks(c.Fallback); err != nil {
		return fmt.Errorf("building fallback chains: %w", err)
	}
	overrides := make([]policy.ModelOverride, len(c.Model))
	for i, m := range c.Model {
		overrides[i] = m.override()
	}
	if c.models, err = policy.NewModelTable(overrides); err != nil {
		return fmt.Errorf("building model table: %w", err)
	}
	if c.contextGuard, err = policy.ParseContextMode(c.ContextGuard); err != nil {
		return fmt.Errorf("parsing context_guard: %w", err)
	}
	c.outputCap = policy.OutputCapRule{Default: c.DefaultMaxTokens}
	if c.MaxTokens != nil {
		c.outputCap.Ceiling = c.MaxTokens.Limit
		if c.outputCap.Mode, err = policy.ParseCapMode(c.MaxTokens.Mode); err != nil {
			return fmt.Errorf("parsing max_tokens mode: %w", err)
		}
	}
	c.retries = *c.Retries
	c.backoff = policy.Backoff{Base: time.Duration(c.Backoff.Base), Max: time.Duration(c.Backoff.Max)}
	c.maxWait, c.deadline = time.Duration(c.MaxWait), time.Duration(c.Deadline)
	c.attemptTimeout, c.idleTimeout = time.Duration(c.AttemptTimeout), time.Duration(c.IdleTimeout)
	c.clientRetries = c.ClientRetries == "allow"
	c.validate, c.paceUpstream = *c.ValidateRequests, *c.PaceUpstream
	return nil
}

func (c *Config) setDefaults() {
	if c.Provider == "" {
		c.Provider = "auto"
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = DefaultMaxBuffered
	}
	if c.Retries == nil {
		n := defaultRetries
		c.Retries = &n
	}
	if c.Backoff == nil {
		c.Backoff = &Backoff{}
	}
	if c.Backoff.Base == 0 {
		c.Backoff.Base = caddy.Duration(defaultBase)
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = caddy.Duration(max(defaultMax, time.Duration(c.Backoff.Base)))
	}
	if c.MaxWait == 0 {
		c.MaxWait = caddy.Duration(defaultMaxWait)
	}
	if c.Deadline == 0 {
		c.Deadline = caddy.Duration(defaultDeadline)
	}
	if c.ClientRetries == "" {
		c.ClientRetries = "deny"
	}
	if c.ContextGuard == "" {
		c.ContextGuard = "reject"
	}
	if c.MaxTokens != nil && c.MaxTokens.Mode == "" {
		c.MaxTokens.Mode = "clamp"
	}
	if c.PaceUpstream == nil {
		on := true
		c.PaceUpstream = &on
	}
	if c.ValidateRequests == nil {
		on := true
		c.ValidateRequests = &on
	}
	if c.CircuitBreaker == nil {
		c.CircuitBreaker = &CircuitBreaker{}
	}
	if cb := c.CircuitBreaker; !cb.Off {
		if cb.Failures == 0 {
			cb.Failures = defaultCircuitFailures
		}
		if cb.Cooldown == 0 {
			cb.Cooldown = caddy.Duration(defaultCircuitCooldown)
		}
		if cb.FailureRate == nil {
			rate := float64(defaultCircuitRate)
			cb.FailureRate = &rate
		}
		if cb.Window == 0 {
			cb.Window = caddy.Duration(defaultCircuitWindow)
		}
		if cb.MinCalls == 0 {
			cb.MinCalls = defaultCircuitMinCalls
		}
		if cb.Probes == 0 {
			cb.Probes = defaultCircuitProbes
		}
	}
	if c.RetryBudget == nil {
		c.RetryBudget = &RetryBudget{Percent: defaultBudgetPercent}
	}
	if c.RetryBudget.MinPerSecond == nil {
		floor := float64(defaultBudgetFloor)
		c.RetryBudget.MinPerSecond = &floor
	}
}

// Validate rejects settings that cannot work together. Call it after
// Provision.
func (c *Config) Validate() error {
	switch {
	case c.MaxBody < 0:
		return fmt.Errorf("max_body must be positive, got %d", c.MaxBody)
	case c.MaxBuffered < 0:
		return fmt.Errorf("max_buffered must be positive, got %d", c.MaxBuffered)
	case c.MaxBuffered < c.MaxBody:
		return fmt.Errorf("max_buffered (%d bytes) is below max_body (%d bytes), so the largest request allowed could never be held; raise max_buffered or lower max_body", c.MaxBuffered, c.MaxBody)
	case c.MaxWait < 0:
		return fmt.Errorf("max_wait must be positive")
	case c.Deadline <= 0:
		return fmt.Errorf("deadline must be positive")
	case c.AttemptTimeout < 0:
		return fmt.Errorf("attempt_timeout must be positive")
	case c.IdleTimeout < 0:
		return fmt.Errorf("idle_timeout must be positive")
	case c.AttemptTimeout > c.Deadline:
		return fmt.Errorf("attempt_timeout (%s) is longer than the deadline (%s), so it could never apply", time.Duration(c.AttemptTimeout), time.Duration(c.Deadline))
	case c.ClientRetries != "allow" && c.ClientRetries != "deny":
		return fmt.Errorf("client_retries must be allow or deny, got %q", c.ClientRetries)
	case c.MaxTokens != nil && c.MaxTokens.Limit <= 0:
		return fmt.Errorf("max_tokens limit must be positive, got %d", c.MaxTokens.Limit)
	case c.DefaultMaxTokens < 0:
		return fmt.Errorf("default_max_tokens must be positive, got %d", c.DefaultMaxTokens)
	case c.MaxTokens != nil && c.DefaultMaxTokens > c.MaxTokens.Limit:
		return fmt.Errorf("default_max_tokens %d is above the max_tokens ceiling %d", c.DefaultMaxTokens, c.MaxTokens.Limit)
	}
	if err := CheckRetries(*c.Retries); err != nil {
		return err
	}
	if err := c.Backoff.Check(); err != nil {
		return err
	}
	if err := c.CircuitBreaker.check(); err != nil {
		return err
	}
	if rb := c.RetryBudget; !rb.Off && (rb.Percent < 0 || *rb.MinPerSecond < 0) {
		return fmt.Errorf("retry_budget percent and floor must not be negative")
	}
	for i, z := range c.Limit {
		if err := CheckZoneName(c.Limit[:i], z.Zone); err != nil {
			return err
		}
		if err := z.Config().Check(); err != nil {
			return err
		}
	}
	return nil
}

// MaxRetries bounds retries per model: far beyond what helps (the retry
// budget and the deadline stop a storm long before), but it keeps a typo
// such as 1000 from turning one request into a thousand.
const MaxRetries = 100

// CheckRetries reports a retries count outside 0..MaxRetries.
func CheckRetries(n int) error {
	if n < 0 || n > MaxRetries {
		return fmt.Errorf("retries must be a whole number from 0 to %d, got %d", MaxRetries, n)
	}
	return nil
}

// Check reports a backoff whose durations cannot work: a max below the
// base it caps.
func (b *Backoff) Check() error {
	switch {
	case b.Base < 0 || b.Max < 0:
		return errors.New("backoff durations must be positive")
	case b.Max != 0 && b.Max < b.Base:
		return fmt.Errorf("backoff max %s is below its base %s: the max caps the doubling base", time.Duration(b.Max), time.Duration(b.Base))
	}
	return nil
}

func (cb *CircuitBreaker) check() error {
	switch {
	case cb.Off:
		return nil
	case cb.Failures < 1 || cb.Cooldown <= 0:
		return errors.New("circuit_breaker needs at least 1 failure and a positive cooldown")
	case *cb.FailureRate < 0 || *cb.FailureRate > 100:
		return fmt.Errorf("circuit_breaker failure_rate must be from 0 to 100 (percent), got %v", *cb.FailureRate)
	case cb.Window < 0 || cb.MinCalls < 0 || cb.Probes < 0:
		return errors.New("circuit_breaker window, min_calls and probes must be positive")
	case cb.MinCalls > MaxCircuitCount || cb.Probes > MaxCircuitCount:
		return fmt.Errorf("circuit_breaker min_calls and probes must be at most %d", MaxCircuitCount)
	}
	return nil
}

// MaxCircuitCount bounds a breaker's min_calls and probes.
const MaxCircuitCount = 1_000_000

// Settings returns the breaker's settings, defaults filled in.
func (cb *CircuitBreaker) Settings() policy.CircuitSettings {
	return policy.CircuitSettings{
		Failures:    cb.Failures,
		Cooldown:    time.Duration(cb.Cooldown),
		FailureRate: *cb.FailureRate,
		Window:      time.Duration(cb.Window),
		MinCalls:    cb.MinCalls,
		Probes:      cb.Probes,
	}
}

// CheckZoneName reports a zone that earlier (the zones of the same handler
// before it) already names.
func CheckZoneName(earlier []LimitZone, name string) error {
	for _, e := range earlier {
		if e.Zone == name {
			return fmt.Errorf("zone %q is limited twice in this handler; merge the blocks", name)
		}
	}
	return nil
}

// Config returns the zone's settings as the zone store takes them.
func (z LimitZone) Config() policy.ZoneConfig {
	return policy.ZoneConfig{Name: z.Zone, RPM: z.RPM, TPM: z.TPM, Wait: time.Duration(z.Wait), MaxKeys: z.MaxKeys}
}

// Check reports facts that cannot be a model's.
func (m ModelFacts) Check() error { return m.override().Check() }

func (m ModelFacts) override() policy.ModelOverride {
	return policy.ModelOverride{Name: m.Name, ContextWindow: m.ContextWindow, MaxOutput: m.MaxOutput}
}
