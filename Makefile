# Two commands matter: `make run` and `make test`. Each builds .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LINT := src tests tools $(wildcard benchmarks)

.PHONY: run gui train test test-fast lint default-model clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the web app at http://127.0.0.1:8000/ (the shipped model, or a run that beats it on validation)
run: $(STAMP)
	$(BIN)/digitrec serve

## gui: the desktop app (Tk) on the same model
gui: $(STAMP)
	$(BIN)/digitrec gui

RUN_DIR := runs/$(shell date +%Y%m%d-%H%M%S)-fast

## train: train the default recipe and evaluate it on the test set
train: $(STAMP)
	$(BIN)/digitrec train --recipe fast --out $(RUN_DIR)
	$(BIN)/digitrec evaluate $(RUN_DIR)

## test: lint, then the whole test suite
test: lint
	$(BIN)/pytest

## test-fast: lint, then the tests that neither train nor start the CLI, a server, a browser or a window (under a minute)
test-fast: lint
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check $(LINT)
	$(BIN)/ruff format --check $(LINT)

## default-model: remake the model shipped inside the package (three steps, about 25 minutes on 2 cores)
default-model: $(STAMP)
	$(BIN)/python tools/ship_default_model.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
