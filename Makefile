# The two commands of the README. Each creates .venv itself on a machine with Python >= 3.10 and pip.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test fast bench clean

$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$*]"
	touch $@

# The headline experiment on the embedded data (no download): the survey's Tables 1-2 at smoke scale.
demo: $(VENV)/.installed-test
	$(PY) experiments/survey_tables.py --preset=smoke --workdir=runs/demo

# Third-party Open Inference Protocol software the tests speak to (tests/oip_test.py, the arena's served row), in a
# venv of its own: MLServer pins fastapi < 0.116 and tritonclient ml-dtypes <= 0.5.4, which would downgrade the
# project's. The project goes in too (no extras), for the MLServer runtime that serves one of its artifacts.
OIP := .venv-oip
$(OIP)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OIP)
	$(OIP)/bin/python -m pip install -q --upgrade pip
	$(OIP)/bin/python -m pip install -q "mlserver==1.7.1" "tritonclient[http]==2.73.0" -e .
	touch $@

# Two workers; a test module stays on one, so its module fixtures and compiled functions are built once, not on both.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadscope

# The whole test suite, the TFDS path, DP-SGD and serving included (their extras are installed for it).
test: $(VENV)/.installed-test,tfds,dp,serve $(OIP)/.installed
	$(PYTEST) tests

# The fast lane: every test but the end-to-end runs marked slow.
fast: $(VENV)/.installed-test,tfds,dp,serve
	$(PYTEST) -m "not slow" tests

bench: $(VENV)/.installed-test
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(OIP) runs
