#!/usr/bin/env bash
# CI step for the control plane: vet, build and test the Prometheus example
# (a module of its own, checked with its committed go.sum), and fuzz the
# control protocol's request decoder for a short while. The control and
# cmd/molt tests themselves run with everything else (go test -race ./...).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

step() { printf '\n== %s\n' "$*"; }

step "examples/prometheus: vet, build, test"
(
  cd examples/prometheus
  unformatted=$(gofmt -l .)
  if [ -n "$unformatted" ]; then
    echo "gofmt would change:"; echo "$unformatted"; exit 1
  fi
  go vet ./...
  go build ./...
  go test ./...
)

step "fuzz the control request decoder (short)"
go test -run='^$' -fuzz='^FuzzDecodeRequest$' -fuzztime=20000x ./control
