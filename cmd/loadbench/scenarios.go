package main

import (
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/testbody"
)

// scenario is one kind of request and the targets it is judged by.
type scenario struct {
	name string
	desc string
	api  testbody.API
	body []byte
	// script is the X-Mock-Script of the load and latency phases: how the
	// mock answers.
	script string
	// stream marks an event stream; streamEnd is how a complete one ends
	// (one the gateway had to cut ends with its in-band error instead).
	stream    bool
	streamEnd string

	// Targets; zero means none.
	minRatio  float64 // B/A requests per second under load
	maxAddCPU float64 // added CPU µs per request under load
	noAddTTFB bool    // no added time to first byte
}

// pacedStream is the stream of the time-to-first-byte phase. Back to back,
// the mock writes all its events in about a millisecond on the CPU it
// shares with the client, so the client's first read waits for the mock to
// yield, holds many events, and its time measures the scheduler, not the
// proxy. With a pause between events (the mock sleeps 100µs, which the
// runtime rounds up to about 1ms) the first event is read on its own. The
// time to first byte does not depend on what follows the first event, so
// two deltas are enough, and short streams give more of them per turn.
const pacedStream = "200:events=2:interval=100us"

const kib = 1 << 10

var scenarios = []scenario{
	{
		name: "json1k", desc: "Anthropic Messages, 1 KB request, ~1 KB JSON answer",
		body:   testbody.Body{Size: kib, System: "You are a helpful assistant."}.Bytes(),
		script: "200:bytes=1000",
		// +10 µs of CPU on a bare proxy's ~115 µs is about 0.92× its
		// throughput once the gateway's core is saturated.
		minRatio: 0.92, maxAddCPU: 10,
	},
	{
		name: "json100k", desc: "Anthropic Messages, 100 KB request, ~1 KB JSON answer",
		body:      testbody.Body{Size: 100 * kib, System: "You are a helpful assistant."}.Bytes(),
		script:    "200:bytes=1000",
		maxAddCPU: 20,
	},
	{
		name: "stream", desc: "Anthropic Messages, 1 KB request, 200-delta event stream",
		body:   testbody.Body{Size: kib, Stream: true, System: "You are a helpful assistant."}.Bytes(),
		script: "200:events=200",
		stream: true, streamEnd: "event: message_stop\n",
		minRatio: 0.97, noAddTTFB: true,
	},
	{
		// Every chunk of a Chat stream is JSON the gateway reads (its type
		// and end are inside), and the usage chunk is asked for.
		name: "stream_openai", desc: "OpenAI Chat Completions, 1 KB request, 200-chunk event stream with include_usage",
		api:    testbody.Chat,
		body:   testbody.Body{API: testbody.Chat, Size: kib, Stream: true, IncludeUsage: true, System: "You are a helpful assistant."}.Bytes(),
		script: "200:events=200",
		stream: true, streamEnd: "data: [DONE]\n",
		minRatio: 0.97, noAddTTFB: true,
	},
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

func findScenario(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.name == name {
			return s, true
		}
	}
	return scenario{}, false
}

// headers returns the request headers of the scenario's API, with script
// as X-Mock-Script. The keys are not real.
func (s scenario) headers(script string) map[string]string {
	h := map[string]string{
		"Content-Type":  "application/json",
		"User-Agent":    "loadbench",
		"X-Mock-Script": script,
	}
	if s.api == testbody.Messages {
		h["Anthropic-Version"] = "2023-06-01"
		h["X-Api-Key"] = "sk-ant-loadbench-not-a-real-key"
	} else {
		h["Authorization"] = "Bearer sk-loadbench-not-a-real-key"
	}
	return h
}

// clientTimeout bounds one request of the Go client.
const clientTimeout = 30 * time.Second
