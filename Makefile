# Two commands do all the set-up: `make run` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# torch is pinned through constraints.txt so pip never pulls the CUDA build.
CONSTRAINTS := -c constraints.txt

.PHONY: run test install dev lint format bench clean readme grpo suite

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.llm-installed: $(VENV)/.installed
	$(PIP) install $(CONSTRAINTS) -e ".[llm]"
	touch $@

# make bench also runs the Box2D and Atari presets (goal 1) and the Atari CNN (goal 5).
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PIP) install $(CONSTRAINTS) -e ".[atari,box2d]"
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install $(CONSTRAINTS) -e ".[dev,llm,peft,data,atari,minigrid,box2d]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

run: install
	$(BIN)/ppokit train

# The language-model demo (GRPO on 2-digit addition, a tiny model built in code): needs the llm extra.
grpo: $(VENV)/.llm-installed
	$(BIN)/ppokit grpo

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

readme: install
	$(BIN)/python -m ppokit.readme    # the pages of ppokit.readme.PAGES

# The preset suites over seeds 0-2 (benchmarks/specs/suite.yaml; resumable, one run at a time; hours
# for MuJoCo): raw results under docs/results/, then docs/results.md. SUITE_ARGS="--set options.suite=mujoco".
suite: dev
	$(BIN)/python benchmarks/bench.py run specs/suite.yaml $(SUITE_ARGS)

# Issue 17's goals side by side with Stable-Baselines3, idle and beside a busy loop (peers go into
# benchmarks/.peers); writes docs/benchmarks.md. Full plan ~70 min on 2 cores; the smoke test CI runs
# is BENCH_ARGS="--set 'options={quick: true}'" (~2 min); every spec: benchmarks/bench.py list.
bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bench.py run specs/side_by_side.yaml $(BENCH_ARGS)
