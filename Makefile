# Two-stage recommender: `make demo` runs the main job, `make test` runs every test. `make help` lists targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
STATE ?= $(or $(RECSYS_STATE_DIR),.state)
DATASET ?= demo
DATA_DIR ?=
PORT ?= 3000

.DEFAULT_GOAL := help
.PHONY: help setup demo pipeline data quality simulate serve bento ui bench test test-fast lint lock clean-state

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# requirements-dev.lock: the runtime lock (requirements.lock, what the bento installs) + the dev and bench extras
$(INSTALLED): requirements-dev.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements-dev.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile --no-deps -e .
	@# pip compiles the installed files one at a time (about half of an install here); compileall uses every core.
	@# Files written for newer Pythons do not compile: skipped, as pip skips them. (A venv has one site-packages.)
	$(PY) -c 'import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path("purelib"), quiet=2, workers=0)'
	@# The static text encoder's token table (the bundled model's derived vectors, ~15 s, into the state's cache):
	@# the demo's first look uses it, and it depends on no data. A new state folder builds it again on first use.
	RECSYS_STATE_DIR=$(STATE) $(PY) -c 'from models.settings import Settings; from models.text.encoders import make_encoder; make_encoder("static", cache_dir=Settings().cache_dir)'
	touch $@

setup: $(INSTALLED) ## create .venv, install the locked environment with the dev and bench tools (CPU torch), build the static encoder's table

demo: setup ## set up, serve a first look of the demo on localhost:$(PORT), the full pipeline's version once it ends
	PORT=$(PORT) bash scripts/demo.sh

pipeline: setup ## run the whole pipeline flow: DATASET=demo|movielens|files [DATA_DIR=PATH]
	$(PY) -m flows.cli pipeline --dataset $(DATASET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

data: setup ## only load, validate and save a dataset: DATASET=demo|movielens|files [DATA_DIR=PATH]
	$(PY) -m flows.cli data --dataset $(DATASET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

quality: setup ## write the README's quality tables from evaluation.json: REPORTS="a/evaluation.json ..." (default: newest per dataset)
	$(PY) -m flows.cli quality $(REPORTS)

serve: setup ## serve the published version with `bentoml serve` on http://127.0.0.1:$(PORT)
	PORT=$(PORT) bash scripts/serve.sh

bento: setup ## pack the published version as the model recsys-state and build the bento
	export BENTOML_HOME=$${BENTOML_HOME:-$(abspath $(STATE))/bentoml}; \
	$(PY) -m flows.package && $(VENV)/bin/bentoml build -f serving/bentofile.yaml .

ui: setup ## Prefect UI on :4200 and MLflow UI on :5000 over the state folder (Ctrl-C stops both)
	bash scripts/ui.sh

simulate: setup ## does training on served lists help? event simulation on the demo state ($(STATE)); writes README's table
	$(PY) -m bench.impressions --state $(STATE) --readme README.md

bench: setup ## run the benchmarks; writes $(STATE)/bench/BENCHMARKS.md and bench.json
	$(PY) -m bench.run

test: setup ## run every test
	$(PY) -m pytest

test-fast: setup ## unit tests only (seconds)
	$(PY) -m pytest tests/unit

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check models flows serving feature_repo tests bench
	$(VENV)/bin/ruff format --check models flows serving feature_repo tests bench
	$(VENV)/bin/mypy models flows serving

lock: ## recompile requirements.lock (runtime) and requirements-dev.lock (+ dev, bench) with uv (CPU torch: no CUDA pins)
	bash scripts/lock.sh

clean-state: ## delete all runtime state under $(STATE)
	rm -rf $(STATE)
