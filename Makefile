# `make run` and `make test` are all a fresh machine needs (they install what is missing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSDEPS_STAMP := .k8semu/.sysdeps
PYTEST_ARGS ?=
# Workers for make test: tests mostly wait on real processes, so three share two cores well;
# --dist loadscope keeps a module (and its module-scoped cluster) on one worker.
PYTEST_WORKERS ?= 3

.PHONY: run test check fmt lint types protos sysdeps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# Debian packages the tests and benchmarks compare against (etcd, etcdctl).
$(SYSDEPS_STAMP): scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	mkdir -p .k8semu && touch $(SYSDEPS_STAMP)

sysdeps: $(SYSDEPS_STAMP)

# The default cluster (cluster_configs/local.yaml) in the foreground, with the sample app
# (examples/echo.yaml) deployed and reachable; Ctrl-C stops every process.
run: $(STAMP)
	$(VENV)/bin/k8semu up --demo

check: $(STAMP)
	$(PY) scripts/genproto.py --check
	$(VENV)/bin/ruff check k8semu tests scripts
	$(VENV)/bin/ruff format --check k8semu tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: $(STAMP) $(SYSDEPS_STAMP) check
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

fmt: $(STAMP)
	$(VENV)/bin/ruff format k8semu tests scripts
	$(VENV)/bin/ruff check --fix k8semu tests scripts

protos: $(STAMP)
	$(PY) scripts/genproto.py

bench: $(STAMP) $(SYSDEPS_STAMP)
	$(PY) scripts/bench_store.py --compare

clean:
	rm -rf $(VENV) .k8semu build *.egg-info
