# Two-stage recommender: `make demo` runs the main job, `make test` runs every test. `make help` lists targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DATASET ?= demo
DATA_DIR ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo data test test-fast lint lock clean-state

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(INSTALLED): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

setup: $(INSTALLED) ## create .venv and install the locked environment (CPU torch)

demo: setup ## generate the demo catalog, validate it and print its summary
	$(PY) -m flows.cli data --dataset demo

data: setup ## load and validate a dataset: DATASET=demo|movielens|files DATA_DIR=PATH
	$(PY) -m flows.cli data --dataset $(DATASET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: setup ## run every test
	$(PY) -m pytest

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check models flows serving feature_repo tests
	$(VENV)/bin/ruff format --check models flows serving feature_repo tests
	$(VENV)/bin/mypy models flows serving

lock: ## recompile requirements.lock from pyproject.toml (CPU torch: no nvidia-*/triton pins)
	bash scripts/lock.sh

clean-state: ## delete all runtime state under .state/
	rm -rf .state
