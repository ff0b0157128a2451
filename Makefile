# adsformer: every target that needs the environment depends on $(STAMP),
# so any of them works as the first command on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python
ADSF := $(VENV)/bin/adsformer
LAKE ?= lake
PRESET ?= local
DATE ?=
START ?=
END ?=
PYTEST_ARGS ?= --durations=20

.PHONY: help setup lock pipeline-local backfill test test-fast airflow-test airflow-lock bench lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@echo ">> creating $(VENV) from requirements.lock (about two minutes on a fresh machine)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip==25.3"
	$(VENV)/bin/pip install --quiet --no-deps -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv from the lock file and install the project (editable)

lock:  ## re-resolve requirements.in into requirements.lock (needs the package registry)
	rm -rf build/lockvenv && $(PYTHON) -m venv build/lockvenv
	build/lockvenv/bin/pip install --quiet --upgrade "pip==25.3"
	build/lockvenv/bin/pip install --quiet -r requirements.in
	{ echo "# Exact pins, verified together on a 2-core linux/x86_64 CPython 3.11 machine."; \
	  echo "# Regenerate with 'make lock' (resolves requirements.in in a scratch venv)."; \
	  build/lockvenv/bin/pip freeze --all --exclude-editable | grep -v "^pip=="; } > requirements.lock
	build/lockvenv/bin/python docker/gpu_lock.py  # the GPU trainer's pins follow (docker/README.md)

pipeline-local: $(STAMP)  ## generate the local synthetic marketplace into ./lake if absent and run the DAG for its default date
	$(ADSF) run --root $(LAKE) --preset $(PRESET) $(if $(DATE),--date $(DATE),)

backfill: $(STAMP)  ## run the DAG for every date START..END (make backfill START=2026-03-04 END=2026-03-06)
	@test -n "$(START)" -a -n "$(END)" || { echo "usage: make backfill START=YYYY-MM-DD END=YYYY-MM-DD [PRESET=local] [LAKE=lake]"; exit 2; }
	$(ADSF) backfill --root $(LAKE) --preset $(PRESET) --start $(START) --end $(END)

test: $(STAMP)  ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the suite without the slow tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

AIRFLOW_VENV ?= build/airflow-venv
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

$(AIRFLOW_STAMP): airflow/requirements.lock
	@echo ">> creating $(AIRFLOW_VENV) (Airflow's own environment) from airflow/requirements.lock"
	rm -rf $(AIRFLOW_VENV) && $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade "pip==25.3"
	$(AIRFLOW_VENV)/bin/pip install --quiet --no-deps -r airflow/requirements.lock
	$(AIRFLOW_VENV)/bin/pip check
	@touch $(AIRFLOW_STAMP)

airflow-test: $(STAMP) $(AIRFLOW_STAMP)  ## generate the Airflow DAG and run `airflow dags test` on the tiny preset end to end
	AIRFLOW_VENV=$(AIRFLOW_VENV) bash airflow/dags_test.sh

airflow-lock:  ## re-resolve apache-airflow into airflow/requirements.lock
	rm -rf build/airflow-lockvenv && $(PYTHON) -m venv build/airflow-lockvenv
	build/airflow-lockvenv/bin/pip install --quiet --upgrade "pip==25.3"
	build/airflow-lockvenv/bin/pip install --quiet "apache-airflow==3.3.2"
	{ head -2 airflow/requirements.lock; build/airflow-lockvenv/bin/pip freeze --all | grep -v "^pip=="; } > build/airflow.lock
	mv build/airflow.lock airflow/requirements.lock

bench: $(STAMP)  ## measure the pipeline (writes bench/results.json and bench/results.md)
	$(PY) -m pipelines.bench --out bench

lint: $(STAMP)  ## byte-compile everything and check the DAG declaration
	$(PY) -m compileall -q pipelines components schemas tests
	$(ADSF) dag > /dev/null

clean:  ## remove the environment, the local lake and caches
	rm -rf $(VENV) $(LAKE) build .pytest_cache .hypothesis
