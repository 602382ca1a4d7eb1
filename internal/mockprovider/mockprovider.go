// Package mockprovider is a fake LLM provider for tests, benchmarks and the
// demo. It speaks the Anthropic Messages API and the OpenAI Chat Completions,
// Responses, Completions and Embeddings APIs closely enough that the official
// SDKs parse its answers, and it fails on demand: per model (Options), or per
// request through the x-mock-script header, which the gateway forwards on
// every attempt; or at random in the proportions of a fault mix (FaultMix).
//
// A script is a comma-separated list of steps. The Nth request carrying the
// same script key (the x-mock-id header, or else the script text) gets the Nth
// step; after the last step, the last step repeats. A step is
//
//	<status>[:<modifier>...]
//
// where status is 200, an error status from 400 to 599, `hang` (never answer)
// or `drop` (close the connection without a response), and the modifiers are
//
//	retry-after=<secs>        Retry-After in seconds, sent as written (any length)
//	retry-after-ms=<ms>       retry-after-ms, sent as written (any length)
//	retry-after-date=<secs>   Retry-After as an HTTP-date that many seconds ahead
//	reset=<secs>              rate-limit headers say nothing remains until then
//	quota                     OpenAI insufficient_quota body on a 429
//	should-retry=true|false   x-should-retry
//	delay=<duration>          wait before answering
//	events=<n>                text deltas in a stream (default 5)
//	interval=<duration>       wait between stream events
//	cut=<n>                   abort the connection after n deltas (a JSON reply: n bytes of it)
//	midevent                  with cut=, send half of the next delta event before the abort
//	end=<n>                   end the stream cleanly after n deltas, without its terminal events
//	                          (a JSON reply: end after n bytes, short of its Content-Length)
//	stall=<n>                 after n deltas (a JSON reply: n bytes), send nothing more and
//	                          hold the connection until the client leaves
//	bytes=<n>                 pad a non-streamed reply, or a stream's last delta, to about n bytes
//	framing=<word>+...        how stream events are written: lf (default), crlf, cr, dataonly
//	                          (no event: lines), comments (a comment, id: and retry: before
//	                          each event), multiline (the JSON split over two data: lines)
//	inband=<type>             a 200 stream whose first event is the API's in-band error of that
//	                          type (Anthropic event: error, a chat {"error":...} chunk, a
//	                          Responses error event with that code)
//	failed=<code>             end a Responses stream with response.failed carrying that code
//	at=<n>                    send the inband= or failed= event after n deltas instead
//	ping=<duration>           while a stream waits (interval=, stall=), ping that often
//	                          (Anthropic ping events, OpenAI comments)
//	nest=<n>                  an error's body is n '[' and nothing else (a hostile body)
//
// For example `529:retry-after=1,529,200:events=20:interval=5ms`, or
// `200:inband=overloaded_error,200` for an overload reported inside a 200
// stream, then a success.
package mockprovider

import (
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	pathpkg "path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
)

// Options configures a Provider.
type Options struct {
	// FailModels maps a model to the error status (400-599) every request for
	// it gets, for example "claude-opus-4-5": 529.
	FailModels map[string]int
	// Flaky maps a model to the probability (0 to 1) that a request for it
	// fails with an overload: 529 on Anthropic routes, 503 on OpenAI routes.
	Flaky map[string]float64
	// Mix, when set, fails a share of the remaining requests at random.
	Mix *FaultMix
	// Logger, when set, gets one line per request: method, path, model,
	// status and duration. Headers and message text are never logged.
	Logger *log.Logger
	// NoRecord turns off Calls recording, for benchmarks.
	NoRecord bool
}

// Validate reports the first option that New would reject.
func (o Options) Validate() error {
	for model, status := range o.FailModels {
		if status < 400 || status > 599 {
			return fmt.Errorf("fail status %d for model %q is not between 400 and 599", status, model)
		}
	}
	for model, p := range o.Flaky {
		if p < 0 || p > 1 {
			return fmt.Errorf("flaky probability %v for model %q is not between 0 and 1", p, model)
		}
	}
	if o.Mix != nil {
		return o.Mix.Validate()
	}
	return nil
}

// Call is one request the provider received, as recorded for tests.
type Call struct {
	// Method, Path and Model are the request's method, URL path and the
	// model named in its JSON body.
	Method, Path, Model string
	// Header and Body are the request's headers and body, as received.
	Header http.Header
	Body   []byte
	// Status is the response status, or 0 when no response was written
	// (hang, drop, or the client went away first).
	Status int
	// Canceled reports that the client (the gateway) cancelled the request
	// before the provider had finished answering it.
	Canceled bool
	// At is when the request arrived.
	At time.Time
}

// Provider is the mock provider. It is an http.Handler and safe for
// concurrent use.
type Provider struct {
	opts Options
	seq  atomic.Uint64
	mix  *mixer // nil without Options.Mix

	scriptMu sync.Mutex
	scripts  map[string]int

	recMu sync.Mutex
	calls []*Call
}

// New returns a provider with the given options. It panics if
// opts.Validate fails; check it first when the options come from a user.
func New(opts Options) *Provider {
	if err := opts.Validate(); err != nil {
		panic("mockprovider: " + err.Error())
	}
	opts.FailModels = maps.Clone(opts.FailModels)
	opts.Flaky = maps.Clone(opts.Flaky)
	p := &Provider{opts: opts, scripts: map[string]int{}}
	if opts.Mix != nil {
		p.mix = newMixer(*opts.Mix)
	}
	return p
}

// Calls returns a copy of the requests received since New or the last Reset,
// in arrival order.
func (p *Provider) Calls() []Call {
	p.recMu.Lock()
	defer p.recMu.Unlock()
	out := make([]Call, len(p.calls))
	for i, c := range p.calls {
		out[i] = *c
	}
	return out
}

// Reset forgets recorded calls and restarts every script at its first step.
func (p *Provider) Reset() {
	p.recMu.Lock()
	p.calls = nil
	p.recMu.Unlock()
	p.scriptMu.Lock()
	clear(p.scripts)
	p.scriptMu.Unlock()
}

// ServeHTTP answers one API request.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{p: p, w: w, r: r, start: time.Now(), step: okStep()}
	ex.requestID = fmt.Sprintf("req_mock_%d", p.seq.Add(1))
	ex.dialect, ex.endpoint = route(r)
	body, readErr := io.ReadAll(r.Body)
	ex.body = body
	ex.model = gjson.GetBytes(body, "model").String()
	ex.inputTokens = (len(body) + 3) / 4
	p.record(ex)
	defer p.logLine(ex)
	defer p.noteCanceled(ex)

	switch {
	case ex.endpoint == endpointUnknown || r.Method != http.MethodPost:
		ex.writeError(http.StatusNotFound, fmt.Sprintf("The mock provider has no endpoint %s %s; it serves POST /v1/messages, /v1/chat/completions, /v1/responses, /v1/completions and /v1/embeddings.", r.Method, r.URL.Path))
		return
	case readErr != nil:
		ex.writeError(http.StatusBadRequest, fmt.Sprintf("Reading the request body failed: %v.", readErr))
		return
	}
	st, err := p.stepFor(r, ex.dialect, ex.model)
	if err != nil {
		ex.writeError(http.StatusBadRequest, fmt.Sprintf("Bad %s header: %v.", ScriptHeader, err))
		return
	}
	ex.step = st
	ex.run()
}

// stepFor picks how to answer: the request's script step if it has one, else
// the model's configured failure, else the fault mix's draw, else success.
func (p *Provider) stepFor(r *http.Request, d dialect, model string) (step, error) {
	if script := r.Header.Get(ScriptHeader); script != "" {
		steps, err := parseScript(script)
		if err != nil {
			return step{}, err
		}
		key := r.Header.Get(ScriptIDHeader)
		if key == "" {
			key = script
		}
		return steps[p.advance(key, len(steps))], nil
	}
	if status, ok := p.opts.FailModels[model]; ok {
		return failStep(status), nil
	}
	if prob, ok := p.opts.Flaky[model]; ok && rand.Float64() < prob {
		return failStep(d.overloadStatus()), nil
	}
	if p.mix != nil {
		id, n := r.Header.Get(ScriptIDHeader), 0
		if id != "" {
			n = p.advance("mix\x00"+id, math.MaxInt)
		}
		if s, failed := p.mix.step(d, id, n); failed {
			return s, nil
		}
	}
	return okStep(), nil
}

// advance counts one more request for the script key and returns the index
// of the step it gets.
func (p *Provider) advance(key string, steps int) int {
	p.scriptMu.Lock()
	n := p.scripts[key]
	p.scripts[key] = n + 1
	p.scriptMu.Unlock()
	return min(n, steps-1)
}

// record appends the exchange's request to the recorded calls.
func (p *Provider) record(ex *exchange) {
	if p.opts.NoRecord {
		return
	}
	ex.call = &Call{
		Method: ex.r.Method,
		Path:   ex.r.URL.Path,
		Model:  ex.model,
		Header: ex.r.Header.Clone(),
		Body:   ex.body,
		At:     ex.start,
	}
	p.recMu.Lock()
	p.calls = append(p.calls, ex.call)
	p.recMu.Unlock()
}

// setStatus records the status the exchange answers with.
func (p *Provider) setStatus(ex *exchange, status int) {
	ex.status = status
	if ex.call == nil {
		return
	}
	p.recMu.Lock()
	ex.call.Status = status
	p.recMu.Unlock()
}

// noteCanceled records a request the client gave up on. It runs deferred,
// so aborted answers are seen too.
func (p *Provider) noteCanceled(ex *exchange) {
	if ex.call == nil || ex.r.Context().Err() == nil {
		return
	}
	p.recMu.Lock()
	ex.call.Canceled = true
	p.recMu.Unlock()
}

// logLine writes the request's log line, if a logger is set. It runs
// deferred, so aborted streams are logged too.
func (p *Provider) logLine(ex *exchange) {
	if p.opts.Logger == nil {
		return
	}
	p.opts.Logger.Printf("%s %s model=%q status=%d%s duration=%s",
		ex.r.Method, ex.r.URL.Path, ex.model, ex.status, ex.note, time.Since(ex.start).Round(time.Microsecond))
}

// dialect is the wire format of a route.
type dialect uint8

const (
	openAIDialect dialect = iota
	anthropicDialect
)

// overloadStatus is the status a flaky model fails with in this dialect.
func (d dialect) overloadStatus() int {
	if d == anthropicDialect {
		return 529
	}
	return http.StatusServiceUnavailable
}

// endpoint is the API operation a request calls.
type endpoint uint8

const (
	endpointUnknown endpoint = iota
	endpointMessages
	endpointChat
	endpointResponses
	endpointCompletions
	endpointEmbeddings
)

// routes maps path endings to endpoints, so prefixed paths such as
// /anthropic/v1/messages match too.
var routes = [...]struct {
	suffix   string
	dialect  dialect
	endpoint endpoint
}{
	{"/v1/messages", anthropicDialect, endpointMessages},
	{"/v1/chat/completions", openAIDialect, endpointChat},
	{"/v1/responses", openAIDialect, endpointResponses},
	{"/v1/completions", openAIDialect, endpointCompletions},
	{"/v1/embeddings", openAIDialect, endpointEmbeddings},
}

// route finds the request's endpoint. An unknown path still gets a dialect,
// for its 404: Anthropic when the request looks like an Anthropic client's.
//
// The path is cleaned first (dot segments, repeated slashes), as the
// routers and CDNs in front of real providers normalise it.
func route(r *http.Request) (dialect, endpoint) {
	path := pathpkg.Clean("/" + r.URL.Path)
	for _, rt := range routes {
		if strings.HasSuffix(path, rt.suffix) {
			return rt.dialect, rt.endpoint
		}
	}
	if r.Header.Get("anthropic-version") != "" || strings.Contains(path, "/messages") {
		return anthropicDialect, endpointUnknown
	}
	return openAIDialect, endpointUnknown
}
