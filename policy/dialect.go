// Package policy holds the decisions ai_resilience makes about LLM API traffic,
// with no HTTP server inside: which dialect a request speaks, whether a failure
// is worth retrying, how long to wait, which model to fall back to, and how the
// gateway's own errors look on the wire. Everything here is a pure function or
// an immutable value prepared at provision time, so it is safe for concurrent
// use and cheap on the hot path.
package policy

import (
	"fmt"
	pathpkg "path"
	"strings"
)

// Dialect is the wire format of an LLM API: where the model, output cap and
// usage live in the JSON, how errors look, and which headers carry rate limits.
type Dialect uint8

const (
	// Passthrough marks requests the gateway does not understand; they are
	// proxied untouched, without buffering or retries.
	Passthrough Dialect = iota
	// Anthropic is the Anthropic Messages API.
	Anthropic
	// OpenAI is the OpenAI API family (Chat Completions, Responses, legacy
	// Completions, Embeddings) and the many servers compatible with it.
	OpenAI
)

// String returns the dialect's name as used in configuration, logs and metrics.
func (d Dialect) String() string {
	switch d {
	case Anthropic:
		return "anthropic"
	case OpenAI:
		return "openai"
	default:
		return "passthrough"
	}
}

// Endpoint is the API operation a request calls. It decides where the output
// cap lives and how a stream ends.
type Endpoint uint8

const (
	// EndpointOther is a request the gateway does not recognise.
	EndpointOther Endpoint = iota
	// Messages is Anthropic POST /v1/messages.
	Messages
	// ChatCompletions is OpenAI POST /v1/chat/completions.
	ChatCompletions
	// Responses is OpenAI POST /v1/responses.
	Responses
	// Completions is the legacy OpenAI POST /v1/completions.
	Completions
	// Embeddings is OpenAI POST /v1/embeddings.
	Embeddings
)

// String returns the endpoint's path-like name for logs.
func (e Endpoint) String() string {
	switch e {
	case Messages:
		return "messages"
	case ChatCompletions:
		return "chat_completions"
	case Responses:
		return "responses"
	case Completions:
		return "completions"
	case Embeddings:
		return "embeddings"
	default:
		return "other"
	}
}

// Provider is the configured `provider` setting: a fixed dialect, or Auto to
// pick one from the request path.
type Provider uint8

const (
	// Auto picks the dialect from the request path.
	Auto Provider = iota
	// ForceAnthropic treats every request as Anthropic Messages.
	ForceAnthropic
	// ForceOpenAI treats every request as OpenAI, picking the endpoint by path.
	ForceOpenAI
)

// ParseProvider parses a `provider` value: auto, anthropic or openai. The
// empty string means auto.
func ParseProvider(s string) (Provider, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "anthropic":
		return ForceAnthropic, nil
	case "openai":
		return ForceOpenAI, nil
	}
	return Auto, fmt.Errorf("unknown provider %q: use auto, anthropic or openai", s)
}

// endpointSuffixes maps path endings to endpoints. Matching on the ending lets
// a route keep a prefix (for example /anthropic/v1/messages behind `route
// /anthropic/*`) and still be recognised; the official SDKs always send these
// exact endings (reference: provider-semantics.md §1.1, §2.1).
var endpointSuffixes = [...]struct {
	suffix   string
	dialect  Dialect
	endpoint Endpoint
}{
	{"/v1/messages", Anthropic, Messages},
	{"/v1/chat/completions", OpenAI, ChatCompletions},
	{"/v1/responses", OpenAI, Responses},
	{"/v1/completions", OpenAI, Completions},
	{"/v1/embeddings", OpenAI, Embeddings},
}

// Detect returns the dialect and endpoint of a request with the given path
// under this provider setting. Under Auto, a path that matches no known
// endpoint is Passthrough. A forced provider treats every path as its
// dialect, using the path only to tell OpenAI endpoints apart.
//
// The path is judged cleaned, as the upstream's router will see it: dot
// segments removed and repeated slashes folded (RFC 3986, section 5.2.4),
// so that no spelling of an API path (`/v1/x/../messages`,
// `/v1/./messages`, `//v1//messages/`) goes around the guards.
func (p Provider) Detect(path string) (Dialect, Endpoint) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	path = pathpkg.Clean(path) // allocates only when the path is not clean
	forced := p.forced()
	for _, s := range endpointSuffixes {
		if strings.HasSuffix(path, s.suffix) && (p == Auto || s.dialect == forced) {
			return s.dialect, s.endpoint
		}
	}
	switch forced {
	case Anthropic:
		return Anthropic, Messages
	case OpenAI:
		return OpenAI, ChatCompletions
	}
	return Passthrough, EndpointOther
}

// forced returns the dialect a forced provider fixes, or Passthrough for Auto.
func (p Provider) forced() Dialect {
	switch p {
	case ForceAnthropic:
		return Anthropic
	case ForceOpenAI:
		return OpenAI
	}
	return Passthrough
}

// Streams reports whether the endpoint can answer with server-sent events.
func (e Endpoint) Streams() bool {
	return e == Messages || e == ChatCompletions || e == Responses || e == Completions
}
