# obokit — developer tasks (GNU make).
#
#   make venv       create .venv and install obokit[test] against constraints.txt
#   make test       run the test suite (extra args: make test PYTEST_ARGS="-k obo -x")
#   make workbook   execute every notebooks/*.ipynb in order against the embedded emulator
#   make lab        start JupyterLab on notebooks/ (extra args: LAB_ARGS=...)
#   make bench      OBO tool benchmark: blocking vs cached OBO (extra args: BENCH_ARGS="--duration 5")
#   make lock       regenerate constraints.txt from pyproject.toml in a throwaway venv
#   make clean      remove build/test artefacts (keeps .venv and .obokit/)

PYTHON      ?= python3
VENV        ?= .venv
VENV_PY     := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
LOCKVENV    ?= /tmp/obokit-lockvenv
PYTEST_ARGS ?=
# Extra arguments for `make lab`; Jupyter refuses to run as root without --allow-root.
LAB_ARGS    ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.DEFAULT_GOAL := help
.PHONY: help venv test workbook lab lock clean bench

help:
	@sed -n '3,9p' Makefile | sed 's/^# \{0,1\}//'

venv: $(STAMP)

# Re-installs whenever pyproject.toml or constraints.txt changes. pip itself is
# left as the interpreter ships it; every other version comes from constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install -c constraints.txt -e ".[test]"
	touch $@

# Where the kernel allows it, the suite runs in a fresh network namespace that has only a
# loopback interface: proof that nothing reaches Microsoft's hosts. Elsewhere the suite's own
# in-process guard (tests/conftest.py) still refuses every non-loopback connection.
NETLESS := $(shell unshare -n true 2>/dev/null && command -v ip >/dev/null && echo yes)

test: venv
ifeq ($(NETLESS),yes)
	@echo "Running the tests without network (loopback only)."
	unshare -n sh -c 'ip link set lo up && exec $(VENV_PY) -m pytest -p no:cacheprovider -rs $(PYTEST_ARGS)'
else
	@echo "No network namespace available: running with the in-process loopback-only guard."
	$(VENV_PY) -m pytest -p no:cacheprovider -rs $(PYTEST_ARGS)
endif

WORKBOOK_ARGS ?=
workbook: venv
	$(VENV_PY) -m obokit.workbook run-all $(WORKBOOK_ARGS)

BENCH_ARGS ?=
bench: venv
	$(VENV_PY) benchmarks/obo_tools.py $(BENCH_ARGS)

lab: venv
	$(VENV)/bin/jupyter lab $(LAB_ARGS) notebooks/

# Installs the declared dependencies (runtime + test extra, read from
# pyproject.toml) into a fresh throwaway venv and freezes the result.
lock:
	rm -rf $(LOCKVENV)
	$(PYTHON) -m venv $(LOCKVENV)
	$(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["test"]))' > $(LOCKVENV)/requirements.in
	$(LOCKVENV)/bin/python -m pip install -r $(LOCKVENV)/requirements.in
	{ \
	  echo "# Pinned lock of obokit's runtime and test dependencies (Python 3.11)."; \
	  echo "# Generated: do not edit by hand. Regenerate with:  make lock"; \
	  echo "# (installs pyproject.toml's dependencies + [test] extra into a throwaway"; \
	  echo "#  venv, then pip freeze --exclude-editable without obokit/pip/setuptools)."; \
	  echo "# Keep the versions in environment.yml in step with this file."; \
	  $(LOCKVENV)/bin/python -m pip freeze --exclude-editable \
	    | grep -v -i -E '^(obokit|pip|setuptools|wheel)( ?[=@])'; \
	} > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf $(LOCKVENV)
	@echo "constraints.txt regenerated; now sync environment.yml"

clean:
	rm -rf build dist test-artifacts .pytest_cache companion/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +
