# Two entry points: `make stress` (the main job) and `make test` (the suite).
# Each creates the virtual environment on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'

venv: $(BIN)/python

stress: venv
	$(BIN)/python -m harness stress

bench: venv
	$(BIN)/python -m harness bench

test: venv
	$(BIN)/python -m pytest

test-all: venv          # also the tests that compile the bounds-checked build (minutes)
	$(BIN)/python -m pytest -m ""

.PHONY: venv stress bench test test-all
