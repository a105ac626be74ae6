# SmartUnit Monitor. On a fresh Debian machine, these two commands do all set-up:
#   make demo   installs what is missing and runs the whole service with simulated devices
#   make cluster-demo   the same as a cluster: 3 NATS nodes, PostgreSQL, 3 collectors
#   make test   installs what is missing and runs the test suite
# and, while working on the code:
#   make test-fast   the unit tests only (no servers, no processes), in under a minute
# Debian's own Python, the one scripts/install-deps.sh gives venv support, even where another
# python3 comes first on PATH (pyenv): measured 15 % faster on the collector's hot path
# (bench/stages.py) than a pyenv build without PGO on the same machine.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Alerta, a third-party Alertmanager receiver the tests run SmartUnit against, in a venv
# of its own: its pins never meet the collector's.
ALERTA_VENV  := .venv-alerta
ALERTA_STAMP := $(ALERTA_VENV)/.installed

.PHONY: demo cluster-demo test test-fast deps venv alerta lint fuzz bench clean

demo: deps venv
	$(VENV)/bin/smartunit demo

cluster-demo: deps venv
	$(VENV)/bin/smartunit cluster-demo

test: deps venv alerta
	$(PY) -m pytest $(PYTEST_ARGS)

# Leaves out every test marked e2e: tests/conftest.py marks each one that uses a server or
# collector fixture, or is marked slow. make test runs them all, and the fuzz tests with
# their full example count.
test-fast: venv
	FUZZ_EXAMPLES=100 $(PY) -m pytest -q -m "not e2e" $(PYTEST_ARGS)

deps:
	@PYTHON=$(PYTHON) scripts/install-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

alerta: $(ALERTA_STAMP)

$(ALERTA_STAMP): tests/alerta-requirements.txt
	$(PYTHON) -m venv $(ALERTA_VENV)
	$(ALERTA_VENV)/bin/python -m pip install --quiet -r tests/alerta-requirements.txt
	@touch $(ALERTA_STAMP)

lint: venv
	$(VENV)/bin/ruff check collector detectors fieldtools tests bench scripts
	$(VENV)/bin/mypy

fuzz: venv
	FUZZ_EXAMPLES=20000 $(PY) -m pytest -q tests/test_fuzz_decoding.py

bench: deps venv
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) $(ALERTA_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
