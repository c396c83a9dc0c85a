# `make demo` and `make test` create .venv and install the project into it when missing (seconds when present).
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: help install demo test test-full test-slow gpu-check lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

demo: $(STAMP)  ## warm up the tiny model, train it with NFT on the toy task, print accuracy before/after
	$(PYTHON) src/train.py $(ARGS)

test: $(STAMP)  ## the fast tier: one end-to-end training, one 2-rank FSDP run, one resume (about 5 minutes, 2 cores)
	$(PYTHON) -m pytest -m "not slow and not full and not gpu and not vllm" $(ARGS)

test-full: $(STAMP)  ## every test but the GPU, vLLM and soak ones: what CI runs (about 15 minutes on 2 cores)
	$(PYTHON) -m pytest -m "not slow and not gpu and not vllm" $(ARGS)

test-slow: $(STAMP)  ## the long tests only (soak runs)
	$(PYTHON) -m pytest -m slow $(ARGS)

# gpu-check installs from $(WHEELS)/ alone when that folder exists (no index, no network); `make wheels` fills it on a
# machine with a network, the same Python and platform. GPU_EXTRAS=dev,vllm adds vLLM to both.
WHEELS     := wheels
GPU_EXTRAS := dev
GPU_STAMP  := $(VENV)/.gpu-installed-stamp
OFFLINE    := $(if $(wildcard $(WHEELS)),--no-index --find-links $(WHEELS))

.PHONY: wheels
wheels:  ## download what gpu-check installs (dependencies and build backend) into wheels/, for a GPU machine offline
	python3 -m pip download --quiet --disable-pip-version-check --dest $(WHEELS) \
		'setuptools>=68' wheel '.[$(GPU_EXTRAS)]' $(ARGS)

$(GPU_STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check $(OFFLINE) -e '.[$(GPU_EXTRAS)]'
	touch $@

gpu-check: $(GPU_STAMP)  ## the GPU check on one CUDA device (no network, no download; report: runs/gpu_check.json)
	@$(PYTHON) tests/require_cuda.py
	$(PYTHON) -m pytest -m gpu tests/test_gpu.py -v -s $(ARGS)

bench: $(BENCH_STAMP)  ## time one policy iteration of the fixed workload, side by side with TRL (last line: the median)
	$(PYTHON) -m nft.bench.losses
	$(PYTHON) -m nft.bench.verifier
	$(PYTHON) -m nft.bench $(ARGS)

lint: $(STAMP)  ## ruff checks and formatting check
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix
	$(VENV)/bin/ruff format

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf .cache runs .pytest_cache .ruff_cache
