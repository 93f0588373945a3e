"""Profile sensitivity: every run of the study re-priced across the ranges of its profile numbers, and whether
the cost verdicts of the findings hold across them.

Costs do not depend on the weights (:mod:`fplstudy.costs.dryrun`), so a run is re-priced without training: its
plan and shard sizes give its events once, and each *corner* — a set of profile numbers moved off their value —
prices them again with the profiles changed in memory (:func:`corner_profiles`). The corners:

- ``nominal``: the profiles as they are; equal, total for total, to the committed run (:func:`nominal_mismatches`);
- ``<profile>.<field>:low`` and ``:high``: one number at an end of its range (:mod:`fplstudy.study.ranges`), the
  others at their value (a tornado);
- ``mc-<i>``: every number at once, drawn from its range (log-uniform; uniform where the low end is 0) with the
  ``sensitivity.seed`` stream, ``sensitivity.draws`` of them.

A pair's ratio at a corner is the geometric mean over seeds of the per-seed ratio ``cost(a) / cost(b)`` (the
findings compare log costs, so this is their point estimate); its verdict says *cheaper* below
``1 / (1 + δ)``, *costlier* above ``1 + δ``, else *equivalent* (δ = ``findings.cost_delta``). A verdict
**holds** when it is the same at every corner; the numbers whose low or high end changes it are named.

Both views of the findings are re-priced: the fixed budget (every run for its first ``min_rounds`` rounds) and
equal accuracy (every run for the rounds it took to reach ``findings.target_acc``, :func:`view_tables`; a
pair's ratio there is over the seeds where both plans reached it, as in the findings).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fplstudy.config import StudyError
from fplstudy.costs.dryrun import cached_shard_sizes, plan_events, settle_deadline
from fplstudy.costs.ledger import price, totals
from fplstudy.facts.profiles import Profiles, check_profiles
from fplstudy.plans.dynamics import plan_turnouts
from fplstudy.plans.plan import Plan, resolve
from fplstudy.study.params import Study, refuse
from fplstudy.study.ranges import NumberRange, profile_ranges
from fplstudy.study.tables import plan_columns

METRICS = ("energy_j", "energy_j_max_node", "makespan_s", "bytes_total")  # the totals re-priced per corner
VERDICT_METRICS = ("energy_j", "makespan_s")  # the costs whose verdicts are checked across the ranges
TO_TARGET_METRICS = ("energy_j_to_target", "makespan_s_to_target")  # the same, to the target accuracy
NOMINAL = "nominal"
SIDES = ("low", "high")
DEFAULT_DRAWS, DEFAULT_SEED = 16, 0  # sensitivity.draws and sensitivity.seed when params.yaml leaves them out
MAX_DRAWS = 1000  # each draw prices every run once more (about 45 ms a run of the digits study)


@dataclass(frozen=True)
class Corner:
    """Profile numbers moved off their value.

    Attributes:
        name: ``nominal``, ``<profile>.<field>:<side>`` or ``mc-<i>``.
        kind: ``nominal``, ``low``, ``high`` or ``mc``.
        number: the number moved (``rpi4.active_w``) of a low or high corner, else empty.
        values: ``((section, profile, field), value)`` of every number moved.
    """

    name: str
    kind: str
    number: str
    values: tuple[tuple[tuple[str, str, str], float], ...]


def load_settings(params: dict[str, Any]) -> tuple[int, int]:
    """``(draws, seed)`` of ``params.yaml``'s ``sensitivity:`` section (defaults where it is absent).

    Raises:
        StudyError: ``params.yaml: sensitivity.<key>: got <value>; <fix>``.
    """
    section = params.get("sensitivity") or {}
    if not isinstance(section, dict):
        raise refuse("sensitivity", section, "give a mapping with draws and seed")
    for key in section:
        if key not in ("draws", "seed"):
            raise refuse(f"sensitivity.{key}", section[key], "not a key of sensitivity; use draws, seed")
    draws, seed = section.get("draws", DEFAULT_DRAWS), section.get("seed", DEFAULT_SEED)
    if isinstance(draws, bool) or not isinstance(draws, int) or not 0 <= draws <= MAX_DRAWS:
        raise refuse("sensitivity.draws", draws, f"give an integer from 0 (no Monte Carlo) to {MAX_DRAWS}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise refuse("sensitivity.seed", seed, "give an integer in 0..2**32-1")
    return draws, seed


def corners(numbers: list[NumberRange], draws: int = 0, seed: int = 0) -> list[Corner]:
    """The nominal corner, each number's low and high, then ``draws`` seeded Monte Carlo corners."""
    out = [Corner(NOMINAL, NOMINAL, "", ())]
    for n in numbers:
        for side in SIDES:
            key = (n.section, n.profile, n.field)
            out.append(Corner(f"{n.key}:{side}", side, n.key, ((key, getattr(n, side)),)))
    rng = np.random.default_rng(seed)
    for i in range(draws):
        u = rng.random(len(numbers))
        values = tuple(((n.section, n.profile, n.field),
                        float(n.low * (n.high / n.low) ** x if n.low > 0 else n.low + (n.high - n.low) * x))
                       for n, x in zip(numbers, u))
        out.append(Corner(f"mc-{i}", "mc", "", values))
    return out


def corner_profiles(profiles: Profiles, corner: Corner) -> Profiles:
    """``profiles`` with the corner's numbers set."""
    devices, links = dict(profiles.devices), dict(profiles.links)
    for (section, name, fld), value in corner.values:
        table = devices if section == "devices" else links
        table[name] = replace(table[name], **{fld: value})
    return Profiles(devices, links)


def plan_numbers(plan: Plan, ranges: dict[tuple[str, str, str], NumberRange]) -> list[NumberRange]:
    """The ranges of the numbers that price ``plan``: its nodes' device profiles' and its link profile's."""
    devices = {n.device for n in plan.nodes}
    return [r for (section, name, _), r in ranges.items()
            if (section == "devices" and name in devices) or (section == "links" and name == plan.config.link)]


def rounds_run(study: Study, runs_dir: str | Path) -> dict[tuple[str, int], int]:
    """``(plan name, seed) -> rounds completed`` of every run of ``study`` in ``runs_dir`` that has a
    ``metrics.json`` (a run that stops at a target accuracy ran fewer rounds than its config's ``rounds``)."""
    out = {}
    for spec, s, folder in study.run_dirs(runs_dir):
        path = Path(folder) / "metrics.json"
        if path.is_file():
            out[(spec.name, s)] = int(json.loads(path.read_text())["rounds_completed"])
    return out


def rounds_to_target(study: Study, runs_dir: str | Path, target: float) -> dict[tuple[str, int], int]:
    """``(plan name, seed) -> rounds`` up to and including the first round at or above ``target`` test accuracy
    (mean over branches) in each run's ``rounds.csv``; runs that never reached it are left out (the rule of
    :func:`fplstudy.study.tables.to_target`)."""
    out = {}
    for spec, s, folder in study.run_dirs(runs_dir):
        path = Path(folder) / "rounds.csv"
        if path.is_file():
            rounds = pd.read_csv(path)
            hit = rounds.loc[rounds["test_acc_mean"] >= target, "round"]
            if len(hit):
                out[(spec.name, s)] = int(hit.min()) + 1
    return out


def view_tables(study: Study, ranges_file: str | Path | None, runs_dir: str | Path, budget: int,
                target: float | None, draws: int = 0, seed: int = 0,
                done: dict[tuple[str, int], int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The fixed budget's and the equal-accuracy re-pricings of every run, priced together
    (:func:`reprice_views`): every run for its first ``budget`` rounds (fewer where it ran fewer: it diverged), and
    every run that reached ``target`` for the rounds it took (:func:`rounds_to_target`), its :data:`METRICS` named
    ``<metric>_to_target``; the runs that never reached it have no rows there. Both share the corners (a Monte Carlo
    corner draws the same numbers in both).

    ``done``: :func:`rounds_run` of ``runs_dir`` where the caller has read it already.

    Returns:
        ``(budget table, to-target table or None without a target)``, each as :func:`reprice`'s.
    """
    done = rounds_run(study, runs_dir) if done is None else done
    views = {"budget": {key: min(budget, n) for key, n in done.items()}}
    if target is not None:
        views["target"] = rounds_to_target(study, runs_dir, target)
    got = reprice_views(study, views, ranges_file, draws, seed)
    reached = None
    if target is not None:
        reached = got["target"].rename(columns={m: f"{m}_to_target" for m in METRICS})
    return got["budget"], reached


def _as_run(cfg, rounds: int | None):
    """The config priced for a run that completed ``rounds`` rounds: the same events as its first rounds."""
    if rounds is None or rounds == cfg.rounds:
        return cfg
    return cfg.model_copy(update={"rounds": rounds, "stop_at_acc": None, "min_rounds": min(cfg.min_rounds, rounds)})


def reprice(study: Study, ranges_file: str | Path | None = None, draws: int = 0, seed: int = 0,
            runs: list | None = None, completed: dict[tuple[str, int], int] | None = None,
            nominal_only: bool = False) -> pd.DataFrame:
    """Every run of ``study`` priced at every corner (:func:`corners` of the numbers its plans use).

    Args:
        study: the study (:func:`fplstudy.study.params.load_study`).
        ranges_file: the ranges file (:func:`fplstudy.study.ranges.profile_ranges`); None = the rule alone.
        draws: Monte Carlo corners.
        seed: their seed.
        runs: ``(plan spec, seed)`` pairs to price; None = every run of the study.
        completed: ``(plan name, seed) -> rounds`` each run completed (:func:`rounds_run`); a run is priced for
            those rounds (its config's ``rounds`` where not given).
        nominal_only: price the nominal profiles alone (the check against the runs' own totals).

    Returns:
        One row per run and corner: the plan's columns, ``seed``, ``corner``, ``kind``, ``number``, ``status``
        (the number's status letter), ``value`` (the number's value there) and :data:`METRICS`.

    Raises:
        StudyError: a plan on a topology (its profiles are its nodes' own), before any pricing.
        RangesError: a bad ranges file, before any pricing.
    """
    runs = runs if runs is not None else [(p, s) for p in study.plans for s in study.seeds]
    completed = completed or {}
    view = {(spec.name, s): completed.get((spec.name, s), spec.config.rounds) for spec, s in runs}
    return reprice_views(study, {"": view}, ranges_file, draws, seed, runs, nominal_only)[""]


def reprice_views(study: Study, views: dict[str, dict[tuple[str, int], int]], ranges_file: str | Path | None = None,
                  draws: int = 0, seed: int = 0, runs: list | None = None,
                  nominal_only: bool = False) -> dict[str, pd.DataFrame]:
    """:func:`reprice` for several views of the same runs at once, each pricing every run for its own rounds.

    A view maps ``(plan name, seed)`` to the rounds to price (the fixed budget's ``min_rounds``, the rounds to the
    target accuracy); a run absent from a view has no rows in it. Runs whose plans differ only in the seed and
    whose shard sizes are equal (no seeded dynamics) have the same events: they are priced once per corner, for the
    most rounds any of their views needs, and each view's totals are those of the ledger's first rounds, which are
    the ledger of a run of that many rounds (the events of a round do not depend on the rounds after it). A corner
    that moves no number of a plan is its nominal totals.

    Returns:
        ``{view name: reprice's table}``.

    Raises:
        StudyError: a plan on a topology (its profiles are its nodes' own), before any pricing.
        RangesError: a bad ranges file, before any pricing.
    """
    runs = runs if runs is not None else [(p, s) for p in study.plans for s in study.seeds]
    for spec, _ in runs:
        if spec.config.topology is not None:
            raise StudyError(f"params.yaml: study.groups.{spec.group}: plan {spec.name} runs on topology "
                             f"{spec.config.topology!r}; the sensitivity stage re-prices plans on the uniform site "
                             f"(device, server_device, link) only: leave topology out of the study")
    need = {(spec.name, s): max((v[(spec.name, s)] for v in views.values() if (spec.name, s) in v), default=0)
            for spec, s in runs}
    runs = [(spec, s) for spec, s in runs if need[(spec.name, s)] > 0]
    plans = {(spec.name, s): resolve(_as_run(spec.for_seed(s), need[(spec.name, s)])) for spec, s in runs}
    profiles = {key: check_profiles(plan) for key, plan in plans.items()}
    if not profiles:
        return {name: pd.DataFrame() for name in views}
    first = next(iter(profiles.values()))
    if any(p != first for p in profiles.values()):
        raise StudyError("params.yaml: study.train.profiles_file: the plans load different profiles; the sensitivity "
                         "stage needs one set: give profiles_file in study.train, not per group")
    ranges = profile_ranges(first, ranges_file)
    used = {n.key: n for plan in plans.values() for n in plan_numbers(plan, ranges)}
    every = corners(list(used.values()), draws, seed)
    if nominal_only:
        every = [c for c in every if c.kind == NOMINAL]
    groups: dict[tuple, list[tuple]] = {}  # one pricing per key: the runs that share its events
    sizes = {}
    for spec, s in runs:
        plan = plans[(spec.name, s)]
        sizes[(spec.name, s)] = cached_shard_sizes(plan)
        key = (spec.name, tuple(sizes[(spec.name, s)])) \
            if plan_turnouts(plan) is None and plan.config.round_deadline_s is None else (spec.name, s)
        groups.setdefault(key, []).append((spec, s))
    rows: dict[str, list[dict]] = {name: [] for name in views}
    for members in groups.values():
        spec, s = max(members, key=lambda m: need[(m[0].name, m[1])])  # the run of the most rounds prices them all
        plan = plans[(spec.name, s)]
        mine = {n.key for n in plan_numbers(plan, ranges)}
        events = plan_events(plan, sizes[(spec.name, s)])
        nominal = _ledger(plan, sizes[(spec.name, s)], first, events)
        ledgers = [nominal if c.kind == NOMINAL or (c.kind in SIDES and c.number not in mine)
                   else _ledger(plan, sizes[(spec.name, s)], corner_profiles(first, c), events) for c in every]
        seen: dict[tuple[int, int], dict[str, float]] = {}  # (ledger, rounds) -> totals: members share them
        for name, view in views.items():
            for m_spec, m_seed in members:
                if (m_spec.name, m_seed) not in view:
                    continue
                r = view[(m_spec.name, m_seed)]
                cols = plan_columns(study, m_spec)
                for c, (p, led) in zip(every, ledgers):
                    if (id(led), r) not in seen:
                        got = totals(p, led[led["round"] < r] if r < p.config.rounds else led)
                        seen[(id(led), r)] = {m: got[m] for m in METRICS}
                    value = c.values[0][1] if c.kind in SIDES else math.nan
                    rows[name].append({**cols, "branches": len(plan.branches), "seed": m_seed, "corner": c.name,
                                       "kind": c.kind, "number": c.number,
                                       "status": used[c.number].status if c.number else "", "value": value,
                                       **seen[(id(led), r)]})
    return {name: pd.DataFrame(part) for name, part in rows.items()}


def _ledger(plan: Plan, sizes: list[int], profiles: Profiles, events: list) -> tuple[Plan, pd.DataFrame]:
    """``(plan, its priced ledger)`` with ``profiles`` (a plan with a round deadline settled again, as its late
    branches depend on the prices)."""
    if plan.config.round_deadline_s is not None:
        plan = settle_deadline(plan, sizes, profiles)
        events = plan_events(plan, sizes)
    return plan, price(plan, events, profiles)


def nominal_mismatches(table: pd.DataFrame, study: Study, runs_dir: str | Path, rel: float = 0.0) -> list[str]:
    """The runs whose nominal re-pricing differs from their committed ``metrics.json`` (beyond ``rel``, relative),
    one line each naming the run, the total and both values; empty when every run matches.

    Raises:
        FileNotFoundError: a run of ``table`` has no ``metrics.json``.
    """
    nominal = table[table["kind"] == NOMINAL].set_index(["name", "seed"])
    out = []
    for spec, s, folder in study.run_dirs(runs_dir):
        if (spec.name, s) not in nominal.index:
            continue
        doc = json.loads((Path(folder) / "metrics.json").read_text())
        row = nominal.loc[(spec.name, s)]
        for m in METRICS:
            if not math.isclose(float(row[m]), float(doc[m]), rel_tol=rel, abs_tol=0.0):
                out.append(f"{folder}/metrics.json: {m} {doc[m]!r}, re-priced {row[m]!r}")
    return out


def cost_verdict(ratio: float, delta: float) -> str:
    """``cheaper``, ``costlier`` or ``equivalent``: ``ratio`` (a / b) against the margin ``1 + delta``."""
    margin = math.log1p(delta)
    lr = math.log(ratio)
    return "cheaper" if lr < -margin else "costlier" if lr > margin else "equivalent"


def pair_ratios(table: pd.DataFrame, pairs: list[tuple[str, str]], metrics=VERDICT_METRICS) -> pd.DataFrame:
    """Per pair, metric and corner the geometric mean over the seeds both plans ran of ``cost(a) / cost(b)``.

    Returns:
        Columns ``a``, ``b``, ``metric``, ``corner``, ``kind``, ``number``, ``ratio``, corners in table order.
    """
    rows = []
    order = list(dict.fromkeys(table["corner"]))
    info = table.drop_duplicates("corner").set_index("corner")[["kind", "number"]]
    for a, b in pairs:
        ta = table[table["name"] == a].set_index(["corner", "seed"])
        tb = table[table["name"] == b].set_index(["corner", "seed"])
        for metric in metrics:
            logs = np.log(ta[metric] / tb[metric]).dropna()
            means = logs.groupby(level="corner").mean()
            for corner in order:
                if corner in means.index:
                    rows.append({"a": a, "b": b, "metric": metric, "corner": corner, "kind": info.at[corner, "kind"],
                                 "number": info.at[corner, "number"], "ratio": float(math.exp(means[corner]))})
    return pd.DataFrame(rows, columns=["a", "b", "metric", "corner", "kind", "number", "ratio"])


def verdicts(table: pd.DataFrame, pairs: list[tuple[str, str]], delta: float, metrics=VERDICT_METRICS
             ) -> pd.DataFrame:
    """Whether each pair's cost verdict holds across the ranges.

    Args:
        table: :func:`reprice`.
        pairs: ``(a, b)`` plan names (:func:`fplstudy.study.findings.plan_pairs`).
        delta: ``findings.cost_delta``; the ratio margin is ``log(1 + delta)``.
        metrics: the totals compared.

    Returns:
        One row per pair and metric: ``a``, ``b``, ``metric``, ``ratio`` (nominal; geometric mean over seeds of the
        per-seed ratio), ``ratio_min`` and ``ratio_max`` over every corner and the corners that reach them,
        ``verdict`` (nominal), ``holds`` (the same verdict at every corner), ``flips`` (the ``number:side``
        corners whose verdict differs, ``;``-separated), ``mc_flips`` (Monte Carlo corners that differ, of
        ``mc_draws``) and ``moves_most`` (the number whose low or high moves the log ratio most).
    """
    ratios = pair_ratios(table, pairs, metrics)
    rows = []
    for (a, b, metric), part in ratios.groupby(["a", "b", "metric"], sort=False):
        nominal = float(part.loc[part["kind"] == NOMINAL, "ratio"].iloc[0])
        verdict = cost_verdict(nominal, delta)
        each = part.assign(verdict=[cost_verdict(r, delta) for r in part["ratio"]])
        flips = each[(each["verdict"] != verdict) & each["kind"].isin(SIDES)]["corner"]
        mc = each[each["kind"] == "mc"]
        ends = each[each["kind"].isin(SIDES)]
        swing = (np.log(ends["ratio"]) - math.log(nominal)).abs()
        lo, hi = part["ratio"].idxmin(), part["ratio"].idxmax()
        rows.append({"a": a, "b": b, "metric": metric, "ratio": nominal,
                     "ratio_min": float(part.at[lo, "ratio"]), "corner_min": part.at[lo, "corner"],
                     "ratio_max": float(part.at[hi, "ratio"]), "corner_max": part.at[hi, "corner"],
                     "verdict": verdict, "holds": bool((each["verdict"] == verdict).all()),
                     "flips": ";".join(flips), "mc_flips": int((mc["verdict"] != verdict).sum()),
                     "mc_draws": len(mc),
                     "moves_most": ends.at[swing.idxmax(), "number"] if len(ends) and swing.max() > 0 else ""})
    return pd.DataFrame(rows)
