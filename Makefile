# doubleword-batches: developer commands. `make` alone lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PORT   ?= 8765
# make test's parallel workers (pytest-xdist): the tests wait a lot (emulator batches, retries, timeouts),
# so more workers than cores; one test handed out at a time (--maxschedchunk 1) so that the long ones,
# started first (tests/conftest.py), do not queue behind each other. Tests marked serial (wall-clock or
# CPU-time bounds) run afterwards, one at a time; beside them only the two that wait on a stalled server.
TEST_WORKERS ?= 4

.DEFAULT_GOAL := help
.PHONY: help install test lint format demo serve bench soak package clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}' \
		| sed 's/$$(PORT)/$(PORT)/g'

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install runtime + dev dependencies

test: $(STAMP) lint ## run lint and the test suite (in parallel, then the time-bound tests alone)
	$(PY) -m pytest -q -m "not soak and not serial" -n $(TEST_WORKERS) --maxschedchunk 1
	$(PY) -m pytest -q -m "serial and not soak" -n 2 --dist loadgroup

lint: $(STAMP) ## ruff check, format check and mypy on scripts/
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP) ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo: $(STAMP) ## run the whole workflow against a local emulator
	$(PY) demo/run_demo.py

serve: $(STAMP) ## start the emulator on 127.0.0.1:$(PORT)
	$(PY) -m emulator --host 127.0.0.1 --port $(PORT) --db $(VENV)/emulator.sqlite3

bench: $(STAMP) ## print benchmark ratios against same-run baselines
	$(PY) bench/run.py

soak: $(STAMP) ## long fault and crash soak tests
	$(PY) -m pytest -q -m soak

package: ## build dist/doubleword-batches.zip as it would be published (standard library only)
	$(PYTHON) tools/package.py

clean: ## remove the virtual environment, caches and build output
	rm -rf $(VENV) dist .pytest_cache .ruff_cache .hypothesis
