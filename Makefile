# fplstudy: `make study` regenerates every result and figure; `make test` runs the test suite.
# Both create (once) a virtual environment outside the clone, keyed on pyproject.toml, and install
# this checkout into it. Override the interpreter with PYTHON=..., the venv folder with VENV=...

PYTHON ?= python3
DEPS_KEY := $(shell cat pyproject.toml | sha256sum | cut -c1-12)
VENV ?= $(HOME)/.cache/fplstudy/venv-$(DEPS_KEY)
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: venv study test test-slow bench clean-venv

# The venv's name carries the hash of pyproject.toml, so a change of dependencies makes a new one;
# no file prerequisite here (a fresh clone's newer mtimes must not rebuild a complete venv).
$(VENV)/.complete:
	rm -rf "$(VENV)"
	$(PYTHON) -m venv "$(VENV)"
	"$(BIN)/pip" install --quiet --disable-pip-version-check -e ".[test]"
	"$(BIN)/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch "$@"

venv: $(VENV)/.complete
	@"$(BIN)/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . >/dev/null

study: venv
	"$(BIN)/dvc" pull data.dvc
	"$(BIN)/dvc" repro

test: venv
	"$(BIN)/python" -m pytest -q -m "not slow"

test-slow: venv
	"$(BIN)/python" -m pytest -q -m slow -s

bench: venv
	"$(BIN)/python" benchmarks/engine_overhead.py

clean-venv:
	rm -rf "$(VENV)"
