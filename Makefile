# Two commands on a fresh machine (Python 3.11 and make): `make serve`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: serve test install lint typecheck format openapi bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the service on SQLite (data/ehr.sqlite3) with demo data, at http://127.0.0.1:8080/fhir
serve: $(STAMP)
	$(BIN)/ehr-service migrate
	EHR_DEMO_DATA=true $(BIN)/ehr-service serve

## Run the tests (PostgreSQL ones too when EHR_TEST_DATABASE_URL is set)
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check ehr_service tests migrations fhir_profiles
	$(BIN)/ruff format --check ehr_service tests migrations fhir_profiles

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format ehr_service tests migrations fhir_profiles
	$(BIN)/ruff check --fix ehr_service tests migrations fhir_profiles

openapi: $(STAMP)
	$(BIN)/ehr-service openapi --output openapi/openapi.json

## Benchmarks: print a table and write bench-results/*.json (not part of `make test`)
bench: $(STAMP)
	$(BIN)/python tests/bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
