"""Result files of a run, written atomically and named after their settings.

A run folder holds:

- ``metrics.json`` — flat final metrics (``test_acc_mean``, ``test_acc_worst``, ``test_loss_mean``,
  the cost totals), ``status``, the fully resolved ``config``, the ``plan`` layout, the
  ``code_version``, and a ``timing`` section (the only part that differs between identical runs);
- ``rounds.csv`` — one row per completed round (see :data:`ROUND_COLUMNS`);
- ``ledger.csv`` — the per-node cost ledger (schema in :mod:`fplstudy.ledger`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

import fplstudy

ROUND_COLUMNS = ("round", "train_loss", "test_loss_mean", "test_acc_mean", "test_acc_worst",
                 "test_acc_per_branch")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader never sees half a file and an interrupted write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_rows_csv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> Path:
    """Atomically write dict rows as CSV with the given column order (floats in repr form)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def code_version() -> dict[str, str]:
    """The code that made a result: package version, git commit (``+dirty`` if modified), torch."""
    commit = "unknown"
    src = Path(fplstudy.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            commit = head.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True,
                                   text=True, timeout=10)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"fplstudy": fplstudy.__version__, "git_commit": commit, "torch": torch.__version__,
            "python": platform.python_version()}


def plan_summary(plan) -> dict[str, Any]:
    """The plan's layout as plain data (who holds which blocks)."""
    return {
        "model": plan.model,
        "nodes": [{"name": n.name, "role": n.role, "device": n.device} for n in plan.nodes],
        "branches": [{"index": b.index, "data_node": b.data_node, "adapter_node": b.adapter_node,
                      "view": list(b.view) if b.view else None,
                      "stages": [{"node": s.node, "blocks": list(s.blocks)} for s in b.stages]}
                     for b in plan.branches],
        "trunk": [{"node": s.node, "blocks": list(s.blocks)} for s in plan.trunk],
        "junction": plan.junction, "junction_at": plan.junction_at, "sync": plan.sync,
        "aggregator": plan.aggregator, "schedule": plan.schedule,
    }


def final_metrics(rounds: list[dict]) -> dict[str, float]:
    """Last completed round's learning metrics (NaN when no round completed)."""
    last = rounds[-1] if rounds else {}
    nan = float("nan")
    return {"test_acc_mean": last.get("test_acc_mean", nan), "test_acc_worst": last.get("test_acc_worst", nan),
            "test_loss_mean": last.get("test_loss_mean", nan), "train_loss": last.get("train_loss", nan),
            "rounds_completed": len(rounds)}


def write_metrics(out: str | Path, plan, *, rounds: list[dict] | None, totals: dict | None, status: str,
                  message: str = "", timing: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``metrics.json``: flat metrics first, then config, plan, code version, timing."""
    doc: dict[str, Any] = {"status": status, "message": message}
    if rounds is not None:
        doc.update(final_metrics(rounds))
    doc.update(totals or {})
    doc.update(extra or {})
    doc["config"] = plan.config.model_dump()
    doc["plan"] = plan_summary(plan)
    doc["code_version"] = code_version()
    doc["timing"] = timing or {}
    return atomic_write_text(Path(out) / "metrics.json", json.dumps(_jsonable(doc), indent=2, sort_keys=False) + "\n")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None  # NaN is not JSON
    return obj
