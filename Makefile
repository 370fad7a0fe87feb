# Two commands on a fresh machine (Python 3.11 and make): `make serve`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: serve test install lint typecheck format openapi bench clean

# The exact versions (and hashes) of every dependency: requirements-dev.lock for
# development and CI, requirements.lock (the runtime part, same versions) for images.
LOCK := requirements-dev.lock
UV_VERSION := 0.13.8
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --quiet $(if $(UPGRADE),--upgrade)

.PHONY: lock

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Regenerate the lock files from pyproject.toml (kept versions stay; UPGRADE=1 takes the newest)
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV_COMPILE) --extra dev -o requirements-dev.lock
	$(UV_COMPILE) --constraint requirements-dev.lock -o requirements.lock

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
