// Command caddy is Caddy with its standard modules and ai_resilience, built
// from this checkout with a plain `go build ./cmd/caddy`, no xcaddy needed.
// The fleet tests build it once per run to start several Caddy processes,
// since Caddy's configuration is one per process. For a release binary use
// xcaddy (see xcaddy.sh).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ai-resilience/caddy-ai-resilience"
)

func main() {
	caddycmd.Main()
}
