# `make test` is the project's test command (README, CI); `make demo` runs the balancer.
VENV ?= .venv
PYTHON ?= python3

.PHONY: test demo lint deps install bench conformance

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

deps:
	./scripts/system-deps.sh

test: deps install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

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
