package integration

// End-to-end tests of the rate-limit zones and upstream pacing: through a
// real Caddy with the mock provider upstream and the official SDKs, their
// own retries off, as clients. Every test names its zones uniquely: zones
// live in a process-wide pool, shared by name and settings.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
	"github.com/ai-resilience/caddy-ai-resilience/internal/testcaddy"
)

// limitBlock is a `limit <zone> { ... }` block as ai_resilience lines.
func limitBlock(zone string, settings ...string) []string {
	lines := []string{"limit " + zone + " {"}
	for _, s := range settings {
		lines = append(lines, "\t"+s)
	}
	return append(lines, "}")
}

// limitOptions joins options and limit blocks into ai_resilience lines.
func limitOptions(blocks ...[]string) string {
	return directives(slices.Concat(blocks...)...)
}

// limitRefill is the most a bucket of the given per-minute capacity can
// refill in d: capacity/60 per second.
func limitRefill(capacity int, d time.Duration) int {
	return int(math.Floor(float64(capacity) / 60 * d.Seconds()))
}

// awaitLimitCalls waits up to two seconds until the upstream has seen at
// least n calls.
func awaitLimitCalls(t *testing.T, g *gateway, n int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); len(g.mock.Calls()) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("upstream saw %d calls, waited for %d", len(g.mock.Calls()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// awaitLimitSettled waits until the module has logged n calls as done:
// settlement follows the log line at once. An SDK stream ends at its last
// event, a moment before the gateway has finished the call.
func awaitLimitSettled(t *testing.T, g *gateway, n int) {
	t.Helper()
	if got := len(g.logEntries(t, "api_call_success", n)); got < n {
		t.Fatalf("%d calls logged as done, want %d", got, n)
	}
	time.Sleep(20 * time.Millisecond)
}

// checkLimitRetryHints checks the wait hints of a 429 that waiting can
// cure: retry-after-ms above 0, retry-after whole seconds from 1 to 60 that
// agree with it, and x-should-retry: true.
func checkLimitRetryHints(t *testing.T, what string, h http.Header) (retry time.Duration) {
	t.Helper()
	ms, err := strconv.ParseInt(h.Get("Retry-After-Ms"), 10, 64)
	if err != nil || ms <= 0 {
		t.Errorf("%s: retry-after-ms %q, want a positive integer", what, h.Get("Retry-After-Ms"))
	}
	secs, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 60 {
		t.Errorf("%s: retry-after %q, want whole seconds from 1 to 60", what, h.Get("Retry-After"))
	} else if want := max(int((ms+999)/1000), 1); ms > 0 && secs != min(want, 60) {
		t.Errorf("%s: retry-after %d disagrees with retry-after-ms %d", what, secs, ms)
	}
	if v := h.Get("X-Should-Retry"); v != "true" {
		t.Errorf("%s: x-should-retry %q, want true", what, v)
	}
	return time.Duration(ms) * time.Millisecond
}

// checkAnthropicLimited wants the SDK's 429 rate_limit_error with the
// zone's state in anthropic-ratelimit-requests-*.
func checkAnthropicLimited(t *testing.T, what string, err error, rpm int) *anthropic.Error {
	t.Helper()
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests || aErr.Type() != "rate_limit_error" {
		t.Fatalf("%s: got %v, want the SDK's 429 rate_limit_error", what, err)
	}
	h := aErr.Response.Header
	checkLimitRetryHints(t, what, h)
	if v := h.Get("Anthropic-Ratelimit-Requests-Limit"); v != strconv.Itoa(rpm) {
		t.Errorf("%s: anthropic-ratelimit-requests-limit %q, want %d", what, v, rpm)
	}
	if v := h.Get("Anthropic-Ratelimit-Requests-Remaining"); v != "0" {
		t.Errorf("%s: anthropic-ratelimit-requests-remaining %q, want 0", what, v)
	}
	reset, perr := time.Parse(time.RFC3339, h.Get("Anthropic-Ratelimit-Requests-Reset"))
	if now := time.Now(); perr != nil || !reset.After(now) || reset.After(now.Add(61*time.Second)) {
		t.Errorf("%s: anthropic-ratelimit-requests-reset %q, want an RFC 3339 time within the next minute (%v)", what, h.Get("Anthropic-Ratelimit-Requests-Reset"), perr)
	}
	return aErr
}

// checkOpenAILimited wants the SDK's 429 rate_limit_exceeded of the given
// type with the zone's state in x-ratelimit-*-requests.
func checkOpenAILimited(t *testing.T, what string, err error, kind string, rpm int) *openai.Error {
	t.Helper()
	var oErr *openai.Error
	if !errors.As(err, &oErr) || oErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%s: got %v, want the SDK's 429", what, err)
	}
	if oErr.Code != "rate_limit_exceeded" || oErr.Type != kind {
		t.Errorf("%s: code %q type %q, want rate_limit_exceeded and %s", what, oErr.Code, oErr.Type, kind)
	}
	h := oErr.Response.Header
	if rpm == 0 {
		return oErr
	}
	checkLimitRetryHints(t, what, h)
	if v := h.Get("X-Ratelimit-Limit-Requests"); v != strconv.Itoa(rpm) {
		t.Errorf("%s: x-ratelimit-limit-requests %q, want %d", what, v, rpm)
	}
	if v := h.Get("X-Ratelimit-Remaining-Requests"); v != "0" {
		t.Errorf("%s: x-ratelimit-remaining-requests %q, want 0", what, v)
	}
	reset, perr := time.ParseDuration(h.Get("X-Ratelimit-Reset-Requests"))
	if perr != nil || reset <= 0 || reset > time.Minute {
		t.Errorf("%s: x-ratelimit-reset-requests %q, want a duration such as 5.9s within a minute (%v)", what, h.Get("X-Ratelimit-Reset-Requests"), perr)
	}
	return oErr
}

// limitedCounts reads caddy_ai_resilience_limited_requests_total for a
// zone from the metrics page, by outcome.
func limitedCounts(t *testing.T, url, zone string) map[string]float64 {
	t.Helper()
	page := scrape(t, url)
	out := make(map[string]float64)
	for _, outcome := range []string{"admitted", "queued", "rejected"} {
		out[outcome] = page[`caddy_ai_resilience_limited_requests_total{outcome="`+outcome+`",zone="`+zone+`"}`]
	}
	return out
}

// limitBurst sends n requests at once and returns their errors, in order,
// and how long the burst took.
func limitBurst(n int, send func(i int) error) ([]error, time.Duration) {
	errs := make([]error, n)
	began := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = send(i) })
	}
	wg.Wait()
	return errs, time.Since(began)
}

// checkBurstAdmitted checks a burst of 2N against `rpm N`: about N reach
// the upstream, never more than N plus the refill during the burst (+1),
// and exactly those succeed.
func checkBurstAdmitted(t *testing.T, g *gateway, errs []error, took time.Duration, rpm int) (refused []error) {
	t.Helper()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			refused = append(refused, err)
		}
	}
	calls := len(g.mock.Calls())
	bound := rpm + limitRefill(rpm, took) + 1
	if calls < rpm || calls > bound {
		t.Errorf("burst of %d against rpm %d (%v): upstream saw %d calls, want %d to %d", len(errs), rpm, took, calls, rpm, bound)
	}
	if ok != calls {
		t.Errorf("%d requests succeeded but the upstream saw %d calls", ok, calls)
	}
	if len(refused) == 0 {
		t.Fatalf("no request of the burst was refused")
	}
	return refused
}

const limitBurstN = 10

func TestLimitBurstAnthropic(t *testing.T) {
	g := startGateway(t, limitOptions(limitBlock("burst-anthropic", "rpm "+itoa(limitBurstN))), mockprovider.Options{})
	client := g.anthropicClient()
	errs, took := limitBurst(2*limitBurstN, func(int) error {
		_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"))
		return err
	})
	for i, err := range checkBurstAdmitted(t, g, errs, took, limitBurstN) {
		aErr := checkAnthropicLimited(t, fmt.Sprintf("refusal %d", i+1), err, limitBurstN)
		if msg := gjson.Get(aErr.RawJSON(), "error.message").Str; gjson.Get(aErr.RawJSON(), "type").Str != "error" || !strings.Contains(msg, "burst-anthropic") {
			t.Errorf("refusal %d: body %s, want the anthropic error shape naming the zone", i+1, aErr.RawJSON())
		}
	}
}

func TestLimitBurstOpenAI(t *testing.T) {
	g := startGateway(t, limitOptions(limitBlock("burst-openai", "rpm "+itoa(limitBurstN))), mockprovider.Options{})
	client := g.openaiClient()
	errs, took := limitBurst(2*limitBurstN, func(int) error {
		_, err := client.Chat.Completions.New(context.Background(), chatParams("gpt-4o-mini"))
		return err
	})
	for i, err := range checkBurstAdmitted(t, g, errs, took, limitBurstN) {
		oErr := checkOpenAILimited(t, fmt.Sprintf("refusal %d", i+1), err, "requests", limitBurstN)
		if !strings.Contains(oErr.Message, "burst-openai") {
			t.Errorf("refusal %d: message %q does not name the zone", i+1, oErr.Message)
		}
	}
}

// TestLimitWaitLetsShortBurstThrough: `rpm 60` refills one request a
// second, so with `wait 3s` a burst of 63 all get through, the last three
// queued up to about three seconds, and reach the upstream only then;
// without wait some of the same burst are refused.
func TestLimitWaitLetsShortBurstThrough(t *testing.T) {
	const rpm, burst = 60, 63
	send := func(g *gateway) ([]error, time.Duration) {
		client := g.anthropicClient()
		return limitBurst(burst, func(int) error {
			_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"))
			return err
		})
	}

	t.Run("wait 3s", func(t *testing.T) {
		g := startGateway(t, limitOptions(limitBlock("wait-queue", "rpm 60", "wait 3s")), mockprovider.Options{})
		errs, took := send(g)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
		if took > 4500*time.Millisecond {
			t.Errorf("the burst took %v, want about 3 s", took)
		}
		calls := g.mock.Calls()
		if len(calls) != burst {
			t.Fatalf("upstream saw %d calls, want %d", len(calls), burst)
		}
		// The queued requests reach the upstream only once admitted: the
		// last about 3 s after the first, less the refill while the burst
		// was being sent.
		first, last := calls[0].At, calls[0].At
		for _, c := range calls {
			first, last = minTime(first, c.At), maxTime(last, c.At)
		}
		if span := last.Sub(first); span < 1500*time.Millisecond {
			t.Errorf("the upstream saw the whole burst within %v: the queued requests were not held until admitted", span)
		}
	})

	t.Run("no wait", func(t *testing.T) {
		g := startGateway(t, limitOptions(limitBlock("wait-none", "rpm 60")), mockprovider.Options{})
		errs, took := send(g)
		refused := 0
		for i, err := range errs {
			if err != nil {
				checkAnthropicLimited(t, fmt.Sprintf("request %d", i+1), err, rpm)
				refused++
			}
		}
		if refused == 0 {
			t.Errorf("without wait all %d requests got through in %v, want some refused", burst, took)
		}
		if n, bound := len(g.mock.Calls()), rpm+limitRefill(rpm, took)+1; n > bound {
			t.Errorf("upstream saw %d calls, want at most %d", n, bound)
		}
	})
}

// TestLimitWaitClientLeavesQueue: a queued request whose client goes away
// leaves at once, never reaches the upstream, and gives its place back, so
// the request behind it waits only as long as it would have without it.
func TestLimitWaitClientLeavesQueue(t *testing.T) {
	g := startGateway(t, limitOptions(limitBlock("wait-leave", "tpm 6000", "rpm 2", "wait 3s")), mockprovider.Options{})
	ctx := context.Background()
	client := g.anthropicClient()
	// The first holds nearly all 6000 tokens upstream for a second; 300 more
	// need a little over a second of refill (100 a second).
	first := holdBucket(ctx, client)
	awaitLimitCalls(t, g, 1)
	leaving, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := client.Messages.New(leaving, haikuWithCap(300))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued request whose client left: got %v", err)
	}
	if took := time.Since(began); took > 600*time.Millisecond {
		t.Errorf("the queued request ended %v after it was sent; its client left after 200ms", took)
	}
	// Had the one that left kept its place, this one would need more than
	// four seconds of token refill, and a third request of rpm 2 twenty
	// seconds, beyond wait 3s: it would be refused.
	if _, err := client.Messages.New(ctx, haikuWithCap(300)); err != nil {
		t.Fatalf("request behind the one that left: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2: the request that left never reaches it", n)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestLimitKeyIsolation: a keyed zone gives each key its own buckets.
func TestLimitKeyIsolation(t *testing.T) {
	g := startGateway(t, limitOptions(limitBlock("key-teams", "key {http.request.header.X-Team}", "rpm 3")), mockprovider.Options{})
	client := g.anthropicClient()
	send := func(team string) error {
		_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), anthropicHeader("X-Team", team))
		return err
	}
	for _, team := range []string{"a", "b"} {
		for i := range 3 {
			if err := send(team); err != nil {
				t.Fatalf("team %s, request %d: %v", team, i+1, err)
			}
		}
		checkAnthropicLimited(t, "team "+team+", request 4", send(team), 3)
	}
	if n := len(g.mock.Calls()); n != 6 {
		t.Errorf("upstream saw %d calls, want 3 per team", n)
	}
	for _, c := range g.mock.Calls() {
		if c.Header.Get("X-Team") == "" {
			t.Errorf("the key header did not reach the upstream")
		}
	}
}

// TestLimitOversizeRequestNeverFits: a request estimated above the zone's
// whole token bucket can never be admitted, so it is refused for good.
func TestLimitOversizeRequestNeverFits(t *testing.T) {
	g := startGateway(t, limitOptions(limitBlock("oversize-tpm", "tpm 1000")), mockprovider.Options{})
	ctx := context.Background()
	ac, oc := g.anthropicClient(), g.openaiClient()
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 450) // about 20 KB
	checkNever := func(what string, h http.Header, msg string) {
		t.Helper()
		if v := h.Get("X-Should-Retry"); v != "false" {
			t.Errorf("%s: x-should-retry %q, want false: no wait will help", what, v)
		}
		if !strings.Contains(msg, "never") || !strings.Contains(msg, "1000") {
			t.Errorf("%s: message %q, want it to say the request can never fit the 1000 tokens a minute", what, msg)
		}
	}

	params := haiku("claude-haiku-4-5")
	params.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))}
	_, err := ac.Messages.New(ctx, params)
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests || aErr.Type() != "rate_limit_error" {
		t.Fatalf("anthropic: got %v, want the SDK's 429 rate_limit_error", err)
	}
	checkNever("anthropic", aErr.Response.Header, gjson.Get(aErr.RawJSON(), "error.message").Str)
	if v := aErr.Response.Header.Get("Anthropic-Ratelimit-Tokens-Limit"); v != "1000" {
		t.Errorf("anthropic: anthropic-ratelimit-tokens-limit %q, want 1000", v)
	}

	chat := chatParams("gpt-4o-mini")
	chat.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}
	_, err = oc.Chat.Completions.New(ctx, chat)
	oErr := checkOpenAILimited(t, "openai", err, "tokens", 0)
	checkNever("openai", oErr.Response.Header, oErr.Message)
	noCalls(t, g, "oversize requests")

	// The refusals took nothing: a small request still fits.
	if _, err := ac.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
		t.Fatalf("a small request after the oversize ones: %v", err)
	}
}

// settleParams is a Messages request that reserves its small input plus
// max_tokens 2000: two such reservations do not fit in `tpm 3000`, while
// the mock's real usage of one is a few dozen tokens.
func settleParams() anthropic.MessageNewParams {
	p := haiku("claude-haiku-4-5")
	p.MaxTokens = 2000
	return p
}

// TestLimitSettleFreesCapacity: after a call the zone keeps only its real
// usage, not the reservation, so a second request fits; while the first
// still holds its reservation, the second does not.
func TestLimitSettleFreesCapacity(t *testing.T) {
	g := startGateway(t, limitOptions(limitBlock("settle-tpm", "tpm 3000")), mockprovider.Options{})
	ctx := context.Background()
	client := g.anthropicClient()

	// One after the other: each reserves about 2020 of 3000 and settles to
	// its usage. Without settlement the second finds about 980 left (plus
	// 50 a second of refill) and is refused.
	for i := range 3 {
		msg, err := client.Messages.New(ctx, settleParams())
		if err != nil {
			t.Fatalf("sequential request %d: %v (settlement did not free the reservation)", i+1, err)
		}
		if used := msg.Usage.InputTokens + msg.Usage.OutputTokens; used <= 0 || used > 200 {
			t.Fatalf("the mock reported usage %d; the test needs a small usage far below the reservation", used)
		}
	}

	// Negative control: the same requests at once, the first held upstream
	// for 500 ms. The second is refused while the first holds its
	// reservation, and fits again once the first has settled.
	g.mock.Reset()
	done := make(chan error, 1)
	go func() {
		_, err := client.Messages.New(ctx, settleParams(), script("200:delay=500ms"))
		done <- err
	}()
	awaitLimitCalls(t, g, 1)
	_, err := client.Messages.New(ctx, settleParams())
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests || aErr.Type() != "rate_limit_error" {
		t.Fatalf("concurrent second request: got %v, want 429 rate_limit_error while the first holds its reservation", err)
	}
	h := aErr.Response.Header
	checkLimitRetryHints(t, "concurrent second request", h)
	if rem, err := strconv.Atoi(h.Get("Anthropic-Ratelimit-Tokens-Remaining")); err != nil || rem >= 2000 || h.Get("Anthropic-Ratelimit-Tokens-Limit") != "3000" {
		t.Errorf("concurrent second request: tokens limit %q remaining %q, want 3000 and below 2000", h.Get("Anthropic-Ratelimit-Tokens-Limit"), h.Get("Anthropic-Ratelimit-Tokens-Remaining"))
	}
	if err := <-done; err != nil {
		t.Fatalf("slow first request: %v", err)
	}
	if _, err := client.Messages.New(ctx, settleParams()); err != nil {
		t.Fatalf("after the slow request settled: %v", err)
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2: the refused request never reaches it", n)
	}
}

// TestLimitStreamsSettle: streams settle to the usage they report, and the
// client sees exactly the stream it asked for: an OpenAI chat stream that
// did not ask for usage gets none, although the gateway asked the upstream
// for it.
func TestLimitStreamsSettle(t *testing.T) {
	g := startGateway(t, limitOptions(limitBlock("settle-streams", "tpm 3000")), mockprovider.Options{})
	ctx := context.Background()
	ac, oc := g.anthropicClient(), g.openaiClient()
	logged := 0
	// followUp sends a request that fits only when the stream before it
	// settled.
	followUp := func(what string) {
		t.Helper()
		logged++
		awaitLimitSettled(t, g, logged)
		if _, err := ac.Messages.New(ctx, settleParams()); err != nil {
			t.Fatalf("after the %s: %v (the stream's reservation was not settled)", what, err)
		}
		logged++
	}

	t.Run("anthropic", func(t *testing.T) {
		stream := ac.Messages.NewStreaming(ctx, settleParams(), script("200:events=7"))
		var msg anthropic.Message
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		stream.Close()
		if want := mockText("claude-haiku-4-5", 7); len(msg.Content) != 1 || msg.Content[0].Text != want || msg.Usage.OutputTokens != 7 {
			t.Errorf("stream content %+v usage %+v, want %q and 7 output tokens", msg.Content, msg.Usage, want)
		}
		followUp("anthropic stream")
	})

	for _, includeUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("openai chat include_usage=%v", includeUsage), func(t *testing.T) {
			g.mock.Reset()
			var sent sentBody
			params := chatParams("gpt-4o-mini")
			params.MaxCompletionTokens = openai.Int(2000)
			if includeUsage {
				params.StreamOptions.IncludeUsage = openai.Bool(true)
			}
			stream := oc.Chat.Completions.NewStreaming(ctx, params, openaiScript("200:events=6"), sent.openai())
			var acc openai.ChatCompletionAccumulator
			usageChunks := 0
			for stream.Next() {
				chunk := stream.Current()
				if len(chunk.Choices) == 0 || gjson.Get(chunk.RawJSON(), "usage").IsObject() {
					usageChunks++
				}
				acc.AddChunk(chunk)
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			stream.Close()
			if want := mockText("gpt-4o-mini", 6); len(acc.Choices) != 1 || acc.Choices[0].Message.Content != want {
				t.Errorf("stream content %+v, want %q", acc.Choices, want)
			}
			if want := map[bool]int{false: 0, true: 1}[includeUsage]; usageChunks != want {
				t.Errorf("the client saw %d usage chunks, want %d: exactly what it asked for", usageChunks, want)
			}
			if includeUsage && acc.Usage.CompletionTokens != 6 {
				t.Errorf("usage %+v, want 6 completion tokens", acc.Usage)
			}
			if gjson.GetBytes(sent.b, "stream_options").Exists() != includeUsage {
				t.Fatalf("the SDK sent %s", sent.b)
			}
			call := onlyCall(t, g)
			if !gjson.GetBytes(call.Body, "stream_options.include_usage").Bool() {
				t.Errorf("upstream body %s, want stream_options.include_usage: true for settlement", call.Body)
			}
			followUp("openai chat stream")
		})
	}
}

// TestLimitPaceUpstream: an upstream response saying nothing remains until
// a reset holds the gateway's next request until then (pace_upstream on,
// the default), or not at all (off), or refuses it at once when the reset
// is beyond max_wait.
func TestLimitPaceUpstream(t *testing.T) {
	ctx := context.Background()
	// gap sends a request the upstream answers with remaining 0 and a
	// reset in 2 s, then a plain one, and returns how long after the first
	// the second reached the upstream, with the second's error.
	gapOpenAI := func(t *testing.T, g *gateway) (time.Duration, error) {
		t.Helper()
		client := g.openaiClient()
		if _, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"), openaiScript("200:reset=2")); err != nil {
			t.Fatal(err)
		}
		_, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"))
		calls := g.mock.Calls()
		if len(calls) < 2 {
			return 0, err
		}
		return calls[1].At.Sub(calls[0].At), err
	}

	t.Run("on", func(t *testing.T) {
		g := startGateway(t, "", mockprovider.Options{})
		gap, err := gapOpenAI(t, g)
		if err != nil {
			t.Fatal(err)
		}
		if gap < 1900*time.Millisecond || gap > 2700*time.Millisecond {
			t.Errorf("openai: the next request reached the upstream %v after the one that spent the limit, want about 2 s", gap)
		}
		// Anthropic resets are RFC 3339 whole seconds, which the mock
		// rounds up: the hold is 2 to 3 s.
		g.mock.Reset()
		client := g.anthropicClient()
		if _, err := client.Messages.New(ctx, haiku("claude-haiku-4-5"), script("200:reset=2")); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
			t.Fatal(err)
		}
		calls := g.mock.Calls()
		if gap := calls[1].At.Sub(calls[0].At); gap < 1900*time.Millisecond || gap > 3500*time.Millisecond {
			t.Errorf("anthropic: the next request reached the upstream %v after the one that spent the limit, want 2 to 3 s", gap)
		}
	})

	t.Run("off", func(t *testing.T) {
		g := startGateway(t, directives("pace_upstream off"), mockprovider.Options{})
		gap, err := gapOpenAI(t, g)
		if err != nil {
			t.Fatal(err)
		}
		if gap > 500*time.Millisecond {
			t.Errorf("with pace_upstream off the next request waited %v, want none", gap)
		}
	})

	t.Run("max_wait below the reset", func(t *testing.T) {
		g := startGateway(t, directives("max_wait 1s"), mockprovider.Options{})
		began := time.Now()
		_, err := gapOpenAI(t, g)
		if took := time.Since(began); took > 800*time.Millisecond {
			t.Errorf("the refusal took %v, want it at once", took)
		}
		oErr := checkOpenAILimited(t, "paced", err, "requests", 0)
		if retry := checkLimitRetryHints(t, "paced", oErr.Response.Header); retry < time.Second || retry > 2*time.Second {
			t.Errorf("retry-after-ms %v, want the upstream's reset of about 2 s", retry)
		}
		if n := len(g.mock.Calls()); n != 1 {
			t.Errorf("upstream saw %d calls, want only the first", n)
		}
	})
}

// startLimitRoutes runs Caddy with one handle_path route per options, at
// /a/*, /b/*, …, each with its own ai_resilience handler and a
// reverse_proxy to one mock provider.
func startLimitRoutes(t *testing.T, options ...string) *gateway {
	t.Helper()
	mock := mockprovider.New(mockprovider.Options{})
	upstream := httptest.NewServer(mock)
	t.Cleanup(upstream.Close)
	var site strings.Builder
	for i, o := range options {
		fmt.Fprintf(&site, `	handle_path /%c/* {
		ai_resilience {
%s
		}
		reverse_proxy %s
	}
`, 'a'+i, o, upstream.URL)
	}
	return &gateway{Server: startSite(t, site.String()), mock: mock}
}

// TestLimitZoneSharedAcrossHandlers: two handlers naming the same zone
// count their requests together.
func TestLimitZoneSharedAcrossHandlers(t *testing.T) {
	options := limitOptions([]string{"provider anthropic"}, limitBlock("shared-zone", "rpm 4"))
	g := startLimitRoutes(t, options, options)
	ctx := context.Background()
	a := g.anthropicClient(anthropicoption.WithBaseURL(g.URL + "/a"))
	b := g.anthropicClient(anthropicoption.WithBaseURL(g.URL + "/b"))
	for i, c := range []*anthropic.Client{&a, &b, &a, &b} {
		if _, err := c.Messages.New(ctx, haiku("claude-haiku-4-5")); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	for name, c := range map[string]*anthropic.Client{"a": &a, "b": &b} {
		_, err := c.Messages.New(ctx, haiku("claude-haiku-4-5"))
		checkAnthropicLimited(t, "fifth request on route "+name, err, 4)
	}
	if n := len(g.mock.Calls()); n != 4 {
		t.Errorf("upstream saw %d calls, want 4", n)
	}
}

// TestLimitPacedRefusalGivesBackZone: a request the gateway refuses because
// the upstream said its limit is spent never goes upstream, so it gives
// back what it took in its zones (Admission.Cancel). Route b shares the
// zone; its requests carry another API key, whose limit the upstream did
// not report spent, so it shows the zone's state without waiting for the
// upstream's reset.
func TestLimitPacedRefusalGivesBackZone(t *testing.T) {
	options := limitOptions([]string{"max_wait 1s"}, limitBlock("paced-refund", "rpm 2"))
	g := startLimitRoutes(t, options, options)
	ctx := context.Background()
	a := g.openaiClient(openaioption.WithBaseURL(g.URL + "/a/v1"))
	b := g.openaiClient(openaioption.WithBaseURL(g.URL+"/b/v1"), openaioption.WithAPIKey("sk-test-another-key"))
	if _, err := a.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"), openaiScript("200:reset=5")); err != nil {
		t.Fatal(err)
	}
	_, err := a.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"))
	if oErr := checkOpenAILimited(t, "paced request", err, "requests", 0); !strings.Contains(oErr.Message, "upstream") {
		t.Errorf("paced request: message %q, want the upstream's spent limit", oErr.Message)
	}
	// rpm 2: the first request and this one. Had the paced refusal kept
	// its place, this would be the third.
	if _, err := b.Chat.Completions.New(ctx, chatParams("gpt-4o-mini")); err != nil {
		t.Fatalf("request on the other route: %v (the paced refusal kept its place in the zone)", err)
	}
	_, err = b.Chat.Completions.New(ctx, chatParams("gpt-4o-mini"))
	checkOpenAILimited(t, "third admitted request", err, "requests", 2)
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2", n)
	}
}

// TestLimitMetricsByZoneAndOutcome: limited_requests_total counts each
// request once by zone and outcome: admitted at once, queued, rejected.
func TestLimitMetricsByZoneAndOutcome(t *testing.T) {
	// The handler is in two zones; only the first limits anything here.
	const zone, roomy = "metrics-tpm", "metrics-roomy"
	g := startGatewayWith(t, setup{
		options: limitOptions(limitBlock(zone, "tpm 6000", "wait 3s"), limitBlock(roomy, "rpm 1000")),
		site:    "\tmetrics /metrics",
	})
	before := limitedCounts(t, g.URL+"/metrics", zone)
	beforeRoomy := limitedCounts(t, g.URL+"/metrics", roomy)
	ctx := context.Background()
	client := g.anthropicClient()

	// The first takes nearly the whole bucket and holds it for a second
	// upstream. The second needs about 130 tokens more than are left: at
	// 100 a second it queues for a little over a second. The third needs
	// nearly the whole bucket again, a minute away: refused.
	first := holdBucket(ctx, client)
	awaitLimitCalls(t, g, 1)
	second := make(chan error, 1)
	secondSent := time.Now()
	go func() {
		_, err := client.Messages.New(ctx, haikuWithCap(300))
		second <- err
	}()
	_, err := client.Messages.New(ctx, haikuWithCap(5800))
	var aErr *anthropic.Error
	if !errors.As(err, &aErr) || aErr.StatusCode != http.StatusTooManyRequests {
		t.Errorf("third request: got %v, want 429", err)
	}
	for what, ch := range map[string]<-chan error{"first": first, "second": second} {
		if err := <-ch; err != nil {
			t.Fatalf("%s request: %v", what, err)
		}
	}
	calls := g.mock.Calls()
	if len(calls) != 2 {
		t.Fatalf("upstream saw %d calls, want 2", len(calls))
	}
	if queued := calls[1].At.Sub(secondSent); queued < 500*time.Millisecond {
		t.Errorf("the queued request reached the upstream %v after it was sent, want it held until admitted", queued)
	}

	after := limitedCounts(t, g.URL+"/metrics", zone)
	for _, outcome := range []string{"admitted", "queued", "rejected"} {
		if d := after[outcome] - before[outcome]; d != 1 {
			t.Errorf(`limited_requests_total{zone=%q,outcome=%q} grew by %v, want 1`, zone, outcome, d)
		}
	}
	// Every zone a request passes counts it; the one that refused counts
	// the refusal.
	afterRoomy := limitedCounts(t, g.URL+"/metrics", roomy)
	for outcome, want := range map[string]float64{"admitted": 1, "queued": 1, "rejected": 0} {
		if d := afterRoomy[outcome] - beforeRoomy[outcome]; d != want {
			t.Errorf(`limited_requests_total{zone=%q,outcome=%q} grew by %v, want %v`, roomy, outcome, d, want)
		}
	}
}

// TestLimitLogHasZoneAndKeyHash: the "rate limited" line names the zone and
// a hash of the key, never the key, which may be a credential.
func TestLimitLogHasZoneAndKeyHash(t *testing.T) {
	const zone, secret = "log-keys", "team-secret-123"
	g := startGateway(t, limitOptions(limitBlock(zone, "key {http.request.header.X-Team}", "rpm 1")), mockprovider.Options{})
	client := g.anthropicClient()
	for _, team := range []string{secret, "another-team"} {
		for i := range 2 {
			_, err := client.Messages.New(context.Background(), haiku("claude-haiku-4-5"), anthropicHeader("X-Team", team))
			if i == 0 && err != nil {
				t.Fatalf("%s: first request: %v", team, err)
			}
			if i == 1 {
				checkAnthropicLimited(t, team+": second request", err, 1)
			}
		}
	}
	lines := g.logEntries(t, "rate limited", 2)
	if len(lines) != 2 {
		t.Fatalf("%d rate limited lines, want 2: %v", len(lines), lines)
	}
	hashes := map[string]bool{}
	for _, l := range lines {
		h, _ := l["key_hash"].(string)
		if l["zone"] != zone || h == "" || strings.Contains(h, "team") {
			t.Errorf("rate limited line %v, want zone %s and a key_hash", l, zone)
		}
		hashes[h] = true
	}
	if len(hashes) != 2 {
		t.Errorf("key hashes %v, want one per key", hashes)
	}
	for _, l := range g.Logs(t, moduleLogger) {
		if line := fmt.Sprint(l); strings.Contains(line, secret) {
			t.Errorf("the module logged the raw key: %s", line)
		}
	}
	// Only the module logs the refused requests; whatever else logs (the
	// proxy's debug lines for the admitted one) is not the module's.
	for line := range strings.Lines(g.RawLogs(t)) {
		if strings.Contains(line, secret) && strings.Contains(line, moduleLogger) {
			t.Errorf("log line with the raw key: %s", line)
		}
	}
}

// TestLimitCountsPassthroughRequests: requests the gateway does not handle
// (here GET /v1/models) still count against a zone's rpm, since they load
// the same upstream as any other request, and nothing else is done to
// them.
func TestLimitCountsPassthroughRequests(t *testing.T) {
	g := startGateway(t, directives("limit passthrough-zone {", "rpm 2", "}"), mockprovider.Options{})
	var statuses []int
	for i := 0; i < 3; i++ {
		resp, err := testcaddy.Client.Get(g.URL + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if i == 2 && resp.Header.Get("X-Ratelimit-Limit-Requests") != "2" {
			t.Errorf("refusal headers %v, want x-ratelimit-limit-requests: 2", resp.Header)
		}
	}
	if statuses[2] != http.StatusTooManyRequests || statuses[0] == http.StatusTooManyRequests || statuses[1] == http.StatusTooManyRequests {
		t.Errorf("statuses %v, want the third refused with 429", statuses)
	}
	if n := len(g.mock.Calls()); n != 2 {
		t.Errorf("upstream saw %d calls, want 2", n)
	}
}

// haikuWithCap is a small Messages request asking for up to n output tokens,
// which a tpm zone reserves on top of the input estimate.
func haikuWithCap(n int64) anthropic.MessageNewParams {
	p := haiku("claude-haiku-4-5")
	p.MaxTokens = n
	return p
}

// holdBucket sends a request reserving nearly a 6000-token bucket, which the
// upstream holds for a second; its result arrives on the returned channel.
func holdBucket(ctx context.Context, client anthropic.Client) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := client.Messages.New(ctx, haikuWithCap(5800), script("200:delay=1s"))
		done <- err
	}()
	return done
}
