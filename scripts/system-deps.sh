#!/usr/bin/env bash
# System programs, installed with apt when missing: those given as arguments (each a command named
# like its Debian package), else every program the test suite starts (scripts/system-programs.txt:
# `COMMAND [PACKAGE]` per line). Installs the missing ones when we are root; otherwise says what to
# install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
declare -a wanted=()
if [ $# -gt 0 ]; then
  for command in "$@"; do wanted+=("$command $command"); done
else
  while read -r command package _; do
    case "$command" in ''|'#'*) continue ;; esac
    wanted+=("$command ${package:-$command}")
  done < "$here/system-programs.txt"
fi
missing=()
for entry in "${wanted[@]}"; do
  read -r command package <<<"$entry"
  # nginx and friends live in /usr/sbin, which a non-login PATH may lack.
  PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 || missing+=("$package")
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
