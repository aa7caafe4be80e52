# make test   : sets up .venv (torch 2.14.1, the CUDA build, so the CUDA code compiles and links), builds, runs pytest
# make bench  : the same setup, then `python -m regops bench --quick`
# make test-cpu   : the CPU-only wheel (REGOPS_NO_CUDA=1) against torch 2.13.0, verified in a fresh venv (smoke tests)
# make test-cmake : the CMake build of the same csrc/ against .venv-cpu's libtorch, smoke tests on it (python/ from
#                   the source tree, the ops from the CMake library)
# make sanitize   : the CMake build with ASan + UBSan, the schema and edge-value tests under the sanitizers
# make wheels     : the CUDA wheel (from make build's objects: a relink) and the CPU wheel, into dist/
# make verify-wheel-cuda : the CUDA wheel, verified in a fresh venv (install, info, quick bench, smoke tests)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_CPU := .venv-cpu
TEST_DEPS := pytest pytest-timeout hypothesis numpy
# The bench's own tools (progress bar, pytest-benchmark collection of bench/); matplotlib is in PEER_DEPS
BENCH_DEPS := tqdm pytest-benchmark
# Peers: POT and OTT-JAX are checked against in the tests; all three are benchmarked. matplotlib: examples/
PEER_DEPS := pot ott-jax geomloss matplotlib
PYTEST_FLAGS ?= -q -ra --durations=20 --timeout=900
export MAX_JOBS ?= 2

DIST := dist
.PHONY: test bench build fuzz test-cpu test-cmake sanitize wheels verify-wheel-cuda verify-wheels gpu-check clean

$(VENV)/.deps:
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV)/bin/pip install -q torch==2.14.1 $(TEST_DEPS) $(BENCH_DEPS) $(PEER_DEPS)
	# Liger-Kernel's chunked losses are a bench peer (pure PyTorch); --no-deps keeps torch's own triton
	$(VENV)/bin/pip install -q --no-deps liger-kernel==0.8.5 || echo "liger-kernel not installed: its bench rows are skipped"
	touch $@

build: $(VENV)/.deps
	$(VENV)/bin/pip install -q --no-build-isolation -e .

test: build
	$(VENV)/bin/python -m regops info
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests

# Hypothesis exploring: a random seed and 400 examples per property (tests/conftest.py's "fuzz" profile); failures
# are saved to tests/hypothesis-examples/, which every later run (CI too) replays. Commit them with their fix.
fuzz: build
	REGOPS_HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/python -m pytest $(PYTEST_FLAGS) -o addopts="" -m hypothesis tests

bench: build
	$(VENV)/bin/python -m regops bench --quick

$(VENV_CPU)/.deps:
	test -x $(VENV_CPU)/bin/python || $(PYTHON) -m venv $(VENV_CPU)
	$(VENV_CPU)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV_CPU)/bin/pip install -q torch==2.13.0 $(TEST_DEPS)
	touch $@

# The CPU wheel, built in build-cpu/ (never the main build's in-place _C), then verified as a user gets it.
test-cpu: $(VENV_CPU)/.deps
	$(VENV_CPU)/bin/python scripts/build_wheels.py --cpu --out $(DIST) --verify

verify-wheel-cuda: build
	$(VENV)/bin/python scripts/build_wheels.py --cuda --out $(DIST) --verify

wheels: build $(VENV_CPU)/.deps
	$(VENV)/bin/python scripts/build_wheels.py --cuda --out $(DIST)
	$(VENV_CPU)/bin/python scripts/build_wheels.py --cpu --out $(DIST)

verify-wheels: test-cpu verify-wheel-cuda

test-cmake: $(VENV_CPU)/.deps
	cmake -S . -B build-cmake -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(VENV_CPU)/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  $(CMAKE_ARGS)
	cmake --build build-cmake -j $(MAX_JOBS)
	PYTHONPATH=$(CURDIR)/python REGOPS_OPS_LIBRARY=$(CURDIR)/build-cmake/libregops_ops.so \
	  $(VENV_CPU)/bin/python -m pytest $(PYTEST_FLAGS) -m smoke tests

# The CPU kernels built with ASan + UBSan (CMake, against .venv-cpu's libtorch), the tests that run them under
# the sanitizers (scripts/sanitize.sh preloads the runtimes into Python and fails on any report).
SANITIZE_TESTS ?= tests/test_schemas.py tests/test_edge_values.py tests/test_class_rows.py tests/test_contrastive_engine.py \
  tests/test_fuzz_layouts.py tests/test_size_limits.py
sanitize: $(VENV_CPU)/.deps
	cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREGOPS_SANITIZE=address,undefined \
	  -DCMAKE_PREFIX_PATH="$$($(VENV_CPU)/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build build-sanitize -j $(MAX_JOBS)
	PYTHONPATH=$(CURDIR)/python bash scripts/sanitize.sh $(VENV_CPU)/bin/python -m pytest $(PYTEST_FLAGS) -p no:cacheprovider -k "not triton and not cuda" $(SANITIZE_TESTS)

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build build-cpu build-cmake $(DIST) python/regops/_C*.so python/regops/_build_facts.json *.egg-info python/*.egg-info
