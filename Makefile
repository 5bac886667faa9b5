# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_HOME := $(CURDIR)/.demo
STAMP_CORE := $(VENV)/.installed-core
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_CORE): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_CORE)

## Set up, build a self-contained demo appliance under ./.demo and open the console.
demo: $(STAMP_CORE)
	$(BIN)/appliance --home $(DEMO_HOME) demo setup
	$(BIN)/appliance --home $(DEMO_HOME) tui

## Set up with the dev extras and run the whole test suite.
test: $(STAMP_DEV)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q
	$(BIN)/ruff check appliance tui tests packaging

lint: $(STAMP_DEV)
	$(BIN)/ruff check appliance tui tests packaging

bench: $(STAMP_DEV)
	$(BIN)/python tests/perf/bench_audit.py

clean:
	rm -rf $(VENV) $(DEMO_HOME)
