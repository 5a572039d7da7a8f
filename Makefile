# The two commands of the README's quick start, plus the developer's checks.
# Everything is installed into .venv from PyPI: no system packages, no running services.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check lint typecheck proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/credex demo

test: $(STAMP)
	$(BIN)/ruff check src node adapters crypto domain proto/generate.py tools tests bench
	$(BIN)/python tools/typecheck_tree.py  # cheap; picks up files added since the last run
	$(BIN)/mypy
	$(BIN)/pytest

proto: $(STAMP)
	$(BIN)/python proto/generate.py

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.intake
	$(BIN)/python -m bench.lookup
	$(BIN)/python -m bench.catchup
	$(BIN)/python -m bench.proofs
	$(BIN)/python -m bench.transports
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.expiry
	$(BIN)/python -m bench.witness
	$(BIN)/python -m bench.streams
	$(BIN)/python -m bench.checks
	$(BIN)/python -m bench.reports
	$(BIN)/python -m bench.tiles
	$(BIN)/python -m bench.scale --scale 0.01  # the full size (10M events) takes over an hour to build

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
