# One way to run each thing. `make serve` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint fmt proto proto-check bench bench-accounts soak fuzz clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/ringfence serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/gen_proto.sh

proto-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit/test_generated_code.py

bench: $(STAMP)
	$(BIN)/python bench/score_throughput.py

bench-accounts: $(STAMP)
	$(BIN)/python bench/score_throughput.py --mode accounts

soak: $(STAMP)
	$(BIN)/python bench/score_throughput.py --mode soak

fuzz: $(STAMP)  # docs/reliability.md; --engine atheris with the `fuzz` extra
	$(BIN)/python bench/fuzz.py --cases 100000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
