# Every target creates the virtual environment it needs; nothing else must be installed first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.base
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench soak clean

# The product alone: enough for the demo, which needs no root and no Debian package.
$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(BASE)

# With the tests' tools and the kerberos extra, whose C parts build against the Debian packages
# .ci/debian-packages installs first (as root; otherwise it names them).
$(STAMP): $(BASE)
	@bash .ci/debian-packages
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(BASE)
	$(BIN)/submitwatch demo

# ruff (rules and why: pyproject.toml) on everything, mypy on the engine (bot, handlers, store),
# and the one-way import graph (lint-imports; the contracts are in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check bot handlers store sim tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

test: $(STAMP)
	@bash .ci/debian-packages
	$(BIN)/python -m pytest

# The benchmark suite (docs/benchmarks.md): about 13 minutes on 2 cores and 5 GB of free disk
# for a while (row 9); prints a markdown table.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

# The crash test with many more SIGKILLs than `make test` runs (docs/reliability.md).
soak: $(STAMP)
	SUBMITWATCH_KILL_ROUNDS=40 $(BIN)/python -m pytest -q tests/test_kill.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
