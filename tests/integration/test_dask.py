"""A study's runs on a real Dask cluster (a scheduler and worker processes listening on 127.0.0.1 only) give
the bytes of the local pool, survive a worker killed mid-stage, and an unreachable scheduler is refused in
one line before anything starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fplstudy.config import StudyError
from fplstudy.facts.datasets import export_digits
from fplstudy.study.cluster import SCHEDULER_VARIABLE, write_run_files
from fplstudy.study.params import load_study, smoke_params
from fplstudy.study.pool import run_group

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
BIN = Path(sys.executable).parent
QUIET = {"log": lambda line: None}


def _tiny_study():
    """Two groups of the smoke study, two seeds: fl (2 plans, 4 runs) and mp (1 plan, 2 runs)."""
    params = smoke_params()
    params["study"]["seeds"] = [0, 1]
    groups = params["study"]["groups"]
    params["study"]["groups"] = {"fl": {"nodes": [2], "partition": ["iid", "dirichlet"]}, "mp": groups["mp"]}
    return load_study(params)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory) -> Path:
    """The tiny study trained by the local pool (2 processes): the bytes every cluster run must give."""
    runs = tmp_path_factory.mktemp("local") / "runs"
    run_group(_tiny_study(), None, runs, workers=2, **QUIET)
    return runs


class Cluster:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, each in its own process group."""

    def __init__(self, folder: Path, workers: int = 2):
        self.folder, self.procs, self.workers = folder, [], []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        self.env.pop(SCHEDULER_VARIABLE, None)
        self.file = folder / "scheduler.json"
        self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                    "127.0.0.1:0", "--scheduler-file", str(self.file))
        deadline = time.monotonic() + 60
        while not self.file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.file.is_file(), (folder / "scheduler.log").read_text()[-2000:]
        self.address = json.loads(self.file.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:")
        for i in range(workers):
            self.workers.append(self._start(f"worker-{i}", "worker", "--scheduler-file", str(self.file),
                                            "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                                            "--no-dashboard", "--name", f"w{i}"))
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
            hosts = [w["host"] for w in client.scheduler_info()["workers"].values()]
        assert hosts == ["127.0.0.1"] * workers

    def _start(self, log: str, *args: str) -> subprocess.Popen:
        out = open(self.folder / f"{log}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([str(BIN / "dask"), *args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.folder, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path):
    made = []

    def start(workers: int = 2) -> Cluster:
        made.append(Cluster(tmp_path, workers))
        return made[-1]

    try:
        yield start
    finally:
        for c in made:
            c.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


def _assert_same_runs(runs: Path, local: Path, group: str) -> None:
    ours, theirs = _files(runs / group), _files(local / group)
    assert sorted(ours) == sorted(theirs) and ours  # nothing missing, nothing extra (no hidden folders)
    different = [name for name in ours if ours[name] != theirs[name]]
    assert not different, different
    for doc in [json.loads(v) for k, v in ours.items() if k.endswith("metrics.json")]:
        assert doc["status"] == "completed"


@pytest.mark.slow
def test_a_group_on_a_cluster_gives_the_local_pools_bytes(shared_cluster, local_runs, tmp_path):
    lines: list[str] = []
    records = run_group(_tiny_study(), "fl", tmp_path / "runs", workers=shared_cluster.address, log=lines.append)
    _assert_same_runs(tmp_path / "runs", local_runs, "fl")
    assert len(records) == 4 and len({r["worker"] for r in records}) == 2  # both workers trained
    assert all(r["worker"].startswith("Dask worker tcp://127.0.0.1:") for r in records)
    assert lines[0].startswith(f"[fl] Dask scheduler {shared_cluster.address}: 2 workers, 2 runs at once; dashboard")
    assert len(lines) == 5 and all(" left here" in line for line in lines[1:])
    # the same group again: every run complete for this code and config, nothing sent to the cluster
    assert run_group(_tiny_study(), "fl", tmp_path / "runs", workers=shared_cluster.address, **QUIET) == []


@pytest.mark.slow
def test_fplstudy_scheduler_points_a_study_at_the_cluster(shared_cluster, local_runs, tmp_path, monkeypatch):
    monkeypatch.setenv(SCHEDULER_VARIABLE, shared_cluster.address)
    the_study = _tiny_study()
    assert the_study.workers == 2  # params say 2 local processes; the variable alone sends the runs away
    records = run_group(the_study, "mp", tmp_path / "runs", **QUIET)
    assert len(records) == 2 and all(r["worker"].startswith("Dask worker tcp://127.0.0.1:") for r in records)
    _assert_same_runs(tmp_path / "runs", local_runs, "mp")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_a_worker_killed_mid_stage_loses_nothing(cluster, local_runs, tmp_path):
    c = cluster()
    victim = c.workers[0]
    killed: list[int] = []

    def kill_when_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            trainers = _children(victim.pid)
            if trainers:
                time.sleep(1.0)  # the run is under way (torch loading or training)
                os.kill(victim.pid, signal.SIGKILL)
                killed.extend(trainers)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_training, daemon=True)
    killer.start()
    records = run_group(_tiny_study(), "fl", tmp_path / "runs", workers=c.address, **QUIET)
    killer.join()
    assert killed, "the worker never started a run"
    assert victim.wait(timeout=10) == -signal.SIGKILL
    time.sleep(1.0)
    assert not any(Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
                   for pid in killed), "a training process outlived its killed worker"
    assert len(records) == 4 and len({r["run"] for r in records}) == 4
    _assert_same_runs(tmp_path / "runs", local_runs, "fl")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_refused_before_anything_starts(tmp_path):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    the_study = _tiny_study()
    t0 = time.monotonic()
    with pytest.raises(StudyError) as err:
        run_group(the_study, "mp", tmp_path / "runs", workers=address, **QUIET)
    assert time.monotonic() - t0 < 15
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"Dask scheduler {address}: no answer within 10 s")
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_scheduler_stops_the_check_stage_with_exit_2(tmp_path):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    (tmp_path / "params.yaml").write_text(json.dumps(smoke_params()))  # JSON is YAML
    env = {**os.environ, SCHEDULER_VARIABLE: address,
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fplstudy.stages.check", "--params", "params.yaml", "--stamp",
                           "check.txt"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 30  # 10 s of waiting for the scheduler, the rest Python and imports
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and SCHEDULER_VARIABLE in lines[0], proc.stderr
    assert not (tmp_path / "check.txt").exists()


@pytest.mark.slow
def test_an_unreachable_scheduler_stops_the_train_notebook_before_any_run(tmp_path):
    """The train stage's own entry (papermill, as `FPLSTUDY_SCHEDULER=... dvc repro` runs it) fails with the
    library's one line and creates no run folder."""
    address = f"tcp://127.0.0.1:{_closed_port()}"
    env = {**os.environ, SCHEDULER_VARIABLE: address,
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    runs = tmp_path / "runs"
    export_digits(tmp_path / "data" / "digits")  # a fresh clone has no data/ before `dvc pull data.dvc`
    proc = subprocess.run([str(BIN / "papermill"), "--kernel", "python3", "--no-progress-bar", "--log-level",
                           "WARNING", str(ROOT / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                           "-p", "group", "mp", "-p", "smoke_test", "True", "-p", "runs_dir", str(runs),
                           "-p", "data_dir", str(tmp_path / "data")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line.split("StudyError: ", 1)[1] for line in (proc.stdout + proc.stderr).splitlines()
             if "StudyError: " in line]
    assert lines and lines[0].startswith(f"Dask scheduler {address}: no answer within 10 s"), proc.stderr[-2000:]
    assert not runs.exists()


def test_a_run_folder_is_replaced_whole_and_never_written_outside(tmp_path):
    run = tmp_path / "g" / "p" / "seed-0"
    run.mkdir(parents=True)
    (run / "partial.csv").write_text("half a run")
    write_run_files(run, [("metrics.json", b"{}", 0o600), ("sub/a.csv", b"a", 0o644)])
    assert _files(run) == {"metrics.json": b"{}", "sub/a.csv": b"a"}
    assert (run / "metrics.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(StudyError, match="outside the run folder"):
        write_run_files(run, [("metrics.json", b"new", 0o600), ("../../escape.txt", b"x", 0o600)])
    assert _files(run) == {"metrics.json": b"{}", "sub/a.csv": b"a"}  # the old folder, untouched
    assert sorted(p.name for p in run.parent.iterdir()) == ["seed-0"] and not (tmp_path / "g" / "escape.txt").exists()
