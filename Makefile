# The two commands of the README: `make demo` and `make test`. Nothing else is needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export GX_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench install clean

install: $(STAMP)

# torch is installed first and pinned: the pin takes the CPU wheel from the local index,
# where an unpinned torch (asked for by another package) would pull GBs of CUDA.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medcurate demo

# pytest exits 5 when it collects no test; that is not a failure of the product.
test: $(STAMP)
	@scripts/ensure-chromium || true
	@set +e; $(VENV)/bin/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/convert.py

clean:
	rm -rf $(VENV) medcurate-data .pytest_cache .mypy_cache .ruff_cache
