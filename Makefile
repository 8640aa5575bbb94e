# bidflow: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.9
UV_DIR := .uv
UV := $(UV_DIR)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

# No interpreter downloads (registries only), and compile bytecode at install time because
# this machine sets PYTHONDONTWRITEBYTECODE: imports without .pyc are 2-4x slower.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_LINK_MODE := copy

.PHONY: help setup demo test test-unit lint bench pipelines dvc-repro clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

setup: $(VENV)/.installed ## create .venv from the lock file (uv sync --frozen)

demo: setup ## run the main job on generated data and say what it produced
	$(BIN)/bidflow demo

test: setup ## run the whole test suite (unit, integration, e2e)
	$(BIN)/python -m pytest

test-unit: setup ## unit tests only: no services, no network
	$(BIN)/python -m pytest -m "not integration and not e2e"

lint: setup ## ruff and mypy over src/
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

bench: setup ## run the benchmarks and rewrite the table in bench/README.md
	$(BIN)/python -m bench

pipelines: setup ## compile the Kubeflow pipelines to IR YAML under pipelines/ (the golden files tests compare)
	$(BIN)/bidflow pipeline compile --out pipelines

dvc-repro: setup ## reproduce the DVC stages (simulate -> ingest -> validate)
	$(BIN)/dvc repro

clean: ## remove generated data, reports and the virtual environments
	rm -rf $(VENV) $(UV_DIR) data reports .pytest_cache .mypy_cache .ruff_cache
