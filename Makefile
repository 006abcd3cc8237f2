# The two commands a new user runs: `make demo` and `make test`.
# Each creates .venv when it is missing and installs the package into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: demo test test-fast docs bench bench-quick clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamp files: reinstall only when the metadata changes.
$(VENV)/.installed: $(PY) setup.cfg pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

# The suite needs every extra: bench too (tests/test_torch_peer.py runs the Torch-Pruning peer).
$(VENV)/.installed-test: $(PY) setup.cfg pyproject.toml
	$(PIP) install --quiet -e ".[test,docs,hub,onnx,backends,bench]"
	touch $@

# `make demo` replaces its own previous output (recognized by its report.json), never anything else.
demo: $(VENV)/.installed
	$(VENV)/bin/tf-groupsparse demo --output saved_models/demo --overwrite

# The whole suite on TensorFlow: unit tests, the docstring examples of the package, the notebooks
# (and the documentation build, tests/test_docs.py), two workers; then the tests marked `backends`
# again under JAX and under PyTorch, one pytest process per backend. TGS_REQUIRE_EXTRAS=1: a test
# that needs an extra fails instead of skipping when the extra is missing (tests/conftest.py).
BACKEND_TESTS := tests/test_backends.py tests/test_backends_stages.py tests/test_groups.py tests/test_regularizers.py tests/test_export_onnx.py
test: export TGS_REQUIRE_EXTRAS = 1
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile $(PYTEST_ARGS) tests tf_groupsparse --doctest-modules --nbmake notebooks
	KERAS_BACKEND=jax $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m backends $(PYTEST_ARGS) $(BACKEND_TESTS)
	KERAS_BACKEND=torch $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m backends $(PYTEST_ARGS) $(BACKEND_TESTS)

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS) tests

docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(VENV)/.installed-test
	$(PY) -m benchmarks.run_all

bench-quick: $(VENV)/.installed-test
	$(PY) -m benchmarks.quick

clean:
	rm -rf build dist *.egg-info .pytest_cache site
