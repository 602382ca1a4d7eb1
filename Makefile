# ai_resilience: the README's two commands are `make run` and `make test`.
GO ?= go
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a target at the deadline with "context deadline exceeded" and no
# crasher (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 200000x

.PHONY: run test build bench bench-storm fuzz vet

## run: build Caddy with the module and demo it in front of the mock provider
run:
	./scripts/demo.sh

## test: the whole test suite, with the race detector
test: vet
	$(GO) test -race -count=1 ./...

vet:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...

## build: ./caddy with ai_resilience, via xcaddy
build:
	./xcaddy.sh

## bench: hot-path benchmarks (the fleet store's against a local redis-server), then
## bare Caddy vs Caddy with the module, each pinned to its own core apart from wrk
## and the mock (cmd/loadbench, which builds cmd/caddy and cmd/mockprovider first):
## about 4 minutes; LOADBENCH_FLAGS='-rounds 7 -duration 5s' for longer
## (wrk: apt-get install -y wrk; without it a Go client generates the load)
BENCHTIME ?= 1s
LOADBENCH_FLAGS ?=
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./handlers/ ./policy/ ./fleet/
	$(GO) build -o bin/loadbench ./cmd/loadbench
	bin/loadbench $(LOADBENCH_FLAGS)

## bench-storm: the storm guards under a production fault mix and a sustained
## outage (STORM_OUTAGE long), through a real Caddy, with the numbers printed
STORM_OUTAGE ?= 30s
bench-storm:
	$(GO) test -count=1 -v -run '^TestStorm(FaultMix|Outage)$$' ./integration/ -args -storm.report -storm.seeds=5 -storm.outage=$(STORM_OUTAGE)

## fuzz: each fuzz target for FUZZTIME executions (seed corpora run in `make test`)
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done
