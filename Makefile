# Headcount: the two commands a newcomer needs are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: demo test test-fast check proto proto-check lint typecheck layers image-smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the demo federation end to end on embedded defaults.
demo: $(STAMP)
	$(BIN)/headcount demo

## Run the whole test suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Unit and light tests only (no federations, servers or processes), for the edit loop.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not federation"

## Lint, format check, type check, and generated-code freshness.
check: $(STAMP) proto-check lint typecheck layers

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy headcount party_node coordinator

## The import floors (pyproject.toml [tool.importlinter], docs/architecture.md).
layers: $(STAMP)
	$(BIN)/lint-imports

## Regenerate Python stubs from proto/ (protoc + mypy-protobuf).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

## Fail if the committed generated code differs from what proto/ produces.
proto-check: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check

## Build the container image and run the compose federation from it end to end
## (needs a container engine and compose; CI has neither and does not run it).
image-smoke:
	docker/smoke.sh

clean:
	rm -rf $(VENV) .headcount-demo build *.egg-info
