# `make demo` (or `make run`) serves the gateway, `make test` runs every check CI runs.
# Both need only Python >= 3.11, pip and make: uv is installed with pip when it is missing.

PYTHON ?= python3
UV := $(PYTHON) -m uv
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck unit setup node-deps codex-deps redis-server nginx setup-llm demo

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	@$(UV) sync --frozen --quiet

# The pinned Node SDK for tests/conformance/test_node_sdk.py, reinstalled only when its lock file changes.
# Without npm this is skipped; that test then skips (or fails when CI=true).
node-deps: tests/node/node_modules/.package-lock.json

tests/node/node_modules/.package-lock.json: tests/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/node --silent --no-audit --no-fund && touch $@; \
	else echo "npm not found: the Node SDK tests (tests/node) will not run"; fi

# Codex CLI, pinned, for the e2e test that runs `codex exec` through the gateway (its Linux
# binary comes as an npm optional dependency); reinstalled only when its lock file changes.
codex-deps: tests/codex/node_modules/.package-lock.json

tests/codex/node_modules/.package-lock.json: tests/codex/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/codex --silent --no-audit --no-fund && touch $@; \
	else echo "npm not found: the Codex CLI e2e test (tests/e2e) will not run"; fi

# Debian's redis-server for the store tests (tests/keys start their own on free ports). CI runs
# as root on a fresh machine; elsewhere sudo is used when apt-get is there.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || { \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "redis-server not found and no apt-get: install Redis >= 7"; exit 1; fi; \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends redis-server; }

# Debian's nginx, only for `nginx -t` on deploy/nginx.conf (tests/test_container.py), installed
# the same way. The package starts a web server on port 80 where systemd runs: stopped at once.
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "nginx not found and no apt-get: install nginx"; exit 1; fi; \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends nginx && \
		{ $$sudo systemctl disable --now nginx >/dev/null 2>&1 || true; }; }

run: setup
	$(UV) run --frozen oai-gateway serve --host $(HOST) --port $(PORT)

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: setup
	$(UV) run --frozen mypy

unit: setup node-deps codex-deps redis-server nginx
	$(UV) run --frozen pytest --cov --cov-report=term

test: lint typecheck unit

# A real LLM (llama.cpp's llama-server + Gemma 3 270M) in the user's cache directory, outside the
# checkout: one compile of about 5 minutes the first time, seconds after. `make test` runs it too
# (the e2e tier in tests/e2e/ sets itself up). See docs/real-llm.md.
setup-llm:
	$(PYTHON) scripts/setup_llm.py

# The gateway in front of that real LLM, with a generated key; Ctrl-C stops both.
demo: setup
	$(PYTHON) scripts/demo.py
