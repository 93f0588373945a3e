"""Result files of a run, written atomically and named after their settings.

A run folder holds the files of exactly one run (:mod:`fplstudy.train.runner` locks it and refuses to mix
runs):

- ``metrics.json`` — ``status`` (``running``, ``interrupted``, ``diverged``, ``failed``, ``completed``;
  ``dry-run`` for a priced plan), ``run_id``, flat final metrics (``test_acc_mean``,
  ``test_acc_worst``, ``test_loss_mean``, the cost totals), the fully resolved ``config``, the ``plan``
  layout, the ``code_version``, and the :data:`VOLATILE` sections ``timing`` (wall-clock seconds, when
  it started) and ``environment`` (:func:`environment`: what can change floating-point results) -- the
  only parts that differ between identical runs;
- ``rounds.csv`` — one row per completed round (see :data:`ROUND_COLUMNS`), ``run_id`` last;
- ``ledger.csv`` — the per-node cost ledger (schema in :mod:`fplstudy.costs.ledger`), ``run_id`` last;
- ``checkpoint.pt`` — while a run is unfinished only (see :data:`CHECKPOINT`).

Every JSON file is strict JSON (:func:`dumps_json`): a non-finite float is written as ``null``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

import fplstudy
from fplstudy.paths import honour_umask

ROUND_COLUMNS = ("round", "train_loss", "test_loss_mean", "test_acc_mean", "test_acc_worst",
                 "test_acc_per_branch", "branches_trained", "branches_late", "nodes_absent", "run_id")
# metrics.json sections that differ between identical runs (fplstudy.study.params keeps them out of tracked files)
VOLATILE = ("timing", "environment")
# The per-round checkpoint of an unfinished run (weights, optimizer and RNG states, rows, events); it is
# deleted when the run ends completed or diverged, so a finished folder holds only deterministic files.
CHECKPOINT = "checkpoint.pt"
RUN_FILES = ("metrics.json", "rounds.csv", "ledger.csv", "wire.csv", CHECKPOINT)
# Environment variables that select CPU kernels or thread counts, hence floating-point results.
# CUBLAS_WORKSPACE_CONFIG: cuBLAS's workspace, which a deterministic GPU run fixes.
ENVIRONMENT_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS",
                         "CUBLAS_WORKSPACE_CONFIG")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader never sees half a file and an interrupted write leaves the old file intact."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file ``.<name>.*.tmp`` in the same folder,
    flushed to disk, then renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        honour_umask(fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def dumps_json(doc: Any) -> str:
    """Strict JSON text of ``doc`` (indent 2, a final newline): numpy/torch scalars become numbers,
    non-finite floats (NaN, ±inf) become ``null``, and anything else non-finite is refused
    (``allow_nan=False``), so every JSON parser reads what fplstudy writes."""
    return json.dumps(_jsonable(doc), indent=2, sort_keys=False, allow_nan=False) + "\n"


def run_id(config: dict[str, Any]) -> str:
    """The id of a run: ``run-`` and the first 12 hex digits of the SHA-256 of its resolved config
    (JSON, sorted keys). Identical configs give identical ids, so two identical runs (and a resumed
    one) write identical files; the prefix keeps CSV readers from taking it for a number."""
    text = json.dumps(_jsonable(config), sort_keys=True, allow_nan=False)
    return "run-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("model name", "Model", "Processor"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """What can change a run's floating-point results on this machine (the same answer anywhere needs them recorded).

    Args:
        device: the torch device that trains (None: the CPU).

    Returns:
        ``torch_threads`` (intra-op threads in use), ``cpu_capability`` (the CPU kernel level ATen
        dispatches to, ``torch.backends.cpu.get_cpu_capability()``), ``cpu_model``, ``torch``
        (version), ``accelerator`` (:func:`accelerator`), and ``env``: the values of
        :data:`ENVIRONMENT_VARIABLES` (None when unset).
    """
    return {"torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_model": cpu_model(), "torch": str(torch.__version__), "accelerator": accelerator(device),
            "env": {name: os.environ.get(name) for name in ENVIRONMENT_VARIABLES}}


def accelerator(device: torch.device | None) -> str:
    """The device that trains, as a run records it: ``cpu``, or ``cuda: <GPU model>, driver <version>, CUDA
    <version>`` (each of which can change a GPU run's floating-point results)."""
    if device is None or device.type == "cpu":
        return "cpu"
    driver = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                                f"--id={device.index or 0}"], capture_output=True, text=True, timeout=20)
        driver = query.stdout.strip() or driver
    return f"cuda: {torch.cuda.get_device_name(device)}, driver {driver}, CUDA {torch.version.cuda}"


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
    return {"fplstudy": fplstudy.__version__, "git_commit": commit, "torch": str(torch.__version__),
            "python": platform.python_version()}


def plan_summary(plan) -> dict[str, Any]:
    """The plan's layout as plain data (who holds which blocks)."""
    return {
        "model": plan.model,
        "nodes": [{"name": n.name, "role": n.role, "device": n.device} | ({"point": n.point} if n.point else {})
                  for n in plan.nodes],
        "branches": [{"index": b.index, "data_node": b.data_node, "adapter_node": b.adapter_node,
                      "view": list(b.view) if b.view else None,
                      "stages": [{"node": s.node, "blocks": list(s.blocks)} for s in b.stages]}
                     for b in plan.branches],
        "trunk": [{"node": s.node, "blocks": list(s.blocks)} for s in plan.trunk],
        "junction": plan.junction, "junction_at": plan.junction_at, "sync": plan.sync,
        "aggregator": plan.aggregator, "schedule": plan.branch_order,
    }


def final_metrics(rounds: list[dict]) -> dict[str, float]:
    """Last completed round's learning metrics (NaN when no round completed)."""
    last = rounds[-1] if rounds else {}
    nan = float("nan")
    return {"test_acc_mean": last.get("test_acc_mean", nan), "test_acc_worst": last.get("test_acc_worst", nan),
            "test_loss_mean": last.get("test_loss_mean", nan), "train_loss": last.get("train_loss", nan),
            "rounds_completed": len(rounds)}


def write_metrics(out: str | Path, plan, *, rounds: list[dict] | None, totals: dict | None, status: str,
                  message: str = "", timing: dict | None = None, extra: dict | None = None,
                  code: dict[str, str] | None = None, env: dict[str, Any] | None = None) -> Path:
    """Write ``metrics.json``: status and run id, flat metrics, then config, plan, code version, and
    the volatile sections ``timing`` and ``environment``.

    Args:
        out: run folder.
        plan: the plan.
        rounds: completed rounds' rows (None: no learning metrics, e.g. a dry run).
        totals: cost totals (None while a run is still running).
        status: ``running``, ``interrupted``, ``diverged``, ``failed``, ``completed`` or ``dry-run``.
        message: why it stopped early.
        timing: wall-clock figures.
        extra: more flat keys (e.g. ``shard_sizes``).
        code: :func:`code_version` (computed when None).
        env: :func:`environment` (computed when None).
    """
    config = plan.config.model_dump()
    doc: dict[str, Any] = {"status": status, "message": message, "run_id": run_id(config)}
    if rounds is not None:
        doc.update(final_metrics(rounds))
    doc.update(totals or {})
    doc.update(extra or {})
    doc["config"] = config
    doc["plan"] = plan_summary(plan)
    doc["code_version"] = code if code is not None else code_version()
    doc["timing"] = timing or {}
    doc["environment"] = env if env is not None else environment()
    return atomic_write_text(Path(out) / "metrics.json", dumps_json(doc))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # NaN and infinities are not JSON
    return obj
