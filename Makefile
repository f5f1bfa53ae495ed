# gaitweb: `make run` to try it, `make test` to check it. See README.md.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export GAIT_DATA_DIR ?= $(CURDIR)/var

.PHONY: venv dev-deps run test lint bench clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || PYTHON=python3; \
	 test -x $(PY) || $${PYTHON:-python3} -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $@

venv: $(VENV)/.installed

$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

dev-deps: $(VENV)/.dev-installed

run: venv
	$(PY) manage.py up --port $(PORT)

test: dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: dev-deps
	$(PY) -m pip install -q -e '.[bench]'
	@bash bench/run_all.sh

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
