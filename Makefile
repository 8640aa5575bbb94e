# bidflow: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.9
UV_DIR := .uv
UV := $(UV_DIR)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# the drift monitor's own environment (alibi-detect 0.13.0 needs numpy<2): monitor/pyproject.toml + monitor/uv.lock
MONITOR_VENV := .venv-monitor
MONITOR_BIN := $(MONITOR_VENV)/bin

# No interpreter downloads (registries only), and compile bytecode at install time because
# this machine sets PYTHONDONTWRITEBYTECODE: imports without .pyc are 2-4x slower.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_LINK_MODE := copy

.PHONY: help setup monitor-setup browser prometheus demo test test-unit lint bench bench-crossover pipelines observability dvc-repro clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

setup: $(VENV)/.installed ## create .venv from the lock file (uv sync --frozen)

# UV_PROJECT_ENVIRONMENT must be absolute: uv resolves a relative one against the project (monitor/).
# bidflow's source reaches the environment through a relative .pth file (none of its main dependencies).
$(MONITOR_VENV)/.installed: $(UV) monitor/pyproject.toml monitor/uv.lock
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(MONITOR_VENV) $(UV) sync --frozen --compile-bytecode --python $(PYTHON) --project monitor
	$(MONITOR_BIN)/python -c 'import os, pathlib, sysconfig; site = sysconfig.get_path("purelib"); \
		pathlib.Path(site, "bidflow-src.pth").write_text(os.path.relpath("src", site) + "\n")'
	@touch $@

monitor-setup: $(MONITOR_VENV)/.installed ## create .venv-monitor (drift monitor: alibi-detect, numpy<2) from monitor/uv.lock

demo: setup monitor-setup ## run the whole loop on generated data and write the report
	$(BIN)/bidflow demo

test: setup monitor-setup browser prometheus ## run the whole test suite (unit, integration, e2e), then the monitor's in .venv-monitor
	$(BIN)/python -m pytest
	$(MONITOR_BIN)/python -m pytest tests/monitor --confcutdir=tests/monitor -p no:cacheprovider

browser: ## Debian's chromium for the headless check of the demo report (installs only when missing)
	@scripts/install-browser.sh || echo "make: chromium could not be installed (needs root); the report check will fail"

prometheus: ## Debian's prometheus and promtool for the rule and alert tests (installs only when missing)
	@scripts/install-prometheus.sh || echo "make: prometheus could not be installed (needs root); the rule and alert tests will fail"

test-unit: setup ## unit tests only: no services, no network
	$(BIN)/python -m pytest -m "not integration and not e2e"

lint: setup ## ruff and mypy over src/
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

bench: setup ## run the benchmarks and rewrite the table in bench/README.md
	$(BIN)/python -m bench

bench-crossover: setup ## pandas against Spark (local mode) at 1x, 4x and 16x the default data, then docs/CAPACITY.md from the rows
	$(BIN)/python -m bench crossover online_memory
	$(BIN)/python -m bench.capacity

pipelines: setup ## compile the Kubeflow pipelines to IR YAML under pipelines/ (the golden files tests compare)
	$(BIN)/bidflow pipeline compile --out pipelines

observability: setup ## generate the Prometheus rules and Grafana dashboards (ops/prometheus/, helm/bidflow/files/; golden files the tests compare)
	$(BIN)/bidflow ops render

dvc-repro: setup ## reproduce the DVC stages (simulate -> ingest -> validate)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro  # the stages call the bidflow CLI

clean: ## remove generated data, reports and the virtual environments
	rm -rf $(VENV) $(MONITOR_VENV) $(UV_DIR) data reports .pytest_cache .mypy_cache .ruff_cache
