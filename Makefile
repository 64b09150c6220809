# `make test` is the project's test command (README, CI); `make demo` runs the balancer.
# Two interpreters, each with one end of the uvicorn range pyproject.toml supports: the default
# python3 (3.11) with its OLDEST uvicorn in $(VENV), pyenv's 3.13 with the NEWEST in $(VENV_NEW).
VENV ?= .venv
PYTHON ?= python3
VENV_NEW ?= .venv-3.13
PYTHON_NEW ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13) python3.13)
UVICORN_OLDEST := $(shell sed -n 's/.*"uvicorn\[standard\]>=\([0-9.]*\),.*/\1/p' pyproject.toml)
# A representative part of the suite run with lb on uvicorn's own protocol (bare
# `uvicorn lb.app:app`, lb mounted in a host app): the same pipeline, tests/conftest.py --lb-http.
PLAIN_ASGI_TESTS ?= tests/integration/test_proxy.py tests/integration/test_streaming.py \
	tests/integration/test_retries.py tests/integration/test_upstream_answers.py \
	tests/integration/test_cache.py tests/integration/test_ratelimit.py

# Two pytest processes (pytest-xdist): the tests mostly wait on real sockets, so one process left
# a 2-core machine half idle (load ~1); the whole suite went from ~12 to ~7 minutes. Every test
# starts its own servers on free ports, so none shares state with another process's.
PYTEST_PROCS ?= -n 2

.PHONY: test test-new test-plain-asgi demo lint deps install install-new bench conformance

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]' 'uvicorn[standard]==$(UVICORN_OLDEST)'
	touch $@

$(VENV_NEW)/.installed: pyproject.toml
	$(PYTHON_NEW) -m venv $(VENV_NEW)
	$(VENV_NEW)/bin/pip install -q --upgrade pip
	$(VENV_NEW)/bin/pip install -q -e '.[test]'
	$(VENV_NEW)/bin/pip install -q --upgrade 'uvicorn[standard]'  # the newest lb's range allows
	touch $@

install: $(VENV)/.installed

install-new: $(VENV_NEW)/.installed

deps:
	./scripts/system-deps.sh

# Lint, types and the whole suite on 3.11 with the oldest uvicorn; then test-new.
test: deps install install-new
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest $(PYTEST_PROCS)
	$(MAKE) test-new test-plain-asgi

# 3.13 with the newest uvicorn: the conformance files of lb's protocol, then (test-plain-asgi) a
# part of the proxy tests on uvicorn's own protocol. The whole suite runs on 3.11 only: unit and
# integration alone took 7.5 min on 3.13, two runs would not fit CI's 15 minutes on 2 cores.
NEW_TESTS ?= tests/unit/test_cycle.py tests/unit/test_no_private_uvicorn.py \
	tests/integration/test_server.py tests/integration/test_edge_limits.py \
	tests/integration/test_proxy_protocol.py tests/integration/test_tls.py \
	tests/integration/test_admin_listen.py
test-new: deps install-new
	$(VENV_NEW)/bin/python -m pytest -p no:cacheprovider $(PYTEST_PROCS) $(NEW_TESTS)

test-plain-asgi: deps install-new
	$(VENV_NEW)/bin/python -m pytest -p no:cacheprovider $(PYTEST_PROCS) --lb-http=httptools $(PLAIN_ASGI_TESTS)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

demo: install
	$(VENV)/bin/lb demo

# docs/performance.md: nginx, HAProxy, a naive aiohttp proxy and lb side by side under wrk (~15 min).
bench: install
	./scripts/system-deps.sh nginx haproxy wrk
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python bench/run_benchmarks.py $(BENCH_ARGS)

# docs/caching.md: the cache scored with http-tests/cache-tests, memory and redis stores. Installs
# the suite from the npm registry (a 2021 snapshot, ~1 min in all) unless SUITE_DIR names a
# checkout of its repository (~2.5 min).
conformance: install
	./scripts/system-deps.sh npm redis-server
	./scripts/conformance.sh memory $(CONFORMANCE_ARGS)
	./scripts/conformance.sh redis $(CONFORMANCE_ARGS)
