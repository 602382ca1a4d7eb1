package handlers

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ai-resilience/caddy-ai-resilience/policy"
	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/wire"
)

// readBody reads the whole request body, decoded from gzip or deflate,
// within max_body and max_buffered, reads it once into the prepared request
// (body.Read), and starts the deadline: a slow upload is bounded by the
// server's read timeouts, not by the time the gateway allows for attempts.
func (c *call) readBody() *refusal {
	cfg := c.g.cfg
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
			err = readBody(c.raw, src, declared, cfg.MaxBody, &c.charge)
		}
	}
	if done != nil {
		done()
	}
	if err != nil {
		return c.bodyFailed(err, encoded)
	}
	if encoded {
		// The upstream gets the body the guards read.
		c.r.Header.Del("Content-Encoding")
	}
	c.deadline = time.Now().Add(cfg.deadline)
	c.req = body.Read(*c.raw, c.api.WalkContent())
	c.model, c.served = c.req.Model, c.req.Model
	return nil
}

// bodyFailed says why a request body could not be read whole, or that the
// client left.
func (c *call) bodyFailed(err error, encoded bool) *refusal {
	cfg := c.g.cfg
	var tooLarge *http.MaxBytesError // a request_body limit ahead of the gateway
	var netErr net.Error
	read, declared := strconv.Itoa(len(*c.raw)), strconv.FormatInt(c.r.ContentLength, 10)
	switch {
	case errors.Is(err, errBodyTooLarge) || errors.As(err, &tooLarge):
		return &refusal{kind: wire.BodyTooLarge, message: "the request body is larger than this gateway's max_body of " + formatBytes(cfg.MaxBody) +
			" (decoded, when it is compressed); send a smaller request (fewer or smaller images and documents), or raise max_body in the ai_resilience configuration"}
	case errors.Is(err, errOverBuffered):
		return &refusal{kind: wire.Overloaded, message: "this gateway is holding as many request bodies in memory as its max_buffered of " + formatBytes(cfg.MaxBuffered) +
			" allows; retry shortly", retry: time.Second, advise: adviseRetry}
	case errors.Is(err, errUnsupportedEncoding):
		return &refusal{kind: wire.UnsupportedEncoding, message: "the request body's Content-Encoding " + strconv.Quote(c.r.Header.Get("Content-Encoding")) +
			" is not one this gateway can read; send the body uncompressed, or compressed with gzip or deflate"}
	case decodingFailed(err):
		return &refusal{kind: wire.InvalidRequest, message: "the request body is not valid " + c.r.Header.Get("Content-Encoding") + " data, as its Content-Encoding says it is: " + err.Error()}
	case errors.As(err, &netErr) && netErr.Timeout():
		return &refusal{kind: wire.InvalidRequest, errorType: "incomplete_request_body",
			message: "the request body stopped arriving after " + read + " bytes and the server's read timeout ended the wait; send the whole body without pausing"}
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		msg := "the request body ended after " + read + " bytes"
		if c.r.ContentLength > 0 && !encoded {
			msg += ", short of the " + declared + " bytes its Content-Length declares"
		} else {
			msg += ", before it was complete"
		}
		return &refusal{kind: wire.InvalidRequest, errorType: "incomplete_request_body", message: msg + "; send the whole body"}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) || c.r.Context().Err() != nil {
		// The connection broke: nobody is left to answer.
		return &refusal{gone: true}
	}
	// A body the server could not decode (malformed chunked framing, say).
	return &refusal{kind: wire.InvalidRequest, errorType: "incomplete_request_body",
		message: "the request body could not be read after " + read + " bytes: " + err.Error() + "; send a well-formed body"}
}

// guard checks and prepares the request before any upstream call: its
// integrity, its output caps and their defaults, its validity, its context
// window, and, for the APIs that report a stream's usage only when asked,
// the request for it.
func (c *call) guard() *refusal {
	cfg := c.g.cfg
	if err := c.req.Integrity(c.api.ExampleModel()); err != nil {
		c.guardAction("integrity")
		return invalid(err)
	}
	facts, _ := cfg.models.Lookup(c.model)
	outputCap, changed, capErr := policy.ApplyOutputCap(c.api, &c.req, cfg.outputCap, facts.MaxOutput)
	c.outputCap = outputCap
	if capErr != nil {
		c.guardAction("max_tokens_rejected")
		return invalid(capErr)
	}
	if changed {
		c.guardAction("output_cap")
	}
	if cfg.validate {
		if err := c.api.Validate(&c.req); err != nil {
			c.guardAction("invalid")
			return invalid(err)
		}
	}
	if ref := c.guardContext(facts); ref != nil {
		return ref
	}
	if c.api.WantsStreamUsage() && c.req.SetIncludeUsage() {
		// The call's log line, metrics and token settlement need the
		// stream's usage; the client did not ask for it, so the tap
		// strips it again.
		c.tap.strip = true
	}
	c.served = c.model
	if payload := c.req.Body(); !sameBytes(payload, *c.raw) {
		c.charge.add(int64(len(payload))) // the guards' edited copy
	}
	c.payload = c.req.Body()
	return nil
}

// guardContext is the context guard: a request whose estimated input plus
// output cap exceed its model's window is refused, truncated, or sent to a
// fallback model whose window holds it.
func (c *call) guardContext(facts policy.ModelFacts) *refusal {
	cfg := c.g.cfg
	if cfg.contextGuard == policy.ContextOff || facts.ContextWindow == 0 {
		return nil
	}
	// A request naming no output cap reserves none: the provider accepts it
	// and stops at the window, so counting the model's maximum here would
	// refuse requests the provider serves.
	if policy.FitsByBodySize(int64(len(c.req.Body())), c.outputCap, facts.ContextWindow) {
		return nil
	}
	input := c.inputTokens()
	if policy.FitsContext(input, c.outputCap, facts.ContextWindow) {
		return nil
	}
	if cfg.contextGuard == policy.ContextTruncate {
		if dropped, ok := policy.Truncate(c.api, &c.req, input, facts.ContextWindow-c.outputCap); ok {
			c.guardAction("context_truncated")
			if ce := c.g.Logger.Check(zapcore.InfoLevel, "truncated conversation"); ce != nil {
				ce.Write(zap.String("model", c.model), zap.Int("dropped_messages", dropped), zap.Int64("estimated_input_tokens", input), zap.Int64("context_window", facts.ContextWindow))
			}
			c.estimate = 0 // shorter now: estimate again if need be
			return nil
		}
	} else if to, ok := policy.ChooseModel(c.model, cfg.fallbacks, input, c.outputCap, cfg.models); ok {
		c.guardAction("context_fallback")
		if ce := c.g.Logger.Check(zapcore.InfoLevel, "context window fallback"); ce != nil {
			ce.Write(zap.String("from", c.model), zap.String("to", to), zap.Int64("estimated_input_tokens", input), zap.Int64("context_window", facts.ContextWindow))
		}
		return c.retarget(&c.req, to)
	}
	c.guardAction("context_rejected")
	return &refusal{kind: wire.ContextOverflow, param: c.api.Conversation().String(),
		message: policy.ContextOverflowMessage(c.api, c.model, input, c.outputCap, facts.ContextWindow)}
}

// inputTokens returns the request's estimated input tokens, estimating
// them once: the context guard and the tpm zones read the same estimate.
func (c *call) inputTokens() int64 {
	if c.estimate == 0 {
		c.estimate = c.api.InputTokens(&c.req)
	}
	return c.estimate
}

// retarget makes r name model to, clamping its output cap to that model's
// max_output (and keeping the request valid under the lower cap); every
// other byte is kept. It refuses the request when the cap that model allows
// leaves no room for what the request needs (a thinking budget).
func (c *call) retarget(r *body.Request, to string) *refusal {
	r.SetModel(to)
	facts, _ := c.g.cfg.models.Lookup(to)
	if _, _, err := policy.ApplyOutputCap(c.api, r, policy.OutputCapRule{}, facts.MaxOutput); err != nil {
		c.guardAction("max_tokens_rejected")
		return &refusal{kind: wire.InvalidRequest, message: "model " + to + " (a fallback of " + c.req.Model + "): " + err.Message, param: err.Param}
	}
	c.model = to
	return nil
}

func (c *call) guardAction(action string) {
	guardActionsTotal.WithLabelValues(c.api.Family(), action).Inc()
}

// sameBytes reports whether a and b are the same slice (an unchanged body).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// formatBytes writes a size the way a person configured it: Caddy reads
// 16MB as 16,000,000 bytes and 16MiB as 16,777,216.
func formatBytes(n int64) string {
	for _, u := range [...]struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1e9, "GB"}, {1 << 20, "MiB"}, {1e6, "MB"}, {1 << 10, "KiB"}, {1e3, "KB"}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
