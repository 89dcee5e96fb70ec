# sedmon: make run | make test | make lint | make bench [QUICK=1] | make demo | make validate
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYPROJECTS := pyproject.toml shared/pyproject.toml client/pyproject.toml server/pyproject.toml

.PHONY: install run test lint bench demo validate postgres browser clean

$(STAMP): $(PYPROJECTS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --config-settings editable_mode=compat -e 'shared[analysis]' -e 'client[torch]' -e server -e '.[dev]' torch==2.13.0
	@touch $(STAMP)

install: $(STAMP)

postgres:
	@bash scripts/ensure-postgres.sh

browser:
	@bash scripts/ensure-browser.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy demo

test: install postgres browser lint
	$(PY) -m pytest

run: install
	$(PY) -m demo.live

demo: install
	$(PY) -m demo.live --once

validate: install
	$(PY) -m demo.validate

# Every script in bench/, in turn; QUICK=1 runs each at smoke size (figures not for the docs).
bench: install postgres
	$(PY) bench/sketch.py $(if $(QUICK),--quick)
	$(PY) bench/ingest.py $(if $(QUICK),--quick)
	$(PY) bench/ingest_profile.py $(if $(QUICK),--checkpoints 100)
	$(PY) bench/alerts.py $(if $(QUICK),--seeds 2 --quiet-length 200 --event-length 80)
	$(PY) bench/overhead.py $(if $(QUICK),--steps 60 --repeats 1 --every 20)
	$(PY) bench/accuracy.py $(if $(QUICK),--no-docs)

clean:
	rm -rf $(VENV) .sedmon .pytest_cache .mypy_cache .ruff_cache
