# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint demo demo-quick bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check reidx tests benchmarks scripts
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check reidx tests benchmarks scripts
	$(BIN)/ruff format --check reidx tests benchmarks scripts

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out demo

demo-quick: $(STAMP)
	$(BIN)/python scripts/demo.py --out demo --quick

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf demo .pytest_cache .ruff_cache
