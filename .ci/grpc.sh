#!/usr/bin/env bash
# gRPC through upgrades, measured by load generators from outside the
# project: examples/grpc (served through molt, drained with grpc-go's
# GracefulStop) is upgraded 50 times under each load by its cmd/grpcload,
# which fails on any non-OK status. On loopback only; about a minute
# after the installs (which take a couple of minutes on a fresh machine).
#  1. fortio v1.68.2 (built with grpc-go v1.71.1): counts each call's
#     status as the application sees it; any non-OK fails the run.
#  2. ghz v0.93.0, the newest ghz the module proxy serves (built with
#     grpc-go v1.34.0): it counts statuses from grpc-go's stats handler,
#     which in that grpc-go reports an RPC's first attempt even when a
#     transparent retry then succeeded, so its "Unavailable" counts are
#     first attempts; the run fails if any RPC it counted was not answered
#     by a server (examples/grpc/README.md has the details).
#  3. the project's own counting client (grpc-go v1.85.0), for comparison.
# Needs only Go, gcc, git and python3.
set -euo pipefail
cd "$(dirname "$0")/../examples/grpc"

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
# The generators are installed at fixed versions into a directory of this
# run, so a different ghz or fortio in PATH is never the one measured.
GOBIN="$tools" go install fortio.org/fortio@v1.68.2
GOBIN="$tools" go install github.com/bojand/ghz/cmd/ghz@v0.93.0

export GOFLAGS="${GOFLAGS:-} -mod=readonly"
go build -o "$tools/grpcload" ./cmd/grpcload
go build -o "$tools/server" .

for load in fortio ghz builtin; do
  printf '\n== %s: 50 upgrades under load\n' "$load"
  "$tools/grpcload" -load "$load" -bin "$tools/$load" -server "$tools/server" -upgrades 50
done
