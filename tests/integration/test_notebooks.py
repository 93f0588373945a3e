"""Every notebook runs in smoke mode and shows its figures inline; the trade-off notebook renders on
reduced grids; dvc.yaml passes only parameters the notebooks declare and names each group once.

A notebook in ``notebooks/`` without an entry in :data:`SMOKE` fails ``test_notebook_runs``: add its
smoke parameters there (tests never edit cells; the ``smoke_test`` switch in the parameters cell sizes
the notebook down).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import papermill as pm
import pytest
import yaml

from fplstudy.facts.datasets import export_digits, require_dataset
from fplstudy.study.params import load_study

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))  # percent scripts (Jupytext): what git and DVC track

# Smoke parameters per notebook (name -> papermill parameters). Defaults write only to temp folders.
SMOKE: dict[str, dict] = {
    "train": {"smoke_test": True, "config": {"strategy": "fpl", "nodes": 4, "junction": "adapter"},
                    "seeds": [0, 1]},
    "tradeoffs": {"smoke_test": True},
    "teach": {"smoke_test": True},
}


@pytest.mark.parametrize("script", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(script: Path, notebook, tmp_path: Path):
    assert script.stem in SMOKE, (f"{script.name} is not executed by any test: add its smoke parameters "
                                  f"to SMOKE in tests/integration/test_notebooks.py")
    params = dict(SMOKE[script.stem])
    source = notebook(script.stem)
    if "data_dir" in pm.inspect_notebook(str(source)):
        # a fresh clone has no data/ before `dvc pull data.dvc`: give the notebook its own copy
        export_digits(tmp_path / "data" / "digits")
        params["data_dir"] = str(tmp_path / "data")
    pm.execute_notebook(str(source), str(tmp_path / source.name), parameters=params,
                        kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    if script.stem in ("train", "tradeoffs"):
        assert _images(tmp_path / source.name), f"{script.name} shows no figure inline"


def _images(executed: Path) -> int:
    """Number of image/png display outputs in an executed notebook."""
    nb = yaml.safe_load(executed.read_text())
    return sum("image/png" in out.get("data", {}) for cell in nb["cells"] for out in cell.get("outputs", []))


def test_train_notebook_trains_a_group_of_the_study(notebook, tmp_path: Path):
    """What `dvc repro` runs: every plan x seed of one group of params.yaml's active study (smoke-sized)."""
    export_digits(tmp_path / "data" / "digits")
    pm.execute_notebook(str(notebook("train")), str(tmp_path / "out.ipynb"),
                        parameters={"smoke_test": True, "group": "sl", "runs_dir": str(tmp_path / "runs"),
                                    "data_dir": str(tmp_path / "data")},
                        kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    folders = sorted(p.relative_to(tmp_path / "runs").as_posix() for p in (tmp_path / "runs").glob("*/*/seed-*"))
    assert folders == [f"sl/sl-2-{part}/seed-{s}" for part in ("dirichlet", "iid") for s in (0, 1, 2)]
    assert _images(tmp_path / "out.ipynb") >= 1
    # each run's progress line shows once in the notebook, as standard output (not again in the stderr box)
    streams = _streams(tmp_path / "out.ipynb")
    progress = [line for line in streams["stdout"].splitlines() if line.startswith("[sl ")]
    assert len(progress) == len(folders) == len(set(progress)), streams["stdout"]
    assert "[sl " not in streams["stderr"], streams["stderr"]


def _streams(executed: Path) -> dict[str, str]:
    """The text an executed notebook's cells printed, by stream (stdout, stderr)."""
    nb = yaml.safe_load(executed.read_text())
    text = {"stdout": "", "stderr": ""}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                body = out["text"]
                text[out["name"]] += body if isinstance(body, str) else "".join(body)
    return text


# Three reduced grids of the tiny study's tables: no 4 nodes, no Dirichlet shards, a single strategy.
REDUCED = {"no-4-nodes": lambda t: t[t["nodes"] != 4], "iid-only": lambda t: t[t["partition"] != "dirichlet"],
           "fl-only": lambda t: t[t["strategy"] == "fl"]}


@pytest.mark.xdist_group("tiny-study")
@pytest.mark.parametrize("grid", sorted(REDUCED))
def test_tradeoffs_render_on_a_reduced_grid(grid: str, tiny_study, notebook, tmp_path: Path):
    import pandas as pd

    _, folder = tiny_study
    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("seeds", "summary", "rounds", "costs"):
        table = REDUCED[grid](pd.read_csv(folder / f"{name}.csv"))
        table.to_csv(tables / f"{name}.csv", index=False)
    pm.execute_notebook(str(notebook("tradeoffs")), str(tmp_path / "out.ipynb"),
                        parameters={"results_dir": str(tables), "figures_dir": str(tmp_path / "figures")},
                        kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    drawn = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"accuracy_vs_energy.png", "makespan_vs_energy.png"} <= drawn
    if grid == "iid-only":
        assert "non_iid.png" not in drawn  # skipped with a note, not a crash
    if grid == "fl-only":
        assert "model_size.png" not in drawn
    assert _images(tmp_path / "out.ipynb") == len(drawn)
    assert (tmp_path / "figures" / "findings.md").read_text().startswith("# Findings")


def test_every_smoke_entry_names_a_notebook():
    assert set(SMOKE) <= {p.stem for p in NOTEBOOKS}, "SMOKE lists a notebook that does not exist"


def test_notebooks_are_tracked_as_scripts_without_outputs():
    """git tracks each notebook as its percent script (code and markdown, the papermill tag and no other
    metadata); the .ipynb twins JupyterLab saves outputs into are git-ignored."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "notebooks"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(tracked) == sorted(["notebooks/jupytext.toml", *(f"notebooks/{p.name}" for p in NOTEBOOKS)])
    ignored = subprocess.run(["git", "check-ignore", "notebooks/train.ipynb"], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0
    for path in NOTEBOOKS:
        text = path.read_text()
        assert text.startswith("# %%") and "metadata" not in text.split("\n", 1)[0], path.name
        assert [line for line in text.splitlines() if line.startswith("# %%") and "=" in line] == \
            (['# %% tags=["parameters"]'] if "parameters" in text else []), path.name


def _dvc_commands() -> list[list[str]]:
    """Every papermill command line of dvc.yaml, with ${...} left unexpanded."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    commands = []
    for stage in doc["stages"].values():
        stage = stage.get("do", stage)  # foreach stages keep their command under do:
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        for cmd in cmds:
            for part in cmd.split("&&"):
                words = shlex.split(part.replace("|", " | "))
                if "papermill" in words:
                    commands.append(words)
    return commands


def test_dvc_passes_only_declared_parameters(notebook):
    commands = _dvc_commands()
    assert commands, "dvc.yaml runs no notebook through papermill"
    for words in commands:
        script = next(w for w in words if w.startswith("notebooks/"))
        assert script.endswith(".py") and words.index("|") < words.index("papermill"), words  # jupytext | papermill
        declared = set(pm.inspect_notebook(str(notebook(Path(script).stem))))
        passed = [words[i + 1] for i, w in enumerate(words) if w == "-p"]
        passed += [next(iter(yaml.safe_load(words[i + 1]))) for i, w in enumerate(words) if w == "-y"]
        unknown = sorted(set(passed) - declared)
        assert not unknown, f"dvc.yaml passes {unknown} to {script}, whose parameters are {sorted(declared)}"
        assert "--kernel" in words


@pytest.mark.xdist_group("repo-dvc")
def test_dvc_names_each_group_once():
    """The train stages are exactly the study's groups (from params.yaml, expanded by DVC's foreach)."""
    dvc = str(Path(sys.executable).parent / "dvc")  # the venv's dvc, whether or not it is on PATH
    proc = __import__("subprocess").run([dvc, "stage", "list"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stages = re.findall(r"^train@([\w.-]+)", proc.stdout, re.M)
    assert stages == load_study(ROOT / "params.yaml").groups


def test_missing_dataset_names_the_restore_command():
    with tempfile.TemporaryDirectory() as empty, pytest.raises(FileNotFoundError, match="dvc pull data.dvc"):
        require_dataset("digits", empty)


def _papermill_refusal(tmp_path: Path, *args: str, error: str = "StudyError") -> str:
    """Run the train notebook through the papermill command line (as a user or `dvc repro` does); it must
    fail, and the library's one-line refusal must be in what papermill prints. Returns that line."""
    import subprocess

    papermill = str(Path(sys.executable).parent / "papermill")
    jupytext = str(Path(sys.executable).parent / "jupytext")
    command = (f"{shlex.quote(jupytext)} --quiet --to ipynb --output - notebooks/train.py | "
               f"{shlex.quote(papermill)} --kernel python3 --language python --no-progress-bar --log-level WARNING "
               f"- {shlex.quote(str(tmp_path / 'out.ipynb'))} {shlex.join(args)}")  # as dvc.yaml runs it
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "BrokenProcessPool" not in text
    lines = [line for line in text.splitlines() if f"{error}: " in line]
    assert lines, text[-3000:]
    return lines[0].split(f"{error}: ", 1)[1]


def test_a_smoke_run_into_the_committed_results_changes_nothing(tmp_path: Path):
    """`papermill train.ipynb … -p group mp -p smoke_test True -p runs_dir <finished runs>`: the smoke
    study's 2-round runs would replace the study's own; refused before any training, every file as it was."""
    runs = tmp_path / "runs"
    shutil.copytree(ROOT / "results" / "runs" / "mp", runs / "mp")
    before = {p: p.read_bytes() for p in sorted(runs.rglob("*")) if p.is_file()}
    export_digits(tmp_path / "data" / "digits")
    line = _papermill_refusal(tmp_path, "-p", "group", "mp", "-p", "smoke_test", "True", "-p", "runs_dir", str(runs),
                              "-p", "data_dir", str(tmp_path / "data"))
    assert "holds the finished run of another config" in line and "overwrite" in line
    assert {p: p.read_bytes() for p in sorted(runs.rglob("*")) if p.is_file()} == before


@pytest.mark.parametrize("args,named", [
    (("-p", "seeds", "notalist"), "seeds"), (("-p", "config", "notadict"), "config"),
    (("-p", "workers", "-3"), "workers"), (("-y", "seeds: [1, 1]"), "seeds"),
], ids=["seeds-str", "config-str", "workers-negative", "seeds-twice"])
def test_notebook_parameters_fail_in_the_first_cell_with_the_library_line(args, named, tmp_path: Path):
    line = _papermill_refusal(tmp_path, *args, "-p", "smoke_test", "True")
    assert line.startswith(f"notebook parameter '{named}'")
    executed = yaml.safe_load((tmp_path / "out.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    tags = [c.get("metadata", {}).get("tags", []) for c in code]
    assert failed == [tags.index(["injected-parameters"]) + 1]  # the first cell after the parameters


def test_a_refusal_inside_a_study_worker_reaches_papermill_as_its_line(tmp_path: Path):
    """A run folder another fplstudy process is writing (its lock held here, as a second `dvc repro` would
    hold it): the refusal is raised inside the study's worker process, crosses the pool whole and is the
    line papermill prints, not a broken pool; the other runs' folders hold only finished runs."""
    import fcntl
    import os

    export_digits(tmp_path / "data" / "digits")
    runs = tmp_path / "runs"
    busy = runs / "mp" / "mp-2-iid" / "seed-1"
    busy.mkdir(parents=True)
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        line = _papermill_refusal(tmp_path, "-p", "group", "mp", "-p", "smoke_test", "True", "-p", "runs_dir",
                                  str(runs), "-p", "data_dir", str(tmp_path / "data"), error="RunFolderError")
    finally:
        os.close(fd)
    assert f"run folder {busy} is being written by another fplstudy run right now" in line
    assert not any(busy.iterdir())
    for metrics in runs.rglob("metrics.json"):
        assert json.loads(metrics.read_text())["status"] == "completed", metrics
