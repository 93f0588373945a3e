# fplstudy: `make study` regenerates every result and figure; `make test` runs the test suite.
# Both first set up (once) this checkout's own virtual environment in .venv/ with this checkout
# installed in it, from a package cache shared by every checkout (tools/venv.py: seconds once the
# cache is warm). `make lint` runs the linter (ruff, configured in pyproject.toml). `make shell` opens a shell in the environment, `make env` prints where it is,
# `make lab` opens JupyterLab on the project. Override the interpreter with PYTHON=..., the venv
# folder with VENV=..., the shared cache with CACHE=...

PYTHON ?= python3
VENV ?= .venv
CACHE ?= $(HOME)/.cache/fplstudy
DEPS_KEY := $(shell sha256sum pyproject.toml | cut -c1-12)
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.complete-$(DEPS_KEY)
LAB_ARGS ?=
export PATH := $(BIN):$(PATH)

.PHONY: venv env shell lab data study test test-slow lint bench clean-venv

# The stamp carries the hash of pyproject.toml: a change of dependencies rebuilds the venv (seconds).
$(STAMP):
	$(PYTHON) tools/venv.py --venv "$(VENV)" --cache "$(CACHE)" --stamp "$@"

# notebooks/*.py are what git and DVC track; JupyterLab works on their git-ignored .ipynb twins (Jupytext
# pairing, notebooks/jupytext.toml): created here, and each kept in step with its script on every save.
# .dvc/plots.html: the page `dvc plots show` fills, with Vega inline so it works offline (git-ignored).
venv: $(STAMP)
	@"$(BIN)/jupytext" --quiet --sync --set-kernel - notebooks/*.py
	@"$(BIN)/fplstudy" plots-page --out .dvc/plots.html >/dev/null

env: venv
	@echo "$(abspath $(VENV))"
	@echo "enter it with: source $(VENV)/bin/activate   (or: make shell; leave with: deactivate / exit)"

shell: venv
	@echo "fplstudy environment $(abspath $(VENV)): python, fplstudy, dvc, papermill, jupyter; 'exit' leaves it"
	@VIRTUAL_ENV="$(abspath $(VENV))" $${SHELL:-/bin/sh}

data: venv
	"$(BIN)/dvc" pull data.dvc

lab: data
	"$(BIN)/jupyter" lab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) \
		notebooks/teach.ipynb

study: venv
	"$(BIN)/dvc" pull data.dvc
	"$(BIN)/dvc" repro

test: venv  # two workers (pytest-xdist), then the tests that time rates or short timeouts, alone
	"$(BIN)/python" -m pytest -q -n 2 --dist loadgroup -m "not slow and not serial" --durations=15
	"$(BIN)/python" -m pytest -q -p no:xdist -m "serial and not slow"

lint: venv
	"$(BIN)/ruff" check src tests benchmarks tools

test-slow: venv
	"$(BIN)/python" -m pytest -q -m slow -s --durations=15

bench: venv
	"$(BIN)/python" benchmarks/engine_overhead.py

clean-venv:
	rm -rf "$(VENV)"
