# Two commands on a fresh machine: `make pipeline` and `make test`.
# Both create .venv and install the pinned stack the first time.
VENV   := .venv
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

# `pipeline/` is a folder: without .PHONY `make pipeline` would be "up to date".
.PHONY: install pipeline test bench clean reproduce-check

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

pipeline: install
	dvc repro

test: install
	pytest
	python -m pipeline.reproduce_check

# Rebuild the pipeline twice in a temporary copy; fails naming any model or metrics file that drifts.
reproduce-check: install
	python -m pipeline.reproduce_check

bench: install
	python benchmarks/train_speed.py

clean:
	rm -rf data models reports
