package mockprovider

import (
	"errors"
	"fmt"
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
// is the same on every run.
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

// mixer draws the mix's answers.
type mixer struct {
	mix FaultMix
	mu  sync.Mutex
	rng *rand.Rand
}

func newMixer(m FaultMix) *mixer {
	return &mixer{mix: m, rng: rand.New(rand.NewPCG(m.Seed, m.Seed^0x9e3779b97f4a7c15))}
}

// draw returns the step for the next request, or false for a success.
func (x *mixer) draw(d dialect) (step, bool) {
	x.mu.Lock()
	u := x.rng.Float64()
	wait := x.rng.Float64()
	x.mu.Unlock()
	m := x.mix
	switch {
	case u < m.RateLimited:
		s := failStep(429)
		if m.RetryAfterMax > 0 {
			s.retryAfter = strconv.FormatFloat(wait*m.RetryAfterMax.Seconds(), 'f', 3, 64)
		}
		return s, true
	case u < m.RateLimited+m.Overloaded:
		return failStep(d.overloadStatus()), true
	case u < m.RateLimited+m.Overloaded+m.ServerError:
		return failStep(500), true
	}
	return step{}, false
}
