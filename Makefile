# One entry point for people and CI. `make run`: set up, run the pipeline, serve the model.
# `make test`: set up, run the tests. Both work on a fresh machine (Python 3.11+, npm, git).

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# DVC stages and `mlflow run` call `python`/`dvc`: make them the virtual environment's.
export PATH := $(BIN):$(PATH)

.PHONY: setup run pipeline serve test lint ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

setup: $(STAMP)

pipeline: setup
	dvc repro

serve: setup
	python -m serving --host $(HOST) --port $(PORT)

run: pipeline serve

test: setup
	python -m pytest

lint: setup
	ruff check .
	ruff format --check .
	hadolint Dockerfile deploy/mlflow.Dockerfile

ui: setup
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(HOST)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
