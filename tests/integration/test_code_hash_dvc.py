"""The train stages depend on the training code and nothing else, checked with real DVC in a clone of this
repository: a docstring in the figures, statistics and profiles modules and a strategy's colour re-run the
stages that draw or tabulate but no ``train@`` stage; one line of the engine's training step re-runs every
``train@`` stage (through stage ``code``, which writes the training code's hash)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fplstudy.study.params import load_study

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (BIN / "dvc").exists(),
                                reason="needs git and dvc in the test's environment")


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
    return out.stdout


def _stale(clone: Path) -> set[str]:
    """The stages ``dvc status`` names (after ``dvc repro code``: the training code's hash written again)."""
    _run([str(BIN / "dvc"), "repro", "--single-item", "code"], clone)
    return set(json.loads(_run([str(BIN / "dvc"), "status", "--json"], clone) or "{}"))


def _edit(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` of ``path`` (a module's docstring opens with its first triple quote)."""
    text = path.read_text()
    assert old in text, f"{path}: no {old!r}"
    path.write_text(text.replace(old, new, 1))


def test_only_training_code_reruns_the_train_stages(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=300)
    _run([str(BIN / "dvc"), "pull", "--quiet", "data.dvc"], clone)
    groups = {f"train@{g}" for g in load_study(clone / "params.yaml").groups}
    assert not _stale(clone) & groups, "the committed study is not up to date: run `make study` and commit"

    pkg = clone / "src" / "fplstudy"
    _edit(pkg / "views" / "figures.py", '"""', '"""Figures, redrawn. ')
    _edit(pkg / "study" / "stats.py", '"""', '"""Statistics, reworded. ')
    _edit(pkg / "facts" / "profiles.py", '"""', '"""Profiles, reworded. ')
    _edit(pkg / "views" / "looks.py", 'colour="#029E73"', 'colour="#029E74"')  # FL's colour
    stale = _stale(clone)
    assert not stale & groups, f"a docstring or a colour re-runs {sorted(stale & groups)}"
    assert {"tradeoffs", "aggregate"} <= stale  # what draws and tabulates does re-run

    _edit(pkg / "train" / "engine.py", "* (k / batch_size)", "* (k / batch_size) * 1.0")  # the training step
    assert _stale(clone) >= groups
