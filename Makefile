# Two entry points for a fresh machine with only python3: `make run` and `make test`.
# Both create or refresh .venv idempotently; `make test` also installs the Debian packages the tests drive.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 1883
ARGS    ?=

.PHONY: run test lint clean setup system-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

# In a terminal: the full broker with the TUI attached. Piped or in CI: the broker and its log.
# ARGS="-c mosquitto.conf" runs it with a config file, as mosquitto -c would.
run: $(STAMP)
	@if [ -t 0 ] && [ -t 1 ]; then \
		$(BIN)/python -m tui --run broker --port $(PORT) -- $(ARGS); \
	else \
		$(BIN)/python -m servers.broker --port $(PORT) $(ARGS); \
	fi

test: $(STAMP) system-deps
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
