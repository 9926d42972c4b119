# The README's commands. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.voxshard-installed
PIP_FLAGS := --quiet --disable-pip-version-check
# the CPU build (a local file here; an unpinned torch pulls a multi-GB CUDA build).
# On a GPU machine: make setup TORCH='torch --index-url https://download.pytorch.org/whl/cu128'
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-all lint format typecheck check bench bench-scale bench-train clean

setup: $(STAMP)

# Re-installs only when pyproject.toml or this file changes; the project is installed editable.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip setuptools wheel
	$(BIN)/python -m pip install $(PIP_FLAGS) $(TORCH)
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev,train,gcp]'
	@touch $(STAMP)

demo: setup
	$(BIN)/voxshard demo demo-out

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ''

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The folders install as voxshard.<name> through setuptools' editable import hook, which mypy
# cannot follow: it checks a tree of links laid out as installed (pyproject: mypy_path).
MAPPED := schemas corpora normalizers encoders pipelines training tools
typecheck: setup
	@rm -rf .mypy-tree && mkdir -p .mypy-tree/voxshard
	@for f in voxshard/*.py; do ln -s ../../$$f .mypy-tree/voxshard/; done
	@for p in $(MAPPED); do ln -s ../../$$p .mypy-tree/voxshard/$$p; done
	$(BIN)/mypy
	$(BIN)/mypy tests

check: lint typecheck test

# espeak-ng (Debian) speaks the benchmark corpus; without it a synthesizer stands in
bench: setup
	@command -v espeak-ng >/dev/null || (apt-get install -y -q espeak-ng >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng >/dev/null 2>&1) \
		|| echo "espeak-ng unavailable: the corpus uses the demo synthesizer")
	$(BIN)/python benchmarks/run.py

# issue #8's scale check: peak RSS of a 10k vs a 100k-utterance build (~5 minutes)
bench-scale: setup
	$(BIN)/python benchmarks/run.py memory-scale

# the training step (synthetic batches) and the loader (the demo's builds); on a GPU machine
# add PRESET=base or PRESET=large (see README "Training")
PRESET ?= tiny
bench-train: demo
	$(BIN)/voxshard bench-train demo-out/build/commonvoice demo-out/build/voxpopuli \
		demo-out/build/mls demo-out/build/babel --mode both --preset $(PRESET) \
		--json benchmarks/results/train-$(PRESET).json

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .mypy-tree .ruff_cache
