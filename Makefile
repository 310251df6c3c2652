# The README's two commands: `make demo` (set up and run the main job on the embedded
# default) and `make test` (set up and pass the tests). Both install into ./.venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint browser prometheus

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/careledger demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The HTML report test renders the report in Debian's headless chromium.
browser:
	bash scripts/install-browser.sh

# The alert-rule tests and the live Prometheus test run Debian's prometheus and promtool.
prometheus:
	bash scripts/install-prometheus.sh

test: $(STAMP) lint browser prometheus
	$(BIN)/python -m schemas.generate --check
	$(BIN)/python -m projections.grants --check
	$(BIN)/pytest -q
