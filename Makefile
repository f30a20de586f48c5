# Tidings: the two commands a newcomer needs are `make demo` and `make test`.
# Everything installs itself: a virtualenv in .venv, the Kafka broker's jars in deploy/kafka/.jars.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration lint check preview bench clean tools

GO          ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
HELM_VERSION := v4.3.2
TOOLS       := .tidings/tools/bin

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tidings needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -c constraints.txt
	@touch $(STAMP)

install: $(STAMP)
	$(BIN)/python -m deploy.local.kafka_broker fetch
	$(BIN)/python -m tests.java.probe build
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "note: chromium is missing and could not be installed; the browser tests skip (they fail under CI=true): apt-get install chromium" >&2

## helm (built from the Go module proxy at a named version) and the strict manifest checker, cached
## in .tidings/tools/bin: built once, then reused (tests/integration/test_helm_chart.py uses them).
tools: $(TOOLS)/helm-$(HELM_VERSION) $(TOOLS)/manifestcheck

$(TOOLS)/helm-$(HELM_VERSION):
	GOBIN=$(abspath $(TOOLS)) GOFLAGS=-mod=mod $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	@touch $@

$(TOOLS)/manifestcheck: deploy/helm/manifestcheck/main.go deploy/helm/manifestcheck/go.mod
	cd deploy/helm/manifestcheck && GOFLAGS=-mod=mod $(GO) build -o $(abspath $(TOOLS))/manifestcheck .

## Start a broker, the SES emulator and a worker; publish sample events; show the mails sent.
demo: install
	$(BIN)/python -m deploy.local.demo

## The whole test suite: the template lint and static checks, then unit and integration tests (real broker and SES emulator).
test: install lint check
	@$(MAKE) --no-print-directory tools || echo "note: helm could not be built (needs Go: $(GO)); the Helm chart test skips (fails under CI=true)" >&2
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

## Every pack and example tenant: templates complete, compiling, using only merge tags that exist.
lint: $(STAMP)
	$(BIN)/python -m streams.tools.lint

## Static checks: ruff (lint, import order) and mypy with the pydantic plugin, both configured in pyproject.toml.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## Every mail of every example tenant, rendered from the pack samples into .tidings/preview/index.html.
preview: $(STAMP)
	$(BIN)/python -m streams.tools.preview

## Benchmarks on the real broker; figures are printed (see README "Performance").
bench: install
	$(BIN)/python -m pytest tests/benchmarks -s -p no:cacheprovider

clean:
	rm -rf .tidings .pytest_cache
