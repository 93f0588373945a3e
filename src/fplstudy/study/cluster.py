"""A study's runs on a Dask cluster: which scheduler a study uses (``study.workers``, ``FPLSTUDY_SCHEDULER``),
the connection to it, and the run folder's files carried as bytes between a worker and this machine.

Workers share no file system with the machine that starts the study: a task trains into a temporary folder
on its worker and returns the folder's files; :func:`write_run_files` puts them into the run folder here in
one rename, so a run folder holds all of one run's files or none of them.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fplstudy.config import StudyError, short_repr

if TYPE_CHECKING:
    from distributed import Client

# The environment variable that points a study at a Dask scheduler without editing params.yaml: it changes
# where runs train, never what they compute, so no DVC-tracked param or file changes with it.
SCHEDULER_VARIABLE = "FPLSTUDY_SCHEDULER"

CONNECT_TIMEOUT_S = 10  # an unreachable scheduler is refused after this long, before any run starts

# A Dask scheduler address: tcp:// (or tls:// with Dask's TLS settings), a host name, IPv4 or [IPv6], a port.
_ADDRESS = re.compile(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})")

ADDRESS_FIX = "give a Dask scheduler address such as tcp://10.0.0.5:8786 (`dask scheduler` prints it)"  # the fix


def is_address(value: Any) -> bool:
    """True when ``value`` is a Dask scheduler address (``tcp://host:port`` or ``tls://host:port``)."""
    match = _ADDRESS.fullmatch(value) if isinstance(value, str) else None
    return match is not None and 0 < int(match.group(3)) < 65536


def target(workers: int | str | None, study_workers: int | str = 1) -> int | str:
    """Where a study's runs train: ``workers`` when given, else ``FPLSTUDY_SCHEDULER`` when set, else the
    study's ``workers`` (``params.yaml``'s ``study.workers``).

    Args:
        workers: runs at once here (an integer) or a scheduler address; None: not given.
        study_workers: the study's own value.

    Returns:
        An integer (local worker processes) or a scheduler address.

    Raises:
        StudyError: ``FPLSTUDY_SCHEDULER`` or ``workers`` is neither; one line naming it and the fix.
    """
    if workers is None:
        env = os.environ.get(SCHEDULER_VARIABLE, "").strip()
        if env:
            if not is_address(env):
                raise StudyError(f"environment variable {SCHEDULER_VARIABLE}: got {short_repr(env)}; {ADDRESS_FIX}, "
                                 f"or unset it to train here")
            return env
        workers = study_workers
    if isinstance(workers, str):
        if not is_address(workers):
            raise StudyError(f"workers: got {short_repr(workers)}; give a number of local processes or a Dask "
                             f"scheduler address such as tcp://10.0.0.5:8786")
        return workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise StudyError(f"workers: got {short_repr(workers)}; give a number of local processes (1 or more) or a "
                         f"Dask scheduler address tcp://host:port")
    return workers


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Client:
    """A :class:`distributed.Client` of the scheduler at ``address``.

    Raises:
        StudyError: no scheduler answers there within ``timeout_s``; one line naming the address.
    """
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        reason = " ".join(str(exc).split())[:160]
        reason = "" if not reason or "timed out" in reason.lower() else f" ({reason})"
        raise StudyError(f"Dask scheduler {address}: no answer within {timeout_s:g} s{reason}; nothing was "
                         f"trained: start the scheduler and its workers (docs/cluster.md), correct study.workers "
                         f"or {SCHEDULER_VARIABLE}, or unset {SCHEDULER_VARIABLE} to train here") from None


def describe(client: Client) -> str:
    """One line on the cluster a study trains on: scheduler, workers, threads, dashboard."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    link = client.dashboard_link if info.get("services", {}).get("dashboard") else "none"
    return (f"Dask scheduler {client.scheduler.address}: {len(workers)} workers, {threads} runs at once; "
            f"dashboard {link}")


def read_run_files(run_dir: Path) -> list[tuple[str, bytes, int]]:
    """Every file under ``run_dir`` as ``(relative POSIX path, bytes, permission bits)``, sorted by path."""
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    return [(p.relative_to(run_dir).as_posix(), p.read_bytes(), p.stat().st_mode & 0o777) for p in files]


def write_run_files(run_dir: str | Path, files: list[tuple[str, bytes, int]]) -> Path:
    """Make ``run_dir`` hold exactly ``files`` (:func:`read_run_files`' list), atomically: the files are written
    and flushed into a hidden folder beside it, which then replaces it by rename. An interruption leaves the
    old folder (or none) and a hidden folder that the group's next run removes as stale.

    Raises:
        StudyError: a path that would leave the run folder (a worker's answer is not trusted blindly).
    """
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    fresh, old = run_dir.parent / f".{run_dir.name}.{tag}.new", run_dir.parent / f".{run_dir.name}.{tag}.old"
    fresh.mkdir()
    try:
        for rel, data, mode in files:
            path = fresh / rel
            if rel.startswith("/") or ".." in Path(rel).parts or not path.resolve().is_relative_to(fresh.resolve()):
                raise StudyError(f"run folder {run_dir}: a worker returned the file {rel!r}, outside the run folder; "
                                 f"nothing was written")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(path, mode)
        if run_dir.exists():
            run_dir.rename(old)
        fresh.rename(run_dir)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        if old.exists() and not run_dir.exists():
            old.rename(run_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return run_dir
