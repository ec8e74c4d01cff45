# Two commands from a fresh clone:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: serve test test-fast install install-dev lint typecheck check train-default bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	$(PY) -m compileall -q src/corolla  # an editable install is not byte-compiled: starts faster
	touch $@

# Test and training dependencies. torch is pinned to the CPU build that this machine's
# package index provides (any other version downloads several GB of CUDA libraries).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev,train,tensorflow]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Start the server on the embedded default model (REST :8501, gRPC :8500).
serve: $(VENV)/.installed
	$(VENV)/bin/corolla serve $(ARGS)

## Set everything up and run the whole test suite.
test: $(VENV)/.installed-dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

## The unit tests, without the end-to-end ones that start real processes (-m "not slow").
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

check: lint typecheck test

## Benchmarks (builds its own environments under benchmarks/.venvs; ~40 min).
bench:
	$(PYTHON) benchmarks/run.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
