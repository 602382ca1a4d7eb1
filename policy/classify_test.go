package policy

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// defaultReasons is the default retry_on list with the reason each
// status must be reported under, written out independently of the code.
var defaultReasons = map[int]Reason{
	408: ReasonRequestTimeout,
	409: ReasonConflict,
	429: ReasonRateLimited,
	500: ReasonServerError,
	502: ReasonServerError,
	503: ReasonOverloaded,
	504: ReasonServerError,
	529: ReasonOverloaded,
}

func TestDefaultRetryOnEveryStatus(t *testing.T) {
	r := DefaultRetryOn()
	for status := 100; status <= 599; status++ {
		reason, listed := defaultReasons[status]
		if got := r.Has(status); got != listed {
			t.Errorf("Has(%d) = %v, want %v", status, got, listed)
		}
		want := Verdict{Retry: listed, Reason: reason}
		if got := r.Classify(status, nil); got != want {
			t.Errorf("Classify(%d, nil) = %+v, want %+v", status, got, want)
		}
		if got := r.Classify(status, http.Header{}); got != want {
			t.Errorf("Classify(%d, empty) = %+v, want %+v", status, got, want)
		}
	}
}

func TestRetryOnHasOutOfRange(t *testing.T) {
	r, err := NewRetryOn([]int{400, 599})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{math.MinInt, -1, 0, 1, 63, 64, 99, 600, 639, 640, 1000, math.MaxInt} {
		if r.Has(s) {
			t.Errorf("Has(%d) = true, want false", s)
		}
		if v := r.Classify(s, hdr("X-Should-Retry", "true")); s < 400 && v.Retry {
			t.Errorf("Classify(%d) with x-should-retry: true = %+v, want no retry", s, v)
		}
	}
}

func TestNewRetryOn(t *testing.T) {
	r, err := NewRetryOn([]int{400, 418, 418, 501, 575, 576, 599})
	if err != nil {
		t.Fatalf("NewRetryOn: %v", err)
	}
	in := map[int]bool{400: true, 418: true, 501: true, 575: true, 576: true, 599: true}
	for s := 100; s <= 599; s++ {
		if got := r.Has(s); got != in[s] {
			t.Errorf("Has(%d) = %v, want %v", s, got, in[s])
		}
	}
	tests := []struct {
		status int
		want   Verdict
	}{
		{400, Verdict{true, ReasonOther}},
		{418, Verdict{true, ReasonOther}},
		{501, Verdict{true, ReasonServerError}},
		{575, Verdict{true, ReasonServerError}},
		{599, Verdict{true, ReasonServerError}},
		{429, Verdict{}}, // not listed: the default set is replaced, not extended
		{500, Verdict{}},
	}
	for _, tt := range tests {
		if got := r.Classify(tt.status, nil); got != tt.want {
			t.Errorf("Classify(%d) = %+v, want %+v", tt.status, got, tt.want)
		}
	}

	empty, err := NewRetryOn(nil)
	if err != nil {
		t.Fatalf("NewRetryOn(nil): %v", err)
	}
	for s := 100; s <= 599; s++ {
		if empty.Has(s) {
			t.Errorf("empty set Has(%d)", s)
		}
	}
}

// TestNewRetryOnErrors: a status that is no HTTP status, or no failure
// (informational, success, redirect: the answer passes as it is, so it
// would never be retried), is refused with the range that is allowed.
func TestNewRetryOnErrors(t *testing.T) {
	for _, s := range []int{math.MinInt, -429, 0, 99, 100, 101, 200, 204, 304, 399, 600, 1000, math.MaxInt} {
		_, err := NewRetryOn([]int{429, s, 503})
		if err == nil {
			t.Errorf("NewRetryOn with %d: no error", s)
			continue
		}
		msg := err.Error()
		for _, part := range []string{strconv.Itoa(s), "400", "599"} {
			if !strings.Contains(msg, part) {
				t.Errorf("NewRetryOn with %d: error %q does not mention %q", s, msg, part)
			}
		}
	}
}

func TestClassifyShouldRetryHeader(t *testing.T) {
	def := DefaultRetryOn()
	no500, err := NewRetryOn([]int{429, 529})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		set    RetryOn
		status int
		value  string // "" means no header
		want   Verdict
	}{
		{"true on unlisted 400", def, 400, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on unlisted 401", def, 401, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on unlisted 501", def, 501, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on 500 removed from set", no500, 500, "true", Verdict{true, ReasonUpstreamHint}},
		{"true on listed 429 keeps status reason", def, 429, "true", Verdict{true, ReasonRateLimited}},
		{"true on listed 529", def, 529, "true", Verdict{true, ReasonOverloaded}},
		{"uppercase TRUE", def, 400, "TRUE", Verdict{true, ReasonUpstreamHint}},
		{"mixed case True", def, 400, "True", Verdict{true, ReasonUpstreamHint}},
		{"padded true", def, 400, " true ", Verdict{true, ReasonUpstreamHint}},
		{"false on listed 529", def, 529, "false", Verdict{}},
		{"false on listed 429", def, 429, "false", Verdict{}},
		{"false on listed 500", def, 500, "false", Verdict{}},
		{"uppercase FALSE", def, 503, "FALSE", Verdict{}},
		{"false on unlisted 400", def, 400, "false", Verdict{}},
		{"true on 200", def, 200, "true", Verdict{}},
		{"true on 204", def, 204, "true", Verdict{}},
		{"true on 101", def, 101, "true", Verdict{}},
		{"true on 304", def, 304, "true", Verdict{}},
		{"true on 399", def, 399, "true", Verdict{}},
		{"other value on 429 falls back to status", def, 429, "yes", Verdict{true, ReasonRateLimited}},
		{"other value on 400 falls back to status", def, 400, "1", Verdict{}},
		{"prefix of true is not true", def, 400, "tru", Verdict{}},
		{"truex is not true", def, 400, "truex", Verdict{}},
		{"falsey is not false", def, 529, "falsey", Verdict{true, ReasonOverloaded}},
		{"no header on 400", def, 400, "", Verdict{}},
		{"no header on 502", def, 502, "", Verdict{true, ReasonServerError}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.value != "" {
				// Set with a lowercase name, as proxies write it; Set
				// canonicalises the key the same way net/http does on read.
				h.Set("x-should-retry", tt.value)
			}
			if got := tt.set.Classify(tt.status, h); got != tt.want {
				t.Errorf("Classify(%d, x-should-retry=%q) = %+v, want %+v", tt.status, tt.value, got, tt.want)
			}
		})
	}
}

func TestClassifyFirstShouldRetryValueWins(t *testing.T) {
	h := http.Header{"X-Should-Retry": {"false", "true"}}
	if got := DefaultRetryOn().Classify(429, h); got.Retry {
		t.Errorf("Classify with [false true] = %+v, want the first value, false, to win", got)
	}
}

func TestClassifyNoAlloc(t *testing.T) {
	r := DefaultRetryOn()
	h := http.Header{}
	h.Set("X-Should-Retry", "True")
	h.Set("Retry-After", "1")
	allocs := testing.AllocsPerRun(200, func() {
		r.Classify(429, h)
		r.Classify(400, h)
		r.Classify(503, nil)
	})
	if allocs != 0 {
		t.Errorf("Classify allocates %v times per run, want 0", allocs)
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}
