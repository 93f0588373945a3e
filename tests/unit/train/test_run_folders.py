"""Run folders that cannot lie: checked before work, locked, one run id, resumable byte for byte,
Ctrl-C keeps the completed rounds; strict JSON; FedAvg clients' optimizer; threads and environment."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from fplstudy.cli import main
from fplstudy.config import ConfigError, load_config
from fplstudy.facts import models
from fplstudy.plans.plan import resolve
from fplstudy.train.engine import build_holdings, train
from fplstudy.train.results import CHECKPOINT, VOLATILE, dumps_json, write_metrics
from fplstudy.train.runner import (
    RunFolder,
    RunFolderError,
    RunInterrupted,
    estimate_round_s,
    prepare,
    run,
)

SRC = Path(__file__).resolve().parents[3] / "src"
TINY = {"max_train_samples": 128, "rounds": 3, "batch_size": 16}
TINY_ARGS = ["--set", "max_train_samples=64", "--set", "batch_size=16", "--set", "strategy=centralized",
             "--set", "nodes=1"]


def _strict(text: str):
    """json.loads that refuses NaN/Infinity (what strict parsers do)."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def _tracked(folder: Path) -> dict:
    doc = _strict((folder / "metrics.json").read_text())
    for key in VOLATILE:
        doc.pop(key)
    return doc


def _assert_same_files(a: Path, b: Path) -> None:
    for name in ("rounds.csv", "ledger.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _tracked(a) == _tracked(b)


def _cnn_dropout_bn(input_shape, num_classes):
    """The digits cnn with a BatchNorm (running statistics) and a Dropout (torch's random state): a
    resumed run must restore both to match an uninterrupted one."""
    model = models.small_cnn(input_shape, num_classes)
    model.conv1 = nn.Sequential(model.conv1[0], nn.BatchNorm2d(16), nn.ReLU())
    model.fc1 = nn.Sequential(*model.fc1, nn.Dropout(0.3))
    return model


@pytest.fixture
def dropout_model(monkeypatch):
    monkeypatch.setitem(models.MODELS, "cnn_dropout_bn", models.ModelInfo(_cnn_dropout_bn, 2, "test model"))
    return "cnn_dropout_bn"


def _sigint_after(rnd: int):
    """on_round hook: a real SIGINT to this process when round ``rnd`` has completed."""
    def hook(row):
        if row["round"] == rnd:
            os.kill(os.getpid(), signal.SIGINT)
    return hook


RESUMES = [
    # (config, round after which Ctrl-C arrives)
    ({"strategy": "fpl", "nodes": 4, "partition": "dirichlet", "model": "cnn_dropout_bn", "momentum": 0.9,
      "client_optimizer": "keep", "rounds": 4}, 1),
    ({"strategy": "sl", "nodes": 3, "momentum": 0.5, "client_optimizer": "reset"}, 0),
    ({"strategy": "fl", "nodes": 3, "momentum": 0.9, "client_optimizer": "reset", "sync_every": 2, "rounds": 4}, 2),
]


@pytest.mark.parametrize("overrides,stop", RESUMES, ids=["fpl-dropout-bn-keep", "sl-relay", "fl-sync-every-2"])
def test_interrupted_then_resumed_equals_uninterrupted_byte_for_byte(overrides, stop, dropout_model, tmp_path):
    cfg = load_config(None, {**TINY, **overrides})
    whole = run(cfg, tmp_path / "whole", progress=False)
    part = tmp_path / "part"
    with pytest.raises(RunInterrupted) as info:
        run(cfg, part, progress=False, on_round=_sigint_after(stop), checkpoint_every_s=0)
    kept = info.value.outcome
    assert kept.status == "interrupted" and len(kept.rounds) == stop + 1
    metrics = _strict((part / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["rounds_completed"] == stop + 1
    assert pd.read_csv(part / "rounds.csv")["round"].tolist() == list(range(stop + 1))
    ledger = pd.read_csv(part / "ledger.csv")
    assert sorted(ledger["round"].unique()) == list(range(stop + 1))
    # the interrupted ledger is the uninterrupted one's first rounds, row for row
    full = pd.read_csv(tmp_path / "whole" / "ledger.csv")
    pd.testing.assert_frame_equal(ledger, full[full["round"] <= stop].reset_index(drop=True))
    assert (part / CHECKPOINT).is_file()

    resumed = run(cfg, part, progress=False, resume=True)
    assert resumed.status == whole.status == "completed"
    _assert_same_files(tmp_path / "whole", part)
    assert not (part / CHECKPOINT).exists() and not (tmp_path / "whole" / CHECKPOINT).exists()


@pytest.mark.parametrize("every_s", [None, 1e-9, 0.0], ids=["default-cadence", "share-bound", "every-round"])
def test_checkpoint_cadence_keeps_resume_exact(every_s, tmp_path):
    """Checkpoints at a cadence: by default a run of seconds writes none, and --resume starts it again; with
    a tiny interval the 2 % bound alone spaces them, so rounds after the last checkpoint are trained again;
    with 0 every round has one. All resume to the uninterrupted run's files."""
    cfg = load_config(None, {**TINY, "strategy": "fl", "nodes": 3, "momentum": 0.9, "rounds": 6})
    whole = run(cfg, tmp_path / "whole", progress=False)
    part, held = tmp_path / "part", []

    def stop(row):
        if row["round"] == 4:
            held.append(torch.load(part / CHECKPOINT, weights_only=True)["rounds_completed"]
                        if (part / CHECKPOINT).is_file() else 0)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunInterrupted):
        run(cfg, part, progress=False, on_round=stop, **({} if every_s is None else {"checkpoint_every_s": every_s}))
    assert _strict((part / "metrics.json").read_text())["rounds_completed"] == 5
    if every_s is None:
        assert held == [0] and not (part / CHECKPOINT).exists()
    else:
        assert held[0] == 5 if every_s == 0 else 1 <= held[0] <= 5
    assert run(cfg, part, progress=False, resume=True).status == whole.status == "completed"
    _assert_same_files(tmp_path / "whole", part)


def test_a_signal_as_the_checkpoint_lands_keeps_rounds_and_checkpoint_in_step(tmp_path, monkeypatch):
    """A real SIGINT right after the checkpoint file of round 1 is renamed into place (before the run notes
    which rows it holds): the run reads the rows from the file that landed, and ends with rounds.csv,
    metrics.json and the checkpoint agreeing on the rounds completed, and resumes to the uninterrupted run's
    files."""
    from fplstudy.train import runner

    cfg = load_config(None, {**TINY, "strategy": "fl", "nodes": 2, "momentum": 0.9})
    whole = run(cfg, tmp_path / "whole", progress=False)
    real, calls = runner.atomic_write_bytes, []

    def write_then_signal(path, data):
        real(path, data)
        if Path(path).name == CHECKPOINT:
            calls.append(path)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(runner, "atomic_write_bytes", write_then_signal)
    part = tmp_path / "part"
    with pytest.raises(RunInterrupted):
        run(cfg, part, progress=False, checkpoint_every_s=0)
    monkeypatch.setattr(runner, "atomic_write_bytes", real)
    metrics = _strict((part / "metrics.json").read_text())
    state = torch.load(part / CHECKPOINT, weights_only=True)
    assert state["rounds_completed"] == metrics["rounds_completed"] == 2
    assert pd.read_csv(part / "rounds.csv")["round"].tolist() == [0, 1]
    assert run(cfg, part, progress=False, resume=True).status == whole.status == "completed"
    _assert_same_files(tmp_path / "whole", part)


def test_the_checkpoint_restores_torch_random_state(dropout_model, tmp_path):
    """The resume test above can fail: without the random state, dropout draws other masks."""
    cfg = load_config(None, {**TINY, "strategy": "centralized", "nodes": 1, "model": dropout_model})
    states = []
    full = train(resolve(cfg), on_state=lambda s: states.append(copy.deepcopy(s)))
    other_rng = torch.Generator().manual_seed(123).get_state()
    other = train(resolve(cfg), resume={**states[0], "rng": {**states[0]["rng"], "torch": other_rng}})
    assert other.rounds[0]["train_loss"] == full.rounds[0]["train_loss"]
    assert other.rounds[1]["train_loss"] != full.rounds[1]["train_loss"]
    again = train(resolve(cfg), resume=states[0])
    assert [r["train_loss"] for r in again.rounds] == [r["train_loss"] for r in full.rounds]


def test_resume_refuses_another_config_naming_the_first_differing_key(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run(load_config(None, {**TINY, "strategy": "fl", "nodes": 2}), out, progress=False,
            on_round=_sigint_after(0))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = main(["run", "--quiet", "--set", "strategy=fl", "--set", "nodes=2", "--set", "max_train_samples=128",
               "--set", "rounds=3", "--set", "batch_size=16", "--set", "lr=0.1", "--resume", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "config key 'lr'" in err[0] and "lr=0.05" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_of_a_completed_run_is_refused_and_of_a_new_folder_starts_it(tmp_path, capsys):
    cfg = load_config(None, {**TINY, "strategy": "centralized", "nodes": 1, "rounds": 1})
    fresh = run(cfg, tmp_path / "new", progress=False, resume=True)
    assert fresh.status == "completed"
    with pytest.raises(RunFolderError, match="nothing to resume, it is complete"):
        run(cfg, tmp_path / "new", progress=False, resume=True)
    with pytest.raises(RunFolderError, match="simulated backend only"):
        run(cfg, tmp_path / "d", progress=False, resume=True, backend="distributed")


def test_non_empty_folder_is_refused_and_overwrite_replaces_only_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--quiet", *TINY_ARGS, "--set", "rounds=2", "--out", str(out)]
    assert main(args) == 0
    first = _strict((out / "metrics.json").read_text())
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(args[:-2] + ["--set", "seed=1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0] and "--resume" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert main(["run", "--quiet", "--set", "strategy=fl", "--set", "nodes=2", "--set", "rounds=1",
                 "--set", "max_train_samples=64", "--set", "batch_size=16", "--overwrite", "--out", str(out)]) == 0
    doc = _strict((out / "metrics.json").read_text())
    assert doc["config"]["strategy"] == "fl" and doc["status"] == "completed" and doc["rounds_completed"] == 1
    assert doc["run_id"] != first["run_id"]
    # one run in the folder: the same run id in every file, nothing of the old run left
    assert set(pd.read_csv(out / "rounds.csv")["run_id"]) == {doc["run_id"]}
    assert set(pd.read_csv(out / "ledger.csv")["run_id"]) == {doc["run_id"]}
    assert sorted(p.name for p in out.iterdir()) == ["ledger.csv", "metrics.json", "notes.txt", "rounds.csv"]
    assert (out / "notes.txt").read_text() == "mine"


BAD_OUT = [
    ("", "empty path"),
    ("   ", "empty path"),
    ("/dev/null", "not a folder"),
    ("/proc/fplstudy-x", "cannot write"),
    ("/sys/fplstudy-x", "cannot write"),  # a folder nobody may write into, root included
    ("{tmp}/file", "not a folder"),
    ("{tmp}/file/sub", "is a file"),
]


@pytest.mark.parametrize("out,words", BAD_OUT, ids=[b[0] or "empty" for b in BAD_OUT])
def test_bad_out_is_refused_before_any_work(out, words, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = out.format(tmp=tmp_path)
    # 10^8 rounds: the command could only return because it refused before training
    rc = main(["run", "--quiet", *TINY_ARGS, "--set", "rounds=100000", "--out", out])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0] and "run folder" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "x"
    with pytest.raises(RunFolderError, match=words):
        run(load_config(None, {"rounds": 100000}), out, progress=False)


def test_unwritable_folder_is_refused_before_any_work(tmp_path, capsys):
    """A folder nobody may write into: mode 0555 for a user; for root (who writes through modes), a read-only
    file system mounted there (a tmpfs mounted ro)."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    mounted = False
    if os.geteuid() == 0:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "fplstudy-ro", str(ro)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"root writes through modes and cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
        mounted = True
    try:
        rc = main(["run", "--quiet", *TINY_ARGS, "--set", "rounds=100000", "--out", str(ro / "x")])
        assert rc == 2 and "cannot write" in capsys.readouterr().err
        assert not (ro / "x").exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)


def test_cost_into_a_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--quiet", *TINY_ARGS, "--set", "rounds=1", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["cost", *TINY_ARGS, "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["cost", *TINY_ARGS, "--overwrite", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ledger.csv", "metrics.json"]
    assert _strict((out / "metrics.json").read_text())["status"] == "dry-run"


def test_a_locked_folder_refuses_a_second_writer_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolder(out):
        for flag in ([], ["--overwrite"], ["--resume"]):
            assert main(["run", "--quiet", *TINY_ARGS, "--set", "rounds=100000", *flag, "--out", str(out)]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "being written by another fplstudy run" in err[0], err
        assert list(out.iterdir()) == []
    with RunFolder(out):  # the lock ends with its holder
        pass


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fplstudy.cli", *args]


def _wait_rounds(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.is_file() and len(path.read_text().splitlines()) > n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} rounds")


@pytest.mark.parametrize("sig, code, how", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_of_a_real_process_exits_130_with_one_line_and_keeps_completed_rounds(tmp_path, sig, code, how):
    """Ctrl-C (exit 130) and SIGTERM (`kill`, exit 143) end a real run alike: one line, completed rounds kept."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "CI": "1"}
    out = tmp_path / "run"
    args = ["run", *TINY_ARGS, "--set", "rounds=100000", "--set", "momentum=0.9", "--checkpoint-every", "0",
            "--out", str(out)]
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_rounds(out / "rounds.csv", 2, proc)
        # a second writer is refused at once with one line, and leaves the first run's files alone
        second = subprocess.run(_cli(*args, "--overwrite"), env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().count("\n") == 0 and "being written by another" in second.stderr
        assert _strict((out / "metrics.json").read_text())["status"] == "running"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    lines = stderr.strip().splitlines()
    # the estimate before a long run, then the Ctrl-C line; no traceback
    assert len(lines) == 2 and lines[0].startswith("fplstudy: estimated training time"), lines
    metrics = _strict((out / "metrics.json").read_text())
    done = metrics["rounds_completed"]
    assert lines[1] == (f"fplstudy: interrupted ({how}) after {done} completed rounds; kept in {out} (status "
                        f"interrupted); continue with --resume"), lines
    assert metrics["status"] == "interrupted" and done >= 2 and metrics["energy_j"] > 0
    rounds, ledger = pd.read_csv(out / "rounds.csv"), pd.read_csv(out / "ledger.csv")
    assert rounds["round"].tolist() == list(range(done))
    assert sorted(ledger["round"].unique()) == list(range(done))
    assert set(rounds["run_id"]) == set(ledger["run_id"]) == {metrics["run_id"]}
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["rounds_completed"] == done and state["run_id"] == metrics["run_id"]
    assert any(s.get("momentum_buffer") is not None for s in state["optimizer"]["state"].values())


# --------------------------------------------------------------------------- strict JSON

def test_every_written_json_file_is_strict(tmp_path):
    cfg = load_config(None, {**TINY, "strategy": "centralized", "nodes": 1, "lr": 1e6, "rounds": 2})
    assert run(cfg, tmp_path / "nan", progress=False).status == "diverged"  # NaN metrics
    from fplstudy.study.pool import run_plan

    run_plan(load_config(None, {**TINY, "strategy": "fl", "nodes": 2, "rounds": 1}), tmp_path / "plan")
    assert main(["cost", *TINY_ARGS, "--out", str(tmp_path / "cost")]) == 0
    plan = resolve(load_config(None, {}))
    write_metrics(tmp_path / "inf", plan, rounds=[], totals={"energy_j": float("inf"), "x": float("-inf"),
                                                             "y": float("nan")}, status="completed")
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 4
    for path in files:
        _strict(path.read_text())
    doc = _strict((tmp_path / "inf" / "metrics.json").read_text())
    assert doc["energy_j"] is None and doc["x"] is None and doc["y"] is None and doc["test_acc_mean"] is None
    assert dumps_json({"a": float("inf")}) == '{\n  "a": null\n}\n'


# --------------------------------------------------------------------------- FedAvg clients' optimizer

def _fl(client_optimizer: str, momentum: float = 0.9, **more):
    return resolve(load_config(None, {**TINY, "strategy": "fl", "nodes": 3, "momentum": momentum,
                                      "client_optimizer": client_optimizer, **more}))


def test_reset_gives_clients_a_fresh_optimizer_after_every_sync():
    plan = _fl("reset", rounds=1)
    res = train(plan)
    opt = res.holdings.optimizer
    fresh = torch.optim.SGD([p for m in res.holdings.all_modules() for p in m.parameters()], lr=plan.config.lr,
                            momentum=0.9)
    assert opt.state_dict() == fresh.state_dict()  # fl: every parameter is a client's, all averaged
    keep = train(_fl("keep", rounds=1)).holdings.optimizer
    bufs = [s["momentum_buffer"] for s in keep.state.values()]
    assert len(bufs) == len(fresh.state_dict()["param_groups"][0]["params"]) and all(b.abs().sum() > 0 for b in bufs)


def test_reset_equals_resuming_each_round_with_a_freshly_built_optimizer():
    """An independent construction: round 1 of a reset run equals round 1 continued, by hand, from
    round 0's state with the state dict of a freshly built SGD."""
    states = []
    keep = train(_fl("keep", rounds=2), on_state=lambda s: states.append(copy.deepcopy(s)))
    reset = train(_fl("reset", rounds=2))
    assert keep.rounds[0] == {**reset.rounds[0], "wall_s": keep.rounds[0]["wall_s"]}
    assert keep.rounds[1]["train_loss"] != reset.rounds[1]["train_loss"]  # momentum matters here
    hold = build_holdings(_fl("keep"))
    fresh = torch.optim.SGD([p for m in hold.all_modules() for p in m.parameters()], lr=0.05, momentum=0.9)
    by_hand = train(_fl("keep", rounds=2), resume={**states[0], "optimizer": fresh.state_dict()})
    for a, b in zip(by_hand.rounds, reset.rounds):
        assert {**a, "wall_s": 0} == {**b, "wall_s": 0}


def test_reset_keeps_the_state_of_parts_that_are_not_averaged():
    plan = resolve(load_config(None, {**TINY, "strategy": "fpl", "nodes": 4, "momentum": 0.9, "rounds": 1}))
    hold = train(plan).holdings
    state = hold.optimizer.state
    assert plan.config.client_optimizer == "reset" and plan.sync == "fedavg"
    assert all(p not in state for parts in hold.branch_parts for m in parts for p in m.parameters())
    kept = [m for m in [*hold.adapters, *hold.trunk_parts] if m is not None]
    assert kept and all(p in state for m in kept for p in m.parameters())


def test_without_momentum_keep_and_reset_train_alike():
    keep, reset = train(_fl("keep", momentum=0.0)), train(_fl("reset", momentum=0.0))
    assert [r["train_loss"] for r in keep.rounds] == [r["train_loss"] for r in reset.rounds]


# --------------------------------------------------------------------------- threads and environment

@pytest.fixture
def one_thread_after():
    yield
    torch.set_num_threads(1)


def test_threads_key_is_honoured_and_recorded(tmp_path, one_thread_after):
    cfg = load_config(None, {**TINY, "strategy": "centralized", "nodes": 1, "rounds": 1, "threads": 2})
    run(cfg, tmp_path / "a", progress=False)
    assert torch.get_num_threads() == 2
    env = _strict((tmp_path / "a" / "metrics.json").read_text())["environment"]
    assert env["torch_threads"] == 2
    assert main(["cost", *TINY_ARGS, "--set", "threads=1"]) == 0 and torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="threads"):
        load_config(None, {"threads": -1})


def test_same_config_seed_and_threads_give_identical_files_and_record_the_environment(tmp_path):
    cfg = load_config(None, {**TINY, "strategy": "sfl", "nodes": 3, "partition": "dirichlet"})
    run(cfg, tmp_path / "a", progress=False)
    run(cfg, tmp_path / "b", progress=False)
    _assert_same_files(tmp_path / "a", tmp_path / "b")
    env = _strict((tmp_path / "a" / "metrics.json").read_text())["environment"]
    assert env["torch_threads"] == torch.get_num_threads() == 1
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch"] == torch.__version__ and env["cpu_model"]
    assert set(env["env"]) == {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS",
                               "CUBLAS_WORKSPACE_CONFIG"}
    assert env["accelerator"] == "cpu"
    assert env["env"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")


def test_the_estimate_leaves_torch_random_state_alone():
    plan, _, data = prepare(load_config(None, {**TINY, "strategy": "fpl", "nodes": 4}))
    torch.manual_seed(7)
    before = torch.get_rng_state()
    assert estimate_round_s(plan, data) > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_stop_at_acc_ends_a_run_at_the_first_round_reaching_it_after_min_rounds(tmp_path):
    """A run with ``stop_at_acc`` is the uninterrupted run's first rounds, row for row and ledger row for ledger
    row, ending at the first round (from ``min_rounds`` on) whose accuracy reaches it; a checkpoint taken at that
    round resumes to the same stop, training no further round."""
    base = {**TINY, "rounds": 5, "strategy": "fl", "nodes": 2}
    whole = run(load_config(None, base), tmp_path / "whole", progress=False)
    accs = whole.rounds["test_acc_mean"].tolist()
    target = sorted(accs)[len(accs) // 2]  # reached at some round, by hand below
    for min_rounds in (1, 3):
        stop = next(r for r, a in enumerate(accs) if a >= target and r + 1 >= min_rounds)
        cfg = load_config(None, {**base, "stop_at_acc": target, "min_rounds": min_rounds})
        out = tmp_path / f"stop-{min_rounds}"
        got = run(cfg, out, progress=False)
        assert got.status == "completed" and got.rounds["round"].tolist() == list(range(stop + 1))
        assert _strict((out / "metrics.json").read_text())["rounds_completed"] == stop + 1
        full = pd.read_csv(tmp_path / "whole" / "ledger.csv")
        ledger = pd.read_csv(out / "ledger.csv")
        pd.testing.assert_frame_equal(ledger.drop(columns="run_id"),
                                      full[full["round"] <= stop].drop(columns="run_id").reset_index(drop=True))
        states = []
        train(resolve(cfg), on_state=lambda s: states.append(copy.deepcopy(s)))
        assert len(states) == stop + 1
        resumed = train(resolve(cfg), resume=states[-1])  # the state after the stopping round: nothing more to train
        assert len(resumed.rounds) == stop + 1 and resumed.rounds[-1]["test_acc_mean"] == accs[stop]


@pytest.mark.parametrize("overrides, field", [({"stop_at_acc": 1.5}, "stop_at_acc"), ({"stop_at_acc": 0.0}, "stop_at_acc"),
                                             ({"min_rounds": 4, "rounds": 3}, "min_rounds"), ({"min_rounds": 0}, "min_rounds")])
def test_bad_stop_keys_are_refused_by_name(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config(None, {**TINY, **overrides})
    assert err.value.key == field if hasattr(err.value, "key") else field in str(err.value)
    assert field in str(err.value) and "\n" not in str(err.value)
