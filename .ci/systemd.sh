#!/usr/bin/env bash
# CI step for package systemd: installs systemd >= 253 (Debian's backports, through
# ../shared/tools/install-systemd.sh, which CI checks out beside this repository) and runs the
# real-systemd test: systemd as PID 1 of new PID and mount namespaces, driven with systemctl
# through nsenter, under loopback load (reloads through ExecReload=molt upgrade, 10 failed and 10
# good reloads with systemctl's exit codes, socket activation, the file descriptor store across
# kill -9 and restart, a graceful stop, stops bounded by TimeoutStopSec= and one extended on
# purpose, the notify-reload and PID file variants), and TestExampleUnits (the example units'
# required lines).
# The namespace gets a private /run and never runs tmpfiles, so the shared /tmp is left alone.
# Needs root, unshare and nsenter (util-linux), Go, and gcc for -race. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

tools=../shared/tools
if [ ! -f "$tools/install-systemd.sh" ]; then
  echo "systemd.sh: $tools/install-systemd.sh not found (expected ../shared beside the checkout)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "systemd.sh: must run as root (installs systemd, boots it in a namespace)" >&2
  exit 1
fi

printf '\n== install systemd >= 253\n'
bash "$tools/install-systemd.sh"

printf '\n== real-systemd test\n'
MOLT_SYSTEMD_TEST=1 go test -race -count=1 -v -run '^(TestRealSystemd|TestExampleUnits)$' ./systemd/
