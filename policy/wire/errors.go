package wire

import (
	"bytes"
	"encoding/json"
)

// ErrorKind names an error the gateway answers itself, without (or after)
// the upstream. Each API gives every kind the status and error type for
// which the official SDKs raise the same exception class as for the
// provider's own error (https://docs.anthropic.com/en/api/errors,
// https://platform.openai.com/docs/guides/error-codes).
type ErrorKind uint8

const (
	// BodyTooLarge is a request body over max_body.
	BodyTooLarge ErrorKind = iota
	// InvalidRequest is a request the provider would reject anyway.
	InvalidRequest
	// ContextOverflow is a request whose input and output cap do not fit
	// the model's context window.
	ContextOverflow
	// ModelUnavailable is a model whose circuit is open, with no fallback.
	ModelUnavailable
	// RequestsLimited is a request refused by a request-rate limit (a
	// zone's rpm, or the upstream's own exhausted request window).
	RequestsLimited
	// TokensLimited is a request refused by a token-rate limit (tpm).
	TokensLimited
	// UpstreamUnreachable is a connection failure on the last attempt.
	UpstreamUnreachable
	// UpstreamTimeout is a timeout on the last attempt.
	UpstreamTimeout
	// Overloaded is a request the gateway cannot hold in memory now
	// (max_buffered); it may be retried shortly.
	Overloaded
	// UnsupportedEncoding is a request body in a Content-Encoding the
	// gateway cannot decode, so cannot guard.
	UnsupportedEncoding
	// LimitsUnavailable is a request refused because the store of its
	// fleet zones cannot be reached and they are set to deny meanwhile.
	LimitsUnavailable
	// Misplaced is a gateway that got no response from the handler after
	// it: a configuration mistake the client cannot mend.
	Misplaced
	numErrorKinds
)

// errorNames are the kinds' names in logs (the error_type field).
var errorNames = [numErrorKinds]string{
	BodyTooLarge:        "request_too_large",
	InvalidRequest:      "invalid_request_error",
	ContextOverflow:     "context_length_exceeded",
	ModelUnavailable:    "model_unavailable",
	RequestsLimited:     "rate_limit_error",
	TokensLimited:       "rate_limit_error",
	UpstreamUnreachable: "connection_error",
	UpstreamTimeout:     "timeout_error",
	Overloaded:          "overloaded_error",
	UnsupportedEncoding: "unsupported_content_encoding",
	LimitsUnavailable:   "limits_unavailable",
	Misplaced:           "gateway_misconfigured",
}

// String names the kind for logs (the error_type field).
func (k ErrorKind) String() string { return errorNames[k] }

// marshalError encodes an error body. Messages quote numbers with ">" and
// member names with backticks; the default HTML escaping would turn them
// into \u003e for no reader's benefit.
func marshalError(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // plain strings and structs cannot fail to encode
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}
