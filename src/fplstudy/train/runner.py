"""Library entry points used by the CLI and the notebooks: train a plan or price it, write results.

Every check that can fail (run folder, config, plan, profiles, dataset files, partition) runs before
any training starts.

Run folders cannot lie (see :mod:`fplstudy.train.results` for the files):

- ``out`` is checked before any work (:func:`check_out`): a path, not a file or device, in a place
  where files can be written. A folder that already holds anything is refused unless ``resume`` or
  ``overwrite`` is given; ``overwrite`` deletes the run files (:data:`fplstudy.train.results.RUN_FILES`)
  first.
- While a run writes a folder it holds an exclusive lock on it (``flock`` on the folder itself, so no
  lock file is left behind): a second writer is refused at once.
- Every file carries the run's ``run_id``; ``metrics.json`` says ``running`` from the start and is
  rewritten after every round, so a partial folder says it is partial.
- At the end of a round the simulated backend writes ``checkpoint.pt`` atomically (weights of every node,
  optimizer state with momentum buffers, the global random states, rows and events so far) once
  ``checkpoint_every_s`` seconds of training have passed since the last one, and never sooner than 50
  times the last write took (:data:`CHECKPOINT_SHARE`: writing costs at most 2 % of training; 0 writes
  one after every round); ``resume``
  continues from it, or starts the run again when it stopped before its first checkpoint, and writes the
  same files, byte for byte, as an uninterrupted run (rounds after the checkpoint are trained again, to
  the same bytes). The checkpoint is deleted when the run ends ``completed`` or ``diverged``: a finished
  folder holds deterministic files only (what DVC tracks).
- Ctrl-C (KeyboardInterrupt) ends training after writing the completed rounds' ``rounds.csv``, their
  priced ``ledger.csv`` and ``metrics.json`` with status ``interrupted``; :class:`RunInterrupted` is
  raised with the outcome.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from fplstudy.config import Config, ConfigError, PicklableError
from fplstudy.costs.dryrun import (
    FROM_DECLARED,
    declared_shard_sizes,
    dry_run,
    plan_events,
    priced_from,
    settle_deadline,
)
from fplstudy.costs.ledger import price, totals, write_ledger_csv
from fplstudy.costs.memory import check_memory
from fplstudy.facts.models import build_model
from fplstudy.facts.partition import load_partitioned
from fplstudy.facts.profiles import check_profiles
from fplstudy.plans.dynamics import planned_turnouts
from fplstudy.plans.plan import Plan, resolve
from fplstudy.plans.program import round_batches
from fplstudy.train.distributed import (
    DistributedError,
    check_wire,
    train_distributed,
    write_wire_csv,
)
from fplstudy.train.engine import EVAL_BATCH, SimulatedTransport, check_state, train, training_device
from fplstudy.train.results import (
    CHECKPOINT,
    ROUND_COLUMNS,
    RUN_FILES,
    atomic_write_bytes,
    atomic_write_text,
    code_version,
    dumps_json,
    environment,
    final_metrics,
    run_id,
    write_metrics,
    write_rows_csv,
)

BACKENDS = ("simulated", "distributed")
LONG_RUN_S = 60.0  # a run estimated to train longer than this announces its estimate first (s)
_PROBE_PREFIX = ".fplstudy-probe-"  # temporary file that checks a folder is writable
# environment() fields that change floating-point results: a resume under other values is refused
# How often a run writes its checkpoint: after the round that ends CHECKPOINT_EVERY_S seconds of training after
# the last one (an interruption loses at most that much training), and only once the training since then took
# 1 / CHECKPOINT_SHARE times as long as writing the last one took (writing costs at most 2 % of training).
CHECKPOINT_EVERY_S = 30.0
CHECKPOINT_SHARE = 0.02
_NUMERIC_ENVIRONMENT = ("torch_threads", "cpu_capability", "torch", "accelerator", "env")


class RunFolderError(PicklableError, ValueError):
    """A run folder that cannot be written as asked; the message says why and what to do instead."""


class RunInterrupted(PicklableError, KeyboardInterrupt):
    """Ctrl-C during training; the completed rounds were written. ``outcome`` is the partial result."""

    def __init__(self, outcome: RunOutcome):
        super().__init__(outcome.message)
        self.outcome = outcome


@dataclass
class RunOutcome:
    """What :func:`run` returns.

    Attributes:
        plan: the resolved plan.
        metrics: the content of ``metrics.json``'s flat part (learning metrics and cost totals).
        rounds: one row per completed round.
        ledger: the priced per-node ledger.
        status: ``completed``, ``diverged``, ``interrupted`` or ``failed``.
        message: why it stopped early.
        out: the run folder (None when nothing was written).
        run_id: the run's id (:func:`fplstudy.train.results.run_id`).
    """

    plan: Plan
    metrics: dict[str, Any]
    rounds: pd.DataFrame
    ledger: pd.DataFrame
    status: str
    message: str
    out: Path | None
    run_id: str = ""


def quiet_by_default() -> bool:
    """Progress bars are off under CI (the ``CI`` environment variable is set)."""
    return bool(os.environ.get("CI"))


def set_threads(threads: int) -> int:
    """Set torch's intra-op CPU threads, the one place every entry point does it.

    Args:
        threads: the config key ``threads``: >= 1 sets that many (1: one fixed summation order);
            0 leaves torch's setting as it is (its default: one per core).

    Returns:
        The threads torch uses now.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def preflight(cfg: Config):
    """Resolve and check everything a run needs but its data: the plan, its profiles, every node's memory,
    the dynamics keys and a trace file (what a study's ``check`` stage checks of every plan).

    Returns:
        ``(plan, profiles)``.

    Raises:
        ConfigError: a bad key, value or profile, a key the strategy refuses, a trace file that cannot be
            read, or a node that needs more memory than its device has
            (:func:`fplstudy.costs.memory.check_memory`).
    """
    plan = resolve(cfg)
    profiles = check_profiles(plan)
    check_memory(plan, profiles)
    planned_turnouts(plan)  # the dynamics keys and a trace file, before any work
    return plan, profiles


def prepare(cfg: Config):
    """Resolve and check everything a run needs (:func:`preflight`, then its data), without training.

    Returns:
        ``(plan, profiles, (dataset, partition))``.

    Raises:
        ConfigError: what :func:`preflight` refuses, or a partition that cannot be made.
        FileNotFoundError: a torchvision dataset that is not on disk (message says how to get it).
    """
    plan, profiles = preflight(cfg)
    data = load_partitioned(plan)
    plan = settle_deadline(plan, data[1].samples(), profiles)  # which branches miss a round deadline
    return plan, profiles, data


# --------------------------------------------------------------------------- the run folder

def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(_PROBE_PREFIX))


def check_out(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check a run folder before any work; creates nothing.

    Args:
        out: the folder to write (created later if missing).
        resume: a non-empty folder is accepted (its run is continued).
        overwrite: a non-empty folder is accepted (its run files are deleted before the run).

    Returns:
        ``out`` as a Path.

    Raises:
        RunFolderError: an empty path, a path that is a file or device (``/dev/null``), a place where
            files cannot be written (``/proc/x``, a read-only folder), or a non-empty folder without
            ``resume``/``overwrite``.
    """
    if resume and overwrite:
        raise RunFolderError("give either --resume (continue the run) or --overwrite (start it again), not both")
    if not str(out).strip():
        raise RunFolderError(f"run folder {str(out)!r}: empty path; give a folder, e.g. --out runs/fpl4")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"run folder {path}: it exists and is not a folder (a file or device); "
                             f"give a new folder path")
    base = path.absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise RunFolderError(f"run folder {path}: {base} is a file, not a folder; give another path")
    try:  # what really happens on write (os.access says yes to root on /proc)
        fd, probe = tempfile.mkstemp(dir=base, prefix=_PROBE_PREFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunFolderError(f"run folder {path}: cannot write in {base} ({exc.strerror}); "
                             f"choose a writable folder") from None
    if path.is_dir() and not (resume or overwrite):
        _refuse_non_empty(path)
    return path


def _refuse_non_empty(path: Path) -> None:
    names = _entries(path)
    if names:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise RunFolderError(f"run folder {path} is not empty ({shown}); pass --resume to continue the run in "
                             f"it or --overwrite to replace it, or choose a new --out")


class RunFolder:
    """An exclusively locked run folder (a context manager), the folder holding one run only.

    ``flock`` on the folder itself: the lock ends with the process, and no lock file is left behind.
    """

    def __init__(self, path: Path, *, resume: bool = False, overwrite: bool = False):
        self.path, self.resume, self.overwrite = Path(path), resume, overwrite
        self._fd: int | None = None

    def __enter__(self) -> RunFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunFolderError(f"run folder {self.path} is being written by another fplstudy run right now; "
                                 f"wait for it to end or choose another --out") from None
        self._fd = fd
        try:
            if not (self.resume or self.overwrite):  # again, under the lock: the folder may have changed
                _refuse_non_empty(self.path)
            self._clear_leftovers()
            if self.overwrite:
                for name in RUN_FILES:
                    (self.path / name).unlink(missing_ok=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _clear_leftovers(self) -> None:
        """Temporary files of an atomic write that a killed process left behind."""
        for name in RUN_FILES:
            for tmp in self.path.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def files(self) -> list[str]:
        return _entries(self.path)


def _resume_state(folder: RunFolder, plan: Plan, env: dict) -> dict | None:
    """What ``resume`` continues from: the checkpoint, or None to start at round 0.

    Raises:
        ConfigError: the run in the folder had another config (names the first differing key).
        RunFolderError: nothing to resume (a finished run, or files that are not an fplstudy run),
            other code or another numeric environment, or an unreadable checkpoint.
    """
    path, cfg = folder.path, plan.config
    names = folder.files()
    if not names:
        return None
    if CHECKPOINT in names:
        try:
            state = torch.load(path / CHECKPOINT, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is refused the same way
            raise RunFolderError(f"run folder {path}: {CHECKPOINT} cannot be read ({type(exc).__name__}); "
                                 f"start again with --overwrite") from None
        if not isinstance(state, dict) or not all(isinstance(state.get(k), dict)
                                                  for k in ("config", "code_version", "environment")):
            raise RunFolderError(f"run folder {path}: {CHECKPOINT} is not an fplstudy checkpoint (a torch file of "
                                 f"another kind); nothing was changed: start again with --overwrite")
        _same_run(path, state["config"], cfg)
        _same_code(path, state["code_version"], code_version())
        _same_environment(path, state["environment"], env)
        try:
            check_state(plan, state)  # before any file of the folder is written
        except ValueError as exc:
            raise RunFolderError(f"run folder {path}: {CHECKPOINT} cannot be continued: {exc}; nothing was "
                                 f"changed: start again with --overwrite") from None
        return state
    if "metrics.json" not in names:
        raise RunFolderError(f"run folder {path} holds no fplstudy run ({', '.join(names[:4])}); nothing to "
                             f"resume; choose another --out")
    try:
        doc = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
            raise ValueError("not an object")
        status, done = doc["status"], doc.get("rounds_completed", 0)
    except (ValueError, KeyError, OSError):
        raise RunFolderError(f"run folder {path}: metrics.json cannot be read as a run's metrics; start again "
                             f"with --overwrite") from None
    if status in ("running", "interrupted", "failed"):  # stopped before its first checkpoint: start it again
        _same_run(path, doc.get("config", {}), cfg)
        return None
    why = "it is complete" if status == "completed" else f"it ended {status} after {done} rounds"
    raise RunFolderError(f"run folder {path}: nothing to resume, {why}; use --overwrite to train it again")


def _same_run(path: Path, before: dict, cfg: Config) -> None:
    now = cfg.model_dump()
    for key in Config.model_fields:
        if key not in before or before[key] != now[key]:
            raise ConfigError(key, now[key], f"the run in {path} was started with {key}={before.get(key)!r}; "
                                             f"resume with the same config, or use --overwrite")


def _same_code(path: Path, before: dict, now: dict) -> None:
    for key in ("fplstudy", "git_commit", "torch"):
        if before.get(key) != now.get(key):
            raise RunFolderError(f"run folder {path}: the run was started with {key} {before.get(key)}, this is "
                                 f"{now.get(key)}; one run must come from one code version: resume with that "
                                 f"code, or use --overwrite")


def _same_environment(path: Path, before: dict, now: dict) -> None:
    for key in _NUMERIC_ENVIRONMENT:
        if before.get(key) != now.get(key):
            raise RunFolderError(f"run folder {path}: the run was started with {key}={before.get(key)!r}, now "
                                 f"{now.get(key)!r} (it changes floating-point results); resume where it started, "
                                 f"or use --overwrite")


# --------------------------------------------------------------------------- estimate

def estimate_round_s(plan: Plan, data) -> float | None:
    """Seconds one round of ``plan`` should take here, measured before training.

    Times a training step of the whole model (forward, backward, SGD step) on one micro-batch of the
    real training data, and an evaluation forward of up to ``EVAL_BATCH`` test samples, and multiplies by the
    round's micro-batches (:func:`fplstudy.plans.program.round_batches`) and evaluation chunks (one per
    branch). Leaves out the engine's hand-offs and the cost of cutting the model into stages (a few
    % to 10 %, ``benchmarks/engine_overhead.py``). Torch's random state is left as it was.

    Returns:
        Seconds per round, or None where the probe itself fails (the run reports its own error).
    """


    split, part = data
    micro = [k for b in round_batches(plan, part.samples()) for k in b.micro_sizes]
    k = max(micro)
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_model(plan.model, plan.input_shape, plan.num_classes)
            opt = torch.optim.SGD(model.parameters(), lr=plan.config.lr)
            x, y = split.x_train[:k], split.y_train[:k]

            def step() -> None:
                F.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            step()  # warm-up: first-call allocations
            times = []
            for _ in range(3):  # the median: one slow step on a busy machine does not set the estimate
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            step_s = sorted(times)[1]
            model.eval()
            xt = split.x_test[:EVAL_BATCH]
            with torch.no_grad():
                t0 = time.perf_counter()
                model(xt)
                eval_s = time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - an estimate must never stop a run
        return None
    chunks = math.ceil(len(split.x_test) / max(1, len(xt))) * len(plan.branches)
    return len(micro) * step_s + chunks * eval_s


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


# --------------------------------------------------------------------------- run

def _rank0() -> bool:
    """False in a process that is rank 1.. of an externally launched (torchrun) run: only rank 0
    owns the run folder."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def run(cfg: Config, out: str | Path | None = None, *, progress: bool | None = None,
        backend: str = "simulated", resume: bool = False, overwrite: bool = False,
        on_round: Callable[[dict], None] | None = None,
        checkpoint_every_s: float = CHECKPOINT_EVERY_S) -> RunOutcome:
    """Train a plan, price its event stream, and write ``metrics.json``, ``rounds.csv``, ``ledger.csv``.

    Args:
        cfg: validated config (its ``threads`` key sets torch's threads first, :func:`set_threads`).
        out: run folder; None writes nothing. Must be new or empty unless ``resume``/``overwrite``.
        progress: tqdm bar over rounds; None = on unless ``CI`` is set.
        backend: ``simulated`` (one process) or ``distributed`` (one process per node, torch.distributed).
        resume: continue the run in ``out`` after its last completed round (simulated backend; same
            config, code and numeric environment); an empty ``out`` starts a new run.
        overwrite: delete the run files in ``out`` first.
        on_round: called with each completed round's row, after the folder has it (e.g. live plots).
        checkpoint_every_s: seconds of training between checkpoints; a checkpoint also waits until training
            since the last one took 1 / :data:`CHECKPOINT_SHARE` times its write. 0: after every round.

    Returns:
        The :class:`RunOutcome`. A diverged run keeps the rounds it completed (status ``diverged``).

    Raises:
        RunFolderError: a bad ``out`` or a folder that cannot be written as asked (before any work).
        ConfigError: a bad config, or ``resume`` with another config than the folder's run.
        RunInterrupted: Ctrl-C; the completed rounds were written (status ``interrupted``).
        fplstudy.train.distributed.DistributedError: a node process failed; completed rounds written
            (status ``failed``).
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, f"known backends: {', '.join(BACKENDS)}")
    if backend != "simulated" and cfg.accelerator == "cuda":
        raise ConfigError("accelerator", cfg.accelerator, f"the {backend} backend trains on CPU tensors (gloo); use "
                                                          f"cpu or auto, or the simulated backend for a GPU")
    device = training_device(cfg.accelerator) if backend == "simulated" else torch.device("cpu")
    if resume and backend != "simulated":
        raise RunFolderError("--resume works with the simulated backend only (the distributed backend writes "
                             "no checkpoint); use --overwrite to start again")
    writes = out is not None and (backend == "simulated" or _rank0())
    path = check_out(out, resume=resume, overwrite=overwrite) if writes else None
    set_threads(cfg.threads)
    plan, profiles, data = prepare(cfg)
    if progress is None:
        progress = not quiet_by_default()
    writer = _RunWriter(plan, profiles, data, path, backend, checkpoint_every_s, device)
    if path is None:
        return writer.train(progress, on_round, None)
    with RunFolder(path, resume=resume, overwrite=overwrite) as folder:
        state = _resume_state(folder, writer.plan, writer.env) if resume else None
        return writer.train(progress, on_round, state)


class _RunWriter:
    """One run's training and files (what :func:`run` does once the folder is locked)."""

    def __init__(self, plan: Plan, profiles, data, out: Path | None, backend: str, checkpoint_every_s: float,
                 device: torch.device):
        self.plan, self.profiles, self.data, self.out, self.backend = plan, profiles, data, out, backend
        self.device = device
        self.checkpoint_every_s = checkpoint_every_s
        self._last_write = (time.perf_counter(), 0.0)  # when the last checkpoint ended (or training began), its cost
        self.config = plan.config.model_dump()
        self.run_id = run_id(self.config)
        self.code = code_version() if out is not None else {}
        self.env = environment(device)
        self.timing: dict[str, Any] = {"backend": backend, "started_utc": _now()}
        self._t0: float | None = None  # perf_counter when training started
        self.rows: list[dict] = []
        self._checkpointed: list[dict] = []  # the rows of the last checkpoint written
        self._writing = False  # a checkpoint is being written (atomically: the file is the old one or the new)

    # -- files
    def _rows(self, rows: list[dict]) -> list[dict]:
        return [{**r, "run_id": self.run_id} for r in rows]

    def _metrics(self, status: str, message: str = "", totals: dict | None = None) -> None:
        write_metrics(self.out, self.plan, rounds=self.rows, totals=totals, status=status, message=message,
                      timing=self.timing, extra={"shard_sizes": self.data[1].samples()}, code=self.code, env=self.env)

    def _write_rounds(self) -> None:
        write_rows_csv(self.out / "rounds.csv", self._rows(self.rows), ROUND_COLUMNS)

    def _checkpoint(self, state: dict) -> None:
        ended, took = self._last_write
        if self.checkpoint_every_s > 0 and time.perf_counter() - ended < max(self.checkpoint_every_s,
                                                                               took / CHECKPOINT_SHARE):
            return
        t0 = time.perf_counter()
        state = {**state, "run_id": self.run_id, "config": self.config, "code_version": self.code,
                 "environment": {k: self.env[k] for k in _NUMERIC_ENVIRONMENT}}
        buf = io.BytesIO()
        torch.save(state, buf)
        self._writing = True  # Ctrl-C or SIGTERM from here on: the file on disk says which rows it holds
        atomic_write_bytes(self.out / CHECKPOINT, buf.getvalue())
        self._checkpointed = state["rows"]
        self._writing = False
        self._last_write = (time.perf_counter(), time.perf_counter() - t0)

    # -- training
    def train(self, progress: bool, on_round: Callable[[dict], None] | None, state: dict | None) -> RunOutcome:
        """Train (from ``state``, a checkpoint, when given), writing the folder as rounds complete."""
        plan, out = self.plan, self.out
        if state is not None:
            self.rows = [dict(r) for r in state["rows"]]
            self.timing["resumed_after_round"] = len(self.rows) - 1
        if out is not None:
            self._write_rounds()
            self._metrics("running")

        def row_done(row: dict) -> None:
            self.rows.append(row)
            if out is not None:
                self._write_rounds()
                self._metrics("running")
            if on_round is not None:
                on_round(row)

        T = None
        try:
            self._announce()
            self._t0 = time.perf_counter()
            self._last_write = (self._t0, 0.0)
            if self.backend == "distributed":
                result = train_distributed(plan, data=self.data, progress=progress, on_round=row_done)
            else:
                T = SimulatedTransport()
                result = train(plan, T, progress=progress, data=self.data, on_round=row_done, resume=state,
                               device=self.device,
                               on_state=self._checkpoint if out is not None else None)
        except KeyboardInterrupt:
            self._stamp()
            if self._writing and (out / CHECKPOINT).is_file():  # interrupted around the rename: read what landed
                self._checkpointed = torch.load(out / CHECKPOINT, weights_only=True)["rows"]
            if len(self._checkpointed) > len(self.rows):  # Ctrl-C between a round's checkpoint and its row:
                self.rows = [dict(r) for r in self._checkpointed]  # the checkpoint holds the round, keep it
            done = len(self.rows)
            events = ([e for e in T.events if e.round < done] if T is not None else self._replay(done))
            outcome = self._finish("interrupted", f"interrupted (Ctrl-C) after {done} completed rounds", events)
            raise RunInterrupted(outcome) from None
        except OSError as exc:
            if out is None or exc.errno not in DISK_FULL:
                raise
            self._stamp()
            mark_failed(out / "metrics.json", "disk full: free space, then --resume continues after the last "
                                              "checkpointed round")
            raise
        except RuntimeError as exc:
            if not isinstance(exc, DistributedError):
                raise
            self._stamp()
            kept = exc.result
            events = kept.events if kept is not None else self._replay(len(self.rows))
            self._finish("failed", str(exc), events)
            raise
        self._stamp()
        self.rows = list(result.rounds)
        wire = getattr(result, "wire", None)
        return self._finish(result.status, result.message, result.events, wire=wire,
                            rank=getattr(result, "rank", 0))

    def _stamp(self) -> None:
        if self._t0 is not None:
            self.timing["train_wall_s"] = time.perf_counter() - self._t0

    def _replay(self, rounds: int) -> list:
        """The events of the first ``rounds`` rounds where the distributed parent holds none: the dry
        run's replay of the engine's schedule, equal to a real run's (tests/unit/costs/test_costs.py)."""
        short = replace(self.plan, config=self.plan.config.model_copy(update={"rounds": rounds}))
        return plan_events(short, self.data[1].samples())

    def _finish(self, status: str, message: str, events: list, wire=None, rank: int = 0) -> RunOutcome:
        ledger = price(self.plan, events, self.profiles)
        tot = totals(self.plan, ledger)
        out = self.out
        if self.backend == "distributed":  # the wire is the independent measurement of the ledger's bytes

            if out is not None and wire is not None and rank == 0:
                write_wire_csv(wire, out / "wire.csv")
            if wire is not None:
                check_wire(wire, ledger)
            if rank != 0:  # results are written once, by rank 0
                out = None
        if out is not None:
            self._write_rounds()
            write_ledger_csv(ledger.assign(run_id=self.run_id), out / "ledger.csv")
            self._metrics(status, message, tot)
            if status in ("completed", "diverged"):  # finished: the folder keeps deterministic files only
                (out / CHECKPOINT).unlink(missing_ok=True)
        metrics = {**final_metrics(self.rows), **tot}
        rounds = pd.DataFrame(self._rows(self.rows), columns=[*ROUND_COLUMNS, "wall_s"])
        return RunOutcome(self.plan, metrics, rounds, ledger, status, message, out, self.run_id)

    def _announce(self) -> None:
        """Print one line with the time estimate before a long run (:data:`LONG_RUN_S`)."""
        left = self.plan.config.rounds - len(self.rows)
        per_round = estimate_round_s(self.plan, self.data) if left > 0 else None
        if per_round is None:
            return
        self.timing["estimated_round_s"] = per_round
        if per_round * left >= LONG_RUN_S:
            print(f"fplstudy: estimated training time {_duration(per_round * left)} ({left} rounds x "
                  f"{per_round:.3g} s, timed on one step of the whole model here); Ctrl-C stops it and keeps "
                  f"the completed rounds", file=sys.stderr, flush=True)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; the user's disk quota used up


def mark_failed(path: Path, message: str) -> None:
    """Set ``status: failed`` in a run's ``metrics.json`` on a full disk, where no new file can be written:
    atomically with ``message`` if space allows, else in place in the file's own blocks (``failed`` is
    shorter than ``running``; the rest is padded with spaces, which JSON allows), so the folder says the
    truth and stays resumable from its checkpoint. A file that cannot be read is left as it is."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(doc, dict):
        return
    try:
        atomic_write_text(path, dumps_json({**doc, "status": "failed", "message": message}))
        return
    except OSError:
        pass
    text = dumps_json({**doc, "status": "failed"}).encode()
    size = path.stat().st_size
    if len(text) <= size:
        with open(path, "r+b") as f:
            f.write(text + b" " * (size - len(text)))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cost(cfg: Config, out: str | Path | None = None, *, overwrite: bool = False):
    """Price a plan without training (dry run) and write ``ledger.csv`` and ``metrics.json``: from the
    dataset's files, or from its declared shape where they are missing (``priced_from`` in metrics.json).

    Args:
        cfg: validated config (``threads`` is set first).
        out: folder to write (checked before any work, as :func:`run` does); None writes nothing.
        overwrite: replace the run files of a non-empty ``out``.

    Returns:
        The :class:`fplstudy.costs.dryrun.DryRun`.
    """
    path = check_out(out, overwrite=overwrite) if out is not None else None
    set_threads(cfg.threads)
    source = priced_from(cfg)
    if source == FROM_DECLARED:  # no files: shard sizes from the dataset's published class counts
        plan = resolve(cfg)
        profiles, sizes = check_profiles(plan), declared_shard_sizes(plan)
    else:
        plan, profiles, (split, part) = prepare(cfg)
        sizes = part.samples()
    t0 = time.perf_counter()
    dry = dry_run(plan, shards=sizes, profiles=profiles)
    extra = {"shard_sizes": sizes, **({"priced_from": source} if source == FROM_DECLARED else {})}
    if path is not None:
        with RunFolder(path, overwrite=overwrite):
            write_ledger_csv(dry.ledger.assign(run_id=run_id(plan.config.model_dump())), path / "ledger.csv")
            write_metrics(path, plan, rounds=None, totals=dry.totals, status="dry-run",
                          timing={"dry_run_s": time.perf_counter() - t0}, extra=extra)
    return dry
