# Two commands on a fresh machine: `make pipeline` and `make test`.
# Both create .venv and install the pinned stack the first time
# (`make pipeline VENV=/path/to/venv` uses a virtualenv that exists already).
VENV   ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

# `pipeline/` is a folder: without .PHONY `make pipeline` would be "up to date".
.PHONY: install pipeline test bench bench-pipeline clean lock-check reproduce-check tune tuned team-stack team-stack-up team-stack-down

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,team]'
	touch $@

install: $(VENV)/.installed

pipeline: install
	dvc repro

# pytest holds the strong reproducibility check (a real clone of HEAD, `make pipeline`, the committed
# dvc.lock byte for byte, git status clean: tests/test_train_pipeline.py); `make reproduce-check` is the
# same check as one command that names every drifting entry.
test: install
	pytest -n 2 --dist loadscope --no-loadscope-reorder
	python -m pipeline.lock_check

# The two CI reproducibility checks.
# Cheap, no training: dvc.lock matches the code, params and commands of every stage.
lock-check: install
	python -m pipeline.lock_check

# Strong: rebuild from a clean clone of HEAD; fails naming every dvc.lock entry that differs.
reproduce-check: install
	python -m pipeline.reproduce_check

# the portable kernels' cost as ratios: against the native ones, the kernel floor and the chapter's loop
bench: install
	python benchmarks/kernel_cost.py

# cold / no-op / edited `dvc repro`, each stage's wall time against its bare imports, in a temporary clone
bench-pipeline: install
	python benchmarks/pipeline_speed.py

# Tuning on the validation split: params/sweep.yaml as DVC experiments, two at a time, every run in
# MLflow; the winner's params go to params/tuned.yaml. `make tuned` trains the winner again (`dvc exp run -n tuned`).
tune: install
	python -m pipeline.tune sweep

tuned: install
	python -m pipeline.tune tuned

# A team stack on this machine (PostgreSQL, an MLflow server on it with proxied artifacts, an SSH server
# holding a DVC remote; 127.0.0.1 only): `up` prints the three lines that point a clone at it.
STACK_DIR ?= .team-stack
team-stack: team-stack-up

team-stack-up: install
	python deploy/team_stack.py up --dir $(STACK_DIR)

team-stack-down:
	$(abspath $(VENV))/bin/python deploy/team_stack.py down --dir $(STACK_DIR)

clean:
	rm -rf data models reports
