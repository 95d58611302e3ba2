#!/usr/bin/env bash
# Smoke runs of the benchmarks (bench/, its own module): checks of the
# module, then
#  1. the side-by-side comparison, shortened to about 30 s: molt, tableflip,
#     a naive restart and an SO_REUSEPORT overlap, 5 upgrades each under 16
#     clients of each HTTP/1.1 kind and 16 streams of each counting HTTP/2
#     kind (h2count, h2c and TLS, which never resends a stream); fails if
#     any request or stream to molt failed, molt refused a connection, any
#     upgrade failed or any process was left behind (the other systems'
#     failed requests are what the comparison measures);
#  2. the molt-only drain benchmark with every kind of client, Go's HTTP/2
#     client, the counting HTTP/2 clients and streams included, then two
#     outside clients that never retry: wrk (keep-alive, then
#     Connection: close) through upgrades of a fresh server, and h2load
#     through 3 upgrades (about 30 s), failing on any failed request or
#     any wrk socket error or non-2xx answer; then all of it again with
#     molt upgraded by takeovers (-takeover: each generation a process
#     the driver starts, which takes over through the takeover socket);
#  3. the soak, shortened to 50 upgrades (and 25 failed ones) under load
#     (about 10 s): fails on any failed request, or if the serving
#     process's descriptors, goroutines or RSS do not return to baseline;
#  4. the hand-off micro-benchmarks, once each (-benchtime 1x), so that
#     they keep working.
# The full runs are in BENCHMARKS.md. Installs wrk and nghttp2-client (for
# h2load) with apt if they are missing.
set -euo pipefail
. "$(dirname "$0")/need.sh" # before the cd: $0 may be relative
cd "$(dirname "$0")/../bench"
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
if command -v staticcheck >/dev/null; then staticcheck ./...; fi
for os in darwin freebsd windows; do GOOS=$os go vet ./... >/dev/null; done
go test ./...

need wrk:wrk h2load:nghttp2-client
wrk -v 2>&1 | head -1 || true # wrk prints its version, then its usage

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/drainbench" ./cmd/drainbench
"$bin/drainbench" -compare -upgrades 5 -clients 16 -interval 500ms -steady 1s -duration 30s -timeout 5m \
  -chart "$bin/compare.png"
for how in "" -takeover; do
  "$bin/drainbench" $how -upgrades 10 -clients 16 -streams 4 -steady 2s -duration 1m \
    -wrk -wrk-duration 5s -h2load 3 -timeout 5m
done
go run ./cmd/soak -upgrades 50
go test -run '^$' -bench . -benchtime 1x ./handoff
