"""The study's parameters: one parser for the three studies of ``params.yaml``.

``study:`` (the trained study: :func:`load_study`), ``scale:`` (the priced study at the paper's scale:
:func:`load_scale`) and ``dynamics:`` (the dropout sweep: :func:`load_sweep`) are read, validated (every
plan's config included) and expanded before any work. A bad entry is refused in one line of one shape,
``params.yaml: <section>.<key>: got <value>; <fix>`` (:func:`refuse`); a config key is checked by
:func:`fplstudy.config.make_config` wherever it appears, so its defaults and its checks live in one place
(:class:`fplstudy.config.Config`)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fplstudy.config import (
    Config,
    ConfigError,
    StudyError,
    YamlError,
    make_config,
    read_yaml_file,
    short_repr,
)
from fplstudy.facts.datasets import DATASET_META, split_sizes
from fplstudy.facts.models import DATASET_DEFAULT_MODEL, MODELS
from fplstudy.facts.profiles import FileError, load_profiles
from fplstudy.plans.strategies import (
    ACTIVATION_STRATEGIES,
    LEGEND_ORDER,
    STRATEGIES,
    strategy,
)
from fplstudy.study.cluster import is_address
from fplstudy.study.kernels import DEFAULT_KERNELS, KERNELS

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # group and plan names (fullmatch): safe in paths and shell commands

def refuse(where: str, value: Any, fix: str) -> StudyError:
    """The one error of every study section: ``params.yaml: <where>: got <value>; <fix>``."""
    return StudyError(f"params.yaml: {where}: got {short_repr(value)}; {fix}")


def check_config(where: str, values: dict[str, Any], shared: dict[str, str] | None = None, at: str | None = None,
                 ) -> Config:
    """``values`` as a :class:`~fplstudy.config.Config`; a key it refuses is named in its section.

    Args:
        where: what the values configure, said after the fix when a key is named in another section
            (``at`` or ``shared``), e.g. ``plan fl-2-iid``.
        values: config keys.
        shared: ``{key: section}`` of keys that came from a section shared by several plans (e.g.
            ``study.train``): a refused one is named in that section, with ``(in <where>)`` after the fix.
        at: the section of the other keys (default ``where``).

    Raises:
        StudyError: ``params.yaml: <section>.<key>: got <value>; <fix>`` (:func:`refuse`).
    """
    try:
        return make_config(values)
    except ConfigError as exc:
        raise _named(exc, where, shared, at) from None


def check_plan(where: str, values: dict[str, Any], shared: dict[str, str] | None = None, at: str | None = None,
               full: bool = False) -> tuple[Config, Any]:
    """:func:`check_config`, then everything a run checks but its data, as a run would
    (:func:`fplstudy.train.runner.preflight`: the plan, its profiles, memory, dynamics keys and trace files):
    what a run refuses is refused before any stage starts. Returns ``(config, plan)``.

    With ``full``, everything a run checks before training (:func:`fplstudy.train.runner.prepare`: memory,
    dropout traces, the partition of the data) is checked too."""
    cfg = check_config(where, values, shared, at)
    try:
        if full:
            from fplstudy.train.runner import prepare

            plan = prepare(cfg)[0]
        else:
            from fplstudy.train.runner import preflight

            plan = preflight(cfg)[0]
    except ConfigError as exc:
        raise _named(exc, where, shared, at) from None
    except FileNotFoundError as exc:
        raise refuse(at or where, " ".join(str(exc).split()), "give a file that exists") from None
    return cfg, plan


def _named(exc: ConfigError, where: str, shared: dict[str, str] | None, at: str | None) -> StudyError:
    if isinstance(exc, FileError) and exc.CONFIG_KEY:  # a data file's entry: the config key that names the file
        exc = ConfigError(exc.CONFIG_KEY, exc.file, str(exc))
    key = exc.key.split(" ")[0]  # "topology (m0)" is key topology
    if key in (shared or {}):
        return refuse(f"{shared[key]}.{exc.key}", exc.value, f"{exc.allowed} (in {where})")
    section = at or where
    return refuse(f"{section}.{exc.key}", exc.value, exc.allowed if section == where else f"{exc.allowed} (in {where})")


SMOKE_SIZES = {"max_train_samples": 120, "rounds": 2}  # smoke runs (CI, notebooks' smoke_test): seconds each

CHECKED = "the active study of params.yaml passed `python -m fplstudy.stages.check`\n"  # the stamp (constant)



@dataclass(frozen=True)
class PlanSpec:
    """One named plan of a study.

    Attributes:
        name: run folder name, :func:`swept_name` of the swept values.
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
        workers: runs trained at once in local processes, or a Dask scheduler address (``tcp://host:port``;
            ``FPLSTUDY_SCHEDULER`` replaces it: :func:`fplstudy.study.cluster.target`).
        plans: every plan, grouped in the order of ``groups``.
        findings: the ``findings`` section.
        kernels: the CPU kernel level every run is pinned to (a key of :data:`KERNELS`).
    """

    name: str
    train: dict[str, Any]
    seeds: tuple[int, ...]
    workers: int | str
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

    def run_dirs(self, runs_dir: str | Path) -> list[tuple[PlanSpec, int, Path]]:
        """Every run of the study: ``(plan, seed, run folder)``, in group, plan, seed order."""
        runs_dir = Path(runs_dir)
        return [(p, s, runs_dir / p.group / p.name / f"seed-{s}") for p in self.plans for s in self.seeds]



# Keys whose swept value stands alone in a plan's name (a node count, a junction mode, a partition) or names a
# thing of its own (a link, a device, a model); any other key's value follows the key (``branches2``,
# ``junction_at3``, ``syncnone``), so that plans of different groups never share a name by accident.
BARE_NAME_KEYS = ("nodes", "junction", "partition", "link", "device", "server_device", "model", "dataset", "topology")


def swept_name(swept: dict[str, Any]) -> str:
    """Name of a plan from its swept values: the strategy, then the other values in order, each after its key
    unless :data:`BARE_NAME_KEYS` holds it, e.g. ``fpl-4-adapter-iid``, ``fl-8-dirichlet``, ``fl-2-lte`` or
    ``fpl-8-branches2-branch_stages2-adapter-iid``."""
    rest = [str(v) if k in BARE_NAME_KEYS else f"{k}{v}" for k, v in swept.items() if k != "strategy"]
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
        raise refuse("study", block, "name a study block, e.g. `study: *digits`")
    name = next((k for k, v in (params.get("studies") or {}).items() if v == block), "study")
    for key in block:
        if key not in STUDY_KEYS:
            raise refuse(f"study.{key}", block[key], f"not a key of a study; use {', '.join(STUDY_KEYS)}")
    train = block.get("train") or {}
    if not isinstance(train, dict):
        raise refuse("study.train", train, "give a mapping of config keys")
    for key in train:
        if key not in Config.model_fields or key == "seed":
            allowed = "seeds are listed in study.seeds" if key == "seed" else "see `fplstudy keys`"
            raise refuse(f"study.train.{key}", train[key], f"not a shared config key; {allowed}")
    seeds = block.get("seeds")
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)):
        raise refuse("study.seeds", seeds, "give a list of distinct integers in 0..2**32-1, e.g. [0, 1, 2, 3, 4]")
    workers = block.get("workers", 1)
    if not is_address(workers) and (not isinstance(workers, int) or isinstance(workers, bool)
                                    or not 1 <= workers <= (os.cpu_count() or 1) * 4):
        raise refuse("study.workers", workers, f"give an integer from 1 to {(os.cpu_count() or 1) * 4} (runs at "
                                               f"once here) or a Dask scheduler address such as tcp://10.0.0.5:8786; "
                                               f"results do not depend on it")
    kernels = block.get("kernels", DEFAULT_KERNELS)
    if not isinstance(kernels, str) or kernels not in KERNELS:
        raise refuse("study.kernels", kernels, f"use one of {', '.join(KERNELS)} (avx2: the same bytes on every "
                                               f"x86-64 CPU with AVX2; sse41: on every x86-64 CPU, slower)")
    groups = block.get("groups")
    if not isinstance(groups, dict) or not groups:
        raise refuse("study.groups", groups, "give a mapping of group name to axes")
    specs: list[PlanSpec] = []
    for group, axes in groups.items():
        specs += _group_plans(str(group), axes, train)
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise refuse(f"study.groups.{spec.group}", spec.name, f"this plan is also in group {seen[spec.name]}; "
                                                                  f"every plan must appear once")
        seen[spec.name] = spec.group
    findings = block.get("findings") or {}
    _check_findings(findings, specs)
    return Study(name=name, train=dict(train), seeds=tuple(seeds), workers=workers, plans=tuple(specs),
                 findings=findings, kernels=kernels)



STUDY_KEYS = ("train", "seeds", "workers", "kernels", "groups", "findings")  # the keys of a study block
FINDINGS_KEYS = ("fpl_junction", "against", "accuracy_delta", "cost_delta", "size_delta", "confidence", "target_acc",
                 "pairs")


def _group_plans(group: str, axes: Any, train: dict[str, Any]) -> list[PlanSpec]:
    where = f"study.groups.{group}"
    if not _NAME.fullmatch(group):
        raise refuse(where, group, "a group name must be lower-case letters, digits, '.', '_' or '-' (it names "
                                   "a DVC stage and a folder)")
    if not isinstance(axes, dict) or not axes:
        raise refuse(where, axes, "give a mapping of config key to a list of values, e.g. {nodes: [2, 4]}")
    axes = dict(axes)
    if "strategy" not in axes:
        axes = {"strategy": [group], **axes}
    for key, values in axes.items():
        if key not in Config.model_fields or key == "seed":
            raise refuse(f"{where}.{key}", values, "not a config key to sweep (seeds are in study.seeds); see "
                                                   "`fplstudy keys`")
        if not isinstance(values, list) or not values:
            raise refuse(f"{where}.{key}", values, "give a non-empty list, e.g. [2, 4, 8]")
        for value in values:
            if not _NAME.fullmatch(str(value)):
                raise refuse(f"{where}.{key}", value, "a value must name a run folder; use lower-case letters, "
                                                      "digits, '.', '_' or '-'")
    specs = []
    for combo in itertools.product(*axes.values()):
        swept = dict(zip(axes, combo))
        values = {**train, **swept, "seed": 0}
        shared = {k: "study.train" for k in train if k not in swept}
        cfg, plan = check_plan(f"plan {swept_name(swept)}", values, shared, at=where)
        specs.append(PlanSpec(swept_name(swept), group, swept, cfg, plan.junction))
    return specs



def _check_findings(findings: Any, specs: list[PlanSpec]) -> None:
    where = "study.findings"
    if not isinstance(findings, dict):
        raise refuse(where, findings, "give a mapping (see the digits study)")
    for key in findings:
        if key not in FINDINGS_KEYS:
            raise refuse(f"{where}.{key}", findings[key], f"not a key of the findings; use {', '.join(FINDINGS_KEYS)}")
    for key in ("accuracy_delta", "cost_delta", "size_delta"):
        value = findings.get(key, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise refuse(f"{where}.{key}", value, "give a fraction in [0, 1), e.g. 0.02")
    target = findings.get("target_acc", 0.9)
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target < 1:
        raise refuse(f"{where}.target_acc", target, "give the test accuracy every plan is compared at, in (0, 1), e.g. 0.93")
    stops = sorted({spec.config.stop_at_acc for spec in specs if spec.config.stop_at_acc is not None})
    if stops and target > stops[0]:
        raise refuse(f"{where}.target_acc", target, f"runs stop at stop_at_acc {stops[0]:g}, below it: lower target_acc "
                                                    f"to at most {stops[0]:g} or raise stop_at_acc")
    confidence = findings.get("confidence", 0.95)
    if not isinstance(confidence, float) or not 0.5 <= confidence < 1:
        raise refuse(f"{where}.confidence", confidence, "give a level in [0.5, 1), e.g. 0.95")
    junctions = strategy("fpl").junctions
    junction = findings.get("fpl_junction", junctions[0])
    if not isinstance(junction, str) or junction not in junctions:
        raise refuse(f"{where}.fpl_junction", junction, f"use {', '.join(junctions)}")
    others = [s for s in STRATEGIES if s != "fpl"]
    against = findings.get("against", [])
    if not isinstance(against, list):
        raise refuse(f"{where}.against", against, f"give a list of strategies among {', '.join(others)}")
    for other in against:
        if not isinstance(other, str) or other not in others:
            raise refuse(f"{where}.against", other, f"use strategies among {', '.join(others)}")
    names = [spec.name for spec in specs]
    pairs = findings.get("pairs", [])
    if not isinstance(pairs, list):
        raise refuse(f"{where}.pairs", pairs, "give a list of [plan, other plan] name pairs, e.g. [[fpl-8-adapter-iid, fl-4-iid]]")
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) for n in pair)):
            raise refuse(f"{where}.pairs", pair, "give each pair as [plan, other plan], two plan names of the study")
        for name in pair:
            if name not in names:
                raise refuse(f"{where}.pairs", name, f"not a plan of the study; use a plan name (the run folders "
                                                     f"results/runs/<group>/<plan>), e.g. {', '.join(names[:3])}")



def single_plan(values: dict[str, Any], seeds: list[int], out: str | Path, **sizes: Any,
                ) -> tuple[str, list[tuple[Config, Path, str]]]:
    """One plan outside the study (the train notebook without a group): its name and its runs.

    Args:
        values: the plan's config keys; the others take their :class:`~fplstudy.config.Config` defaults.
        seeds: its seeds; empty means ``[the config's seed]``.
        out: the folder of its run folders (``seed-<s>``).
        **sizes: config keys that size the runs (e.g. :data:`SMOKE_SIZES`), left out of the name.

    Returns:
        ``(name, runs)``: the strategy, then each other key given as key and value (the seed aside), e.g.
        ``fl-nodes8-rounds2``, and per seed ``(config, out/<name>/seed-<s>, title)`` for :func:`train_runs`.

    Raises:
        ConfigError: a key or value the plan refuses, named in one line (everything
            :func:`fplstudy.train.runner.preflight` checks).
    """
    cfg = make_config({**values, **sizes})
    from fplstudy.train.runner import preflight

    preflight(cfg)  # what a run checks before its data, before any worker starts
    name = "-".join([cfg.strategy, *(f"{k}{_short(v)}" for k, v in values.items() if k not in ("strategy", "seed"))])
    out = Path(out) / name
    return name, [(cfg.model_copy(update={"seed": s}), out / f"seed-{s}", f"{name} seed {s}")
                  for s in (seeds or [cfg.seed])]


def _short(value: Any) -> str:
    """A setting as it reads in a folder name: ``[2, 5]`` -> ``2_5``, text without characters a path refuses."""
    text = "_".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r"[^A-Za-z0-9._]+", "_", text)[:40]



# The train notebook's parameters (papermill -p / -y) and their types, as its parameters cell declares them.
NOTEBOOK_PARAMETERS = {"group": str, "config": dict, "seeds": list, "params_file": str, "runs_dir": str,
                       "data_dir": str, "workers": int, "smoke_test": bool, "overwrite": bool}


def check_notebook_parameters(**values: Any) -> None:
    """Refuse a train-notebook parameter of the wrong type or range in one line, before any work (the
    notebook's first cell after its parameters; papermill passes what it is given, unchecked).

    Raises:
        StudyError: ``notebook parameter '<name>': got <value>; <fix>``.
    """
    def bad(name: str, fix: str) -> StudyError:
        return StudyError(f"notebook parameter '{name}': got {short_repr(values[name])}; {fix}")

    for name, value in values.items():
        kind = NOTEBOOK_PARAMETERS.get(name)
        if kind is None:
            raise bad(name, f"not a parameter of the train notebook; use {', '.join(NOTEBOOK_PARAMETERS)}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            example = {str: "a string", dict: "a mapping of config keys, e.g. {strategy: fl, nodes: 8}",
                       list: "a list of distinct integers, e.g. [0, 1, 2]", int: "an integer",
                       bool: "True or False"}[kind]
            raise bad(name, f"give {example}")
    limit = (os.cpu_count() or 1) * 4
    if not 0 <= values.get("workers", 0) <= limit:
        raise bad("workers", f"give 0 (the study's or 2) to {limit} runs at once")
    seeds = values.get("seeds", [])
    if (len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in seeds)):
        raise bad("seeds", "give distinct integers in 0..2**32-1 (a seed twice would train into one folder twice)")
    if not all(isinstance(k, str) for k in values.get("config", {})):
        raise bad("config", "give config keys as names (`fplstudy keys` lists them)")
    if values.get("group") and (values.get("config") or values.get("seeds")):
        raise bad("config" if values.get("config") else "seeds",
                  "a group takes its plans and seeds from params.yaml; give either group or config and seeds")


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
                     "cost_delta": 0.10, "size_delta": 0.10, "confidence": 0.95, "target_acc": 0.2}}}


# --------------------------------------------------------------------------- scale: the priced study

def _default(key: str) -> Any:
    """A config key's default: :class:`~fplstudy.config.Config` is the one place defaults live."""
    return Config.model_fields[key].default


@dataclass(frozen=True)
class ScaleParams:
    """The ``scale:`` section of ``params.yaml`` (:func:`load_scale`).

    Attributes:
        dataset: a dataset with a declared shape (``cifar10``).
        models: models to price.
        strategies: strategies to price (``centralized`` is priced at 1 node, the others at ``nodes``).
        nodes: node counts.
        batch_size: samples per step.
        device: device profile of data owners and branch stages.
        server_device: device profile of trunk stages and the aggregator.
        link: link profile.
        memory_devices: devices whose memory the per-node peaks are drawn against.
        crossover_nodes: node count of the crossover.
        crossover_samples: training-set sizes of the crossover.
        crossover_against: activation-shipping strategies compared with FL.
        crossover_reference: ``(dataset, model)`` priced in the crossover too, on its own dataset's sizes
            (the trained study's digits CNN, to compare with); its rows are labelled ``"<model> on <dataset>"``.
        extra: more config keys shared by every plan (e.g. ``data_dir``).

    The config keys among them (dataset, batch_size, device, server_device, link) default to
    :class:`~fplstudy.config.Config`'s defaults; :func:`load_scale` fills ``models`` (default: the dataset's
    default model, as a run's) and ``crossover_samples`` (default: :data:`CROSSOVER_SAMPLES` that fit the
    dataset's training set).
    """

    dataset: str = _default("dataset")
    models: tuple[str, ...] = ()
    strategies: tuple[str, ...] = LEGEND_ORDER
    nodes: tuple[int, ...] = (2, 4, 8, 16)
    batch_size: int = _default("batch_size")
    device: str = _default("device")
    server_device: str = _default("server_device")
    link: str = _default("link")
    memory_devices: tuple[str, ...] = ("rpi4", "jetson_nano", "jetson_orin_nano")
    crossover_nodes: int = 4
    crossover_samples: tuple[int, ...] = ()
    crossover_against: tuple[str, ...] = ("mp", "sl", "fpl")
    crossover_reference: tuple[str, str] | None = None
    extra: dict = field(default_factory=dict)

    def config(self, **over: Any) -> dict[str, Any]:
        """Config keys of one plan of the study: the shared keys, then ``over``."""
        return {"dataset": self.dataset, "batch_size": self.batch_size, "rounds": 1, "local_epochs": 1,
                "device": self.device, "server_device": self.server_device, "link": self.link,
                **self.extra, **over}


CROSSOVER_SAMPLES = (100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)  # default crossover sizes (those that fit)
SCALE_CONFIG_KEYS = ("dataset", "batch_size", "device", "server_device", "link")  # scale: keys that are config keys


def _names(where: str, value: Any, known: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise refuse(where, value, f"give a non-empty list of names, e.g. [{known[0]}]")
    bad = [v for v in value if v not in known]
    if bad:
        raise refuse(where, bad[0], f"unknown; use names from: {', '.join(known)}")
    return tuple(value)


def _ints(where: str, value: Any, lo: int, hi: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(type(v) is int for v in value):
        raise refuse(where, value, f"give a non-empty list of integers in {lo}..{hi}")
    bad = [v for v in value if not lo <= v <= hi]
    if bad:
        raise refuse(where, bad[0], f"must lie in {lo}..{hi}")
    return tuple(sorted(set(value)))


def _section(params: dict[str, Any] | str | Path, name: str) -> Any:
    if not isinstance(params, dict):
        params = load_params(params)
    if name not in params:
        raise refuse(name, None, f"params.yaml has no top-level {name}: section; add one (see the shipped params.yaml)")
    return params[name]


def load_scale(params: dict[str, Any] | str | Path = "params.yaml") -> ScaleParams:
    """The ``scale:`` section validated into :class:`ScaleParams`.

    Args:
        params: the content of ``params.yaml`` or its path.

    Raises:
        StudyError: one line naming ``scale.<key>``, the value and the fix (unknown keys too); the config
            keys are checked as every plan's are (:func:`check_plan`).
    """
    section = _section(params, "scale")
    if not isinstance(section, dict):
        raise refuse("scale", section, "give a mapping of the scale study's keys (see params.yaml)")
    known = (*SCALE_CONFIG_KEYS, "models", "strategies", "nodes", "memory_devices", "crossover", "extra")
    for key in section:
        if key not in known:
            raise refuse(f"scale.{key}", section[key], f"unknown key; known: {', '.join(known)}")
    d = ScaleParams()
    extra = section.get("extra", {})
    if not isinstance(extra, dict):
        raise refuse("scale.extra", extra, "give a mapping of fplstudy config keys shared by every plan")
    out: dict[str, Any] = {key: section.get(key, getattr(d, key)) for key in SCALE_CONFIG_KEYS}
    out["extra"] = dict(extra)
    check_plan("scale", ScaleParams(**out).config(strategy="fl", nodes=2), {key: "scale.extra" for key in extra})
    out["models"] = _names("scale.models", section.get("models", [DATASET_DEFAULT_MODEL[out["dataset"]]]),
                           tuple(MODELS))
    out["strategies"] = _names("scale.strategies", section.get("strategies", list(d.strategies)), STRATEGIES)
    out["nodes"] = _ints("scale.nodes", section.get("nodes", list(d.nodes)), 2, 64)
    profiles = load_profiles(out["extra"].get("profiles_file"))
    devs = _names("scale.memory_devices", section.get("memory_devices", list(d.memory_devices)),
                  sorted(profiles.devices))
    no_memory = [v for v in devs if profiles.devices[v].memory_bytes is None]
    if no_memory:
        raise refuse("scale.memory_devices", no_memory[0], "this device profile has no memory_bytes; pick one that has")
    out["memory_devices"] = devs
    cross = section.get("crossover", {})
    if not isinstance(cross, dict):
        raise refuse("scale.crossover", cross, "give a mapping with nodes, train_samples and against")
    for key in cross:
        if key not in ("nodes", "train_samples", "against", "reference"):
            raise refuse(f"scale.crossover.{key}", cross[key], "unknown key; known: nodes, train_samples, against, "
                                                               "reference")
    cn = cross.get("nodes", d.crossover_nodes)
    if type(cn) is not int or not 2 <= cn <= 64:
        raise refuse("scale.crossover.nodes", cn, "give an integer in 2..64 (the node count of the crossover)")
    out["crossover_nodes"] = cn
    n_train = split_sizes(out["dataset"])[0]
    fit = [n for n in CROSSOVER_SAMPLES if 2 * cn <= n <= n_train]
    out["crossover_samples"] = _ints("scale.crossover.train_samples", cross.get("train_samples", fit), 2 * cn, n_train)
    if len(out["crossover_samples"]) < 2:
        raise refuse("scale.crossover.train_samples", cross.get("train_samples"),
                     "give at least two sizes (the crossover is fitted through them)")
    out["crossover_against"] = _names("scale.crossover.against", cross.get("against", list(d.crossover_against)),
                                      ACTIVATION_STRATEGIES)
    ref = cross.get("reference")
    if ref is not None:
        if not isinstance(ref, dict) or set(ref) != {"dataset", "model"}:
            raise refuse("scale.crossover.reference", ref, "give {dataset: NAME, model: NAME}, e.g. {dataset: "
                                                           "digits, model: cnn}, or leave it out")
        if ref["dataset"] not in DATASET_META:
            raise refuse("scale.crossover.reference.dataset", ref["dataset"], f"use one of {', '.join(DATASET_META)}")
        if ref["model"] not in MODELS:
            raise refuse("scale.crossover.reference.model", ref["model"], f"use one of {', '.join(MODELS)}")
        out["crossover_reference"] = (ref["dataset"], ref["model"])
    return ScaleParams(**out)


# --------------------------------------------------------------------------- dynamics: the dropout sweep

@dataclass(frozen=True)
class Sweep:
    """The validated ``dynamics:`` section of ``params.yaml`` (:func:`load_sweep`)."""

    train: dict[str, Any]
    strategies: dict[str, dict[str, Any]]
    dropout: tuple[float, ...]
    seeds: tuple[int, ...]
    workers: int
    kernels: str
    fpl: str
    accuracy_delta: float
    confidence: float

    def runs(self, out: str | Path) -> list[tuple[dict[str, Any], int, Path, Config]]:
        """``(columns, seed, run folder, config)`` of every run, strategy by strategy, rate by rate, seed by seed."""
        out = Path(out) / "runs"
        rows = []
        for strategy_name, keys in self.strategies.items():
            for p in self.dropout:
                for seed in self.seeds:
                    cfg = make_config({**self.train, **keys, "strategy": strategy_name, "dropout": p, "seed": seed})
                    rows.append(({"strategy": strategy_name, "nodes": cfg.nodes, "dropout": p}, seed,
                                 out / strategy_name / f"p{p:g}" / f"seed-{seed}", cfg))
        return rows


def load_sweep(params: dict[str, Any] | str | Path = "params.yaml") -> Sweep:
    """The ``dynamics:`` section and every run's config, validated before any work.

    Args:
        params: the content of ``params.yaml`` or its path.

    Raises:
        StudyError: one line naming ``dynamics.<key>``, the value and the fix.
    """
    block = _section(params, "dynamics")
    if not isinstance(block, dict):
        raise refuse("dynamics", block, "give the dropout sweep's block (train, strategies, dropout, seeds)")
    train = block.get("train") or {}
    if not isinstance(train, dict):
        raise refuse("dynamics.train", train, "give a mapping of config keys")
    for key in train:
        if key not in Config.model_fields or key in ("strategy", "seed", "dropout", "dropout_trace"):
            raise refuse(f"dynamics.train.{key}", train[key], "not a shared config key here (strategies, seeds and "
                                                             "the rates have their own entries; `fplstudy keys` "
                                                             "lists the keys)")
    strategies = block.get("strategies")
    if not isinstance(strategies, dict) or not strategies or not all(isinstance(v, dict) for v in strategies.values()):
        raise refuse("dynamics.strategies", strategies, "give {strategy: {config keys}}, e.g. {fl: {nodes: 8}}")
    rates = block.get("dropout")
    if (not isinstance(rates, list) or 0 not in rates or len(set(rates)) != len(rates)
            or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1 for p in rates)):
        raise refuse("dynamics.dropout", rates, "give distinct probabilities in [0, 1), 0 among them (the baseline)")
    seeds = block.get("seeds")
    if (not isinstance(seeds, list) or len(seeds) < 2 or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise refuse("dynamics.seeds", seeds, "give at least two distinct seeds (an interval needs two), e.g. "
                                              "[0, 1, 2, 3, 4]")
    fpl = block.get("fpl", "fpl")
    if fpl not in strategies or len(strategies) < 2:
        raise refuse("dynamics.fpl", fpl, f"name the strategy compared with the others; strategies: "
                                          f"{', '.join(strategies)}")
    kernels = block.get("kernels", DEFAULT_KERNELS)
    if not isinstance(kernels, str) or kernels not in KERNELS:
        raise refuse("dynamics.kernels", kernels, f"use one of {', '.join(KERNELS)}")
    workers = block.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise refuse("dynamics.workers", workers, "give an integer >= 1 (runs at once; results do not depend on it)")
    delta, confidence = block.get("accuracy_delta", 0.02), block.get("confidence", 0.95)
    if not isinstance(delta, (int, float)) or not 0 <= delta < 1:
        raise refuse("dynamics.accuracy_delta", delta, "give the equivalence margin of accuracy, a fraction in [0, 1)")
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise refuse("dynamics.confidence", confidence, "give the family-wise confidence, in (0, 1)")
    sweep = Sweep(dict(train), {s: dict(k) for s, k in strategies.items()}, tuple(float(p) for p in sorted(rates)),
                  tuple(seeds), workers, kernels, fpl, float(delta), float(confidence))
    for name, keys in sweep.strategies.items():
        values = {**sweep.train, **keys, "strategy": name, "dropout": max(sweep.dropout), "seed": sweep.seeds[0]}
        check_plan(f"dynamics.strategies.{name}", values, {k: "dynamics.train" for k in sweep.train if k not in keys},
                   full=True)
    return sweep
