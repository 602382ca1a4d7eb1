package policy

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/tidwall/gjson"
)

// ErrorKind names an error the gateway answers itself, without (or after)
// the upstream. Each kind has one status and one error type per dialect,
// chosen so that the official SDKs raise the same exception class they would
// for the provider's own error (reference: provider-semantics.md §7.1).
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
)

// errorShapes holds, per kind, each dialect's status, type and (OpenAI)
// code. Anthropic types are from the documented set
// (platform.claude.com/docs/api/errors); OpenAI types and codes are those
// its API sends for the same situations (context_length_exceeded with param
// "messages"; server_error for overload). An empty code is written as null.
var errorShapes = [...]struct {
	anthropicStatus int
	anthropicType   string
	openAIStatus    int
	openAIType      string
	openAICode      string
}{
	BodyTooLarge:        {http.StatusRequestEntityTooLarge, "request_too_large", http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large"},
	InvalidRequest:      {http.StatusBadRequest, "invalid_request_error", http.StatusBadRequest, "invalid_request_error", ""},
	ContextOverflow:     {http.StatusBadRequest, "invalid_request_error", http.StatusBadRequest, "invalid_request_error", "context_length_exceeded"},
	ModelUnavailable:    {529, "overloaded_error", http.StatusServiceUnavailable, "server_error", "model_unavailable"},
	RequestsLimited:     {http.StatusTooManyRequests, "rate_limit_error", http.StatusTooManyRequests, "requests", "rate_limit_exceeded"},
	TokensLimited:       {http.StatusTooManyRequests, "rate_limit_error", http.StatusTooManyRequests, "tokens", "rate_limit_exceeded"},
	UpstreamUnreachable: {http.StatusBadGateway, "api_error", http.StatusBadGateway, "server_error", "bad_gateway"},
	UpstreamTimeout:     {http.StatusGatewayTimeout, "timeout_error", http.StatusGatewayTimeout, "server_error", "timeout"},
	Overloaded:          {529, "overloaded_error", http.StatusServiceUnavailable, "server_error", ""},
	UnsupportedEncoding: {http.StatusUnsupportedMediaType, "invalid_request_error", http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_content_encoding"},
	LimitsUnavailable:   {http.StatusServiceUnavailable, "api_error", http.StatusServiceUnavailable, "server_error", "service_unavailable"},
}

// Status returns the HTTP status the gateway answers with for this kind in
// the dialect: the one the official SDKs map to the matching exception.
func (k ErrorKind) Status(d Dialect) int {
	if d == Anthropic {
		return errorShapes[k].anthropicStatus
	}
	return errorShapes[k].openAIStatus
}

// ErrorBody returns the JSON body of a gateway error in the dialect's shape:
// anthropic `{"type":"error","error":{"type","message"}}`, openai
// `{"error":{"message","type","param","code"}}` (SPEC "Dialects"). An empty
// param is written as null.
func ErrorBody(d Dialect, k ErrorKind, message, param string) []byte {
	shape := errorShapes[k]
	var v any
	if d == Anthropic {
		v = anthropicError{Type: "error", Error: anthropicErrorDetail{Type: shape.anthropicType, Message: message}}
	} else {
		detail := openAIErrorDetail{Message: message, Type: shape.openAIType}
		if param != "" {
			detail.Param = &param
		}
		if shape.openAICode != "" {
			detail.Code = &shape.openAICode
		}
		v = openAIError{Error: detail}
	}
	// Messages quote numbers with ">" and field names with backticks; the
	// default HTML escaping would turn them into \u003e for no reader's
	// benefit.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // plain strings and structs cannot fail to encode
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}

type anthropicError struct {
	Type  string               `json:"type"`
	Error anthropicErrorDetail `json:"error"`
}

type anthropicErrorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

type openAIError struct {
	Error openAIErrorDetail `json:"error"`
}

type openAIErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// String names the kind for logs (the error_type field).
func (k ErrorKind) String() string {
	switch k {
	case BodyTooLarge:
		return "request_too_large"
	case InvalidRequest:
		return "invalid_request_error"
	case ContextOverflow:
		return "context_length_exceeded"
	case ModelUnavailable:
		return "model_unavailable"
	case RequestsLimited, TokensLimited:
		return "rate_limit_error"
	case UpstreamUnreachable:
		return "connection_error"
	case UpstreamTimeout:
		return "timeout_error"
	case Overloaded:
		return "overloaded_error"
	case LimitsUnavailable:
		return "limits_unavailable"
	default:
		return "unsupported_content_encoding"
	}
}

// UpstreamErrorType returns the error type an upstream error body names:
// `error.type` in both dialects, or the first element's for the array shape
// some compatible servers send (reference §6, Gemini's OpenAI endpoint).
func UpstreamErrorType(body []byte) string {
	if t := gjson.GetBytes(body, "error.type"); t.Type == gjson.String {
		return t.Str
	}
	if t := gjson.GetBytes(body, "0.error.status"); t.Type == gjson.String {
		return t.Str
	}
	return ""
}
