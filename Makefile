# gaitweb: `make run` to try it, `make test` to check it. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export GAIT_DATA_DIR ?= $(CURDIR)/var

.PHONY: venv dev-deps run test lint bench clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "gaitweb needs Python 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
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
