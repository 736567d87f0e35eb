# make train : create .venv if missing, install fgzoom, train on the embedded synthetic dataset
# make test  : create .venv if missing, install fgzoom + dev tools + ONNX export + every logger + Optuna sweeper, run the fast test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test test-slow lint bench venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,export,mlflow,wandb,optuna,tensorboard]"
	touch $@

venv: $(VENV)/.installed

train: $(VENV)/.installed
	$(PY) scripts/train.py $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src scripts tests

bench: $(VENV)/.installed
	$(PY) scripts/bench.py $(ARGS)

clean:
	rm -rf logs multirun outputs .pytest_cache
