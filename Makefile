# cxrcl: the two commands of the quick start (`make demo`, `make test`) and the benchmarks.
# Everything installs into .venv from the package registries; nothing else is downloaded.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[data,dev,text,export,logging]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cxrcl demo --out cxrcl-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# make bench BENCH_ARGS=--quick: docs/results.md only, at the smaller budget (~25 min on 2 cores)
BENCH_ARGS ?=
bench: $(STAMP)
	bash benchmarks/run_all.sh $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check cxrcl tests benchmarks

clean:
	rm -rf cxrcl-demo .pytest_cache
