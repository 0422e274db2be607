# hybrid-router: everything a fresh machine needs, from a clean clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HR     := $(BIN)/hybrid-router
# llama-cpp-python compiles from source (about 5.5 min on 2 cores); pip's cache keeps the wheel.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: run test install models test-models stubs check-stubs bench-overhead clean

run: models
	$(HR) demo

test: check-stubs test-models
	$(BIN)/python -m pytest -q -rs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

models: install
	$(HR) models pull

test-models: install
	$(HR) models pull smollm2-135m

stubs: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. proto/router/v1/*.proto

check-stubs: install
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp proto/router/v1/*.proto && \
	for f in $$tmp/router/v1/*; do cmp -s "$$f" "router/v1/$$(basename $$f)" || { echo "router/v1/$$(basename $$f) is stale: run 'make stubs'"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "stubs are fresh"

bench-overhead: models
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
