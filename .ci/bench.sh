#!/usr/bin/env bash
# Smoke run of the drain benchmark (bench/, its own module): checks of the
# module, then 10 upgrades of a real molt server under load from 16 clients
# of each kind and 4 long streams (about 15 s). Exits non-zero if any request
# of any kind failed, an upgrade or a drain failed, or a process was left
# behind. wrk is not used here; the full run is in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../bench"
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
if command -v staticcheck >/dev/null; then staticcheck ./...; fi
go test ./...

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/drainbench" ./cmd/drainbench
"$bin/drainbench" -upgrades 10 -clients 16 -streams 4 -steady 2s -wrk=false -duration 1m -timeout 2m
