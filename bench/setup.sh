#!/usr/bin/env bash
# What `make bench` needs beyond the venv: wrk, the load generator (Debian/Ubuntu package).
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
if command -v apt-get >/dev/null 2>&1; then
  echo "installing wrk"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
else
  echo "make bench needs wrk (https://github.com/wg/wrk): install it with your package manager" >&2
  exit 1
fi
