# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test test-python test-contract test-zapier test-n8n bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: venv
	$(BIN)/paywalls-relay run

test: test-python test-contract test-zapier test-n8n

test-python: venv
	$(BIN)/pytest

# The shared client implementation (key derivation, validation, events) on its own, against the shared vectors:
# the packages copy it (their suites test the copies), and a change here must be tested before it is copied.
test-contract:
	@if command -v node >/dev/null; then node --test schemas/clients/; else echo "node not found: make test needs Node 20 or later" >&2; exit 1; fi

test-zapier: venv
	@if [ -f zapier_app/package.json ]; then cd zapier_app && npm ci --no-audit --no-fund && npm test; fi

test-n8n: venv
	@if [ -f n8n_node/package.json ]; then cd n8n_node && npm ci --no-audit --no-fund --ignore-scripts && npm test; fi

# A benchmark, not a test: starts the sandbox, a naive proxy and the relay on 127.0.0.1, loads them with wrk,
# prints the table and writes bench/results.md. Set RELAY_TEST_DATABASE_URL to include PostgreSQL.
bench: venv
	bash bench/setup.sh
	$(BIN)/python bench/run.py
	$(BIN)/python bench/sqlite_durability.py

clean:
	rm -rf $(VENV) instance .pytest_cache
