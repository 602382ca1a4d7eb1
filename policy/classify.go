package policy

import (
	"fmt"
	"net/http"
	"strings"
)

// RetryOn is the set of upstream HTTP statuses that are retried, the
// `retry_on` setting. It is an 80-byte bitset over 0–639 (only 100–599 are
// ever set), so it is a plain value: cheap to copy, safe for concurrent
// reads, and Has never allocates.
type RetryOn struct {
	bits [10]uint64
}

// DefaultRetryOn returns the default, 408 409 429 500 502 503 504 529: the
// statuses every official SDK retries (408, 409, 429 and ≥500; shouldRetry in
// anthropic-sdk-go internal/requestconfig/requestconfig.go) narrowed to the
// 5xx that mean "try again". 501 and 505 are left out because they say the
// request itself can never succeed there.
func DefaultRetryOn() RetryOn {
	var r RetryOn
	for _, s := range [...]int{408, 409, 429, 500, 502, 503, 504, 529} {
		r.add(s)
	}
	return r
}

// NewRetryOn builds a set from configured statuses. A status outside 400–599
// is an error: below 100 or above 599 it is no HTTP status, and an
// informational, success or redirect status is no failure to retry (the
// answer passes to the client as it is), so either would silently never
// apply.
func NewRetryOn(statuses []int) (RetryOn, error) {
	var r RetryOn
	for _, s := range statuses {
		switch {
		case s < 100 || s > 599:
			return RetryOn{}, fmt.Errorf("retry_on status %d is not an HTTP status: use error statuses from 400 to 599", s)
		case s < 400:
			return RetryOn{}, fmt.Errorf("retry_on status %d is not an error: the gateway retries failures, so use statuses from 400 to 599", s)
		}
		r.add(s)
	}
	return r, nil
}

// add puts a status, already checked to be in 400–599, into the set.
func (r *RetryOn) add(status int) {
	r.bits[status/64] |= 1 << (status % 64)
}

// Has reports whether status is in the set. Values outside 100–599 are never
// in it.
func (r RetryOn) Has(status int) bool {
	if status < 100 || status > 599 {
		return false
	}
	return r.bits[status/64]&(1<<(status%64)) != 0
}

// Reason is why an attempt failed in a retryable way. It is a metric label
// (retries by reason), so the set is small and fixed.
type Reason string

const (
	// ReasonRateLimited is a 429: the upstream's rate limit was hit.
	ReasonRateLimited Reason = "rate_limited"
	// ReasonOverloaded is a 529 (Anthropic overloaded_error,
	// https://docs.anthropic.com/en/api/errors) or a 503 (OpenAI's overloaded
	// server_error, https://platform.openai.com/docs/guides/error-codes): the
	// provider is shedding load.
	ReasonOverloaded Reason = "overloaded"
	// ReasonServerError is any other 5xx, such as 500 api_error or 504
	// timeout_error.
	ReasonServerError Reason = "server_error"
	// ReasonTimeout is an attempt that ran out of attempt_timeout.
	ReasonTimeout Reason = "timeout"
	// ReasonConnection is a failure to reach the upstream or read its
	// response headers.
	ReasonConnection Reason = "connection"
	// ReasonConflict is a 409 (Anthropic conflict_error), which the SDKs retry.
	ReasonConflict Reason = "conflict"
	// ReasonRequestTimeout is a 408 from the upstream.
	ReasonRequestTimeout Reason = "request_timeout"
	// ReasonUpstreamHint is a response retried only because the upstream sent
	// `x-should-retry: true` for a status that retry_on does not list.
	ReasonUpstreamHint Reason = "should_retry"
	// ReasonOther is a status listed in retry_on that none of the reasons
	// above describes, such as a 4xx the operator chose to retry.
	ReasonOther Reason = "status"
)

// Verdict is the decision about one upstream response.
type Verdict struct {
	// Retry reports whether the response is worth another attempt.
	Retry bool
	// Reason says why, for logs and metrics; it is empty when Retry is false.
	Reason Reason
}

// Classify decides from the status and headers alone, as soon as the response
// headers arrive, so the body of a retried response need not be read.
//
// Statuses below 400 are never retried: they are not failures. Otherwise an
// upstream `x-should-retry: true` or `false` overrides the configured set in
// both directions, exactly as all seven official SDKs obey it over the status
// (shouldRetry in anthropic-sdk-go internal/requestconfig/requestconfig.go):
// Anthropic sends `true` on 429s (captured in
// https://github.com/anthropics/anthropic-sdk-typescript/issues/357) and
// `false` on a zero-balance 400. The SDKs match the lowercase value
// exactly; the gateway also accepts other cases because nobody sends
// `TRUE` meaning anything else. Without the header, the status decides.
func (r RetryOn) Classify(status int, h http.Header) Verdict {
	if status < 400 {
		return Verdict{}
	}
	listed := r.Has(status)
	switch v := strings.TrimSpace(h.Get("X-Should-Retry")); {
	case strings.EqualFold(v, "true"):
		if !listed {
			return Verdict{Retry: true, Reason: ReasonUpstreamHint}
		}
	case strings.EqualFold(v, "false"):
		return Verdict{}
	}
	if !listed {
		return Verdict{}
	}
	return Verdict{Retry: true, Reason: statusReason(status)}
}

// statusReason names a retryable status for metrics.
func statusReason(status int) Reason {
	switch {
	case status == 429:
		return ReasonRateLimited
	case status == 529 || status == 503:
		return ReasonOverloaded
	case status == 409:
		return ReasonConflict
	case status == 408:
		return ReasonRequestTimeout
	case status >= 500:
		return ReasonServerError
	}
	return ReasonOther
}
