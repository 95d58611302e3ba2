#!/usr/bin/env bash
# An HTTP/2 client from outside the project, which never retries, through
# upgrades: bench/cmd/nghttpcheck runs nghttp (nghttp2-client) over three
# h2c and three TLS connections through each of 5 upgrades of a molt
# service, one run per upgrade (nghttp opens no new connection after a
# GOAWAY), and fails if any stream whose HEADERS were sent got no
# response, if nghttp failed otherwise, or if a process was left behind;
# then the same through 5 takeovers (each generation a new process that
# takes over through the takeover socket). About 15 s. Installs nghttp2-client with apt if it is missing.
set -euo pipefail
. "$(dirname "$0")/need.sh" # before the cd: $0 may be relative
cd "$(dirname "$0")/../bench"
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

need nghttp:nghttp2-client
nghttp --version

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/nghttpcheck" ./cmd/nghttpcheck
"$bin/nghttpcheck" -upgrades 5 -conns 3 -proto h2c,tls -timeout 110s
"$bin/nghttpcheck" -upgrades 5 -conns 3 -proto h2c,tls -timeout 110s -takeover
