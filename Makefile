# BobGen developer entry points. Everything installs into ./.venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
DB     ?= data/bobgen.db

.PHONY: run test lint format bench soak install clean contract

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps make re-runs instant while still reinstalling when the dependencies change.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# data/ too: yoyo.ini points there, so `yoyo apply` works on a fresh clone.
install: $(VENV)/.installed
	mkdir -p data

run: $(VENV)/.installed
	mkdir -p $(dir $(DB))
	$(BIN)/bobgen serve --host $(HOST) --port $(PORT) --db $(DB) --documents-dir seeds/documents

# mypy: strict for service/db, service/repositories and service/client, its defaults elsewhere
# (pyproject.toml).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# A run that collected nothing (pytest's exit 5) fails like any other: it proved nothing.
# Then the suites that start real servers, again with every server at --workers 2: what holds
# for one process must hold for a supervised pair (docs/scale-out.md#workers).
WORKER_SUITES := tests/reliability/test_crash.py tests/reliability/test_debug_contention.py \
	tests/reliability/test_scale_out.py tests/reliability/test_slow_clients.py \
	tests/reliability/test_corrupt_file.py tests/reliability/test_disk_full.py \
	tests/test_shutdown.py tests/test_deployed.py tests/test_testing_plugin.py \
	tests/test_quickstart.py tests/test_auth.py tests/test_cli_and_lifecycle.py \
	tests/test_ops_page.py tests/test_malformed_requests.py tests/hostile
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	BOBGEN_WORKERS=2 $(BIN)/python -m pytest $(WORKER_SUITES)

# schemathesis against a live server from /openapi.json, both backends, one process and then
# two workers, bounded (~1 minute each).
contract: $(VENV)/.installed-test
	$(BIN)/python tests/contract.py
	BOBGEN_WORKERS=2 $(BIN)/python tests/contract.py

# make bench: SQLite against its baselines; make bench MODE=postgresql: SQLite vs PostgreSQL
# with one and two instances (needs PostgreSQL on 127.0.0.1:5432 and wrk); make bench
# WORKERS=1,2: both backends with 1 and 2 workers, beside a bare aiohttp app on 2 processes.
MODE ?= sqlite
bench: $(VENV)/.installed
	if [ -n "$(WORKERS)" ]; then $(BIN)/python bench/bench_backends.py --workers $(WORKERS) $(BENCH_ARGS); \
	elif [ "$(MODE)" = postgresql ]; then $(BIN)/python bench/bench_backends.py $(BENCH_ARGS); \
	else $(BIN)/python bench/bench.py $(BENCH_ARGS); fi

# 10 minutes of mixed load at ~70 % of the measured maximum; exits non-zero on a regression.
# make soak MODE=postgresql: the same on a new PostgreSQL database (dropped afterwards).
soak: $(VENV)/.installed
	$(BIN)/python bench/soak.py --backend $(MODE) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
