# One entry point for people and CI. `make run`: set up, run the pipeline, serve the model.
# `make test`: set up, run the tests. Both work on a fresh machine (Python 3.11+, npm, git).
#
# Dependencies install from the lock files in requirements/ (exact versions, with hashes), so
# a clone installs the same environment next year: `run.txt` (the API and the pipeline) for
# `make run`, `dev.txt` (adds the test tools) for `make test`. `make lock` re-resolves them.

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(abspath $(VENV))/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
UV := $(BIN)/uv
# The lock files' resolution: every platform, from the oldest Python we support.
LOCK := $(UV) pip compile --universal --generate-hashes --python-version 3.11
# DVC stages and `mlflow run` call `python`/`dvc`: make them the virtual environment's.
export PATH := $(BIN):$(PATH)

.PHONY: setup setup-run run pipeline serve test test-fast lint ui audit lock clean

$(UV): requirements/uv.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --requirement requirements/uv.txt
	touch $@

# uv installs the locked wheels several times faster than pip; the project itself goes in
# editable, without dependencies and with the locked setuptools (both lock files hold it).
# Unlike pip, uv does not compile the packages to bytecode unless asked: where
# PYTHONDONTWRITEBYTECODE is set, every process would then compile MLflow, pandas and torch
# from source at each start (`import serving.app` took 5.9-7.0 s of CPU instead of 1.9-2.0 s).
$(RUN_STAMP): $(UV) requirements/run.txt pyproject.toml
	$(UV) pip install --quiet --python $(BIN)/python --compile-bytecode --require-hashes \
		-r requirements/run.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation --editable .
	touch $@

$(STAMP): $(UV) requirements/dev.txt pyproject.toml
	$(UV) pip install --quiet --python $(BIN)/python --compile-bytecode --require-hashes \
		-r requirements/dev.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation --editable .
	touch $@

setup-run: $(RUN_STAMP)

setup: $(STAMP)

pipeline: setup-run
	dvc repro

serve: setup-run
	python -m serving --host $(HOST) --port $(PORT)

run: pipeline serve

test: setup
	python -m pytest --durations=10

# The inner loop: unit and API tests, without the pipeline runs and services marked `slow`.
test-fast: setup
	python -m pytest -m "not slow"

lint: setup
	ruff check .
	ruff format --check .
	hadolint Dockerfile deploy/mlflow.Dockerfile

ui: setup-run
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(HOST)

# Known vulnerabilities in the locked versions. Needs network access to an advisory database
# (OSV), so CI, which has none, does not run it.
audit: setup
	pip-audit --disable-pip --require-hashes --requirement requirements/dev.txt

# Re-resolve the lock files after editing pyproject.toml's dependencies (or to take newer
# releases: `make lock LOCK_FLAGS=--upgrade`), then run `make test` and commit requirements/.
lock: $(UV)
	$(LOCK) $(LOCK_FLAGS) pyproject.toml --extra dev -o requirements/dev.txt
	$(LOCK) -c requirements/dev.txt pyproject.toml --extra serve --extra pipeline -o requirements/run.txt
	$(LOCK) -c requirements/dev.txt pyproject.toml --extra serve -o requirements/serve.txt
	$(LOCK) -c requirements/dev.txt requirements/build.in -o requirements/build.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
