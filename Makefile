# Two commands: `make run` serves the gateway, `make test` runs every check CI runs.
# Both need only Python >= 3.11, pip and make: uv is installed with pip when it is missing.

PYTHON ?= python3
UV := $(PYTHON) -m uv
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck unit setup

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	@$(UV) sync --frozen --quiet

run: setup
	$(UV) run --frozen oai-gateway serve --host $(HOST) --port $(PORT)

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: setup
	$(UV) run --frozen mypy

unit: setup
	$(UV) run --frozen pytest --cov --cov-report=term

test: lint typecheck unit
