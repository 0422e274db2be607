# hybrid-router: everything a fresh machine needs, from a clean clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HR     := $(BIN)/hybrid-router
# How llama.cpp is compiled (edge/llama_build.py, README "llama.cpp build policy"): dispatch (runtime CPU
# dispatch without the AMX variants; the default on a fresh venv), conservative, native; auto keeps what
# the venv has. The first build takes ~9 min on 2 cores; its wheel is cached in ~/.cache/hybrid-router/wheels.
LLAMA_POLICY ?= auto
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: finetune-deps run bench-demo bench-http bench-vs-litellm test install models test-models selftest llama-rebuild stubs check-stubs bench-overhead clean

# The quick start: the daemon, one answer per mode, then a smoke bench of a few items per mode. The full
# demo bench (every item of the sample in every mode) is `make bench-demo`.
run: models selftest
	$(HR) demo
	$(BIN)/python -m bench --quick --ingest demo --out bench/out/quick
	@echo ""
	@echo "That was a smoke run: 1 GSM8K problem and 3 SQuAD questions per mode, too few to measure anything."
	@echo "The full demo bench (8 GSM8K + 24 SQuAD items in every mode; the accuracy, cost and latency of each"
	@echo "mode): make bench-demo. The measured results and how to reproduce them: docs/bench.md."

bench-demo: models selftest
	$(BIN)/python -m bench --demo --ingest demo --out bench/out/demo

test: check-stubs selftest finetune-deps
	$(BIN)/python -m pytest -q -rs

# The [finetune] extra (torch on the CPU, transformers, peft): `hybrid-router finetune` and its tests.
# Not part of `make run`: the daemon does not need it.
FINETUNE_STAMP := $(VENV)/.finetune-stamp
$(FINETUNE_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench,finetune]'
	touch $(FINETUNE_STAMP)

finetune-deps: $(FINETUNE_STAMP)

$(STAMP): pyproject.toml edge/llama_build.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m edge.llama_build ensure --policy $(LLAMA_POLICY)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

models: install
	$(HR) models pull

test-models: install
	$(HR) models pull smollm2-135m use-multilingual-512

# One short decode in a child process: a build this CPU cannot run ends here, in one clear line.
selftest: test-models
	$(HR) selftest

llama-rebuild: install
	@test "$(LLAMA_POLICY)" != auto || { echo "name a policy: make llama-rebuild LLAMA_POLICY=conservative|dispatch|native"; exit 2; }
	$(BIN)/python -m edge.llama_build ensure --policy $(LLAMA_POLICY)
	$(HR) selftest

stubs: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. proto/router/v1/*.proto

check-stubs: install
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp proto/router/v1/*.proto && \
	for f in $$tmp/router/v1/*; do cmp -s "$$f" "router/v1/$$(basename $$f)" || { echo "router/v1/$$(basename $$f) is stale: run 'make stubs'"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "stubs are fresh"

bench-overhead: models selftest
	$(BIN)/python -m bench.overhead

# The HTTP door's overhead against gRPC and against llama-cpp-python called directly.
bench-http: models selftest
	$(BIN)/python -m bench.http_overhead

# Our HTTP door beside LiteLLM's proxy. LiteLLM gets a virtualenv of its own: it brings about 130 packages.
.venv-litellm/bin/litellm:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/python -m pip install -q 'litellm[proxy]==1.108.7'

bench-vs-litellm: models .venv-litellm/bin/litellm
	$(BIN)/python -m bench.vs_litellm --litellm .venv-litellm/bin/litellm

clean:
	rm -rf $(VENV) .venv-litellm .pytest_cache
