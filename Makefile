# Two commands matter: `make run` and `make test`. Each builds .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench default-model clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: train the default recipe and evaluate it on the test set
run: $(STAMP)
	$(BIN)/digitrec train --recipe fast --out runs/make-run-$$(date +%Y%m%d-%H%M%S) && \
	$(BIN)/digitrec evaluate "$$(ls -td runs/make-run-* | head -1)"

## test: lint, then the whole test suite
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

## default-model: retrain the model shipped inside the package (about a minute on 2 cores)
default-model: $(STAMP)
	$(BIN)/python tools/ship_default_model.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
