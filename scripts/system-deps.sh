#!/usr/bin/env bash
# System packages, each named like the command it provides: those given as arguments, else what
# the test suite needs (a real redis-server and a headless Chromium). Installs the missing ones
# with apt when we are root; otherwise says what to install.
set -euo pipefail
[ $# -eq 0 ] && set -- redis-server chromium
missing=()
for package in "$@"; do
  command -v "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
