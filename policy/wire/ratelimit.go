package wire

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WaitHint returns how long the upstream asks the client to wait before the
// next attempt, and whether it said anything usable. The retry loop waits
// max(hint, backoff) and gives up on a model whose hint exceeds max_wait.
//
// Sources are read in this order, the first two being what every official
// SDK reads, in the same order (for example anthropic-sdk-go's
// requestconfig.go retryDelay):
//  1. `retry-after-ms`, milliseconds, fractions allowed (OpenAI, Azure).
//  2. `retry-after`, decimal seconds or an HTTP-date (RFC 9110, section
//     10.2.3); Anthropic sends integer seconds on 429s
//     (https://docs.anthropic.com/en/api/rate-limits).
//  3. The API's rate-limit reset headers (API.RateLimitReset), because
//     OpenAI 429s often carry no retry-after at all.
//
// A negative or unparsable value is ignored and the next source is tried, so
// one malformed header cannot turn into an instant retry or a hang. A wait
// too long for a time.Duration (about 292 years), in any of the forms,
// saturates at the longest one, as Time.Sub does: it is a wait far beyond
// any max_wait, and reading it as no hint at all would retry at once. An
// HTTP-date in the past means "now": 0, true. The result is never negative.
func WaitHint(api API, h http.Header, now time.Time) (time.Duration, bool) {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if w, ok := parseDecimal(v, time.Millisecond); ok {
			return w, true
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		if w, ok := parseRetryAfter(v, now); ok {
			return w, true
		}
	}
	return api.RateLimitReset(h, now)
}

// parseRetryAfter parses a `retry-after` value: delay-seconds, which the SDKs
// accept with a fraction, or an HTTP-date measured from now.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if w, ok := parseDecimal(v, time.Second); ok {
		return w, true
	}
	t, err := http.ParseTime(strings.TrimSpace(v))
	if err != nil {
		return 0, false
	}
	// Time.Sub saturates instead of overflowing, so only the sign needs care.
	return max(t.Sub(now), 0), true
}

// parseDecimal parses a non-negative decimal number (digits with at most one
// '.') of the given unit. It is stricter than strconv.ParseFloat on purpose:
// signs, exponents, hex floats, "Inf" and "NaN" are not things a server means
// as a wait, so they are rejected rather than interpreted.
func parseDecimal(v string, unit time.Duration) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < '0' || c > '9') && c != '.' {
			return 0, false
		}
	}
	// Digits and dots only: ParseFloat's one range error is an overflow,
	// which it reports as +Inf.
	f, err := strconv.ParseFloat(v, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	ns := math.Round(f * float64(unit))
	// 2^63 is exactly representable as a float64, and every float64 below it
	// fits in an int64.
	if ns >= 1<<63 {
		return math.MaxInt64, true
	}
	return time.Duration(ns), true
}

// rateLimitWindow names one rate-limit window's remaining and reset headers,
// in canonical form, so that they are looked up in the header map as they
// are: http.Header.Get would check and canonicalize each name again, on
// every response.
type rateLimitWindow struct {
	remaining, reset string
}

// exhaustedReset returns the longest wait until an exhausted window of
// windows resets, its reset header read by parse. Only a window whose
// remaining count is exactly 0 counts: a window with capacity left is no
// reason to wait, and a reset on it says when it refills, not when a request
// may go. When several windows are exhausted the longest wait wins, since a
// request must fit all of them. ok is false when no window is exhausted or
// no exhausted window's reset parses.
func exhaustedReset(h http.Header, windows []rateLimitWindow, parse func(v string) (time.Duration, bool)) (time.Duration, bool) {
	var longest time.Duration
	found := false
	for _, w := range windows {
		if !exhausted(firstValue(h, w.remaining)) {
			continue
		}
		if wait, ok := parse(firstValue(h, w.reset)); ok && (!found || wait > longest) {
			longest, found = wait, true
		}
	}
	return longest, found
}

// firstValue returns the first value of the header with the canonical
// name key, or "".
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// exhausted reports whether a `remaining` header value is zero ("0", or
// zeros only). A missing or malformed value is not evidence of exhaustion.
// It is a string check rather than strconv.ParseInt because it runs on every
// response for pacing, and a failed ParseInt allocates its error.
func exhausted(remaining string) bool {
	v := strings.TrimSpace(remaining)
	return v != "" && strings.Trim(v, "0") == ""
}

// untilRFC3339 returns the wait until an RFC 3339 timestamp, 0 if it is past.
func untilRFC3339(v string, now time.Time) (time.Duration, bool) {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// parseOpenAIDuration parses an `x-ratelimit-reset-*` value: a Go-style
// duration as OpenAI sends it (`1s`, `6m0s`, `20ms`, `2m59.56s`, `1h2m3.5s`;
// https://platform.openai.com/docs/guides/rate-limits) or Azure's bare
// seconds (`37`; https://learn.microsoft.com/azure/ai-services/openai/quotas-limits). Negative
// values, such as Azure's `-1` for "unknown", are rejected, so the caller
// falls back to backoff; a well-formed value beyond the time.Duration range
// saturates.
func parseOpenAIDuration(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if w, ok := parseDecimal(v, time.Second); ok {
		return w, true
	}
	// time.ParseDuration also takes a leading sign; OpenAI never sends one,
	// and a negative reset is meaningless, so require a number up front.
	if v == "" || !(v[0] >= '0' && v[0] <= '9' || v[0] == '.') {
		return 0, false
	}
	w, err := time.ParseDuration(v)
	if err != nil {
		if durationSyntax(v) {
			return math.MaxInt64, true // well formed, so too long to represent
		}
		return 0, false
	}
	return w, true
}

// durationUnits are the units time.ParseDuration knows, two-letter ones
// first so that "ms" is not read as "m".
var durationUnits = [...]string{"ns", "us", "µs", "μs", "ms", "s", "m", "h"}

// durationSyntax reports whether v is written as time.ParseDuration reads
// a duration without a sign: one or more numbers, each with a unit, such
// as `1h2m3.5s`. time.ParseDuration fails on such a value only when it
// overflows.
func durationSyntax(v string) bool {
	if v == "" {
		return false
	}
	for v != "" {
		digits, i := 0, 0
		for ; i < len(v) && '0' <= v[i] && v[i] <= '9'; i++ {
			digits++
		}
		if i < len(v) && v[i] == '.' {
			for i++; i < len(v) && '0' <= v[i] && v[i] <= '9'; i++ {
				digits++
			}
		}
		if digits == 0 {
			return false
		}
		v = v[i:]
		unit := ""
		for _, u := range durationUnits {
			if strings.HasPrefix(v, u) {
				unit = u
				break
			}
		}
		if unit == "" {
			return false
		}
		v = v[len(unit):]
	}
	return true
}

// rateLimitHeaders names the limit, remaining and reset headers of an
// API's two windows: requests, then tokens.
type rateLimitHeaders [2]struct{ limit, remaining, reset string }

// writeRateLimits writes the windows of s that have a limit into the
// headers names gives them, each reset as reset formats it.
func writeRateLimits(h http.Header, names *rateLimitHeaders, s RateLimits, reset func(after time.Duration) string) {
	for i, w := range [...]struct {
		n, left int64
		after   time.Duration
	}{
		{s.RequestsLimit, s.RequestsRemaining, s.RequestsReset},
		{s.TokensLimit, s.TokensRemaining, s.TokensReset},
	} {
		if w.n <= 0 {
			continue
		}
		h.Set(names[i].limit, strconv.FormatInt(w.n, 10))
		h.Set(names[i].remaining, strconv.FormatInt(w.left, 10))
		h.Set(names[i].reset, reset(w.after))
	}
}
