# Switchyard's make targets. `make test` is the README's test command and what
# CI runs; `make build` is the exact build line the Dockerfile uses.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run test build deps node-deps vet fuzz bench

run:
	go run . -config config.yaml

# Installs memcached and Node.js when they are missing (the integration tests
# start their own memcached processes on free 127.0.0.1 ports), then runs
# every test with the race detector.
test: deps node-deps
	go test -race -timeout 15m ./...

deps:
	@scripts/install-deps.sh

# The Node SDK tests (integration/node/*.test.mjs, run by `go test` through
# integration/sdk's TestNodeSDK) need Node.js and the locked npm packages:
# `npm ci` runs when node_modules is missing or package-lock.json changed.
node-deps: deps integration/node/node_modules/.package-lock.json

integration/node/node_modules/.package-lock.json: integration/node/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make test: the Node SDK tests need Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix integration/node --no-audit --no-fund

build:
	VERSION=$(VERSION) scripts/build.sh bin/switchyard

vet:
	gofmt -l . | (! grep .) && go vet ./...

# Short coverage-guided runs of every fuzz target.
# -fuzzminimizetime keeps a run from stalling while it shrinks large inputs.
FUZZ = go test -run '^$$' -fuzztime 30s -fuzzminimizetime 2s -fuzz
fuzz:
	$(FUZZ) FuzzCanonicalize ./cachekey
	$(FUZZ) FuzzDerive ./cachekey
	$(FUZZ) FuzzMembers ./jsonscan
	$(FUZZ) FuzzReader ./sse
	$(FUZZ) FuzzDeleteMember ./jsonscan
	$(FUZZ) FuzzRewriteModel ./openai
	$(FUZZ) FuzzStreamToCompletion ./openai
	$(FUZZ) FuzzRoundTrip ./openai
	$(FUZZ) FuzzClassify ./verdict
	$(FUZZ) FuzzDecodeEntry ./cache
	$(FUZZ) FuzzRead ./upload

# The performance harness (issue 6): builds switchyard from the tree, starts a
# fake upstream, a bare fasthttp pass-through and memcached on 127.0.0.1, and
# prints per-scenario figures and the ratios against the targets (~2 min).
# Hot-path allocations: go test -run '^$$' -bench . -benchmem ./proxy ./upstream ./openai ./sse ./cachekey ./jsonscan
bench:
	go run ./integration/bench -duration 10s
