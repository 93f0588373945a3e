"""Refusals that keep what was computed: a run folder of another config is never replaced without overwrite,
a worker's refusal reaches the caller as its one line, a resumed folder is validated before anything is
written, study parameters are checked as a run would check them, YAML scalars read as a person means them,
and a killed parent takes its workers with it."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import pkgutil
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fplstudy
from fplstudy.config import ConfigError, PicklableError, StudyError, YamlError, load_config, parse_overrides, parse_yaml
from fplstudy.study.params import check_notebook_parameters, load_study, smoke_params
from fplstudy.study.pool import run_group, train_runs
from fplstudy.train.results import CHECKPOINT
from fplstudy.train.runner import RunFolderError, RunInterrupted, run

SRC = Path(__file__).resolve().parents[3] / "src"
TINY = {"max_train_samples": 128, "rounds": 3, "batch_size": 16}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- errors across processes

def _package_exceptions() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(fplstudy.__path__, "fplstudy."):
        if info.name.endswith("netctl"):  # a script run inside emulated hosts, never in a pool
            continue
        module = importlib.import_module(info.name)
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    return found


def test_every_exception_of_the_package_crosses_a_process_boundary_whole():
    classes = _package_exceptions()
    assert {"ConfigError", "StudyError", "YamlError", "ProfileError", "RunFolderError", "LaunchError"} <= {
        c.__name__ for c in classes}
    assert [c.__name__ for c in classes if not issubclass(c, PicklableError)] == []
    from fplstudy.facts.profiles import ProfileError
    from fplstudy.train.distributed.transport import LaunchError, NodeFailure

    for exc in (ConfigError("lr", "x", "give a number"), ProfileError("p.yaml", "devices.pi.active_w", -1, "positive"),
                YamlError("not valid YAML", "a.b", 2), LaunchError("MASTER_PORT", "99999", "use a free port"),
                NodeFailure("timed out", 3), StudyError("params.yaml: study.seeds: got 1; give a list")):
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is type(exc) and str(again) == str(exc) and again.__dict__ == exc.__dict__


def test_a_refusal_inside_a_worker_reaches_the_caller_as_its_one_line(tmp_path: Path):
    """A plan the runner refuses (a deadline on model parallelism) handed straight to the pool: the worker's
    ConfigError comes back whole, not as a broken pool, and nothing was written."""
    cfg = load_config(None, {**TINY, "strategy": "mp", "nodes": 2, "round_deadline_s": 1.0})
    with pytest.raises(ConfigError) as info:
        train_runs([(cfg, tmp_path / "run", "mp")], workers=1, log=lambda line: None)
    assert info.value.key == "round_deadline_s" and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# --------------------------------------------------------------------------- run folders of another config

@pytest.mark.xdist_group("tiny-study")
def test_a_smoke_study_never_replaces_a_finished_run_of_another_config(tiny_study, tmp_path: Path):
    """A study with other settings pointed at finished runs (a smoke run into the committed results): refused
    before anything changed, naming the folder and the key; with overwrite it replaces them."""
    _, folder = tiny_study
    runs = tmp_path / "runs"
    shutil.copytree(folder / "runs" / "mp", runs / "mp")
    before = _files(runs)
    other = load_study(smoke_params(rounds=1))  # same plans and folders, other config
    with pytest.raises(StudyError) as info:
        run_group(other, "mp", runs, log=lambda line: None)
    line = str(info.value)
    assert "\n" not in line and "mp-2-iid" in line and "rounds is 2" in line and "overwrite" in line
    assert _files(runs) == before
    records = run_group(other, "mp", runs, log=lambda line: None, overwrite=True)
    assert len(records) == 3 and _files(runs) != before


@pytest.mark.xdist_group("tiny-study")
def test_a_finished_run_no_longer_in_the_study_is_not_deleted_without_overwrite(tiny_study, tmp_path: Path):
    the_study, folder = tiny_study
    runs = tmp_path / "runs"
    shutil.copytree(folder / "runs" / "sl", runs / "sl")
    shutil.copytree(folder / "runs" / "sl" / "sl-2-iid", runs / "sl" / "sl-9-iid")  # a plan not in the study
    before = _files(runs)
    with pytest.raises(StudyError, match=r"sl-9-iid/seed-\d: holds the finished run of another config"):
        run_group(the_study, "sl", runs, log=lambda line: None)
    assert _files(runs) == before
    assert run_group(the_study, "sl", runs, log=lambda line: None, overwrite=True) == []
    assert not (runs / "sl" / "sl-9-iid").exists()


def test_train_runs_refuses_a_folder_of_another_config_before_training(tmp_path: Path):
    first = load_config(None, {**TINY, "strategy": "centralized", "nodes": 1, "rounds": 1})
    run(first, tmp_path / "run", progress=False)
    before = _files(tmp_path / "run")
    second = first.model_copy(update={"lr": 0.2})
    t0 = time.perf_counter()
    with pytest.raises(StudyError, match="its lr is 0.05, this run's 0.2"):
        train_runs([(second, tmp_path / "run", "c")], log=lambda line: None)
    assert time.perf_counter() - t0 < 2 and _files(tmp_path / "run") == before


# --------------------------------------------------------------------------- resumed folders

@pytest.fixture
def interrupted(tmp_path: Path):
    """``(config, folder)``: an fl run stopped by a real SIGINT after round 1 (checkpoint of 2 rounds)."""
    cfg = load_config(None, {**TINY, "strategy": "fl", "nodes": 2})

    def stop(row):
        if row["round"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunInterrupted):
        run(cfg, tmp_path / "run", progress=False, on_round=stop, checkpoint_every_s=0)
    return cfg, tmp_path / "run"


def _tamper(folder: Path, change) -> dict[str, bytes]:
    state = torch.load(folder / CHECKPOINT, weights_only=True)
    torch.save(change(state), folder / CHECKPOINT)
    return _files(folder)


@pytest.mark.parametrize("change,why", [
    (lambda s: {**s, "rows": s["rows"][:1]}, "rows are not one per completed round"),
    (lambda s: {**s, "rows": [{**r, "round": 5} for r in s["rows"]]}, "rows are numbered"),
    (lambda s: {**s, "modules": s["modules"][:1]}, "does not fit this plan"),
    (lambda s: {**s, "rng": {"torch": 1}}, "does not fit this plan"),
    (lambda s: {k: v for k, v in s.items() if k not in ("optimizer",)}, "not a training state"),
], ids=["rows-cut", "rows-renumbered", "modules-cut", "rng", "no-optimizer"])
def test_a_tampered_checkpoint_is_refused_before_anything_is_written(interrupted, change, why):
    cfg, folder = interrupted
    before = _tamper(folder, change)
    with pytest.raises(RunFolderError) as info:
        run(cfg, folder, progress=False, resume=True)
    assert why in str(info.value) and "--overwrite" in str(info.value) and "\n" not in str(info.value)
    assert _files(folder) == before  # rounds.csv still holds its 2 rounds


@pytest.mark.parametrize("write,why", [
    (lambda f: torch.save({"weights": torch.zeros(2)}, f / CHECKPOINT), "not an fplstudy checkpoint"),
    (lambda f: torch.save([1, 2, 3], f / CHECKPOINT), "not an fplstudy checkpoint"),
    (lambda f: (f / CHECKPOINT).write_bytes(b"\x00garbage"), "cannot be read"),
    (lambda f: ((f / CHECKPOINT).unlink(), (f / "metrics.json").write_text("[1, 2]")), "metrics.json cannot be read"),
], ids=["torch-dict", "torch-list", "bytes", "metrics-list"])
def test_resume_names_the_file_that_is_wrong(interrupted, write, why):
    cfg, folder = interrupted
    write(folder)
    before = _files(folder)
    with pytest.raises(RunFolderError, match=why):
        run(cfg, folder, progress=False, resume=True)
    assert _files(folder) == before


# --------------------------------------------------------------------------- study parameters and YAML

def _study_error(mutate) -> str:
    params = smoke_params()
    mutate(params["study"])
    with pytest.raises(StudyError) as info:
        load_study(params)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    return str(info.value)


@pytest.mark.parametrize("mutate,named", [
    (lambda s: s.update(typo=1), "study.typo"),
    (lambda s: s["groups"].update(fl={}), "study.groups.fl"),
    (lambda s: s["findings"].update(against=5), "study.findings.against"),
    (lambda s: s["findings"].update(against=[["fl"]]), "study.findings.against"),
    (lambda s: s["findings"].update(fpl_junction=["adapter"]), "study.findings.fpl_junction"),
    (lambda s: s["findings"].update(accuracy_delta=True), "study.findings.accuracy_delta"),
    (lambda s: s["findings"].update(alpha=0.05), "study.findings.alpha"),
    (lambda s: s["train"].update(round_deadline_s=1.0), "study.train.round_deadline_s"),
    (lambda s: s["train"].update(dropout_trace="no/such/trace.csv"), "study.train.dropout_trace"),
    (lambda s: s["train"].update(device="nrf52840"), "study.train.device"),
    (lambda s: s["train"].update(model="resnet18"), "study.train.model"),
    (lambda s: s["train"].update(model="lenet5"), "study.train.model"),
], ids=["unknown-key", "empty-group", "against-int", "against-nested", "junction-list", "delta-bool",
        "findings-unknown", "deadline-on-mp", "missing-trace", "over-memory", "resnet-on-8x8", "lenet-on-8x8"])
def test_the_study_check_refuses_what_a_run_would(mutate, named):
    assert f"params.yaml: {named}" in _study_error(mutate)


def test_numbers_read_as_people_write_them():
    values = parse_overrides(["lr=1e-3", "seed=010", "rounds=0x1f", "data_dir=1:30", "download=true"])
    assert values == {"lr": 0.001, "seed": 10, "rounds": 31, "data_dir": "1:30", "download": True}
    assert parse_yaml("a: yes\nb: off\nc: 2.5e+10\nd: .inf") == {"a": "yes", "b": "off", "c": 2.5e10, "d": float("inf")}
    with pytest.raises(ConfigError, match="rounds"):
        load_config(None, parse_overrides(["rounds=1:30"]))  # text, not 90
    with pytest.raises(ConfigError, match="download"):
        load_config(None, parse_overrides(["download=yes"]))  # text, not a boolean


def test_an_alias_bomb_is_refused_in_a_short_line_without_expanding(tmp_path: Path):
    lines = ["a: &a [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    bomb = "\n".join(lines) + "\nstudy: {seeds: *i}\n"  # 10**9 seeds once expanded
    t0 = time.perf_counter()
    with pytest.raises(YamlError) as info:
        parse_yaml(bomb)
    assert time.perf_counter() - t0 < 2 and len(str(info.value)) < 300 and "aliases" in str(info.value)
    params = tmp_path / "params.yaml"
    params.write_text(bomb)
    proc = subprocess.run([sys.executable, "-m", "fplstudy.stages.check", "--params", str(params)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "params.yaml" in err[0] and len(err[0]) < 400, err


@pytest.mark.parametrize("values,named", [
    ({"seeds": "notalist"}, "'seeds'"), ({"config": "notadict"}, "'config'"), ({"workers": -1}, "'workers'"),
    ({"seeds": [0, 0]}, "'seeds'"), ({"smoke_test": "yes"}, "'smoke_test'"), ({"group": "fl", "seeds": [1]}, "'seeds'"),
    ({"runs": "x"}, "'runs'"),
], ids=["seeds-str", "config-str", "workers-negative", "seeds-twice", "smoke-str", "group-and-seeds", "unknown"])
def test_notebook_parameters_are_refused_in_one_line(values, named):
    with pytest.raises(StudyError) as info:
        check_notebook_parameters(**values)
    assert str(info.value).startswith(f"notebook parameter {named}") and "\n" not in str(info.value)


# --------------------------------------------------------------------------- workers die with their parent

def test_workers_die_when_their_parent_is_killed(tmp_path: Path):
    """A parent with a study worker pool, killed by SIGKILL (as `kill -9` of `dvc repro` reaches it): its
    workers do not train on as orphans."""
    pids = tmp_path / "pids"
    script = (f"import os, time\nfrom concurrent.futures import ProcessPoolExecutor\nimport multiprocessing\n"
              f"from fplstudy.study.pool import die_with_parent\n"
              f"def work(_):\n    open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(60)\n"
              f"if __name__ == '__main__':\n"
              f"    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn'), "
              f"initializer=die_with_parent) as pool:\n        list(pool.map(work, range(2)))\n")
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], env={**os.environ, "PYTHONPATH": str(SRC)})
    assert _kill_and_outlive(parent, pids, 2, grace_s=10) == []


def _kill_and_outlive(process: subprocess.Popen, pids: Path, count: int, grace_s: float) -> list[int]:
    """Wait until ``count`` processes have written their pid to ``pids`` (all alive), kill ``process`` with
    SIGKILL, and return those of them still alive ``grace_s`` seconds later."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < count):
        time.sleep(0.1)
    procs = [int(p) for p in pids.read_text().split()]
    assert len(procs) == count and all(_alive(p) for p in procs)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.1)
    return [p for p in procs if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_check_stage_prints_one_line_for_a_study_a_run_would_refuse(tmp_path: Path):
    params = smoke_params(round_deadline_s=1.0)
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(params))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fplstudy.stages.check", "--params", str(path),
                           "--stamp", str(tmp_path / "stamp")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "study.train.round_deadline_s" in err[0], err
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "stamp").exists()


# --------------------------------------------------------------------------- a full disk

@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_disk_that_fills_mid_run_leaves_a_truthful_resumable_folder(tmp_path: Path):
    """The disk fills after round 0 (a real tmpfs, filled to its last byte): the run stops with ENOSPC,
    metrics.json says failed (not running), and once space is freed --resume ends with the files of an
    uninterrupted run."""
    import errno

    cfg = load_config(None, {**TINY, "strategy": "fl", "nodes": 2})
    whole = tmp_path / "whole"
    run(cfg, whole, progress=False)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        filler = disk / "filler"

        def fill(row):
            if row["round"] == 0:
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 4096)
                            f.flush()
                    except OSError:
                        pass

        with pytest.raises(OSError) as info:
            run(cfg, disk / "run", progress=False, on_round=fill, checkpoint_every_s=0)
        assert info.value.errno == errno.ENOSPC
        doc = json.loads((disk / "run" / "metrics.json").read_text())
        assert doc["status"] == "failed" and (disk / "run" / CHECKPOINT).is_file()
        filler.unlink()
        assert run(cfg, disk / "run", progress=False, resume=True).status == "completed"
        for name in ("rounds.csv", "ledger.csv"):
            assert (disk / "run" / name).read_bytes() == (whole / name).read_bytes(), name
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_stage_and_its_workers_end_when_the_job_above_is_killed(tmp_path: Path):
    """As `kill -9` of `dvc repro` reaches a train stage: a grandparent (standing for dvc) starts a stage
    process whose pool trains; the grandparent is killed with SIGKILL; the stage process and its workers end
    within seconds instead of training on as orphans."""
    pids = tmp_path / "pids"
    stage = tmp_path / "stage.py"
    stage.write_text(
        "import os, time, multiprocessing\nfrom concurrent.futures import ProcessPoolExecutor\n"
        "from fplstudy.study.pool import die_with_job, die_with_parent\n"
        f"def work(_):\n    open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(120)\n"
        "if __name__ == '__main__':\n    die_with_job(0.2)\n"
        f"    open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn'), "
        "initializer=die_with_parent) as pool:\n        list(pool.map(work, range(2)))\n")
    dvc = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\n"
                            f"subprocess.Popen([sys.executable, {str(stage)!r}])\ntime.sleep(120)"],
                           env={**os.environ, "PYTHONPATH": str(SRC)})
    assert _kill_and_outlive(dvc, pids, 3, grace_s=15) == []


def test_a_single_plan_is_named_from_its_settings_and_never_replaces_another(tmp_path: Path):
    """The train notebook's one-plan mode: `rounds: 2` does not read as 2 nodes, and a second plan with other
    settings trains beside the first instead of over it."""
    from fplstudy.study.params import single_plan

    name, runs = single_plan({"strategy": "fl", "rounds": 1, "max_train_samples": 64}, [0], tmp_path)
    assert name == "fl-rounds1-max_train_samples64" and runs[0][1] == tmp_path / name / "seed-0"
    train_runs(runs, log=lambda line: None)
    other, again = single_plan({"strategy": "fl", "rounds": 1, "max_train_samples": 64, "lr": 0.1}, [0], tmp_path)
    assert other != name and again[0][1].parent != runs[0][1].parent
    before = _files(tmp_path / name)
    with pytest.raises(StudyError, match="its lr is 0.05"):  # forced into the first plan's folder: refused
        train_runs([(again[0][0], runs[0][1], "x")], log=lambda line: None)
    assert _files(tmp_path / name) == before
