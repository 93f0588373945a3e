"""The runs of a study, trained in worker processes whose CPU kernels are pinned (one thread, one
instruction-set level: the same bytes on every x86-64 CPU with it), resumed where they stopped."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fplstudy.config import Config, StudyError, make_config
from fplstudy.study.kernels import (
    DEFAULT_KERNELS,
    KERNEL_VARIABLES,
    KERNELS,
    check_kernels,
)
from fplstudy.study.provenance import code_hash
from fplstudy.train.results import VOLATILE, atomic_write_text, dumps_json

if TYPE_CHECKING:
    from fplstudy.study.params import PlanSpec, Study


# metrics.json sections that differ between identical runs or machines (VOLATILE, from fplstudy.train.results:
# timing and environment) and the git commit are kept out of the tracked files.
VOLATILE_CODE_VERSION = ("git_commit",)


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


def pending(study: Study, group: str, runs_dir: str | Path) -> list[tuple[PlanSpec, int, Path]]:
    """The runs of one group still to train: removes folders of plans and seeds no longer in the group,
    keeps runs already complete for the same config and code (so an interrupted stage resumes)."""
    if group not in study.groups:
        raise StudyError(f"group {group!r} is not in the active study; groups: {', '.join(study.groups)}")
    mine = [(p, s, d) for p, s, d in study.run_dirs(runs_dir) if p.group == group]
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
    others = [(p, s, d) for p, s, d in study.run_dirs(runs_dir) if p.group not in groups]
    after = sum(1 for p, s, d in others if not run_complete(d, p.for_seed(s)))
    return train_runs([(p.for_seed(s), d, f"{p.name} seed {s}") for p, s, d in todo],
                      workers=workers or study.workers, kernels=kernels or study.kernels, log=log, label=group or "study",
                      runs_after=after)


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
