# Switchyard's make targets. `make test` is the README's test command and what
# CI runs; `make build` is the exact build line the Dockerfile uses.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run test build deps vet fuzz bench

run:
	go run . -config config.yaml

# Installs memcached when it is missing (the integration tests start their
# own memcached processes on free 127.0.0.1 ports), then runs every test with
# the race detector.
test: deps
	go test -race -timeout 12m ./...

deps:
	@command -v memcached >/dev/null 2>&1 || scripts/install-deps.sh

build:
	VERSION=$(VERSION) scripts/build.sh bin/switchyard

vet:
	gofmt -l . | (! grep .) && go vet ./...

# Short coverage-guided runs of every fuzz target.
fuzz:
	go test -run '^$$' -fuzz FuzzCanonicalize -fuzztime 30s ./cachekey
	go test -run '^$$' -fuzz FuzzReader -fuzztime 30s ./sse
