# Developer commands. `make help` lists them; `make run` and `make test` are the public two.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VENV_PY := $(VENV)/bin/python
PIP_INSTALL := $(VENV_PY) -m pip install --disable-pip-version-check --quiet
# Stamps live inside the venv: a deleted venv forgets them, a changed requirements file outdates them.
RUN_STAMP := $(VENV)/.installed-requirements
DEV_STAMP := $(VENV)/.installed-requirements-dev
PYTEST_ARGS ?=

.PHONY: help run test lint audit format bench services services-stop venv venv-dev clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt | $(VENV_PY)
	$(PIP_INSTALL) -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(VENV_PY)
	$(PIP_INSTALL) -r requirements-dev.txt
	@touch $@

venv: $(RUN_STAMP) ## Create .venv with the runtime requirements
venv-dev: $(DEV_STAMP) ## Create .venv with the runtime and development requirements

run: $(RUN_STAMP) ## Migrate and serve web, worker and beat on http://127.0.0.1:$PORT (demo mode without Shoptet credentials)
	$(VENV_PY) scripts/run.py

test: $(DEV_STAMP) ## Run the test suite against throwaway PostgreSQL and Redis (extra pytest args: PYTEST_ARGS="-k foo")
	scripts/test.sh $(PYTEST_ARGS)

lint: $(DEV_STAMP) ## Check formatting, lint, types and security (ruff, mypy, bandit)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/bandit -q -r config installations addon shoptet_api webhooks sync --skip B101,B113,B311,B324,B608

audit: $(DEV_STAMP) ## Check the pinned runtime requirements for known vulnerabilities (needs the network)
	$(VENV)/bin/pip-audit -r requirements.txt

format: $(DEV_STAMP) ## Format the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(DEV_STAMP) ## Run every benchmarks/*.py against throwaway PostgreSQL and Redis
	scripts/bench.sh

services: ## Start throwaway PostgreSQL and Redis and print the environment to use them
	@scripts/services.sh up

services-stop: ## Stop the servers started by `make services`
	@scripts/services.sh down

clean: ## Remove the venv and everything under var/ (stop `make services` first)
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
