# udkws: user-defined keyword spotting for Raspberry Pi-class boards.
# `make demo` and `make test` work on a fresh clone: they set up .venv themselves.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.udkws-setup
# The CPU build of torch; where pip cannot find it locally, pass e.g.
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" so pip never pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
APT_PACKAGES ?= portaudio19-dev
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup test lint demo bench data train convert deploy clean

help:
	@echo "make demo      run the demo on the shipped files (sets up .venv)"
	@echo "make test      run the test suite (sets up .venv)"
	@echo "make setup     create .venv with everything needed for development (idempotent)"
	@echo "make lint      ruff on everything, mypy --strict on edge/"
	@echo "make bench     print speed figures measured on this machine"
	@echo "make data / train / convert / deploy   land with their issues; each says so until then"

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel "setuptools>=77"
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[edge,train,convert,dev]"
	$(BIN)/python -m pip install -q --no-deps onnx2tf==1.29.24 tf-keras==2.21.0
	@$(BIN)/python -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'"
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check edge training conversion tests
	$(BIN)/mypy edge

demo: $(STAMP)
	$(BIN)/kws-edge features edge/demo/happy_012c8314_0.wav

bench: $(STAMP)
	OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/kws-edge bench

data train convert deploy:
	@echo "make $@: not built yet (see the open issues); nothing was done." >&2; exit 2

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
