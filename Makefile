# fdshpo developer commands. `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fdshpo-installed
PIP_FLAGS := --disable-pip-version-check --progress-bar off

.PHONY: install demo test lint bench clean

install: $(STAMP)

# Reinstalls only when the project's requirements change (a stamp file makes a no-op 0 s).
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) -m fdshpo.demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
