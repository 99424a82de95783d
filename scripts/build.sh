#!/bin/sh
# The one build line for release binaries, used by `make build` and the
# Dockerfile alike: static, reproducible paths, version stamped.
set -eu
out=${1:-bin/switchyard}
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION:-dev}" -o "$out" .
