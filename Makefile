# Tidings: the two commands a newcomer needs are `make demo` and `make test`.
# Everything installs itself: a virtualenv in .venv, the Kafka broker's jars in deploy/kafka/.jars.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tidings needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)
	$(BIN)/python -m deploy.local.kafka_broker fetch

## Start a broker, the SES emulator and a worker; publish sample events; show the mails sent.
demo: install
	$(BIN)/python -m deploy.local.demo

## The whole test suite (unit and integration, on a real broker and the SES emulator).
test: install
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

## Benchmarks on the real broker; figures are printed (see README "Performance").
bench: install
	$(BIN)/python -m pytest tests/benchmarks -s -p no:cacheprovider

clean:
	rm -rf .tidings .pytest_cache
