package wire

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/policy/jsonread"
)

// openAIFamily names the OpenAI family in logs and metrics.
const openAIFamily = "openai"

// openAI is what the OpenAI APIs share, and the many servers compatible with
// them (Azure OpenAI, Gemini's OpenAI endpoint): the error shape, the
// rate-limit headers, and how an error body says the quota is spent. Each
// OpenAI API type embeds it.
type openAI struct{}

func (openAI) Family() string { return openAIFamily }

// openAIErrors are the status, type and code of each gateway error: those
// OpenAI's API sends for the same situations
// (https://platform.openai.com/docs/guides/error-codes). An empty code is
// written as null.
var openAIErrors = [numErrorKinds]struct {
	status    int
	typ, code string
}{
	BodyTooLarge:        {http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large"},
	InvalidRequest:      {http.StatusBadRequest, "invalid_request_error", ""},
	ContextOverflow:     {http.StatusBadRequest, "invalid_request_error", "context_length_exceeded"},
	ModelUnavailable:    {http.StatusServiceUnavailable, "server_error", "model_unavailable"},
	RequestsLimited:     {http.StatusTooManyRequests, "requests", "rate_limit_exceeded"},
	TokensLimited:       {http.StatusTooManyRequests, "tokens", "rate_limit_exceeded"},
	UpstreamUnreachable: {http.StatusBadGateway, "server_error", "bad_gateway"},
	UpstreamTimeout:     {http.StatusGatewayTimeout, "server_error", "timeout"},
	Overloaded:          {http.StatusServiceUnavailable, "server_error", ""},
	UnsupportedEncoding: {http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_content_encoding"},
	LimitsUnavailable:   {http.StatusServiceUnavailable, "server_error", "service_unavailable"},
	Misplaced:           {http.StatusInternalServerError, "server_error", ""},
}

func (openAI) ErrorStatus(k ErrorKind) int { return openAIErrors[k].status }

// ErrorBody is `{"error":{"message":…,"type":…,"param":…,"code":…}}`, an
// empty param or code written as null.
func (openAI) ErrorBody(k ErrorKind, message, param string) []byte {
	e := openAIErrors[k]
	return openAIErrorBody(message, e.typ, param, e.code)
}

func openAIErrorBody(message, errType, param, code string) []byte {
	type detail struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	d := detail{Message: message, Type: errType}
	if param != "" {
		d.Param = &param
	}
	if code != "" {
		d.Code = &code
	}
	return marshalError(struct {
		Error detail `json:"error"`
	}{d})
}

// openAIWindows are the windows OpenAI and Azure OpenAI report
// (https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers).
var openAIWindows = []rateLimitWindow{
	{"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
	{"X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
}

// RateLimitReset reads `x-ratelimit-{remaining,reset}-{requests,tokens}`,
// whose resets are Go-style durations such as `6m0s` or `20ms`, or integer
// seconds on Azure, which also sends `-1` meaning unknown. OpenAI's reset is
// the time until the bucket is full again, so it errs long.
func (openAI) RateLimitReset(h http.Header, _ time.Time) (time.Duration, bool) {
	return exhaustedReset(h, openAIWindows, parseOpenAIDuration)
}

// WriteRateLimits writes x-ratelimit-{limit,remaining,reset}-{requests,
// tokens}, the resets as durations such as 1s or 6m0s.
func (openAI) WriteRateLimits(h http.Header, s RateLimits, _ time.Time) {
	writeRateLimits(h, &openAIRateLimitHeaders, s, func(after time.Duration) string {
		return after.Round(time.Millisecond).String()
	})
}

var openAIRateLimitHeaders = rateLimitHeaders{
	{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
	{"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
}

// maxErrorElements is how many elements of an array-wrapped error body are
// read; the servers that wrap errors in an array send one.
const maxErrorElements = 4

// openAIErrorPaths are where an OpenAI error body names its error: the
// `error` object's type and code, then the same of each of the first
// maxErrorElements elements of the array some compatible servers wrap errors
// in (Gemini's OpenAI endpoint, https://ai.google.dev/gemini-api/docs/openai),
// then the first element's status. Each OpenAI API reads them after its own
// usage paths.
var openAIErrorPaths = func() []string {
	paths := []string{"error.type", "error.code"}
	for i := range maxErrorElements {
		n := strconv.Itoa(i)
		paths = append(paths, n+".error.type", n+".error.code")
	}
	return append(paths, "0.error.status")
}()

// openAIBodyError reads the error type of an error body from the values of
// openAIErrorPaths, and whether it says the account is out of quota: an
// OpenAI 429 whose `type` or `code` names a spent quota or spend limit is
// not a rate limit, and waiting does not help (every SDK would retry it on
// its status alone, so the body must be read). A rate limit's `type` is
// `tokens` or `requests`, so the code is what tells them apart.
func openAIBodyError(v []jsonread.Value) (errType string, quota bool) {
	for i := 0; i+1 < len(v)-1; i += 2 {
		if v[i].Is("insufficient_quota") || slices.Contains(quotaCodes[:], v[i+1].String()) {
			quota = true
		}
	}
	errType = v[0].String()
	if errType == "" {
		errType = v[len(v)-1].String()
	}
	return errType, quota
}
