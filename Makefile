# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-slow lint demo demo-quick bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# One pytest worker per core; a test file stays on one worker (the Milvus server test holds fixed ports).
# `make test` leaves out the tests marked slow (real-data studies, long training, kill -9 and torchrun
# processes); `make test-slow` runs just those, and CI runs both.
PYTEST := $(BIN)/python -m pytest -n auto --dist loadfile

test: $(STAMP)
	$(BIN)/ruff check reidx tests benchmarks scripts
	$(PYTEST) -m "not slow"

test-slow: $(STAMP)
	$(PYTEST) -m slow

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
