#!/usr/bin/env bash
# Scores lb's cache with the public HTTP caching test suite http-tests/cache-tests (cache-tests.fyi):
# its origin server is lb's only backend, its client runs against lb, and the result is counted as
# cache-tests.fyi counts it (scripts/conformance_score.mjs). Not part of `make test` or CI.
#
#   scripts/conformance.sh [memory|redis] [CACHE-KEY=VALUE ...]
#
# SUITE_DIR: a checkout of the suite (its `npm install` done); default: the npm package
# http-cache-tests installed into .conformance/ (the registry has only 0.4.5, a 2021 snapshot
# that predates RFC 9111: score the upstream repository for numbers comparable to
# cache-tests.fyi, see docs/caching.md). Results go to .conformance/results-<store>.json, lb's log
# to .conformance/lb-<store>.log.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
store="${1:-memory}"
shift || true
work="$root/.conformance"
mkdir -p "$work"
for program in node npm; do
  command -v "$program" >/dev/null || { echo "please install $program (scripts/system-deps.sh npm)" >&2; exit 1; }
done
if [ -z "${SUITE_DIR:-}" ]; then
  SUITE_DIR="$work/node_modules/http-cache-tests"
  if [ ! -d "$SUITE_DIR" ]; then
    (cd "$work" && npm install --silent --no-audit --no-fund --omit=dev http-cache-tests >/dev/null)
  fi
fi
if [ -f "$SUITE_DIR/test-engine/cli.mjs" ]; then engine="$SUITE_DIR/test-engine"; else engine="$SUITE_DIR"; fi  # 0.4.5: no test-engine/

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

origin_port="$(free_port)"
(cd "$SUITE_DIR" && npm_config_protocol=http npm_config_port="$origin_port" \
  npm_config_pidfile="$work/origin.pid" exec node "$engine/server/server.mjs") >"$work/origin.log" 2>&1 &
pids+=($!)

redis_line=""
if [ "$store" = redis ]; then
  command -v redis-server >/dev/null || { echo "please install redis-server" >&2; exit 1; }
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
  pids+=($!)
  redis_line="  redis_url: redis://127.0.0.1:$redis_port/0"
fi
{
  echo "pools: {origin: {backends: [\"http://127.0.0.1:$origin_port\"]}}"
  echo "cache:"
  echo "  store: $store"
  [ -n "$redis_line" ] && echo "$redis_line"
  for option in "$@"; do echo "  ${option%%=*}: ${option#*=}"; done
  echo "logging: {access_log: true, format: text, level: info}"
} >"$work/lb-$store.yaml"
lb_port="$(free_port)"
"$root/.venv/bin/lb" serve -c "$work/lb-$store.yaml" --host 127.0.0.1 --port "$lb_port" \
  >"$work/lb-$store.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$lb_port/" && break
  sleep 0.1
done

started=$(date +%s)
# The base URL has no trailing slash: the client appends paths that start with one.
(cd "$SUITE_DIR" && npm_config_base="http://127.0.0.1:$lb_port" npm_package_config_id="" \
  exec node --no-warnings "$engine/cli.mjs") >"$work/results-$store.json"
echo "store=$store suite=$(node -p "require('$SUITE_DIR/package.json').version") $(($(date +%s) - started))s"
node "$root/scripts/conformance_score.mjs" "$SUITE_DIR" "$work/results-$store.json"
echo "lb: $(grep -c Traceback "$work/lb-$store.log" || true) tracebacks in .conformance/lb-$store.log"
