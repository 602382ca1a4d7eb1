#!/usr/bin/env bash
# Builds a Caddy binary with ai_resilience from this checkout, with xcaddy.
#
#   ./xcaddy.sh                 # writes ./caddy
#   OUTPUT=/usr/local/bin/caddy CADDY_VERSION=v2.11.9 ./xcaddy.sh
#   ./xcaddy.sh --with github.com/mholt/caddy-ratelimit   # extra xcaddy flags pass through
#
# It first tries the plain local form, `--with MODULE=./`. Some module
# proxies refuse version look-ups for a path they do not know (403 rather
# than 404), which breaks that form; then it retries with an explicit
# pseudo-version, which needs no look-up.
set -euo pipefail
cd "$(dirname "$0")"

MODULE=github.com/ai-resilience/caddy-ai-resilience
CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
XCADDY_VERSION=${XCADDY_VERSION:-v0.4.5}
OUTPUT=${OUTPUT:-./caddy}

if ! command -v xcaddy >/dev/null 2>&1; then
	echo "installing xcaddy $XCADDY_VERSION"
	go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
	PATH="$(go env GOPATH)/bin:$PATH"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "building Caddy $CADDY_VERSION with $MODULE from $(pwd) (a first build takes a few minutes)"
if xcaddy build "$CADDY_VERSION" --with "$MODULE=./" --output "$OUTPUT" "$@" >"$log" 2>&1; then
	:
else
	if grep -qE '403|410|404|400|not available' "$log"; then
		echo "the module proxy refused to look up $MODULE; building with an explicit pseudo-version instead"
		xcaddy build "$CADDY_VERSION" --with "$MODULE@v0.0.0-00010101000000-000000000000=./" --output "$OUTPUT" "$@"
	else
		cat "$log" >&2
		exit 1
	fi
fi
"$OUTPUT" version
"$OUTPUT" list-modules | grep -q '^http.handlers.ai_resilience$' || { echo "the built binary lacks http.handlers.ai_resilience" >&2; exit 1; }
echo "built $OUTPUT with http.handlers.ai_resilience"
