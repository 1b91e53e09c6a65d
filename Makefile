# Two commands matter: `make run` and `make test`. Both create .venv on first use and
# install exactly what the committed locks in requirements/ name (with hashes), so a fresh
# clone next year gets what CI got today. `make lock` refreshes the locks on purpose;
# `make test-latest` runs the suite against the newest releases to see drift early.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
LATEST ?= 0
UV_COMPILE = $(BIN)/uv pip compile --generate-hashes --universal --python-version 3.11 --no-header -q

ifeq ($(LATEST),1)
INSTALL_RUN = $(BIN)/python -m pip install --quiet --upgrade -e '.[redis]' uvicorn fastapi websockets
INSTALL_DEV = $(BIN)/python -m pip install --quiet --upgrade -e '.[dev,redis]'
else
INSTALL_RUN = $(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/run.lock \
	&& $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
INSTALL_DEV = $(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/dev.lock \
	&& $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
endif

.PHONY: run test test-latest lock lint typecheck pytest js js-build system-deps bench bench-fanout bench-memory bench-echo bench-rooms bench-sse bench-browser clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "asgi_rt needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml requirements/run.lock | $(BIN)/python
	$(INSTALL_RUN)
	touch $@

$(VENV)/.installed-dev: pyproject.toml requirements/dev.lock | $(BIN)/python
	$(INSTALL_DEV)
	touch $@ $(VENV)/.installed

# HOST/PORT also reach the app: its Origin allowlist is the page it serves (http://HOST:PORT).
run: $(VENV)/.installed js-build
	HOST=$(HOST) PORT=$(PORT) $(BIN)/uvicorn examples.fastapi_app.app:app --host $(HOST) --port $(PORT)

test: lint typecheck js pytest

# The browser client (clients/js, npm asgi-rt-client): install from its lock, generate-check
# its protocol types against the Python schema, bundle, unit-test. The browser tests in
# pytest load clients/js/dist. Node and npm come from the machine; under CI=true a missing
# one fails, elsewhere it is skipped with a note.
# What the example pages load (/asgi-rt-client.js): the bundle alone, for `make run`.
js-build:
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

js:
	@if ! command -v npm >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then echo "npm is not installed (Debian: nodejs npm)"; exit 1; fi; \
	  echo "note: npm is not installed; the browser client is not built or tested"; \
	else \
	  cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build \
	    && npx vitest run --reporter=dot; \
	fi

# The same suite on the newest releases of everything (not the lock): drift seen on purpose.
test-latest:
	$(MAKE) test VENV=.venv-latest LATEST=1

# Re-resolve the locks (after changing dependencies in pyproject.toml or requirements/*.in).
lock: $(VENV)/.installed-dev
	$(UV_COMPILE) pyproject.toml requirements/tools.in --extra dev --extra redis \
		-o requirements/dev.lock
	$(UV_COMPILE) pyproject.toml requirements/tools.in requirements/run.in --extra redis \
		-o requirements/run.lock

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict src

pytest: $(VENV)/.installed-dev system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Programs the tests run for real (each test starts its own on a free port): redis-server
# and redis-cli (the Redis backplane, single node and a 3-master cluster), nats-server (the
# NATS JetStream backplane), Prometheus (the Grafana dashboard test), Chromium (the example
# page, driven by Playwright: it cannot download its own browser here) and nginx (the
# README's Deploying section). Installed from Debian's packages when missing and we are
# root; otherwise say what to install. Under CI=true a package still missing is an error.
SYSTEM_PACKAGES := redis-server:redis-server redis-cli:redis-tools nats-server:nats-server \
	prometheus:prometheus chromium:chromium nginx:nginx
MISSING_SYSTEM = for pair in $(SYSTEM_PACKAGES); do \
	  cmd=$${pair%%:*}; pkg=$${pair\#\#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/bin/$$cmd ] || [ -x /usr/sbin/$$cmd ] \
	    || printf ' %s' $$pkg; \
	done
system-deps:
	@missing="$$($(MISSING_SYSTEM))"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  missing="$$($(MISSING_SYSTEM))"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$CI" = true ]; then \
	    echo "error: Debian's packages$$missing could not be installed (CI=true)" >&2; exit 1; \
	  fi; \
	  echo "note: install Debian's packages:$$missing (tests that need them are skipped)"; \
	fi

bench: bench-fanout bench-memory bench-echo bench-rooms bench-sse

bench-fanout: $(VENV)/.installed-dev
	$(BIN)/python -m bench.fanout

bench-memory: $(VENV)/.installed-dev
	$(BIN)/python -m bench.memory

bench-echo: $(VENV)/.installed-dev
	$(BIN)/python -m bench.echo

bench-rooms: $(VENV)/.installed-dev system-deps
	$(BIN)/python -m bench.rooms

bench-sse: $(VENV)/.installed-dev
	$(BIN)/python -m bench.sse

# Not part of `make bench` (needs npm and Chromium): asgi-rt-client vs socket.io-client.
bench-browser: $(VENV)/.installed-dev js-build system-deps
	cd bench/js && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python -m bench.browser_client

clean:
	rm -rf $(VENV) .venv-latest .mypy_cache .ruff_cache .pytest_cache
