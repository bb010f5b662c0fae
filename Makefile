# One way to run things, locally and in CI. Every target sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# Tests run in four processes (pytest-xdist): most of the suite waits on subprocesses, servers and
# databases (about a third of two cores busy with one worker), so four workers overlap those waits.
# Work stealing evens out the long tests. Measured on 2 cores: 3 min 28 s with 4, 6 min 25 s with 2.
PYTEST_WORKERS ?= 4

# The chart library, from npm (package.json + package-lock.json), copied where the server serves it.
WEB_VENDOR := src/barfill/web/static/vendor/lightweight-charts.mjs
CHROMIUM   := /usr/bin/chromium

.PHONY: demo test test-all soak lint bench install clean web browser

$(WEB_VENDOR): package.json package-lock.json
	npm ci --no-audit --no-fund
	mkdir -p $(dir $@)
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.mjs $@

web: $(WEB_VENDOR)

## Debian's Chromium for the browser tests (CI runs as root on a fresh machine).
browser:
	test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: SQLite + synthetic provider, no keys, no network.
demo: $(STAMP) $(WEB_VENDOR)
	$(BIN)/barfill demo

## Lint, type-check, then the test suite (short forms of soak/chaos included).
test: lint $(WEB_VENDOR) browser
	$(BIN)/python -m pytest -m "not slow" -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## Long soak/chaos suites.
soak: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info node_modules src/barfill/web/static/vendor
