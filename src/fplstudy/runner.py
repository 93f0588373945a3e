"""Library entry points used by the CLI and the notebooks: train a plan or price it, write results.

Every check that can fail (config, plan, profiles, dataset files, partition) runs before any
training starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fplstudy.config import Config
from fplstudy.plan import Plan, resolve
from fplstudy.results import ROUND_COLUMNS, final_metrics, write_metrics, write_rows_csv

BACKENDS = ("simulated", "distributed")


@dataclass
class RunOutcome:
    """What :func:`run` returns.

    Attributes:
        plan: the resolved plan.
        metrics: the content of ``metrics.json``'s flat part (learning metrics and cost totals).
        rounds: one row per completed round.
        ledger: the priced per-node ledger.
        status: ``completed`` or ``diverged``.
        message: why it stopped early.
        out: the run folder (None when nothing was written).
    """

    plan: Plan
    metrics: dict[str, Any]
    rounds: pd.DataFrame
    ledger: pd.DataFrame
    status: str
    message: str
    out: Path | None


def quiet_by_default() -> bool:
    """Progress bars are off under CI (the ``CI`` environment variable is set)."""
    return bool(os.environ.get("CI"))


def prepare(cfg: Config):
    """Resolve and check everything a run needs, without training.

    Returns:
        ``(plan, profiles, (dataset, partition))``.

    Raises:
        ConfigError: a bad key, value, profile or partition.
        FileNotFoundError: a torchvision dataset that is not on disk (message says how to get it).
    """
    from fplstudy.engine import load_partitioned
    from fplstudy.profiles import check_profiles

    plan = resolve(cfg)
    profiles = check_profiles(plan)
    data = load_partitioned(plan)
    return plan, profiles, data


def run(cfg: Config, out: str | Path | None = None, *, progress: bool | None = None,
        backend: str = "simulated") -> RunOutcome:
    """Train a plan, price its event stream, and write ``metrics.json``, ``rounds.csv``, ``ledger.csv``.

    Args:
        cfg: validated config.
        out: run folder (created); None writes nothing.
        progress: tqdm bar over rounds; None = on unless ``CI`` is set.
        backend: ``simulated`` (one process) or ``distributed`` (one process per node, torch.distributed).

    Returns:
        The :class:`RunOutcome`. A diverged run keeps the rounds it completed (status ``diverged``).
    """
    from fplstudy.engine import train
    from fplstudy.ledger import price, totals, write_ledger_csv

    if backend not in BACKENDS:
        from fplstudy.config import ConfigError

        raise ConfigError("backend", backend, f"known backends: {', '.join(BACKENDS)}")
    plan, profiles, data = prepare(cfg)
    out = Path(out) if out is not None else None
    if progress is None:
        progress = not quiet_by_default()
    rows: list[dict] = []

    def on_round(row: dict) -> None:  # keep completed rounds on disk as they come
        rows.append(row)
        if out is not None:
            write_rows_csv(out / "rounds.csv", rows, ROUND_COLUMNS)

    t0 = time.perf_counter()
    if backend == "distributed":
        from fplstudy.distributed import train_distributed

        result = train_distributed(plan, data=data, progress=progress, on_round=on_round)
    else:
        result = train(plan, progress=progress, data=data, on_round=on_round)
    train_s = time.perf_counter() - t0
    ledger = price(plan, result.events, profiles)
    tot = totals(plan, ledger)
    if backend == "distributed":  # the wire is the independent measurement of the ledger's bytes
        from fplstudy.distributed import check_wire, write_wire_csv

        if out is not None and result.wire is not None and getattr(result, "rank", 0) == 0:
            write_wire_csv(result.wire, out / "wire.csv")
        check_wire(result.wire, ledger)
        if getattr(result, "rank", 0) != 0:  # results are written once, by rank 0
            out = None
    if out is not None:
        write_rows_csv(out / "rounds.csv", result.rounds, ROUND_COLUMNS)
        write_ledger_csv(ledger, out / "ledger.csv")
        write_metrics(out, plan, rounds=result.rounds, totals=tot, status=result.status, message=result.message,
                      timing={"train_wall_s": train_s, "backend": backend},
                      extra={"shard_sizes": result.shard_sizes})
    metrics = {**final_metrics(result.rounds), **tot}
    return RunOutcome(plan, metrics, pd.DataFrame(result.rounds, columns=[*ROUND_COLUMNS, "wall_s"]), ledger,
                      result.status, result.message, out)


def cost(cfg: Config, out: str | Path | None = None):
    """Price a plan without training (dry run) and write ``ledger.csv`` and ``metrics.json``.

    Returns:
        The :class:`fplstudy.dryrun.DryRun`.
    """
    from fplstudy.dryrun import dry_run
    from fplstudy.ledger import write_ledger_csv

    plan, profiles, (split, part) = prepare(cfg)
    t0 = time.perf_counter()
    dry = dry_run(plan, shards=part.samples(), profiles=profiles)
    if out is not None:
        out = Path(out)
        write_ledger_csv(dry.ledger, out / "ledger.csv")
        write_metrics(out, plan, rounds=None, totals=dry.totals, status="dry-run",
                      timing={"dry_run_s": time.perf_counter() - t0}, extra={"shard_sizes": part.samples()})
    return dry
