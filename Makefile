# longdream — every target runs through the project virtualenv (.venv), created by `make setup`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export MUJOCO_GL ?= egl

EPISODES ?= data/episodes/mm9
HELDOUT  ?= data/episodes/mm9-heldout
RUN      ?= runs/demo
RECALL_EPISODES ?= data/episodes/mm9-revisit
RECALL_HELDOUT  ?= data/episodes/mm9-revisit-heldout
CRAFTER_EPISODES ?= data/episodes/crafter
CRAFTER_HELDOUT  ?= data/episodes/crafter-heldout
CRAFTER_RUN      ?= runs/crafter

.PHONY: help setup test test-slow lint format check data ae train train-long demo bench bench-scaling data-recall bench-recall bench-ddp agent-dreamer agent-sb3 bench-agents data-crafter train-crafter clean

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install longdream editable (quick when already done)

test: setup  ## run the fast CPU test suite
	$(BIN)/python -m pytest -q

test-slow: setup  ## run only the slow tests
	$(BIN)/python -m pytest -q -m slow

lint: setup  ## ruff lint (pyflakes, pycodestyle, isort, bugbear, pyupgrade, docstrings of public APIs)
	$(BIN)/ruff check .

format: setup  ## rewrite the code in the project's format (ruff format + import sorting)
	$(BIN)/ruff check --select I --fix .
	$(BIN)/ruff format .

check: setup  ## what a reviewer runs: lint, format check, then the tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

data: setup  ## collect 40 real Memory Maze 9x9 episodes (explore + random-action segments) into $(EPISODES), 12 unseen into $(HELDOUT)
	$(BIN)/python -m envs.collect --env longdream/MemoryMaze-9x9-ExtraObs-v0 --episodes 40 --steps 500 \
		--out $(EPISODES) --workers 2 --seed 0 --policy mixed
	$(BIN)/python -m envs.collect --env longdream/MemoryMaze-9x9-ExtraObs-v0 --episodes 12 --steps 500 \
		--out $(HELDOUT) --workers 2 --seed 1000 --policy explore

train: setup  ## train the cpu-preset world model on $(EPISODES) into $(RUN) (resumes if $(RUN) has a checkpoint)
	$(BIN)/python -m worldmodel.train --preset cpu --episodes $(EPISODES) --heldout $(HELDOUT) --run-dir $(RUN) \
		$(if $(wildcard $(RUN)/checkpoint.pt),--resume,)

train-long: setup  ## train the long preset (the cpu model, 4x the steps: ~60 min on 2 cores) into runs/long (resumes)
	$(BIN)/python -m worldmodel.train --preset long --episodes $(EPISODES) --heldout $(HELDOUT) --run-dir runs/long \
		$(if $(wildcard runs/long/checkpoint.pt),--resume,)

bench-scaling: setup  ## quality vs training minutes: the long run in runs/long scored at ~5/15/30/60 min (resumable)
	$(BIN)/python -m benchmarks.scaling --episodes $(EPISODES) --heldout-episodes $(HELDOUT) --run-dir runs/long

data-recall: setup  ## collect the recall data: 40 revisit episodes into $(RECALL_EPISODES), 12 unseen into $(RECALL_HELDOUT) (resumable)
	$(BIN)/python -m envs.collect --env longdream/MemoryMaze-9x9-ExtraObs-v0 --steps 400 --policy revisit --revisit-steps 32 \
		--workers 2 --episodes 40 --seed 0 --out $(RECALL_EPISODES)
	$(BIN)/python -m envs.collect --env longdream/MemoryMaze-9x9-ExtraObs-v0 --steps 400 --policy revisit --revisit-steps 32 \
		--workers 2 --episodes 12 --seed 1000 --out $(RECALL_HELDOUT)

bench-recall: setup  ## recall benchmark (retrieval, reasoning, recall vs distance): 7 variants of the recall preset trained alike into runs/recall (7 x 600 steps: the hybrid took 25 min on shared cores; resumable per variant), results in benchmarks/results/recall.*
	$(BIN)/python -m benchmarks.recall --episodes $(RECALL_EPISODES) --heldout-episodes $(RECALL_HELDOUT) --sweep runs/recall

bench-ddp: setup  ## training throughput on 1 vs 2 processes (torchrun, DDP over gloo, 1 thread each), cpu preset on $(EPISODES): benchmarks/results/train_ddp.* (run on quiet cores)
	$(BIN)/python -m benchmarks.train_ddp --episodes $(EPISODES)

data-crafter: setup  ## collect 100 Crafter episodes (random_repeat, up to 500 steps; the player dies after ~180) into $(CRAFTER_EPISODES), 24 unseen into $(CRAFTER_HELDOUT) (resumable)
	$(BIN)/python -m envs.collect --env longdream/Crafter-v0 --episodes 100 --steps 500 \
		--out $(CRAFTER_EPISODES) --workers 2 --seed 0 --policy random_repeat
	$(BIN)/python -m envs.collect --env longdream/Crafter-v0 --episodes 24 --steps 500 \
		--out $(CRAFTER_HELDOUT) --workers 2 --seed 1000 --policy random_repeat

train-crafter: setup  ## train the crafter-preset world model (~5 + 13 min on 2 quiet cores) on $(CRAFTER_EPISODES) into $(CRAFTER_RUN) (resumes)
	$(BIN)/python -m worldmodel.train --preset crafter --episodes $(CRAFTER_EPISODES) --heldout $(CRAFTER_HELDOUT) \
		--run-dir $(CRAFTER_RUN) $(if $(wildcard $(CRAFTER_RUN)/checkpoint.pt),--resume,)

ae: setup  ## train only the stage-1 autoencoder into $(RUN) (worldmodel.train does this itself when missing)
	$(BIN)/python -m worldmodel.train_autoencoder --preset cpu --episodes $(EPISODES) --out $(RUN)

bench: setup  ## quick benchmarks: collection speed, SSD, latency vs context, training cost (JSON+PNG in benchmarks/results/)
	$(BIN)/python -m benchmarks.collect_speed
	$(BIN)/python -m benchmarks.ssd_speed
	$(BIN)/python -m benchmarks.latency
	$(BIN)/python -m benchmarks.train_cost
	$(BIN)/python -m benchmarks.summary

plan: setup  ## planners (random shooting, CEM, MPPI) vs random and oracle in the real env with $(RUN)/checkpoint.pt (cpu preset)
	$(BIN)/python -m planners.evaluate --checkpoint $(RUN)/checkpoint.pt --preset cpu --heldout-episodes $(HELDOUT)

agent-dreamer: setup  ## a Dreamer-style actor-critic trained in the dream of $(RUN)/checkpoint.pt, judged in the real env, into runs/agent-dreamer (resumes)
	$(BIN)/python -m agents.dreamer --checkpoint $(RUN)/checkpoint.pt --episodes $(EPISODES) --run-dir runs/agent-dreamer \
		$(if $(wildcard runs/agent-dreamer/agent.pt),--resume,)

agent-sb3: setup  ## PPO (stable-baselines3) trained in the dream of $(RUN)/checkpoint.pt, judged in the real env, into runs/agent-sb3 (resumes)
	$(BIN)/python -m agents.sb3 --checkpoint $(RUN)/checkpoint.pt --episodes $(EPISODES) --run-dir runs/agent-sb3 \
		$(if $(wildcard runs/agent-sb3/config.json),--resume,)

bench-agents: setup  ## the agents' table: each agent run (and its real-step twin, if run) vs random and the oracle (benchmarks/results/agents.*)
	$(BIN)/python -m benchmarks.agents --heldout-episodes $(HELDOUT) \
		--runs $(wildcard runs/agent-dreamer runs/agent-dreamer-real runs/agent-sb3 runs/agent-sb3-real)

demo: data train  ## the main job on a small default: collect episodes, train the cpu preset, evaluate

clean:  ## remove caches (keeps .venv, data and runs)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
