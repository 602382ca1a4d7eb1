// Package wire knows the LLM APIs the gateway speaks, one type per API:
// Anthropic Messages (anthropic.go), OpenAI Chat Completions (chat.go),
// Responses (responses.go), and the legacy Completions and Embeddings
// (legacy.go), with what the OpenAI family shares in openai.go. Each type
// owns everything particular to its API: where the model, the output caps,
// the conversation and the usage live; which requests the provider would
// refuse; the shape and status of its errors; its stream's events and proper
// ends; its rate-limit headers. The gateway picks the API once per request
// (Detect) and asks it; nothing else in the gateway tells the APIs apart.
package wire

import (
	"fmt"
	"net/http"
	pathpkg "path"
	"strings"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/policy/body"
	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
)

// API is one wire API. Its methods are pure and safe for concurrent use.
type API interface {
	// Family names the provider family in logs and metric labels:
	// "anthropic" or "openai" ("passthrough" for requests the gateway does
	// not read).
	Family() string
	// Name names the operation in logs: "messages", "chat_completions",
	// "responses", "completions", "embeddings" or "other".
	Name() string
	// Guarded reports whether the gateway reads and guards the API's
	// requests. A request it does not guard is passed on untouched, but for
	// the rate-limit zones, which still count it.
	Guarded() bool

	// WalkContent reports whether reading a request body should note the
	// first malformed content block of its `messages`.
	WalkContent() bool
	// Validate reports the first thing in a request that the provider
	// would refuse anyway, or nil. It checks only what the provider's own
	// schema requires and passes everything else (unknown members, new
	// roles and block types): a gateway stricter than its upstream breaks
	// clients the day the upstream adds something.
	Validate(r *body.Request) *body.RequestError
	// ExampleModel is a valid "model" member, for messages.
	ExampleModel() string
	// CapFields are the members that cap output tokens, the one a default
	// cap is written to first; none when the API has no output cap.
	CapFields() []body.Field
	// CapLowered keeps the request valid after the gateway lowered or set
	// its output cap to maxTokens, or says why it cannot.
	CapLowered(r *body.Request, maxTokens int64) *body.RequestError
	// WantsStreamUsage reports whether a stream reports usage only when
	// asked to (Chat Completions' include_usage), so the gateway asks on
	// the client's behalf and strips the answer.
	WantsStreamUsage() bool
	// InputTokens estimates the input tokens of a request.
	InputTokens(r *body.Request) int64
	// Conversation is the member holding the turns that the context guard
	// may shorten, or body.NoField.
	Conversation() body.Field
	// TurnKind tells what one turn of the conversation is, for truncation.
	TurnKind(raw []byte) TurnKind

	// BodyPaths are the JSON paths read from a non-streamed response body,
	// successful or not; BodyUsage and BodyError read their values.
	BodyPaths() *jsonread.Paths
	// BodyUsage reads a successful response's usage and stop reason.
	BodyUsage(v []jsonread.Value) Usage
	// BodyError reads an error response's error type, and whether it says
	// the account's quota is spent, which waiting does not cure.
	BodyError(v []jsonread.Value) (errType string, quota bool)

	// StreamPaths are the JSON paths read from each event's data, and
	// ReadsData whether an event of a given `event:` name has anything to
	// read in its data at all (most events of a long stream do not).
	StreamPaths() *jsonread.Paths
	ReadsData(name []byte) bool
	// Observe takes one event of a successful stream.
	Observe(s *StreamProgress, ev *StreamEvent)
	// UsageOnlyEvent reports whether an event is the usage chunk that
	// WantsStreamUsage asks for.
	UsageOnlyEvent(ev *StreamEvent) bool
	// CutEvent is the in-band error event that ends a stream the gateway
	// must end itself, complete with its blank line.
	CutEvent(why StreamCut) []byte

	// ErrorStatus and ErrorBody are the status and JSON body of an error
	// the gateway answers itself, in the shape the official SDKs read as
	// the provider's own; param names the offending request member, or is
	// empty.
	ErrorStatus(k ErrorKind) int
	ErrorBody(k ErrorKind, message, param string) []byte

	// RateLimitReset returns the wait until the upstream's exhausted
	// rate-limit window resets, from its rate-limit headers; ok is false
	// when no window is exhausted.
	RateLimitReset(h http.Header, now time.Time) (wait time.Duration, ok bool)
	// WriteRateLimits describes the gateway's own limits in the API's
	// rate-limit headers.
	WriteRateLimits(h http.Header, s RateLimits, now time.Time)
}

// Provider is the `provider` setting: a fixed API family, or Auto to pick
// the API by request path.
type Provider uint8

const (
	// Auto picks the API from the request path.
	Auto Provider = iota
	// ForceAnthropic treats every request as Anthropic Messages.
	ForceAnthropic
	// ForceOpenAI treats every request as OpenAI, picking the endpoint by
	// path (Chat Completions when the path names none).
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

// The APIs. Each is a stateless value.
var (
	Messages        API = messages{}
	ChatCompletions API = chat{}
	Responses       API = responses{}
	Completions     API = completions{}
	Embeddings      API = embeddings{}
	Passthrough     API = passthrough{}
)

// All lists every API above.
var All = [...]API{Messages, ChatCompletions, Responses, Completions, Embeddings, Passthrough}

// endpoints maps path endings to APIs. Matching on the ending lets a route
// keep a prefix (for example /anthropic/v1/messages behind `route
// /anthropic/*`) and still be recognised; the official SDKs always send these
// endings (https://docs.anthropic.com/en/api/messages,
// https://platform.openai.com/docs/api-reference).
var endpoints = [...]struct {
	suffix string
	api    API
}{
	{"/v1/messages", Messages},
	{"/v1/chat/completions", ChatCompletions},
	{"/v1/responses", Responses},
	{"/v1/completions", Completions},
	{"/v1/embeddings", Embeddings},
}

// Detect returns the API of a request with the given path under this
// provider setting. Under Auto, a path that matches no known endpoint is
// Passthrough. A forced provider treats a path of its own shape (ending in
// its family's endpoint) as that endpoint, and any path outside the
// providers' `/v1/` layout as its API (a route that rewrites or renames
// the API's path); the providers' other endpoints (count_tokens, batches,
// files, models, images, audio…) pass through untouched under either
// setting.
//
// The path is judged cleaned, as the upstream's router will see it: dot
// segments removed and repeated slashes folded (RFC 3986, section 5.2.4),
// so that no spelling of an API path (`/v1/x/../messages`,
// `/v1/./messages`, `//v1//messages/`) goes around the guards.
func (p Provider) Detect(path string) API {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	path = pathpkg.Clean(path) // allocates only when the path is not clean
	for _, e := range endpoints {
		if strings.HasSuffix(path, e.suffix) && (p == Auto || p.family() == e.api.Family()) {
			return e.api
		}
	}
	if strings.Contains(path+"/", "/v1/") {
		return Passthrough
	}
	switch p {
	case ForceAnthropic:
		return Messages
	case ForceOpenAI:
		return ChatCompletions
	}
	return Passthrough
}

// family names the family a forced provider fixes.
func (p Provider) family() string {
	if p == ForceAnthropic {
		return anthropicFamily
	}
	return openAIFamily
}

// TurnKind is what a message means for truncation.
type TurnKind uint8

const (
	// TurnModel is the model's side: an assistant message, or a Responses
	// reasoning item or tool call.
	TurnModel TurnKind = iota
	// TurnUser is a person's message, which opens a turn.
	TurnUser
	// TurnResult answers a tool call and belongs with the call before it.
	TurnResult
	// TurnPinned is a system or developer message: never dropped.
	TurnPinned
)

// Usage is what a response says about tokens and how the answer ended.
type Usage struct {
	// InputTokens is the whole prompt as billed: for Anthropic that is
	// input_tokens + cache_creation_input_tokens + cache_read_input_tokens
	// (https://docs.anthropic.com/en/api/messages, "usage").
	InputTokens int64
	// OutputTokens is the completion as billed.
	OutputTokens int64
	// StopReason is the provider's stop_reason, finish_reason or status.
	StopReason string
}

// RateLimits describes limits for the API's rate-limit headers, as the
// providers describe their own: a limit of 0 means the dimension is not
// limited and no header is written for it; remaining is never negative; a
// reset is the time until the bucket is full again.
type RateLimits struct {
	RequestsLimit, RequestsRemaining int64
	RequestsReset                    time.Duration
	TokensLimit, TokensRemaining     int64
	TokensReset                      time.Duration
}
