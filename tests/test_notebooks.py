"""Every notebook runs in smoke mode, and dvc.yaml passes only parameters the notebooks declare.

A notebook in ``notebooks/`` without an entry in :data:`SMOKE` fails ``test_notebook_runs``: add its
smoke parameters there (tests never edit cells; the ``smoke_test`` switch in the parameters cell sizes
the notebook down).
"""

from __future__ import annotations

import re
import sys
import shlex
import tempfile
from pathlib import Path

import papermill as pm
import pytest
import yaml

from fplstudy import study

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# Smoke parameters per notebook (file name -> papermill parameters). Defaults write only to temp folders.
SMOKE: dict[str, dict] = {
    "train.ipynb": {"smoke_test": True, "strategy": "fpl", "nodes": 4, "junction": "adapter"},
    "tradeoffs.ipynb": {"smoke_test": True},
    "teach.ipynb": {"smoke_test": True},
}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(notebook: Path, tmp_path: Path):
    assert notebook.name in SMOKE, (f"{notebook.name} is not executed by any test: add its smoke parameters "
                                    f"to SMOKE in tests/test_notebooks.py")
    params = dict(SMOKE[notebook.name])
    if "data_dir" in pm.inspect_notebook(str(notebook)):
        # a fresh clone has no data/ before `dvc pull data.dvc`: give the notebook its own copy
        study.export_digits(tmp_path / "data" / "digits")
        params["data_dir"] = str(tmp_path / "data")
    pm.execute_notebook(str(notebook), str(tmp_path / notebook.name), parameters=params,
                        kernel_name="python3", cwd=str(ROOT), progress_bar=False)


def test_every_smoke_entry_names_a_notebook():
    assert set(SMOKE) <= {p.name for p in NOTEBOOKS}, "SMOKE lists a notebook that does not exist"


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = yaml.safe_load(path.read_text())  # JSON is YAML
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, (
                    f"{path.name} holds outputs; clear them before committing (Kernel > Restart and Clear)")


def _dvc_commands() -> list[list[str]]:
    """Every papermill command line of dvc.yaml, with ${...} left unexpanded."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    commands = []
    for stage in doc["stages"].values():
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        for cmd in cmds:
            for part in cmd.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "papermill":
                    commands.append(words)
    return commands


def test_dvc_passes_only_declared_parameters():
    commands = _dvc_commands()
    assert commands, "dvc.yaml runs no notebook through papermill"
    for words in commands:
        notebook = next(w for w in words if w.startswith("notebooks/"))
        declared = set(pm.inspect_notebook(str(ROOT / notebook)))
        passed = [words[i + 1] for i, w in enumerate(words) if w == "-p"]
        passed += [next(iter(yaml.safe_load(words[i + 1]))) for i, w in enumerate(words) if w == "-y"]
        unknown = sorted(set(passed) - declared)
        assert not unknown, f"dvc.yaml passes {unknown} to {notebook}, whose parameters are {sorted(declared)}"
        assert "--kernel" in words


def test_dvc_run_folders_match_the_grid():
    """The run folders the train stages write are exactly the plan names study_grid builds."""
    dvc = str(Path(sys.executable).parent / "dvc")  # the venv's dvc, whether or not it is on PATH
    proc = __import__("subprocess").run([dvc, "stage", "list"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    outs = set(re.findall(r"results/runs/([\w-]+)", proc.stdout))
    names = {p.name for p in study.study_grid(study.load_params(ROOT / "params.yaml"))}
    assert outs == names


def test_missing_dataset_names_the_restore_command():
    with tempfile.TemporaryDirectory() as empty, pytest.raises(FileNotFoundError, match="dvc pull data.dvc"):
        study.require_dataset("digits", empty)
