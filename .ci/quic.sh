#!/usr/bin/env bash
# The quic module (QUIC and HTTP/3 through upgrades), in its own module so
# quic-go never enters molt's go.mod: vet, staticcheck and cross-compiles
# of it, its tests under -race (HTTP/3 clients that never retry through 50
# upgrades, a rollback, and ngtcp2's gtlsclient, Debian's ngtcp2-client,
# through 20 upgrades), a short fuzz of its header parser, and the
# side-by-side run with and without forwarding whose figures BENCHMARKS.md
# reports (it fails only if a request with forwarding failed). About 6 min.
# Installs ngtcp2-client with apt if it is missing.
set -euo pipefail
. "$(dirname "$0")/need.sh" # before the cd: $0 may be relative
cd "$(dirname "$0")/../quic"
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export PATH="$(go env GOPATH)/bin:$PATH"

need gtlsclient:ngtcp2-client

go vet ./...
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
staticcheck ./...
for os in linux darwin freebsd openbsd netbsd windows; do
  GOOS=$os GOARCH=amd64 go build ./...
  GOOS=$os GOARCH=amd64 go vet ./... >/dev/null
done
MOLTQUIC_REQUIRE_OUTSIDE=1 go test -race -count=1 ./...
go test -run='^$' -fuzz='^FuzzDestConnID$' -fuzztime=20000x .
go test -race -count=1 -timeout 30m -run '^TestHTTP3Compare$' -quic.compare -quic.upgrades=50 -quic.plain-upgrades=10 -v . | grep -v '^=== RUN'
