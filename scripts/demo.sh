#!/usr/bin/env bash
# `make run`: builds Caddy with ai_resilience, starts the bundled mock
# provider and Caddy with examples/demo.Caddyfile, sends a few requests that
# show retries and fallback in Caddy's log, then keeps serving on
# http://127.0.0.1:8080 until Ctrl-C (or exits at once with DEMO_ONCE=1).
set -euo pipefail
cd "$(dirname "$0")/.."

CADDY=${CADDY:-./caddy}
GW=http://127.0.0.1:8080
MOCK_ADDR=127.0.0.1:9990

[ -x "$CADDY" ] || ./xcaddy.sh
mkdir -p bin
go build -o bin/mockprovider ./cmd/mockprovider

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

bin/mockprovider -addr "$MOCK_ADDR" -fail-models "claude-opus-4-5=529,gpt-5.1=503" -quiet &
pids+=($!)
"$CADDY" run --config examples/demo.Caddyfile --adapter caddyfile &
pids+=($!)

for _ in $(seq 1 100); do
	curl -s -o /dev/null "$GW/" && break
	sleep 0.1
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
anthropic() { # $1: model, $2: extra curl args
	curl -sS "$GW/v1/messages" -H 'content-type: application/json' -H 'x-api-key: demo-key' \
		-H 'anthropic-version: 2023-06-01' "${@:2}" \
		-d '{"model":"'"$1"'","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
	echo
}

say "1. A plain call: one attempt, api_call_success"
anthropic claude-haiku-4-5

say "2. The upstream answers 429 (retry-after: 1) and then 529 before succeeding: the gateway retries, the client sees one success"
anthropic claude-haiku-4-5 -H 'X-Mock-Script: 429:retry-after=1,529,200'

say "3. claude-opus-4-5 is overloaded (529 every time): after its retries each request falls back to claude-sonnet-4-5; after 5 failures its circuit opens and the third request skips it without an upstream call"
for _ in 1 2 3; do anthropic claude-opus-4-5; done

say "4. OpenAI: gpt-5.1 answers 503; the request falls back to gpt-5-mini"
curl -sS "$GW/v1/chat/completions" -H 'content-type: application/json' -H 'authorization: Bearer demo-key' \
	-d '{"model":"gpt-5.1","messages":[{"role":"user","content":"Hello"}]}'
echo

say "5. A stream that the upstream cuts after 3 events: the gateway ends it with an in-band error event"
curl -sS -N "$GW/v1/messages" -H 'content-type: application/json' -H 'x-api-key: demo-key' \
	-H 'X-Mock-Script: 200:events=6:end=3' \
	-d '{"model":"claude-haiku-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hello"}]}' | tail -n 3

say "6. Every attempt fails: the client gets the upstream's last error with x-should-retry: false"
curl -sS -D - -o /dev/null "$GW/v1/messages" -H 'content-type: application/json' -H 'x-api-key: demo-key' \
	-H 'X-Mock-Script: 500' \
	-d '{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}' | grep -iE '^(HTTP|x-should-retry)'

say "7. Team 'blue' sends a burst of 25 requests against its zone of 20 requests a minute: the rest get 429 at the gateway, never reaching the upstream"
for i in $(seq 1 25); do
	curl -sS -o /dev/null -w '%{http_code}\n' "$GW/v1/messages" -H 'content-type: application/json' -H 'x-api-key: demo-key' \
		-H 'X-Team: blue' -d '{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
done | sort | uniq -c
curl -sS -D - -o /dev/null "$GW/v1/messages" -H 'content-type: application/json' -H 'x-api-key: demo-key' -H 'X-Team: blue' \
	-d '{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}' | grep -iE '^(HTTP|retry-after|x-should-retry|anthropic-ratelimit-requests)'

if [ -n "${DEMO_ONCE:-}" ]; then
	exit 0
fi
say "Caddy is serving on $GW in front of the mock provider; try your own requests. Ctrl-C stops."
wait
