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
	$(PY) -m pip install -q -e '.[agents]'
	@touch $@

venv: $(VENV)/.installed

$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev,agents]'
	@touch $@

dev-deps: $(VENV)/.dev-installed

run: venv
	$(PY) manage.py up --port $(PORT) $(UP_ARGS)

# the service layer is type-checked: views and templates are covered by tests
TYPED := jobs/services.py jobs/journal.py jobs/selectors.py jobs/engine jobs/enqueue.py jobs/states.py jobs/spec.py \
	jobs/steps.py jobs/procwatch.py jobs/recurring.py jobs/allowlists.py jobs/egress.py jobs/secret_store.py jobs/hardening.py \
	approvals/services.py approvals/identities.py approvals/policies.py approvals/gate.py \
	approvals/policy_format.py \
	packs/services.py packs/spec.py packs/zipsafe.py packs/keys.py gaitweb/lib/canonical.py \
	gaitweb/lib/errors.py gaitweb/lib/actors.py gaitweb/lib/validation.py gaitweb/apikeys.py \
	approvals/selectors.py packs/selectors.py jobs/durable.py jobs/replay.py \
	gaitweb/lib/parsing.py gaitweb/lib/middleware.py gaitweb/lib/roles.py gaitweb/lib/reasons.py \
	jobs/broker.py jobs/wake.py jobs/workflow_registry.py gaitclient.py

test: dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --follow-imports=silent $(TYPED)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --follow-imports=silent $(TYPED)

bench: dev-deps
	$(PY) -m pip install -q -e '.[bench]'
	@bash bench/run_all.sh

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
