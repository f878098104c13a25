# Two commands on a fresh machine: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench docs clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

# The daemon on its embedded defaults: a SQLite store, a credential key and the first start's
# admin key in $(RUN_HOME), the example plugins, 127.0.0.1:8787. Ctrl-C stops it gracefully.
RUN_HOME ?= $(CURDIR)/.plughub
run: $(STAMP)
	PLUGHUB_HOME=$(RUN_HOME) $(BIN)/plughub serve --plugins-dir examples/plugins

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/invoke_inprocess.py
	$(BIN)/python bench/discovery.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/env_install.py
	$(BIN)/python bench/install.py
	$(BIN)/python bench/http_api.py

# docs/api-reference.md is generated from the OpenAPI document (a test fails when it is stale).
docs: $(STAMP)
	$(BIN)/python -c "from plughub.server import api_reference; print(api_reference(), end='')" > docs/api-reference.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .plughub
