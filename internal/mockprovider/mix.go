package mockprovider

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FaultMix makes a share of the requests that no script or model fault
// decides fail at random, in the proportions of a production fault mix,
// for load tests of the gateway's storm guards. The draws come from one
// generator seeded with Seed: the sequence of answers, in order of arrival,
// is the same on every run. Requests with an x-mock-id header get answers
// that depend only on the seed, the id and how many requests with that id
// came before (Answer), so a load test meets the same faults on every run
// whatever the interleaving of its requests.
//
// As a string (ParseFaultMix, the mockprovider command's -mix flag) it is a
// comma-separated list of name=value:
//
//	rate_limited=<share>      answered 429 rate_limit_error
//	retry_after_max=<dur>     each 429 carries retry-after drawn uniformly from [0, dur), in seconds with 3 decimals
//	overloaded=<share>        answered 529 overloaded_error (Anthropic routes) or 503 (OpenAI routes)
//	server_error=<share>      answered 500
//	seed=<n>                  the generator's seed
//
// For example `rate_limited=0.3,retry_after_max=1s,overloaded=0.1,seed=1`.
type FaultMix struct {
	// RateLimited is the share of requests answered 429.
	RateLimited float64
	// RetryAfterMax bounds the retry-after of those 429s; 0 sends none.
	RetryAfterMax time.Duration
	// Overloaded is the share answered with the dialect's overload status.
	Overloaded float64
	// ServerError is the share answered 500.
	ServerError float64
	// Seed seeds the generator.
	Seed uint64
}

// Validate reports a share outside 0 to 1, shares adding up to more than
// 1, or a negative retry-after bound.
func (m FaultMix) Validate() error {
	for _, share := range [...]float64{m.RateLimited, m.Overloaded, m.ServerError} {
		if !(share >= 0 && share <= 1) {
			return fmt.Errorf("fault mix share %v is not between 0 and 1", share)
		}
	}
	if sum := m.RateLimited + m.Overloaded + m.ServerError; sum > 1 {
		return fmt.Errorf("fault mix shares add up to %v, more than 1", sum)
	}
	if m.RetryAfterMax < 0 {
		return errors.New("fault mix retry_after_max is negative")
	}
	return nil
}

// ParseFaultMix parses the string form of a FaultMix (see FaultMix).
func ParseFaultMix(s string) (FaultMix, error) {
	var m FaultMix
	for _, pair := range strings.Split(s, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			return m, fmt.Errorf("fault mix entry %q is not name=value", pair)
		}
		var err error
		switch name {
		case "rate_limited":
			m.RateLimited, err = strconv.ParseFloat(value, 64)
		case "overloaded":
			m.Overloaded, err = strconv.ParseFloat(value, 64)
		case "server_error":
			m.ServerError, err = strconv.ParseFloat(value, 64)
		case "retry_after_max":
			m.RetryAfterMax, err = duration(value)
		case "seed":
			m.Seed, err = strconv.ParseUint(value, 10, 64)
		default:
			err = errors.New("unknown name; known: rate_limited, retry_after_max, overloaded, server_error, seed")
		}
		if err != nil {
			return m, fmt.Errorf("parsing fault mix entry %q: %w", pair, err)
		}
	}
	return m, m.Validate()
}

// Answer is the mix's deterministic answer to the nth request (from 0)
// carrying x-mock-id id: its status (0 for a success; an overload is 529,
// which OpenAI routes send as 503) and the retry-after of a 429. A load test
// can compute from it what each of its requests will meet.
func (m FaultMix) Answer(id string, n int) (status int, retryAfter time.Duration) {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	rng := rand.New(rand.NewPCG(m.Seed^h.Sum64(), uint64(n)))
	return m.pick(rng.Float64(), rng.Float64())
}

// pick maps two uniform draws to an answer: u chooses the status, wait the
// retry-after within its bound.
func (m FaultMix) pick(u, wait float64) (status int, retryAfter time.Duration) {
	switch {
	case u < m.RateLimited:
		// Whole milliseconds, as the 3-decimal header carries them.
		return 429, time.Duration(wait*float64(m.RetryAfterMax.Milliseconds())) * time.Millisecond
	case u < m.RateLimited+m.Overloaded:
		return 529, 0
	case u < m.RateLimited+m.Overloaded+m.ServerError:
		return 500, 0
	}
	return 0, 0
}

// mixer draws the mix's answers: per x-mock-id with Answer, or else in
// order of arrival from one seeded generator.
type mixer struct {
	mix FaultMix
	mu  sync.Mutex
	rng *rand.Rand
}

func newMixer(m FaultMix) *mixer {
	return &mixer{mix: m, rng: rand.New(rand.NewPCG(m.Seed, m.Seed^0x9e3779b97f4a7c15))}
}

// step returns the step for a request, or false for a success. n is the
// request's place among those with its id, when it has one.
func (x *mixer) step(d dialect, id string, n int) (step, bool) {
	var status int
	var retryAfter time.Duration
	if id != "" {
		status, retryAfter = x.mix.Answer(id, n)
	} else {
		x.mu.Lock()
		u, wait := x.rng.Float64(), x.rng.Float64()
		x.mu.Unlock()
		status, retryAfter = x.mix.pick(u, wait)
	}
	switch status {
	case 0:
		return step{}, false
	case 529:
		return failStep(d.overloadStatus()), true
	}
	s := failStep(status)
	if status == 429 && x.mix.RetryAfterMax > 0 {
		s.retryAfter = strconv.FormatFloat(retryAfter.Seconds(), 'f', 3, 64)
	}
	return s, true
}
