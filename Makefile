# Every target creates the virtualenv on first use, so `make demo` and `make test` work on a
# fresh machine with nothing but Python 3.11+.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	cd notebooks && ../$(BIN)/jupyter lab --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root,) 01_quickstart.ipynb

lint: $(STAMP)
	$(BIN)/ruff check kernel_ext widgets tests bench
	$(BIN)/ruff format --check kernel_ext widgets tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests drive Debian's Chromium (never a downloaded browser).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# The PostgreSQL tests start a throwaway cluster of Debian's PostgreSQL (tests/pg_cluster.py) on
# their own port and socket directory, beside any cluster the package's service runs. Installed:
# the target is initdb's path, an existing file (nothing to do); missing: a phony that installs.
POSTGRESQL := $(or $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb)),install-postgresql)
.PHONY: install-postgresql
$(POSTGRESQL):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql

unit: $(STAMP) $(CHROMIUM) $(POSTGRESQL)
	CHROMIUM=$(CHROMIUM) $(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP) $(CHROMIUM) $(POSTGRESQL)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
