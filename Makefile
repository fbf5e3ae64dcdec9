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
APT_PACKAGES ?= portaudio19-dev systemd espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k \
	festvox-us-slt-hts sox
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup test lint demo bench data data-stats train convert calibration eval eval-baseline \
	deploy pi-test clean

MODEL := build/udkws_int8.tflite
SHIPPED_CKPT := training/shipped/udkws_edge.pt
CKPT ?= $(SHIPPED_CKPT)

help:
	@echo "make demo        enroll a word from 3 bundled takes, replay a 60 s stream through the daemon (mock GPIO)"
	@echo "make test        the test suite"
	@echo "make setup       create .venv with everything needed for development (idempotent)"
	@echo "make lint        ruff on everything, mypy --strict on edge/"
	@echo "make data        build the synthetic many-word corpus under corpora/ (and LSK with LIBRISPEECH=...)"
	@echo "make train       reproduce the shipped edge encoder (training/shipped/udkws_edge.pt)"
	@echo "make convert     checkpoint -> ONNX -> onnx2tf -> verified int8 TFLite in build/ (CKPT=... for another)"
	@echo "make calibration regenerate calibration_data/"
	@echo "make eval        the user-defined protocol on gsc_v2_test for the int8 model (eval-baseline: MFCC+DTW)"
	@echo "make bench       front-end, daemon and streaming figures -> docs/BENCHMARKS.md"
	@echo "make deploy PI=user@host [DRY_RUN=1]   install on a Raspberry Pi over ssh"
	@echo "make pi-test     run the board side on an emulated arm64 Debian bookworm (root, qemu, debootstrap)"

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
	# The distillation teacher (Apache-2.0); only its ONNX encoder is used, so none of its audio stack.
	$(BIN)/python -m pip install -q --no-deps efficientword-net==1.0.5
	@$(BIN)/python -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'"
	@touch $(STAMP)

# The shipped int8 model is built first so that the tests of the shipped model run too (make convert's checks).
test: $(STAMP) $(MODEL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check edge training conversion tests
	$(BIN)/mypy edge
	@if command -v shellcheck >/dev/null; then shellcheck edge/deploy/*.sh; fi

# The int8 model is built from the committed checkpoint; the same checkpoint gives a byte-identical file.
$(MODEL): $(SHIPPED_CKPT) | $(STAMP)
	$(BIN)/kws-convert all

demo: $(STAMP) $(MODEL)
	$(BIN)/python edge/demo/run_demo.py

convert: $(STAMP)
	$(BIN)/kws-convert all $(if $(filter-out $(SHIPPED_CKPT),$(CKPT)),--checkpoint $(CKPT)) $(CONVERT_ARGS)

calibration: $(STAMP)
	$(BIN)/python -m conversion.calibration

# The synthetic many-word corpus (corpora/synthetic, ~17 minutes on 2 cores); LSK when LibriSpeech is given.
DATA_JOBS ?= 2
LIBRISPEECH ?=
LIBRISPEECH_ALIGNMENTS ?= $(LIBRISPEECH)
data: $(STAMP)
	nice -n 10 $(BIN)/kws-train data synthetic --jobs $(DATA_JOBS)
	@if [ -n "$(LIBRISPEECH)" ]; then \
		$(BIN)/kws-train data lsk --librispeech "$(LIBRISPEECH)" --alignments "$(LIBRISPEECH_ALIGNMENTS)" \
			--jobs $(DATA_JOBS); \
	else echo "LSK skipped: make data LIBRISPEECH=/path/LibriSpeech [LIBRISPEECH_ALIGNMENTS=/path]"; fi

data-stats: $(STAMP)
	$(BIN)/kws-train data stats

# Reproduces training/shipped/udkws_edge.pt: the synthetic corpus (as `make data`, kept once built), teacher
# targets for every clip (2 processes, cached under cache/), 16 epochs of distillation, then the protocol.
# Measured times are in training/shipped/MODEL_CARD.md.
SYNTHETIC := corpora/synthetic/manifest.csv
$(SYNTHETIC): | $(STAMP)
	nice -n 10 $(BIN)/kws-train data synthetic --jobs $(DATA_JOBS)

train: $(STAMP) $(SYNTHETIC)
	$(BIN)/kws-train train --config training/configs/edge.toml --name edge
	$(BIN)/kws-train ship runs/edge/last.pt $(SHIPPED_CKPT)
	rm -f $(SHIPPED_CKPT).prev
	$(BIN)/kws-eval --checkpoint $(SHIPPED_CKPT) --shots 1 5 10 --seeds 0 1 2 --out runs/eval/udkws_edge

eval: $(STAMP) $(MODEL)
	$(BIN)/kws-eval --tflite $(MODEL) --out runs/eval/int8

eval-baseline: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/kws-eval --baseline mfcc-dtw --out runs/eval/mfcc-dtw

bench: $(STAMP) $(MODEL)
	OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/kws-edge bench
	OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/kws-bench

deploy:
	@test -n "$(PI)" || { echo "usage: make deploy PI=user@host [DRY_RUN=1] [MODEL=...] [SSH_OPTS=...]" >&2; exit 2; }
	@test -f $(MODEL) || $(MAKE) $(MODEL)
	PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) DRY_RUN=$(DRY_RUN) edge/deploy/deploy.sh $(PI)

pi-test: $(STAMP) $(MODEL)
	$(BIN)/python tests/tools/pi_test.py --model $(MODEL)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
