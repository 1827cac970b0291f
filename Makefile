# dinet — the two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dinet-installed
# The local CPU build of torch; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup test demo bench bench-peers lint clean fields

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	  elif (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1; then \
	    echo "installed dataset-fashion-mnist"; \
	  else echo "notice: could not install dataset-fashion-mnist (apt-get failed); Fashion-MNIST commands will say how to get it"; fi; \
	else echo "notice: not root or no apt-get: skipping dataset-fashion-mnist"; fi
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q

# The main job: fields -> train on Sobol and on the grid -> test on every discretization.
demo: setup
	$(VENV)/bin/dinet demo

# All 70k Fashion-MNIST images as 32x32 SIREN fields (train 60k + test 10k), resumable.
FIELDS_DIR ?= data/fields
fields: setup
	$(VENV)/bin/dinet fit --source fashion-mnist --split train --out $(FIELDS_DIR)/fashion-mnist-train
	$(VENV)/bin/dinet fit --source fashion-mnist --split test --out $(FIELDS_DIR)/fashion-mnist-test

# Every benchmark suite (conv, layers, fit, train-step, scaling); results and summary.md
# under benchmarks/results/. `make bench-peers` first adds the optional DISCO peer
# (neuraloperator's DiscreteContinuousConv2d). torch-harmonics builds a C++ extension
# against the installed torch: no build isolation, or pip would fetch a CUDA torch to build.
BENCH_PEERS ?= torch-harmonics==0.7.4 neuraloperator==2.0.0
bench: setup
	$(VENV)/bin/dinet bench all

bench-peers: setup
	$(PY) -m pip install --quiet wheel "setuptools>=64"
	$(PY) -m pip install --quiet --no-build-isolation $(BENCH_PEERS)

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
