"""The DVC study: the sweep grid read from ``params.yaml``, one plan run per grid point, the aggregate
tables, and the findings that check the seed paper's claims.

The grid lives in ``params.yaml`` (section ``study``, see the comments there) and ``dvc.yaml`` expands
the same axes with ``matrix:``; :func:`study_grid` is the Python side of that expansion and
``tests/test_notebooks.py`` checks that both agree on every plan name.

Run folders hold only deterministic files: :func:`run_plan` moves the volatile parts of
``metrics.json`` (wall-clock timing and the git commit, which changes with every commit) out of the
tracked file and returns them, so the training notebook can show them in its executed copy while
``dvc repro --force`` reproduces the tracked outputs byte for byte.

Command line (used by ``dvc.yaml``)::

    python -m fplstudy.study aggregate --params params.yaml --runs results/runs --out results
    python -m fplstudy.study export-digits data/digits
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fplstudy.results import VOLATILE, atomic_write_text, dumps_json

# Keys of metrics.json that identical runs reproduce exactly (everything but timing and git commit).
METRIC_KEYS = ("test_acc_mean", "test_acc_worst", "test_loss_mean", "train_loss", "rounds_completed",
               "flops_total", "bytes_total", "energy_j", "energy_j_max_node", "makespan_s",
               "memory_bytes_max_node", "model_params", "model_params_ratio", "params_stored_total")
PLAN_COLUMNS = ("name", "strategy", "nodes", "junction", "partition")
# metrics.json sections that differ between identical runs (VOLATILE, from fplstudy.results: timing and
# environment); run_plan keeps them out of the tracked file.
VOLATILE_CODE_VERSION = ("git_commit",)


@dataclass(frozen=True)
class PlanPoint:
    """One point of the study grid (the swept values only; the rest comes from ``study.train``).

    Attributes:
        strategy: fplstudy strategy.
        nodes: edge nodes.
        junction: junction mode (``shared`` for strategies without a junction choice).
        partition: ``iid``, ``dirichlet`` or ``features`` (vertical, for junction ``concat``).
    """

    strategy: str
    nodes: int
    junction: str
    partition: str

    @property
    def name(self) -> str:
        """Run folder name; the same pattern as the ``outs`` of the train stages in ``dvc.yaml``."""
        return plan_name(self.strategy, self.nodes, self.junction, self.partition)


def plan_name(strategy: str, nodes: int, junction: str, partition: str) -> str:
    """Name of a plan's run folder, e.g. ``fpl-4-adapter-iid`` or ``fl-8-dirichlet``.

    Only ``fpl`` names carry the junction: the other strategies have no junction choice.
    """
    if strategy == "fpl":
        return f"{strategy}-{nodes}-{junction}-{partition}"
    return f"{strategy}-{nodes}-{partition}"


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read ``params.yaml`` (YAML anchors resolved, so ``study: *digits`` selects a study).

    Raises:
        FileNotFoundError: when the file is missing, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found; run from the repository root or pass "
                                f"--params <file>")
    return yaml.safe_load(path.read_text())


def study_grid(params: dict[str, Any]) -> list[PlanPoint]:
    """Every plan of the active study, in the order the stages of ``dvc.yaml`` list them.

    Args:
        params: the content of ``params.yaml``.

    Returns:
        centralized (1 node), then ``mp`` over nodes, then each data-parallel strategy over
        nodes × partitions, then ``fpl`` over nodes × junctions × partitions, then ``fpl`` with the
        ``concat`` junction over its node counts (partition ``features``).
    """
    sweep = params["study"]["sweep"]
    grid = [PlanPoint("centralized", 1, "shared", "iid")]
    grid += [PlanPoint("mp", n, "shared", "iid") for n in sweep["nodes"]]
    grid += [PlanPoint(s, n, "shared", p) for s in sweep["data_parallel"] for n in sweep["nodes"]
             for p in sweep["partitions"]]
    grid += [PlanPoint("fpl", n, j, p) for n in sweep["nodes"] for j in sweep["junctions"]
             for p in sweep["partitions"]]
    grid += [PlanPoint("fpl", n, "concat", "features") for n in sweep["concat_nodes"]]
    return grid


def plan_config(strategy: str, nodes: int, junction: str, partition: str, **train: Any):
    """The validated :class:`fplstudy.config.Config` of one plan.

    Args:
        strategy, nodes, junction, partition: the swept values.
        **train: the shared settings (config keys; ``max_train_samples=0`` means the whole set).

    Raises:
        fplstudy.config.ConfigError: the engine's message for a value it refuses.
    """
    from fplstudy.config import load_config

    values = dict(train)
    if values.get("max_train_samples") == 0:
        values["max_train_samples"] = None
    values.update(strategy=strategy, nodes=nodes, partition=partition)
    if strategy == "fpl":
        values["junction"] = junction
    return load_config(overrides=values)


def require_dataset(dataset: str, data_dir: str | Path) -> None:
    """Check that the dataset the study trains on is on disk and equals what fplstudy loads.

    For ``digits`` this is the DVC-tracked copy under ``<data_dir>/digits`` (restored by
    ``dvc pull data.dvc``); it must hold exactly scikit-learn's digits, which fplstudy reads.

    Raises:
        FileNotFoundError: the data is missing; the message gives the command that restores it.
        ValueError: the tracked copy differs from the data fplstudy trains on.
    """
    if dataset != "digits":
        return  # torchvision datasets: fplstudy.datasets raises its own message naming the fix
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


def run_plan(cfg, run_dir: str | Path, *, threads: int | None = None):
    """Train one plan into ``run_dir`` and keep only reproducible content in its ``metrics.json``.

    Args:
        cfg: the plan's config.
        run_dir: run folder (created; run files already in it are replaced, as DVC empties it first).
        threads: overrides the config key ``threads`` (torch CPU threads: 1 makes sums run in one fixed
            order and leaves cores to others; 0 keeps torch's default); None = the config's.

    Returns:
        ``(outcome, volatile)``: the :class:`fplstudy.runner.RunOutcome` and the removed sections
        (timing, environment, git commit) for the caller to display.
    """
    from fplstudy.config import make_config
    from fplstudy.runner import run

    if threads is not None and threads != cfg.threads:
        cfg = make_config({**cfg.model_dump(), "threads": threads})
    run_dir = Path(run_dir)
    outcome = run(cfg, run_dir, progress=False, overwrite=True)
    doc = json.loads((run_dir / "metrics.json").read_text())
    volatile = {key: doc.pop(key) for key in VOLATILE if key in doc}
    code = doc.get("code_version", {})
    volatile.update({key: code.pop(key) for key in VOLATILE_CODE_VERSION if key in code})
    atomic_write_text(run_dir / "metrics.json", dumps_json(doc))
    return outcome, volatile


def run_grid(params: dict[str, Any], runs_dir: str | Path) -> list[str]:
    """Run every plan of ``params``' grid into ``runs_dir/<plan name>`` in this process (what the
    train stages of ``dvc.yaml`` do one notebook at a time; used for smoke runs and tests).

    Returns:
        The plan names, in grid order.
    """
    train = dict(params["study"]["train"])
    threads = train.pop("threads", 1)
    names = []
    for point in study_grid(params):
        cfg = plan_config(point.strategy, point.nodes, point.junction, point.partition, **train)
        run_plan(cfg, Path(runs_dir) / point.name, threads=threads)
        names.append(point.name)
    return names


def smoke_params() -> dict[str, Any]:
    """A tiny study (2 rounds on 120 samples, a few plans of every strategy) for smoke runs."""
    return {"study": {
        "train": {"dataset": "digits", "model": "cnn", "max_train_samples": 120, "rounds": 2, "batch_size": 32,
                  "lr": 0.05, "alpha": 0.5, "seed": 0, "threads": 1},
        "sweep": {"nodes": [2, 4], "data_parallel": ["fl", "sl", "sfl"], "junctions": ["shared", "adapter"],
                  "partitions": ["iid", "dirichlet"], "concat_nodes": [4]}}}


def aggregate(params: dict[str, Any], runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read every run of the grid into tidy tables.

    Args:
        params: the content of ``params.yaml``.
        runs_dir: folder holding one run folder per plan.

    Returns:
        ``summary`` (one row per plan: swept values, status, :data:`METRIC_KEYS`, branches),
        ``rounds`` (one row per plan × round) and ``costs`` (one row per plan × node × kind:
        summed ``energy_j``, ``bytes_tx``, ``bytes_rx``, ``flops``, ``seconds``).

    Raises:
        FileNotFoundError: a plan of the grid has no run folder (names the stage to run).
    """
    runs_dir = Path(runs_dir)
    summary, rounds, costs = [], [], []
    for point in study_grid(params):
        folder = runs_dir / point.name
        if not (folder / "metrics.json").is_file():
            raise FileNotFoundError(f"plan {point.name}: {folder}/metrics.json missing; run `dvc repro` "
                                    f"(its train stage writes it)")
        doc = json.loads((folder / "metrics.json").read_text())
        keys = {c: getattr(point, c) for c in PLAN_COLUMNS}
        row = {**keys, "status": doc["status"], **{k: doc.get(k) for k in METRIC_KEYS},
               "branches": len(doc["plan"]["branches"])}
        summary.append(row)
        rnd = pd.read_csv(folder / "rounds.csv")
        rounds.append(rnd.assign(**keys)[[*PLAN_COLUMNS, *rnd.columns]])
        led = pd.read_csv(folder / "ledger.csv")
        per = (led.groupby(["node", "role", "kind"], sort=True)[["energy_j", "bytes_tx", "bytes_rx", "flops",
                                                                   "seconds"]].sum().reset_index())
        costs.append(per.assign(**keys)[[*PLAN_COLUMNS, *per.columns]])
    return {"summary": pd.DataFrame(summary), "rounds": pd.concat(rounds, ignore_index=True),
            "costs": pd.concat(costs, ignore_index=True)}


def write_aggregate(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write ``summary.csv``, ``rounds.csv``, ``costs.csv`` and the DVC metrics file ``metrics.json``
    (per plan, the deterministic final metrics) into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    written = []
    for name, table in tables.items():
        written.append(atomic_write_text(out_dir / f"{name}.csv", table.to_csv(index=False, lineterminator="\n")))
    summary = tables["summary"].set_index("name")
    metrics = {name: {k: _plain(summary.at[name, k]) for k in METRIC_KEYS} for name in summary.index}
    written.append(atomic_write_text(out_dir / "metrics.json", dumps_json(metrics)))
    return written


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


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


def findings(summary: pd.DataFrame, *, accuracy_tolerance: float = 0.02,
             modest_size_increase: float = 0.10) -> list[str]:
    """Check the seed paper's claims on this study's numbers; one markdown sentence per check.

    Compares, at each node count on IID data, the best ``fpl`` junction with ``fl``, ``sl`` and ``mp``;
    reports FPL's bytes and energy against the same strategies, the model-size increase of each junction
    mode, and the accuracy lost to Dirichlet (non-IID) data.

    Args:
        summary: the ``summary.csv`` table.
        accuracy_tolerance: accuracy gap (fraction) still read as "comparable".
        modest_size_increase: largest relative model-size increase read as "modest".

    Returns:
        Markdown bullet lines.
    """
    s = summary[summary["status"] == "completed"]
    iid = s[s["partition"].isin(["iid", "features"])]
    fpl = iid[iid["strategy"] == "fpl"]
    lines = []
    for nodes in sorted(fpl["nodes"].unique()):
        f = fpl[fpl["nodes"] == nodes].sort_values("test_acc_mean", ascending=False).iloc[0]
        for other in ("fl", "sl", "mp"):
            o = iid[(iid["strategy"] == other) & (iid["nodes"] == nodes)]
            if o.empty:
                continue
            o = o.iloc[0]
            gap = f["test_acc_mean"] - o["test_acc_mean"]
            verdict = ("holds" if gap >= -accuracy_tolerance else "does not hold")
            lines.append(
                f"- **{nodes} nodes, accuracy, FPL vs {other.upper()}**: {f['name']} reaches "
                f"{f['test_acc_mean']:.3f}, {o['name']} {o['test_acc_mean']:.3f} (gap {gap:+.3f}); the claim "
                f"that FPL matches it within {accuracy_tolerance:.2f} {verdict}.")
            for col, what in (("bytes_total", "bytes"), ("energy_j", "energy")):
                ratio = f[col] / o[col] if o[col] else float("nan")
                word = "less" if ratio < 1 else "more"
                lines.append(f"  - {what}: {f['name']} {_si(f[col], col)} vs {o['name']} {_si(o[col], col)} "
                             f"({ratio:.2f}×, FPL uses {word}).")
    sizes = fpl.groupby("junction")["model_params_ratio"].max()
    for junction, ratio in sizes.items():
        increase = ratio - 1.0
        verdict = "modest" if increase <= modest_size_increase else "not modest"
        lines.append(f"- **model size, junction {junction}**: deployed model is {ratio:.3f}× the original "
                     f"(+{100 * increase:.1f} %), {verdict} by the {100 * modest_size_increase:.0f} % bar.")
    both = s[s["partition"].isin(["iid", "dirichlet"])]
    pivot = both.pivot_table(index=["strategy", "nodes", "junction"], columns="partition",
                             values="test_acc_mean")
    if {"iid", "dirichlet"} <= set(pivot.columns):
        drop = (pivot["iid"] - pivot["dirichlet"]).dropna().groupby(level="strategy").mean()
        parts = ", ".join(f"{k} {v:+.3f}" for k, v in drop.sort_values().items())
        lines.append(f"- **non-IID data (Dirichlet)**: accuracy lost to Dirichlet shards, IID minus Dirichlet "
                     f"averaged over node counts (negative: Dirichlet did better): {parts}.")
    return lines


def _si(value: float, column: str) -> str:
    unit = "B" if column.startswith("bytes") else "J"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.2f} {unit}"


def main(argv: list[str] | None = None) -> int:
    """``aggregate`` (the aggregate stage) and ``export-digits`` (how data/digits was made)."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    agg = sub.add_parser("aggregate", help="runs of the params.yaml grid -> summary.csv, rounds.csv, costs.csv, "
                                           "metrics.json")
    agg.add_argument("--params", default="params.yaml")
    agg.add_argument("--runs", required=True, help="folder of run folders")
    agg.add_argument("--out", required=True, help="folder for the tables")
    exp = sub.add_parser("export-digits", help="write scikit-learn's digits as .npy files")
    exp.add_argument("folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "aggregate":
            for path in write_aggregate(aggregate(load_params(args.params), args.runs), args.out):
                print(path)
        else:
            for path in export_digits(args.folder):
                print(path)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
