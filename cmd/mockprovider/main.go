// Command mockprovider runs the mock LLM provider as a standalone server, for
// the demo and for load tests. It serves the Anthropic Messages API and the
// OpenAI Chat Completions, Responses, Completions and Embeddings APIs, and
// fails on demand per model (flags) or per request (the x-mock-script header;
// see package internal/mockprovider).
//
//	mockprovider -addr 127.0.0.1:9990 -fail-models claude-opus-4-5=529 -flaky claude-sonnet-4-5=0.5
//	mockprovider -mix rate_limited=0.3,retry_after_max=1s,overloaded=0.1,seed=1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ai-resilience/caddy-ai-resilience/internal/mockprovider"
)

// shutdownGrace is how long in-flight requests get to finish on SIGINT or
// SIGTERM. Their contexts are cancelled at once, so hung and slow requests
// end well within it.
const shutdownGrace = 5 * time.Second

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mockprovider:", err)
		os.Exit(1)
	}
}

// run parses the flags and serves until a signal arrives.
func run() error {
	addr := flag.String("addr", "127.0.0.1:9990", "address to listen on")
	failModels := flag.String("fail-models", "", "models that always fail, as model=status,... (e.g. claude-opus-4-5=529,gpt-x=503)")
	flaky := flag.String("flaky", "", "models that fail at random with 529/503, as model=probability,... (e.g. claude-sonnet-4-5=0.5)")
	mix := flag.String("mix", "", "fail a share of other requests at random, e.g. rate_limited=0.3,retry_after_max=1s,overloaded=0.1,seed=1")
	quiet := flag.Bool("quiet", false, "do not log one line per request")
	flag.Parse()

	// Nothing reads the calls a standalone server would record, and under
	// load they would grow without bound.
	opts := mockprovider.Options{NoRecord: true}
	var err error
	if opts.FailModels, err = parsePairs(*failModels, strconv.Atoi); err != nil {
		return fmt.Errorf("parsing -fail-models: %w", err)
	}
	if opts.Flaky, err = parsePairs(*flaky, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }); err != nil {
		return fmt.Errorf("parsing -flaky: %w", err)
	}
	if *mix != "" {
		m, err := mockprovider.ParseFaultMix(*mix)
		if err != nil {
			return fmt.Errorf("parsing -mix: %w", err)
		}
		opts.Mix = &m
	}
	if err := opts.Validate(); err != nil {
		return err
	}
	if !*quiet {
		opts.Logger = log.New(os.Stderr, "mockprovider: ", log.LstdFlags|log.Lmicroseconds)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *addr, err)
	}
	srv := &http.Server{
		Handler:           mockprovider.New(opts),
		ReadHeaderTimeout: 10 * time.Second,
		// Request contexts end with the signal, so hung requests let go.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	fmt.Printf("mock provider listening on http://%s\n", ln.Addr())

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// parsePairs parses `name=value,name=value` into a map, converting each value
// with parse. The empty string gives a nil map.
func parsePairs[V any](s string, parse func(string) (V, error)) (map[string]V, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]V{}
	for _, pair := range strings.Split(s, ",") {
		i := strings.LastIndex(pair, "=")
		if i <= 0 {
			return nil, fmt.Errorf("entry %q is not model=value", pair)
		}
		v, err := parse(pair[i+1:])
		if err != nil {
			return nil, fmt.Errorf("parsing value of entry %q: %w", pair, err)
		}
		out[strings.TrimSpace(pair[:i])] = v
	}
	return out, nil
}
