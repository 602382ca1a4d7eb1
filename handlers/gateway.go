// Package handlers is the request path of ai_resilience: it buffers the
// request, runs attempts through the next handler (reverse_proxy), holds back
// the responses it will retry, streams the rest, and records what happened.
// It knows nothing of caddy.Context, so it is tested with httptest alone.
package handlers

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
)

// Config is the prepared, validated configuration of one gateway. Every
// field is set; zero durations mean "off" only where noted.
type Config struct {
	Provider policy.Provider
	// MaxBody is the largest request body buffered, in bytes.
	MaxBody int64
	// MaxBuffered is the most request and held response bytes the
	// process's gateways keep in memory at once before this one answers
	// that it is overloaded.
	MaxBuffered int64
	// Retries is the number of retries per model after its first attempt.
	Retries int
	Backoff policy.Backoff
	RetryOn policy.RetryOn
	// MaxWait is the longest single wait the gateway sits out.
	MaxWait time.Duration
	// Deadline bounds all attempts, waits and fallbacks of one request.
	Deadline time.Duration
	// AttemptTimeout bounds the wait for one attempt's response headers;
	// zero is off.
	AttemptTimeout time.Duration
	// IdleTimeout bounds the silence of a response once its headers are
	// in; zero is off.
	IdleTimeout time.Duration
	Fallbacks   policy.Fallbacks
	// ClientRetries, when false, marks a failure the gateway already
	// retried with `x-should-retry: false`.
	ClientRetries bool
	// OutputCap is the max_tokens ceiling, its mode and default_max_tokens.
	OutputCap policy.OutputCapRule
	// Models holds context windows and output limits.
	Models policy.ModelTable
	// ContextGuard is what to do with a request over its model's window.
	ContextGuard policy.ContextMode
	// Validate rejects malformed requests locally.
	Validate bool
	// Limits are the rate-limit zones every request must fit.
	Limits []Limit
	// PaceUpstream holds new requests while the upstream reports its rate
	// limit spent.
	PaceUpstream bool
	// Holds are the upstream's spent rate limits, by model and credential
	// (pace_upstream); nil is a table of this gateway's own.
	Holds policy.Holds
	// Circuit skips models that are failing; nil is off.
	Circuit policy.Circuits
	// Budget bounds retries to a share of recent traffic; nil is unlimited.
	Budget *policy.RetryBudget
	// HashKey keys the hash that stands for zone keys in logs (and for the
	// longest zone keys in the zones), so that the hash cannot be reversed
	// by guessing and is the same on every instance that shares it.
	HashKey []byte
	Logger  *zap.Logger
}

// Gateway serves LLM API requests resiliently in front of the next handler.
type Gateway struct {
	cfg Config
	// tokenZones is true when a zone limits tokens.
	tokenZones bool
}

// New returns a gateway for a prepared configuration.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Holds == nil {
		cfg.Holds = policy.NewPaceHolds(nil)
	}
	return &Gateway{cfg: cfg, tokenZones: countsTokens(cfg.Limits)}
}

// ServeHTTP handles one request. Requests that are not LLM API calls (by
// path and method) go to next untouched: no buffering, no retries.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	dialect, endpoint := g.cfg.Provider.Detect(r.URL.Path)
	if dialect == policy.Passthrough || r.Method != http.MethodPost {
		return g.passThrough(w, r, next, dialect, endpoint)
	}
	c := newCall(g, w, r, dialect, endpoint)
	defer c.release()
	if !c.readBody() {
		c.finish()
		return nil
	}
	return c.run(next)
}

// readBody reads the whole request body, decoded from gzip or deflate,
// within max_body and max_buffered, and starts the deadline once it is in:
// a slow upload is bounded by the server's read timeouts, not by the time
// the gateway allows for attempts. It reports false when it has answered
// the request itself, or the client has gone.
func (c *call) readBody() bool {
	cfg := &c.g.cfg
	src, encoded, done, err := contentDecoder(c.r)
	declared := c.r.ContentLength
	switch {
	case err != nil:
	case declared > cfg.MaxBody:
		err = errBodyTooLarge
	case encoded:
		declared = -1 // the declared length is the compressed one
		fallthrough
	default:
		if declared > 0 && !c.charge.fits(declared) {
			err = errOverBuffered // it could not be held whole: say so at once
		} else {
			err = readBody(c.body, src, declared, cfg.MaxBody, &c.charge)
		}
	}
	if done != nil {
		done()
	}
	if err != nil {
		c.bodyFailed(err, encoded)
		return false
	}
	if encoded {
		// The upstream gets the body the guards read.
		c.r.Header.Del("Content-Encoding")
	}
	c.deadline = time.Now().Add(cfg.Deadline)
	return true
}

// bodyFailed answers a request whose body could not be read whole, in the
// dialect's shape, or records that the client left.
func (c *call) bodyFailed(err error, encoded bool) {
	cfg := &c.g.cfg
	var tooLarge *http.MaxBytesError // a request_body limit ahead of the gateway
	var netErr net.Error
	read, declared := strconv.Itoa(len(*c.body)), strconv.FormatInt(c.r.ContentLength, 10)
	switch {
	case errors.Is(err, errBodyTooLarge) || errors.As(err, &tooLarge):
		c.writeError(policy.BodyTooLarge, "the request body is larger than this gateway's max_body of "+formatBytes(cfg.MaxBody)+
			" (decoded, when it is compressed); send a smaller request (fewer or smaller images and documents), or raise max_body in the ai_resilience configuration", "")
	case errors.Is(err, errOverBuffered):
		c.writeRateLimited(policy.Overloaded, "this gateway is holding as many request bodies in memory as its max_buffered of "+formatBytes(cfg.MaxBuffered)+
			" allows; retry shortly", time.Second, true)
	case errors.Is(err, errUnsupportedEncoding):
		c.writeError(policy.UnsupportedEncoding, "the request body's Content-Encoding "+strconv.Quote(c.r.Header.Get("Content-Encoding"))+
			" is not one this gateway can read; send the body uncompressed, or compressed with gzip or deflate", "")
	case decodingFailed(err):
		c.writeError(policy.InvalidRequest, "the request body is not valid "+c.r.Header.Get("Content-Encoding")+" data, as its Content-Encoding says it is: "+err.Error(), "")
	case errors.As(err, &netErr) && netErr.Timeout():
		c.writeError(policy.InvalidRequest, "the request body stopped arriving after "+read+" bytes and the server's read timeout ended the wait; send the whole body without pausing", "")
		c.end.errorType = "incomplete_request_body"
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		msg := "the request body ended after " + read + " bytes"
		if c.r.ContentLength > 0 && !encoded {
			msg += ", short of the " + declared + " bytes its Content-Length declares"
		} else {
			msg += ", before it was complete"
		}
		c.writeError(policy.InvalidRequest, msg+"; send the whole body", "")
		c.end.errorType = "incomplete_request_body"
	default:
		// The connection broke: nobody is left to answer.
		c.end = ending{errorType: "client_closed", status: statusClientClosed}
	}
}

// passThrough sends a request the gateway does not handle to next as it
// is, but for the rate-limit zones, which still count it (SPEC "Dialects":
// anything else passes through untouched, "except that limits still count
// requests"). It reserves no tokens; a refusal is in the OpenAI shape.
func (g *Gateway) passThrough(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, d policy.Dialect, e policy.Endpoint) error {
	if len(g.cfg.Limits) == 0 {
		return next.ServeHTTP(w, r)
	}
	c := newCall(g, w, r, d, e)
	defer c.release()
	if !c.admit() {
		return nil
	}
	return next.ServeHTTP(w, r)
}
