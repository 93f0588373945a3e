"""The runs of a study, trained in worker processes whose CPU kernels are pinned (one thread, one
instruction-set level: the same bytes on every x86-64 CPU with it), resumed where they stopped: local
processes, or the workers of a Dask cluster (:mod:`fplstudy.study.cluster`), with the same files."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fplstudy.config import Config, StudyError, make_config, short_repr
from fplstudy.study.cluster import connect, describe, read_run_files, target, write_run_files
from fplstudy.study.kernels import (
    DEFAULT_KERNELS,
    KERNEL_VARIABLES,
    KERNELS,
    check_kernels,
)
from fplstudy.study.provenance import code_hash
from fplstudy.train.results import VOLATILE, atomic_write_text, dumps_json

if TYPE_CHECKING:
    from distributed import Client, Future

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


def _finished(run_dir: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` of the finished run (completed or diverged) that ``run_dir`` holds, else None."""
    try:
        doc = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("status") in ("completed", "diverged") else None


def run_complete(run_dir: Path, cfg: Config) -> bool:
    """True when ``run_dir`` holds a finished run of exactly ``cfg`` made by this code (resume skips it)."""
    doc = _finished(run_dir)
    return (doc is not None and doc.get("config") == cfg.model_dump()
            and doc.get("code_version", {}).get("code_hash") == code_hash()
            and (run_dir / "rounds.csv").is_file() and (run_dir / "ledger.csv").is_file())


def completed_config(run_dir: Path) -> dict[str, Any] | None:
    """The config of the finished run (completed or diverged) that ``run_dir`` holds, None if it holds none."""
    doc = _finished(run_dir)
    if doc is None:
        return None
    return doc.get("config") if isinstance(doc.get("config"), dict) else {}


def _not_ours(run_dir: Path, cfg: Config | None) -> StudyError | None:
    """The refusal for replacing ``run_dir`` with a run of ``cfg`` (None: deleting it), or None when it holds
    no finished run of another config (nothing, a partial run, or the same config made by older code)."""
    held = completed_config(run_dir)
    if held is None or (cfg is not None and held == cfg.model_dump()):
        return None
    if cfg is None:
        what = "is not a run of this study"
    else:
        mine = cfg.model_dump()
        key = next((k for k in mine if held.get(k) != mine[k]), "config")
        what = f"its {key} is {short_repr(held.get(key))}, this run's {short_repr(mine.get(key))}"
    return StudyError(f"run folder {run_dir}: holds the finished run of another config ({what}); nothing was "
                      f"changed: choose another runs folder, or pass overwrite to replace it")


def claim(runs: list[tuple[Config, Path, str]], overwrite: bool = False) -> None:
    """Refuse, before any training, to replace a run folder that holds another config's finished run.

    Raises:
        StudyError: one line naming the first such folder and the key that differs, unless ``overwrite``.
    """
    if not overwrite:
        for cfg, folder, _ in runs:
            if (refusal := _not_ours(Path(folder), cfg)) is not None:
                raise refusal


def pending(study: Study, group: str, runs_dir: str | Path, overwrite: bool = False,
            stale: list[Path] | None = None) -> list[tuple[PlanSpec, int, Path]]:
    """The runs of one group still to train: removes folders of plans and seeds no longer in the group,
    keeps runs already complete for the same config and code (so an interrupted stage resumes).

    A folder to remove or to train into that holds the finished run of another config (a run folder that
    is not this study's) is refused before anything is removed, unless ``overwrite`` (the DVC stage, which
    owns ``results/runs/<group>``, passes it).

    ``stale``: what :func:`_stale` returned for this group when the caller already checked it.

    Raises:
        StudyError: a group not in the study, or a folder that is not this study's (:func:`claim`).
    """
    for path in _stale(study, group, runs_dir, overwrite) if stale is None else stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    mine = [(p, s, d) for p, s, d in study.run_dirs(runs_dir) if p.group == group]
    return [(p, s, d) for p, s, d in mine if not run_complete(d, p.for_seed(s))]


def _stale(study: Study, group: str, runs_dir: str | Path, overwrite: bool) -> list[Path]:
    """The folders and files under ``runs_dir/group`` of plans and seeds no longer in the group, after
    checking that none of them nor any run folder of the group holds another config's finished run."""
    if group not in study.groups:
        raise StudyError(f"group {group!r} is not in the active study; groups: {', '.join(study.groups)}")
    claim([(p.for_seed(s), d, "") for p, s, d in study.run_dirs(runs_dir) if p.group == group], overwrite)
    group_dir = Path(runs_dir) / group
    stale: list[Path] = []
    if group_dir.is_dir():
        keep = {p.name: {f"seed-{s}" for s in study.seeds} for p in study.group_plans(group)}
        for plan_dir in group_dir.iterdir():
            if plan_dir.name not in keep or not plan_dir.is_dir():
                stale.append(plan_dir)
                continue
            stale += [seed_dir for seed_dir in plan_dir.iterdir() if seed_dir.name not in keep[plan_dir.name]]
    if not overwrite:
        for path in stale:
            for folder in [path, *path.rglob("*")] if path.is_dir() else []:
                if (refusal := _not_ours(folder, None)) is not None:
                    raise refusal
    return stale


def run_group(study: Study, group: str | None, runs_dir: str | Path, *, workers: int | str | None = None,
              kernels: str | None = None, log: Callable[[str], None] | None = None, overwrite: bool = False,
              ) -> list[dict[str, Any]]:
    """Train every plan × seed of one group (what its DVC stage does), or of the whole study when
    ``group`` is None, ``workers`` at a time, skipping runs already complete (:func:`pending`).

    Args:
        study: the validated study.
        group: one of ``study.groups``, or None for all of them (one pool: tests and smoke runs).
        runs_dir: ``results/runs``.
        workers: runs at once in local processes, or a Dask scheduler address (``tcp://host:port``); default:
            ``FPLSTUDY_SCHEDULER`` when set, else the study's (:func:`fplstudy.study.cluster.target`).
        kernels: the kernel level (:data:`KERNELS`); None = the study's (``study.kernels``).
        log: where progress lines go (default: the terminal, even inside a notebook kernel).
        overwrite: replace run folders that hold another config's finished run (:func:`pending`).

    Returns:
        One record per run trained (title, status, test accuracy, wall seconds).

    Raises:
        StudyError: a folder that is not this study's, or a scheduler that does not answer, before anything
            changed; the first refusal of a run inside a worker, after the runs already trained were kept.
    """
    log = log or _terminal
    groups = study.groups if group is None else [group]
    stale = {g: _stale(study, g, runs_dir, overwrite) for g in groups}  # all checked before any is changed
    where = target(workers, study.workers)
    if not isinstance(where, str):  # local workers train on this machine's devices: a missing GPU refused now
        from fplstudy.train.engine import training_device

        for accelerator in sorted({p.for_seed(study.seeds[0]).accelerator for p in study.plans if p.group in groups}):
            training_device(accelerator)
    client = connect(where) if isinstance(where, str) else None  # refused here when no scheduler answers
    try:
        todo = [run for g in groups for run in pending(study, g, runs_dir, overwrite, stale[g])]
        total = sum(1 for p in study.plans if p.group in groups) * len(study.seeds)
        if len(todo) < total:
            log(f"[{group or 'study'}] {total - len(todo)} of {total} runs already complete for this code and "
                f"config; kept")
        others = [(p, s, d) for p, s, d in study.run_dirs(runs_dir) if p.group not in groups]
        after = sum(1 for p, s, d in others if not run_complete(d, p.for_seed(s)))
        return train_runs([(p.for_seed(s), d, f"{p.name} seed {s}") for p, s, d in todo],
                          workers=client or where, kernels=kernels or study.kernels, log=log,
                          label=group or "study", runs_after=after, overwrite=True)  # pending() claimed the folders
    finally:
        if client is not None:
            client.close()


def train_runs(runs: list[tuple[Config, Path, str]], *, workers: int | str | Client | None = None,
               kernels: str = DEFAULT_KERNELS, log: Callable[[str], None] | None = None, label: str = "runs",
               runs_after: int = 0, overwrite: bool = False) -> list[dict[str, Any]]:
    """Train runs in ``workers`` worker processes (spawned, so the pinned :data:`KERNELS` apply to their
    torch), or on the workers of a Dask cluster, each into its folder, printing one progress line per run with
    the time left (and, on a cluster, one line with its dashboard first). A script that calls it needs the
    ``if __name__ == "__main__":`` guard (spawned workers import the main module).

    On a cluster every run trains in one of its worker's training processes (:class:`_Trainer`: started once
    per worker with the pinned kernel variables set before their torch loads, then kept, as the local pool
    keeps its workers) into a temporary folder; the folder's files come back as bytes
    and replace the run folder here in one rename (:func:`fplstudy.study.cluster.write_run_files`), so the
    files are those a local run writes. A task whose worker is lost is trained again on another worker.

    Args:
        runs: ``(config, run folder, title)`` per run.
        workers: runs at once in local processes (each one thread unless its config says otherwise), a Dask
            scheduler address (``tcp://host:port``) or a connected :class:`distributed.Client`; default:
            ``FPLSTUDY_SCHEDULER`` when set, else 1.
        kernels: the kernel level every run is pinned to (:data:`KERNELS`; ``native``: none).
        log: where progress lines go (default: the terminal).
        label: prefix of the progress lines (the group).
        runs_after: runs still to train after these (for the estimate of the whole study).
        overwrite: replace run folders that hold another config's finished run (:func:`claim`).

    Returns:
        One record per run, in the order of ``runs``: title, status, test accuracy, wall seconds, and the
        volatile ``environment`` the run recorded (threads, CPU kernel level, CPU model, torch version, kernel
        variables); on a cluster also the ``worker`` that trained it.

    Raises:
        StudyError: a folder that holds another config's finished run, or a scheduler that does not answer,
            before any training.
        ConfigError, StudyError: the first run a worker refused, as the worker raised it (one line; on a
            cluster it names the worker); the runs not yet started are cancelled, those finished are kept.
    """
    log = log or _terminal
    records: list[dict[str, Any]] = []
    if not runs:
        return records
    claim(runs, overwrite)
    where = workers if workers is not None and not isinstance(workers, (int, str)) else target(workers)
    if not isinstance(where, int):
        if kernels not in KERNELS:
            check_kernels(kernels)  # the refusal of an unknown level; each worker checks its own CPU
        die_with_job()
        if isinstance(where, str):
            with connect(where) as client:
                return _train_on_cluster(client, runs, kernels, log, label, runs_after)
        return _train_on_cluster(where, runs, kernels, log, label, runs_after)
    die_with_job()
    t0 = time.perf_counter()
    check_kernels(kernels)
    env = {**{k: None for k in KERNEL_VARIABLES}, **KERNELS[kernels][0]}  # native: this CPU's own, unpinned
    with _environment(env), \
            ProcessPoolExecutor(min(where, len(runs)), mp_context=multiprocessing.get_context("spawn"),
                                initializer=die_with_parent) as pool:
        futures = [(title, pool.submit(_worker_run, cfg.model_dump(), str(folder), kernels)) for cfg, folder, title in runs]
        for done, (title, future) in enumerate(futures, 1):
            try:
                rec = future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # runs already started finish and are kept
                raise
            records.append({"run": title, "skipped": False, **rec})
            log(_progress(label, done, len(runs), title, rec, time.perf_counter() - t0, runs_after))
    return records


def _progress(label: str, done: int, count: int, title: str, rec: dict[str, Any], elapsed_s: float,
              runs_after: int) -> str:
    """The progress line of the ``done``-th finished run of ``count``, with the time left."""
    per_run = elapsed_s / done
    left = per_run * (count - done)
    return (f"[{label} {done}/{count}] {title}: {rec['status']}, test accuracy {rec['test_acc_mean']:.3f}, "
            f"{rec['wall_s']:.1f} s; about {_minutes(left)} left here, {_minutes(left + per_run * runs_after)} "
            f"in the study")


# Retries of a task that raised on its worker (its training process died: out of memory, a full temporary
# disk); a task whose worker is lost is rescheduled by the scheduler itself (`distributed.scheduler.allowed-failures`).
CLUSTER_RETRIES = 2


def _train_on_cluster(client: Client, runs: list[tuple[Config, Path, str]], kernels: str,
                      log: Callable[[str], None], label: str, runs_after: int) -> list[dict[str, Any]]:
    """:func:`train_runs` on a Dask cluster: one task per run, the answers written here as they arrive."""
    from distributed import as_completed

    log(f"[{label}] {describe(client)}")
    t0 = time.perf_counter()
    own = code_hash()
    futures: dict[Future, int] = {}
    for i, (cfg, _, _) in enumerate(runs):
        key = f"fplstudy-run-{uuid.uuid4().hex[:12]}"  # unique: a rerun of the same run is a new task
        futures[client.submit(_cluster_task, cfg.model_dump(), kernels, key=key, pure=False,
                              retries=CLUSTER_RETRIES)] = i
    records: list[dict[str, Any] | None] = [None] * len(runs)
    done = 0

    def keep(future: Future) -> int:
        i = futures.pop(future)
        answer = future.result()
        if "refusal" in answer:
            raise answer["refusal"]
        _, folder, title = runs[i]
        files = dict((rel, data) for rel, data, _ in answer["files"])
        theirs = json.loads(files.get("metrics.json", b"{}")).get("code_version", {}).get("code_hash")
        if theirs != own:
            raise StudyError(f"{answer['worker']}: trains with other fplstudy code (code hash {str(theirs)[:12]}, "
                             f"here {own[:12]}); install this checkout on every worker (docs/cluster.md)")
        write_run_files(folder, answer["files"])
        records[i] = {"run": title, "skipped": False, **answer["record"], "worker": answer["worker"]}
        return i

    try:
        for future in as_completed(list(futures), loop=client.loop):
            i = keep(future)
            done += 1
            log(_progress(label, done, len(runs), runs[i][2], records[i], time.perf_counter() - t0, runs_after))
    except BaseException:
        client.cancel(list(futures))  # not started: dropped; running: they finish on their worker, unread
        for future in [f for f in futures if f.status == "finished"]:  # finished meanwhile: kept
            with contextlib.suppress(Exception):
                keep(future)
        raise
    return [r for r in records if r is not None]


class _Trainer:
    """A training process of a Dask worker, started once with the kernel variables pinned (before its torch
    loads) and kept for every later run, as the local pool keeps its workers: it reads one pickled run at a
    time on its stdin and answers on its stdout (:func:`serve_runs`). A plain child process, so it works in
    daemonic Dask workers (a ``LocalCluster``'s) where :mod:`multiprocessing` may not start children; it
    dies with its worker (:func:`die_with_parent`)."""

    def __init__(self, kernels: str):
        env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
        env.update(KERNELS[kernels][0])
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding this fplstudy
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-c", "from fplstudy.study.pool import serve_runs; serve_runs()"],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors)

    def run(self, cfg_values: dict[str, Any], run_dir: str, kernels: str, worker: str) -> dict[str, Any]:
        """Train one run in the process; its refusal is raised as the process raised it."""
        try:
            _send(self.proc.stdin, (cfg_values, run_dir, kernels))
            kind, value = _receive(self.proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError):
            self.proc.kill()
            self.errors.seek(0)
            tail = " ".join(self.errors.read().decode(errors="replace").split()[-40:])
            raise RuntimeError(f"{worker}: its training process ended (code {self.proc.wait()}): {tail}") from None
        if kind == "error":
            raise value
        return value


def _send(stream, value: Any) -> None:
    data = pickle.dumps(value)
    stream.write(len(data).to_bytes(8, "big") + data)
    stream.flush()


def _receive(stream) -> Any:
    size = stream.read(8)
    if len(size) < 8:
        raise EOFError("closed")
    data = stream.read(int.from_bytes(size, "big"))
    if len(data) < int.from_bytes(size, "big"):
        raise EOFError("cut short")
    return pickle.loads(data)


def serve_runs() -> None:
    """The loop of a :class:`_Trainer` process: train each run it is sent (:func:`_worker_run`) and answer
    ``("ok", record)`` or ``("error", exception)``; end when its input closes."""
    die_with_parent()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever a run prints stays off the answer channel
    while True:
        try:
            cfg_values, run_dir, kernels = _receive(stdin)
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = ("ok", _worker_run(cfg_values, run_dir, kernels))
        except Exception as exc:  # carried back whole (every exception of the package pickles)
            answer = ("error", exc)
        try:
            _send(stdout, answer)
        except (pickle.PicklingError, TypeError, AttributeError):
            _send(stdout, ("error", RuntimeError(" ".join(str(answer[1]).split()))))


_IDLE: dict[str, list[_Trainer]] = {}  # per kernel level: this worker's training processes not in use
_IDLE_LOCK = threading.Lock()


def _cluster_task(cfg_values: dict[str, Any], kernels: str) -> dict[str, Any]:
    """One run on a Dask worker: trained by one of this worker's training processes (:class:`_Trainer`: kernels pinned
    before their torch loaded) into a temporary folder. Returns the short record, the run folder's files and
    the worker's name, or a ``refusal`` (a :class:`StudyError` naming the worker) that is not retried
    elsewhere. A training process that dies fails the task, which Dask retries (``CLUSTER_RETRIES``)."""
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:  # called outside a worker
        address = "(none)"
    worker = f"Dask worker {address} on {socket.gethostname()}"
    try:
        check_kernels(kernels)  # this CPU; a torch pinned above its CPU's level dies of an illegal instruction
        with _IDLE_LOCK:
            idle = _IDLE.setdefault(kernels, [])
            trainer = idle.pop() if idle else None
        trainer = trainer or _Trainer(kernels)  # one per worker thread at most: each takes a free one
        try:
            with tempfile.TemporaryDirectory(prefix="fplstudy-run-") as tmp:
                folder = Path(tmp) / "run"
                record = trainer.run(cfg_values, str(folder), kernels, worker)
                return {"record": record, "files": read_run_files(folder), "worker": worker}
        finally:
            if trainer.proc.poll() is None:  # still alive (a run it refused included): kept for the next run
                with _IDLE_LOCK:
                    _IDLE[kernels].append(trainer)
    except StudyError as exc:
        return {"refusal": StudyError(f"{worker}: {exc}")}
    except ValueError as exc:  # ConfigError and the like: the run's own refusal
        if type(exc).__module__.startswith("fplstudy"):
            return {"refusal": StudyError(f"{worker}: {exc}")}
        raise


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``), so a worker of a killed
    ``dvc repro``, papermill kernel or script does not train on as an orphan; elsewhere, nothing."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # the parent died before the call took effect
            os._exit(1)


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(parent pid, session id, start time)`` of a process from ``/proc``, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def job_ancestors(pid: int | None = None) -> list[tuple[int, int]]:
    """``(pid, start time)`` of the processes above ``pid`` (default: this one) that run the same job: its
    parent, the parent's parent, ... up to the first session leader (a login shell, a terminal, a CI
    runner, the kernel of a notebook server), which is left out. For a train stage that is papermill, the
    shell DVC starts and ``dvc repro``; for a command typed at a shell, nothing."""
    chain: list[tuple[int, int]] = []
    stat = _stat(pid or os.getpid())
    while stat is not None and stat[0] > 1:
        parent = stat[0]
        stat = _stat(parent)
        if stat is None or stat[1] == parent:  # gone, or the session leader
            break
        chain.append((parent, stat[2]))
    return chain


_WATCHING: list[bool] = []


def die_with_job(interval_s: float = 1.0) -> None:
    """End this process (and so, through :func:`die_with_parent`, its workers) when a process above it in
    its job dies: ``kill -9`` of ``dvc repro`` leaves no papermill kernel or stage training on as an orphan.
    A daemon thread polls :func:`job_ancestors` (pid and start time, so a reused pid does not count as
    alive); started once per process, Linux only."""
    if _WATCHING or not sys.platform.startswith("linux"):
        return
    chain = job_ancestors()
    if not chain:
        return
    _WATCHING.append(True)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            for pid, start in chain:
                stat = _stat(pid)
                if stat is None or stat[2] != start:
                    print(f"fplstudy: process {pid} above this one ended (killed?); stopping, the runs already "
                          f"finished are kept", file=sys.__stderr__ or sys.stderr, flush=True)
                    os._exit(137)

    threading.Thread(target=watch, name="fplstudy-die-with-job", daemon=True).start()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _terminal(line: str) -> None:
    """Print to the terminal of whoever runs this (the console of ``dvc repro`` or papermill) and, inside a
    notebook kernel, into the notebook's output once (as standard output).

    A Jupyter kernel redirects the process's file descriptors 1 and 2 into the notebook, so a write to fd 2
    there would show a second copy of the line, in the notebook's stderr box; its ``sys.stderr.fileno()`` is
    the copy of the original fd 2 (the terminal) that the kernel keeps."""
    if sys.stdout is sys.__stdout__:  # a plain process
        print(line, file=sys.stderr, flush=True)
        return
    print(line, flush=True)  # a kernel's captured stdout: the executed notebook
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return  # a kernel that keeps no copy of the terminal: the notebook's copy is the only one
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())
