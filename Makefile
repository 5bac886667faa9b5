# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_HOME := $(CURDIR)/.demo
STAMP_CORE := $(VENV)/.installed-core
STAMP_DEV := $(VENV)/.installed-dev
# The scripts in packaging/ have no .py suffix: ruff checks them only when named.
LINTED := appliance tui tests packaging/verify-audit-export packaging/bootstrap-pip

.PHONY: demo test lint bench clean

# A Debian Python without python3-venv has venv but no ensurepip: the environment is then
# made without pip, and packaging/bootstrap-pip fetches pip from PyPI (hash-checked).
$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: no python3 found (install Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV) && \
		echo "python3 -m venv failed (no ensurepip without python3-venv?): making it" \
			"without pip and fetching pip from PyPI" && \
		$(PYTHON) -m venv --without-pip $(VENV) && $(BIN)/python packaging/bootstrap-pip; } \
		|| { rm -rf $(VENV); exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip || { rm -rf $(VENV); exit 1; }

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
	$(BIN)/ruff check $(LINTED)

lint: $(STAMP_DEV)
	$(BIN)/ruff check $(LINTED)

bench: $(STAMP_DEV)
	$(BIN)/python tests/perf/bench_audit.py

clean:
	rm -rf $(VENV) $(DEMO_HOME)
