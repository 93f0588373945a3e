"""Bad input is refused before any training: exit code 2, one line naming key, value and the fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fplstudy.cli import main

BAD = [
    # (overrides, key named in the message, words the fix must contain)
    (["colour=red"], "colour", "unknown key"),
    (["nodes=four"], "nodes", "integer"),
    (["lr=fast"], "lr", "number"),
    (["nodes=0"], "nodes", ">= 1"),
    (["strategy=mp", "nodes=9"], "nodes", "nodes <= 8"),
    (["strategy=centralized", "nodes=3"], "nodes", "exactly 1 node"),
    (["strategy=fl", "nodes=4", "branches=3"], "branches", "branches = nodes"),
    (["strategy=sl", "nodes=1"], "nodes", "nodes >= 2"),
    (["strategy=sfl", "nodes=4", "branches=2"], "branches", "clients"),
    (["strategy=fpl", "nodes=4", "branches=4"], "branches", "trunk_stages >= 1"),
    (["strategy=fpl", "nodes=5", "branches=2", "trunk_stages=2"], "trunk_stages", "nodes"),
    (["strategy=mp", "nodes=3", "trunk_cuts=[2, 9]"], "trunk_cuts", "strictly increasing"),
    (["strategy=mp", "nodes=3", "trunk_cuts=[3, 3]"], "trunk_cuts", "at least one block"),
    (["strategy=mp", "nodes=3", "trunk_cuts=[4]"], "trunk_cuts", "exactly 2 cut"),
    (["strategy=fpl", "nodes=4", "branch_stages=2", "branches=1", "junction_at=1"], "branch_stages", "at most 1"),
    (["strategy=sl", "junction_at=8"], "junction_at", "1..7"),
    (["partition=dirichlet", "alpha=0"], "alpha", "> 0"),
    (["partition=dirichlet", "alpha=-1"], "alpha", "> 0"),
    (["strategy=fpl", "nodes=4", "branches=3", "trunk_stages=1", "junction=concat", "partition=features"],
     "branches", "divides 8"),
    (["strategy=fpl", "junction=concat", "partition=iid"], "partition", "partition=features"),
    (["strategy=fl", "junction=adapter"], "junction", "strategy=fpl"),
    (["dataset=imagenet"], "dataset", "digits"),
    (["model=gpt2"], "model", "cnn"),
    (["device=toaster"], "device", "rpi4"),
    (["link=carrier-pigeon"], "link", "wifi5"),
]


@pytest.mark.parametrize("overrides,key,fix", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_refused_with_key_value_and_fix(overrides, key, fix, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--quiet", "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"'{key}'" in err, err
    value = overrides[-1].split("=", 1)[1] if overrides[-1].startswith(key + "=") else None
    if value is not None:
        assert value.strip("[]").split(",")[0] in err, err
    assert fix in err, err
    assert not out.exists(), "nothing may be written for refused input"


def test_missing_config_file_and_malformed_override(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["plan", "--set", "nodes"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_missing_torchvision_dataset_names_the_folder_and_the_fix(tmp_path, capsys):
    assert main(["plan", "--set", "dataset=mnist", "--set", f"data_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "download=true" in err


def test_no_traceback_from_a_real_process(tmp_path):
    env = {**os.environ, "CI": "1"}
    proc = subprocess.run([sys.executable, "-m", "fplstudy.cli", "run", "--set", "nodes=-3", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "fplstudy: error: config key 'nodes': got -3; must be an integer >= 1"


def test_config_file_plus_overrides_and_plan_output(tmp_path, capsys):
    cfg = tmp_path / "study.yaml"
    cfg.write_text("strategy: fpl\nnodes: 6\nbranches: 2\n")
    assert main(["plan", str(cfg), "--set", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert "nodes=6 branches=2 junction=adapter@2" in out
    assert out.count("trunk ") == 4  # nodes=6, branches=2 -> four trunk stages
    assert "samples per branch" in out


def test_run_writes_the_three_result_files(tmp_path, capsys):
    out = tmp_path / "fpl6"
    rc = main(["run", "--quiet", "--set", "strategy=fpl", "--set", "nodes=6", "--set", "branches=2",
               "--set", "rounds=1", "--set", "max_train_samples=64", "--out", str(out)])
    assert rc == 0
    assert {p.name for p in Path(out).iterdir()} >= {"metrics.json", "rounds.csv", "ledger.csv"}
    metrics = json.loads((out / "metrics.json").read_text())
    line = capsys.readouterr().out.strip().splitlines()[-1]  # the closing line names its units
    assert f"energy {metrics['energy_j']:.4g} J" in line and f"{metrics['bytes_total'] / 1e6:.4g} MB sent" in line


def test_distributed_run_from_the_cli_writes_wire_csv_equal_to_the_ledger(tmp_path):
    import pandas as pd

    out = tmp_path / "fl3"
    rc = main(["run", "--quiet", "--backend", "distributed", "--set", "strategy=fl", "--set", "nodes=3",
               "--set", "rounds=1", "--set", "max_train_samples=48", "--set", "batch_size=16", "--out", str(out)])
    assert rc == 0
    wire, ledger = pd.read_csv(out / "wire.csv"), pd.read_csv(out / "ledger.csv")
    assert wire["bytes_tx"].sum() == ledger["bytes_tx"].sum() > 0
    assert wire["bytes_rx"].sum() == ledger["bytes_rx"].sum()


def test_version_and_every_key_described(capsys):
    from fplstudy import __version__
    from fplstudy.config import Config

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"fplstudy {__version__}"
    assert main(["keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(Config.model_fields)
    described = {line.split()[0]: line for line in lines}
    for name, field in Config.model_fields.items():  # name, default, then a description of a few words
        rest = described[name].split(None, 1)[1][len(repr(field.default)):].strip()
        assert len(rest.split()) >= 2, described[name]


WRITERS = [  # every command that writes a file, on the smallest input that writes it
    ["cost", "--set", "strategy=fl", "--set", "nodes=2", "--set", "max_train_samples=64", "--out", "{tmp}/cost"],
    ["run", "--quiet", "--set", "strategy=fl", "--set", "nodes=2", "--set", "rounds=1", "--set", "max_train_samples=64",
     "--set", "batch_size=16", "--out", "{tmp}/run"],
    ["explore", "--set", "nodes=2", "--set", "max_train_samples=64", "--set", "rounds=1", "--cuts", "balanced",
     "--out", "{tmp}/explore/front.csv", "--all-out", "{tmp}/explore/all.csv"],
    ["plan", "--set", "strategy=fl", "--set", "nodes=2", "--figure", "{tmp}/plan/plan.png"],
    ["calibrate", "--models", "lenet5", "--seconds", "0.05", "--out", "{tmp}/host.yaml"],  # in a folder that exists
    ["plots-page", "--out", "{tmp}/page/plots.html"],
    ["export-digits", "{tmp}/digits"],
]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_written_honour_the_umask(umask, tmp_path):
    """Every file a command writes gets the mode an ordinary open would (0666 less the umask), not mkstemp's
    0600 (the atomic writes' temporary files), and every folder it makes 0777 less the umask."""
    out = tmp_path / "out"
    argvs = [[a.replace("{tmp}", str(out)) for a in argv] for argv in WRITERS]
    code = (f"import os, sys; os.umask({umask}); from fplstudy.cli import main; "
            f"sys.exit(max(main(argv) for argv in {argvs!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "CI": "1", "FPLSTUDY_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    folders = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_dir()}
    assert {"cost/ledger.csv", "run/metrics.json", "run/rounds.csv", "explore/front.csv", "explore/all.csv",
            "plan/plan.png", "host.yaml", "page/plots.html", "digits/images.npy"} <= set(files), files
    assert set(files.values()) == {0o666 & ~umask}, files
    assert set(folders.values()) == {0o777 & ~umask}, folders


def test_the_caches_honour_the_umask(tmp_path):
    """The FLOP profile and the dataset split kept on disk (fplstudy.facts.cache) get the mode an ordinary
    open gives under the umask, as every file the commands write does."""
    code = ("import os, sys; os.umask(0o022); from fplstudy.cli import main; "
            "sys.exit(main(['plan', '--set', 'strategy=fl', '--set', 'nodes=2']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "FPLSTUDY_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert {name.split("/")[0] for name in modes} == {"flops", "splits"}, modes
    assert set(modes.values()) == {0o644, 0o755}, modes
    assert all(mode == (0o755 if (tmp_path / name).is_dir() else 0o644) for name, mode in modes.items()), modes


def test_run_says_what_it_will_train_before_it_prepares(tmp_path):
    """The first line comes once the config is read, before torch loads and before the run folder exists; the
    second names the plan as explore does, before the data is loaded; the progress and the closing line follow."""
    from fplstudy.config import load_config
    from fplstudy.costs.search import plan_name
    from fplstudy.plans.plan import resolve

    sets = ["strategy=mp", "nodes=2", "rounds=1", "max_train_samples=64", "batch_size=16"]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fplstudy.cli", "run", "--quiet",
                             *(a for s in sets for a in ("--set", s)), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "1"})
    try:
        first = proc.stdout.readline()
        running, folder_at_first = proc.poll() is None, out.exists()
        second = proc.stdout.readline()
        rest, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert first.startswith("run: mp on 2 nodes, 1 round, simulated backend, into " + str(out)), first
    assert running and not folder_at_first
    name = plan_name(resolve(load_config(None, sets)))
    assert second.startswith(f"run: plan {name} (MP: a chain of 2 nodes"), second
    assert rest.splitlines()[-1].startswith("completed: 1 rounds"), rest


def test_help_is_plain_text_and_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "examples:" in text
    for command in ("run", "plan", "cost", "explore", "calibrate", "keys", "deps", "export-digits", "plots-page"):
        assert re.search(rf"^\s+{re.escape(command)}\s", text, re.M), command
