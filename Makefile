# phagoflow — every target creates the virtual environment first if it is missing.
# On a fresh machine `make demo` and `make test` are the only two commands you need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

DEMO_DIR  ?= demo-out
DEMO_METHOD ?= all

.PHONY: help venv demo test test-fast lint bench model experiment review up down stack-status e2e bench-stream clean

help:
	@echo "make demo        simulate a small screen and process it with no servers: Z' and hits"
	@echo "make test        run the whole test suite (slow tests included, as CI does)"
	@echo "make test-fast   run the fast tests only"
	@echo "make lint        ruff + mypy (strict, whole package)"
	@echo "make bench       run the benchmarks in benchmarks/ and print their figures"
	@echo "make model       retrain the packaged default CDL model on simulated plates"
	@echo "make experiment  the paper's CIP-vs-CDL experiment on simulated plates"
	@echo "make review      open the review-and-correct web app on the demo results"
	@echo "make up          start the local stack (Kafka, S3, Triton, Prometheus, services); prints endpoints"
	@echo "make down        stop the local stack"
	@echo "make stack-status  what runs, where, with how much memory"
	@echo "make e2e         a simulated plate through the running stack, checked against phagoflow run"
	@echo "make bench-stream  latency and throughput of the running stack"

venv: $(STAMP)

# Re-installs when pyproject.toml changes; idempotent otherwise.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# A simulated screen: 24 wells x 2 fields with a Hoechst channel (per-cell readouts) and a plate
# map (3 negative, 3 positive controls with a 4x phagophore effect planted, one planted sample
# hit); a flat plate (no column gradient, little well-to-well noise) so the planted wells are
# the only true effects. The last line checks that the hits are the planted wells.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/phagoflow simulate $(DEMO_DIR)/plate --wells 24 --fields 2 --seed 1 --plate DEMO0001 \
	    --nuclear --screen --effect 4 --well-sigma 0.05 --plate-gradient 0
	$(BIN)/phagoflow run $(DEMO_DIR)/plate --out $(DEMO_DIR)/results --method $(DEMO_METHOD) \
	    --workers 2 --plate-map $(DEMO_DIR)/plate/plate_map.csv
	$(BIN)/python -m phagoflow.embedded.screen check-planted $(DEMO_DIR)/plate/truth/wells.csv \
	    $(DEMO_DIR)/results/hits.csv

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check services tests benchmarks scripts
	$(BIN)/ruff format --check services tests benchmarks scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# phagoflow simulate -> phagoflow train -> phagoflow evaluate (~25 min on 2 cores); the commands
# and the held-out scores go into the card. MODEL_DIR=elsewhere leaves the packaged model alone.
model: $(STAMP)
	BIN=$(BIN) scripts/make_default_model.sh

experiment: $(STAMP)
	$(BIN)/python scripts/experiment.py

review: $(STAMP)
	test -f $(DEMO_DIR)/results/run.json || $(MAKE) demo
	$(BIN)/phagoflow review $(DEMO_DIR)/results

up: $(STAMP)
	$(BIN)/phagoflow stack up

down: $(STAMP)
	$(BIN)/phagoflow stack down

stack-status: $(STAMP)
	$(BIN)/phagoflow stack status

e2e: $(STAMP)
	$(BIN)/python -m phagoflow.stack.e2e

bench-stream: $(STAMP)
	$(BIN)/python -m phagoflow.stack.bench --wells 8 --fields 2 --interval 2

clean:
	rm -rf $(DEMO_DIR) bench-out experiment-out .pytest_cache .mypy_cache .ruff_cache
