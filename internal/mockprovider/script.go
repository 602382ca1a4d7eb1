package mockprovider

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Script headers. The gateway forwards request headers on every attempt, so a
// client can script what each successive upstream attempt sees.
const (
	// ScriptHeader carries a comma-separated list of steps; the Nth request with
	// the same script key gets the Nth step, and the last step repeats.
	ScriptHeader = "X-Mock-Script"
	// ScriptIDHeader names the script key. Without it the key is the script
	// text itself.
	ScriptIDHeader = "X-Mock-Id"
)

// defaultEvents is the number of text deltas in a stream when a step does not
// set events=.
const defaultEvents = 5

// action is what a step does with the request.
type action uint8

const (
	// respond answers with the step's status.
	respond action = iota
	// hang never answers; it holds the request until the client goes away.
	hang
	// drop closes the connection without writing anything.
	drop
)

// step is one parsed script entry: how to answer one request.
type step struct {
	action action
	status int

	// Wait hints and rate-limit headers; empty or zero when not set.
	retryAfter     string
	retryAfterMS   string
	retryAfterDate time.Duration
	hasDate        bool
	reset          time.Duration
	exhausted      bool
	shouldRetry    string
	quota          bool

	// Timing.
	delay    time.Duration
	interval time.Duration

	// Body shape. cut, end, at and stall are -1 when not set.
	events int
	cut    int
	// midEvent makes a stream's cut fall inside an event: half of the next
	// delta event is sent before the connection is aborted.
	midEvent bool
	end      int
	bytes    int
	nest     int // an error body of this many '[' instead of the dialect's

	// Stream framing and faults.
	framing framing
	inband  string // the type of an in-band error event to send
	failed  string // the error code of a Responses response.failed to end with
	at      int    // deltas before the in-band error (-1: it is the first event)
	stall   int    // deltas (or body bytes) before the response goes silent
	ping    time.Duration
}

// framing is how a stream's events are written; the zero value is the
// providers' own (LF line ends, an event: line where the API has one).
type framing struct {
	eol       string // line end: "\n", "\r\n" or "\r"
	dataOnly  bool   // no event: lines, the type only in the JSON
	comments  bool   // a comment and the id and retry fields before each event
	multiline bool   // each event's JSON split over two data lines
}

// parseFraming parses `+`-joined framing words.
func parseFraming(v string) (framing, error) {
	f := framing{eol: "\n"}
	for _, w := range strings.Split(v, "+") {
		switch w {
		case "lf":
		case "crlf":
			f.eol = "\r\n"
		case "cr":
			f.eol = "\r"
		case "dataonly":
			f.dataOnly = true
		case "comments":
			f.comments = true
		case "multiline":
			f.multiline = true
		default:
			return f, fmt.Errorf("unknown framing %q; known: lf, crlf, cr, dataonly, comments, multiline", w)
		}
	}
	return f, nil
}

// okStep is the step used when nothing scripts a request: a plain success.
func okStep() step {
	return step{action: respond, status: 200, events: defaultEvents, cut: -1, end: -1, at: -1, stall: -1, framing: framing{eol: "\n"}}
}

// failStep is a plain failure with the given status, used for model-driven
// faults.
func failStep(status int) step {
	s := okStep()
	s.status = status
	return s
}

// parseScript parses a whole x-mock-script value. Every step is checked, so a
// typo in a late step is reported on the first request, not the Nth.
func parseScript(script string) ([]step, error) {
	parts := strings.Split(script, ",")
	steps := make([]step, 0, len(parts))
	for _, p := range parts {
		s, err := parseStep(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("parsing script step %q: %w", p, err)
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// parseStep parses `<status>[:<mod>...]`, where status is an HTTP status
// (200 or 400-599), `hang` or `drop`.
func parseStep(text string) (step, error) {
	s := okStep()
	head, mods, _ := strings.Cut(text, ":")
	switch head {
	case "hang":
		s.action = hang
	case "drop":
		s.action = drop
	default:
		status, err := strconv.Atoi(head)
		if err != nil || (status != 200 && (status < 400 || status > 599)) {
			return s, fmt.Errorf("status %q is not 200, 400-599, hang or drop", head)
		}
		s.status = status
	}
	if mods == "" {
		return s, nil
	}
	for _, mod := range strings.Split(mods, ":") {
		if err := s.apply(mod); err != nil {
			return s, fmt.Errorf("applying modifier %q: %w", mod, err)
		}
	}
	if n := btoi(s.cut >= 0) + btoi(s.end >= 0) + btoi(s.stall >= 0) + btoi(s.inband != "") + btoi(s.failed != ""); n > 1 {
		return s, errors.New("cut=, end=, stall=, inband= and failed= exclude each other")
	}
	if s.midEvent && s.cut < 0 {
		return s, errors.New("midevent places a cut=")
	}
	if s.at >= 0 && s.inband == "" && s.failed == "" {
		return s, errors.New("at= places an inband= or failed= event")
	}
	if s.retryAfter != "" && s.hasDate {
		return s, errors.New("retry-after= and retry-after-date= both set Retry-After")
	}
	return s, nil
}

// apply sets one `name=value` (or bare `quota`) modifier on the step.
func (s *step) apply(mod string) error {
	name, value, hasValue := strings.Cut(mod, "=")
	if name == "quota" || name == "midevent" {
		if hasValue {
			return errors.New(name + " takes no value")
		}
		s.quota = s.quota || name == "quota"
		s.midEvent = s.midEvent || name == "midevent"
		return nil
	}
	if !hasValue {
		return errors.New("expected name=value")
	}
	var err error
	switch name {
	case "retry-after":
		err = decimal(value)
		s.retryAfter = value
	case "retry-after-ms":
		err = decimal(value)
		s.retryAfterMS = value
	case "retry-after-date":
		s.retryAfterDate, err = seconds(value)
		s.hasDate = true
	case "reset":
		s.reset, err = seconds(value)
		s.exhausted = true
	case "should-retry":
		if value != "true" && value != "false" {
			err = errors.New("want true or false")
		}
		s.shouldRetry = value
	case "delay":
		s.delay, err = duration(value)
	case "interval":
		s.interval, err = duration(value)
	case "events":
		s.events, err = count(value)
	case "cut":
		s.cut, err = count(value)
	case "end":
		s.end, err = count(value)
	case "bytes":
		s.bytes, err = count(value)
	case "nest":
		s.nest, err = count(value)
	case "framing":
		s.framing, err = parseFraming(value)
	case "inband":
		s.inband, err = errorName(value)
	case "failed":
		s.failed, err = errorName(value)
	case "at":
		s.at, err = count(value)
	case "stall":
		s.stall, err = count(value)
	case "ping":
		s.ping, err = duration(value)
		if err == nil && s.ping == 0 {
			err = errors.New("want a positive duration")
		}
	default:
		err = errors.New("unknown modifier; known: retry-after, retry-after-ms, retry-after-date, reset, quota, should-retry, delay, cut, midevent, end, events, interval, bytes, framing, inband, failed, at, stall, ping, nest")
	}
	return err
}

// errorName checks an error type or code for an in-band error event.
func errorName(v string) (string, error) {
	if v == "" || strings.Trim(v, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return "", errors.New("want an error type such as overloaded_error")
	}
	return v, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// seconds parses a non-negative number of seconds, fractions allowed.
func seconds(v string) (time.Duration, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1e9 {
		return 0, errors.New("want a non-negative number of seconds")
	}
	return time.Duration(f * float64(time.Second)), nil
}

// decimal checks a non-negative decimal number of any length (digits and at
// most one dot), which is sent as written: a hint too large for any
// integer type is a fault worth scripting.
func decimal(v string) error {
	digits := strings.Trim(v, "0123456789")
	if v == "" || v == "." || digits != "" && digits != "." || strings.Count(v, ".") > 1 {
		return errors.New("want a non-negative decimal number")
	}
	return nil
}

// count parses a non-negative integer.
func count(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errors.New("want a non-negative integer")
	}
	return n, nil
}

// duration parses a non-negative Go duration such as 5ms or 2s.
func duration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, errors.New("want a non-negative duration such as 5ms")
	}
	return d, nil
}
