# The two commands of the README: `make demo` and `make test`. Everything installs itself.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=

.PHONY: setup demo test test-all lint plugin bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh "$(VENV)"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/road-landcover demo --output build/demo

test: setup
	bash scripts/run_tests.sh $(PYTEST_ARGS)

test-all: setup
	bash scripts/run_tests.sh --runslow $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check core processing_provider road_landcover_plugin tests scripts bench
	$(VENV)/bin/mypy

plugin: setup
	$(PY) scripts/build_plugin.py --output dist/road_landcover_plugin.zip

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
