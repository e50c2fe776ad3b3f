PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench models serve clean

# The venv is rebuilt whenever pyproject.toml changes, so a fresh clone and an old checkout agree.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check minigrad service tests bench

test: $(STAMP) lint
	$(BIN)/python -m pytest

# Benchmarks compare against PyTorch (CPU build) and scikit-learn in the same process.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench $(BENCH)

# The service on 127.0.0.1:8000 (`make serve PORT=9000` for another port) serving models/, configured by
# the MINIGRAD_* variables (see README),
# with a training-job consumer beside gunicorn; Ctrl-C stops both.
serve: $(STAMP)
	$(BIN)/python -m service.serve

# The example model documents in models/ (deterministic: fixed seeds), via the venv's python.
models: $(STAMP)
	$(BIN)/python models/make_examples.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
