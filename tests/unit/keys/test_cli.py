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


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_written_honour_the_umask(umask, tmp_path):
    """A run's files get the mode an ordinary open would (0666 less the umask), not mkstemp's 0600."""
    import subprocess
    import sys

    code = (f"import os; os.umask({umask}); from fplstudy.cli import main; "
            f"raise SystemExit(main(['cost', '--set', 'strategy=fl', '--set', 'nodes=2', '--set', 'max_train_samples=64', "
            f"'--out', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert set(modes) >= {"ledger.csv", "metrics.json"} and set(modes.values()) == {0o666 & ~umask}, modes


def test_help_is_plain_text_and_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "examples:" in text
    for command in ("run", "plan", "cost", "explore", "calibrate", "keys", "deps", "export-digits", "plots-page"):
        assert re.search(rf"^\s+{re.escape(command)}\s", text, re.M), command
