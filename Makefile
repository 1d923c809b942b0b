# Headstart: `make run` runs the whole loop locally (set-up included); `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# OpenMP threads spin-wait by default; beside another busy process that made CPU steps 2-10x slower
export OMP_WAIT_POLICY ?= PASSIVE
# setup installs without byte-compiling (below), so Python must be free to cache the bytecode of what a run
# imports: where the environment sets PYTHONDONTWRITEBYTECODE (this kind of VM does), every process compiled
# torch and mlflow from source again, +8 s a process, so make drops it for the commands it runs
unexport PYTHONDONTWRITEBYTECODE
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# make test spreads the test modules over every core (pytest-xdist; a module's tests stay on one worker, with its
# fixtures), in the order tests/conftest.py puts them, slow modules first (xdist's default reorders by test count,
# which left two-minute loops for the end). One worker more than cores: a third of the suite waits on servers,
# subprocesses and lease timers (2 workers kept 2 cores 165% busy, 3 workers 184%). TEST_WORKERS=0: one process
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
XDIST := -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

.PHONY: help setup data postgres chromium images run repro summary test test-faults test-containers test-fast lint lint-infra bench bench-data bench-containers compile clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv (pip; torch from this machine's disk) and install headstart

# --no-compile: pip byte-compiles every installed module (torch's and mlflow's thousands), ~25 s on 2 cores;
# Python compiles the ones a run imports, once, on first import (PYTHONDONTWRITEBYTECODE is dropped above)

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-compile -c requirements.lock -e '.[dev]'
	@touch $@

data: setup  ## build data/ from the Fashion-MNIST IDX files and check it matches data.dvc
	@if [ -z "$$FASHION_MNIST_DIR" ] && [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] \
	   && command -v apt-get >/dev/null; then \
	  echo "installing the Debian package dataset-fashion-mnist"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null) || \
	  echo "apt-get could not install dataset-fashion-mnist; trying other sources"; \
	fi
	@if [ -d data ] && dvc status -q data.dvc 2>/dev/null; then echo "data/ matches data.dvc"; else \
	  headstart data import-fashion-mnist --out data && dvc commit -f -q data.dvc && \
	  if git diff --quiet -- data.dvc; then echo "data/ matches data.dvc"; else \
	    echo "error: the import does not reproduce the hash pinned in data.dvc" >&2; \
	    git diff -- data.dvc >&2; git checkout -- data.dvc; exit 1; fi; \
	fi

postgres:  ## install PostgreSQL (Debian package) for the tests' throw-away cluster behind mlflow server
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v apt-get >/dev/null; then \
	  echo "installing the Debian package postgresql"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -q >/dev/null && \
	   $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null) || \
	  echo "apt-get could not install postgresql; the PostgreSQL tests will fail (tests/integration/servers.py)"; \
	fi

chromium:  ## install Chromium (Debian package) for the tests that render the reports in a real browser
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
	  echo "installing the Debian package chromium"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -q >/dev/null && \
	   $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null) || \
	  echo "apt-get could not install chromium; the browser tests will fail (tests/helpers.py)"; \
	fi

# podman on this kind of machine needs runc, cgroupfs and lower ulimits (tools/containers.conf); a system's own
# /etc/containers/containers.conf is left alone
export CONTAINERS_CONF ?= $(CURDIR)/tools/containers.conf

images:  ## build the component images localhost/headstart:<version>[-cuda] (podman or docker; installs podman)
	bash tools/images.sh

# --single-item dvc.yaml: the stages in file order, without DVC re-hashing the 70k images for data.dvc, which
# `make data` has just checked (a no-op repro: 2.6 s instead of 4.8 s); tests/unit/test_dvc_yaml.py keeps the
# file order a valid run order.
run: data  ## the whole loop: validate, train both, evaluate, register, gate (dvc repro), then the summary
	@start=$$(date +%s); dvc repro --single-item dvc.yaml; rc=$$?; \
	echo "wall time: $$(( $$(date +%s) - start ))s"; \
	if [ -f outputs/decision/registration.json ]; then headstart summary; fi; exit $$rc

repro: run

summary: setup  ## print the last run's summary table again
	headstart summary

test: data postgres chromium  ## the test suite, slow tests included (the fault sweep is make test-faults)
	$(BIN)/python -m pytest -q -m "not faults and not containers" $(XDIST) $(PYTEST_ARGS)

# the sweep's cases go one by one to the workers (each worker brings up its own server, proxy and store)
test-faults: data postgres  ## the registry fault-injection sweep (~3 min on 2 cores; CI runs it after make test)
	$(BIN)/python -m pytest -q -m faults -n $(TEST_WORKERS) --dist load $(PYTEST_ARGS)

test-containers: setup postgres images  ## the pipeline in the component images under kfp.local.DockerRunner (~10 min + build)
	$(BIN)/python -m pytest -q -m containers $(PYTEST_ARGS)

test-fast: setup  ## unit and step tests only
	$(BIN)/python -m pytest -q -m "not slow and not integration and not containers" $(XDIST) $(PYTEST_ARGS)

lint: setup lint-infra  ## ruff over the code, then the infra checks
	$(BIN)/ruff check src tests benchmarks

LINT_VENV := .venv-lint

$(LINT_VENV)/.installed: requirements-lint.txt
	@test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-lint.txt
	@touch $@

lint-infra: $(LINT_VENV)/.installed  ## hadolint, kustomize, kubernetes-validate, checkov, HCL2 parse over infra/ and the Dockerfiles
	LINT_VENV=$(LINT_VENV) bash tools/lint-infra.sh

bench: data  ## benchmarks (see benchmarks/README.md); results land in benchmarks/results/
	$(BIN)/python benchmarks/gate_simulation.py
	$(BIN)/python benchmarks/validation_throughput.py
	$(BIN)/python benchmarks/train_overhead.py
	$(BIN)/python benchmarks/input_pipeline.py
	$(BIN)/python benchmarks/head_start.py

# BENCH_DATA_ARGS=--quick for a ~15 min run; the default sizes (5,000 vs 120,000 images, both forms) take ~1 h on 2 cores
BENCH_DATA_ARGS ?=
bench-data: setup  ## data at scale, ImageFolder and packed: memory/first step vs N, subset bytes per epoch (~1 h)
	$(BIN)/python benchmarks/data_scale.py $(BENCH_DATA_ARGS)

bench-containers: setup postgres images  ## image build, start-up and DockerRunner-vs-SubprocessRunner wall time
	$(BIN)/python benchmarks/containers.py

compile: setup  ## compile the Kubeflow pipeline spec (commit pipelines/headstart_pipeline.yaml)
	$(BIN)/headstart pipeline compile

clean:  ## remove run outputs (keeps data/, the venv and the MLflow store)
	rm -rf outputs .headstart/checkpoints
