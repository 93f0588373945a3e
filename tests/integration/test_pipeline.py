"""The real pipeline end to end: a fresh copy of the repository, a reduced params.yaml,
``dvc pull data.dvc`` from the committed store, ``dvc repro``; then the tables and every figure exist,
a second ``dvc repro`` has nothing to do and ``git status`` stays clean. Then, as a user who clones the
committed study: a plain ``dvc pull`` succeeds, ``dvc status`` has nothing to reproduce, ``dvc plots
show`` writes data-driven plots, and ``git status`` stays clean (about 4.5 minutes on the 2-core box, so
marked slow: `make test-slow`, which CI runs). The committed study itself is checked on a clone of HEAD by
the default suite (test_the_committed_study_is_complete_and_current)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fplstudy.study.params import load_study

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # dvc and papermill of the interpreter running the tests

REDUCED = {"study": {
    "train": {"dataset": "digits", "model": "cnn", "max_train_samples": 120, "rounds": 2, "batch_size": 32,
              "lr": 0.05, "threads": 1},
    "seeds": [0, 1],
    "workers": 2,
    "kernels": "avx2",
    "groups": {"fl": {"nodes": [4], "partition": ["iid", "dirichlet"]},
               "fpl": {"nodes": [4], "junction": ["adapter"], "partition": ["iid"]},
               "fpl-concat": {"strategy": ["fpl"], "nodes": [4], "junction": ["concat"], "partition": ["features"]}},
    "findings": {"fpl_junction": "adapter", "against": ["fl"], "accuracy_delta": 0.02, "cost_delta": 0.1,
                 "size_delta": 0.1, "confidence": 0.95}},
    # the scale stage, reduced: one small model on MNIST's declared shape (no files), seconds
    "scale": {"dataset": "mnist", "models": ["cnn"], "strategies": ["fl", "mp", "fpl"], "nodes": [2],
              "crossover": {"nodes": 2, "train_samples": [100, 200], "against": ["mp"]}},
    # the profile sensitivity, reduced: two Monte Carlo draws
    "sensitivity": {"draws": 2, "seed": 0},
    # the dropout sweep, reduced: two strategies on 3 nodes, two rates, two seeds
    "dynamics": {"train": {"dataset": "digits", "max_train_samples": 96, "rounds": 2, "batch_size": 16, "threads": 1},
                 "strategies": {"fpl": {"nodes": 3}, "fl": {"nodes": 3}}, "dropout": [0, 0.5], "seeds": [0, 1],
                 "workers": 2, "kernels": "avx2"}}


def _sh(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _fresh_copy(dest: Path) -> None:
    """The files a clone would hold (tracked, plus untracked files git does not ignore), as a new repo."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _study_copy(tmp_path: Path, study: dict) -> tuple[Path, dict]:
    """``(repo, env)``: a fresh copy of the repository (:func:`_fresh_copy`, no results) whose params.yaml holds
    ``study`` as its active study, git-initialised, with the dataset pulled; ``env`` runs its own fplstudy."""
    repo = tmp_path / "repo"
    _fresh_copy(repo)
    for folder in ("results", "figures"):
        shutil.rmtree(repo / folder, ignore_errors=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "study": study}, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(repo / "src"), "CI": "1"}
    _sh(["git", "init", "-q"], repo, env)
    _sh(["dvc", "pull", "data.dvc"], repo, env)
    return repo, env


def _clone_of_head(tmp_path: Path) -> tuple[Path, dict]:
    """``(clone, env)``: a git clone of this checkout's HEAD with ``dvc pull`` done, as a user gets the
    committed study; skipped outside a git checkout."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout: nothing committed to clone")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CI": "1"}
    clone = tmp_path / "clone"
    _sh(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path, env)
    env["PYTHONPATH"] = str(clone / "src")
    _sh(["dvc", "pull"], clone, env)
    return clone, env


@pytest.mark.slow  # about 4.5 min here since the study gained seeds and the scale stage; CI runs it (make test-slow)
def test_dvc_repro_end_to_end(tmp_path: Path):
    repo = tmp_path / "repo"
    _fresh_copy(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(REDUCED, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(repo / "src"), "CI": "1"}  # the copy's fplstudy, not the checkout's
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    _sh([*git, "init", "-q"], repo, env)
    _sh([*git, "add", "-A"], repo, env)
    _sh([*git, "commit", "-q", "-m", "fresh clone"], repo, env)

    _sh(["dvc", "pull", "data.dvc"], repo, env)
    _sh(["dvc", "repro"], repo, env)

    summary = pd.read_csv(repo / "results" / "summary.csv")
    assert list(summary["name"]) == [p.name for p in load_study(REDUCED).plans]
    assert (summary["seeds"] == 2).all()
    assert (repo / "results" / "findings.md").read_text().startswith("# Findings")
    for figure in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]:
        if isinstance(figure, str):
            assert (repo / figure).stat().st_size > 10_000, figure
    again = _sh(["dvc", "repro"], repo, env)
    assert "Running stage" not in again
    # everything new is either committed-with-the-study (cache: false outputs) or git-ignored
    status = _sh(["git", "status", "--porcelain", "--untracked-files=all"], repo, env).splitlines()
    expected = {"dvc.lock", "figures/", "results/"}
    assert {line[3:].split("/")[0] + ("/" if "/" in line[3:] else "") for line in status} <= expected, status

    # a user clones the committed study
    _sh([*git, "add", "-A"], repo, env)
    _sh([*git, "commit", "-q", "-m", "study"], repo, env)
    clone = tmp_path / "clone"
    _sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    env["PYTHONPATH"] = str(clone / "src")
    _sh(["dvc", "pull"], clone, env)
    assert "up to date" in _sh(["dvc", "status"], clone, env).lower()
    _sh(["fplstudy", "plots-page"], clone, env)  # what `make venv` writes (.dvc/plots.html, git-ignored)
    _sh(["dvc", "plots", "show", "-o", "dvc_plots"], clone, env)
    html = (clone / "dvc_plots" / "index.html").read_text()
    assert html.count('"$schema": "https://vega.github.io/schema/vega-lite') >= 3  # data-driven, not only PNGs
    assert "fpl-4-adapter-iid" in html  # the points carry their plan
    assert _sh(["git", "status", "--porcelain", "--untracked-files=all"], clone, env) == ""


def test_a_hostile_group_name_never_reaches_a_shell(tmp_path: Path):
    """A group name is the one value of params.yaml that dvc.yaml puts into a shell command. It is quoted there,
    and a name that breaks out of the quotes is still refused: every train stage depends on the check stage's
    stamp, so `dvc repro` validates params.yaml first and stops, before any train command runs."""
    hostile = "x'; touch ../pwned; echo '"
    repo, env = _study_copy(tmp_path, {**REDUCED["study"], "groups": {hostile: {"strategy": ["fl"], "nodes": [2]}}})
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "group name" in proc.stdout + proc.stderr  # refused by the check stage, naming the entry
    assert not (tmp_path / "pwned").exists() and not (repo / "pwned").exists()


def test_a_plan_a_run_would_refuse_stops_dvc_repro_with_its_one_line(tmp_path: Path):
    """A key that only a run used to refuse (a deadline on model parallelism) in the study's shared train
    section: `dvc repro` stops at the check stage with the library's one line, naming the entry, before any
    train stage starts (no run folder, no executed notebook)."""
    repo, env = _study_copy(tmp_path, {**REDUCED["study"], "groups": {"mp": {"nodes": [2]}}, "findings": {},
                                       "train": {**REDUCED["study"]["train"], "round_deadline_s": 1.0}})
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "study.train.round_deadline_s" in line]
    assert proc.returncode != 0 and len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert lines[0].startswith("error: params.yaml: study.train.round_deadline_s: got 1.0;")
    assert "BrokenProcessPool" not in proc.stdout + proc.stderr
    assert not (repo / "results" / "runs").exists() and not (repo / "results" / "notebooks").exists()


def test_the_committed_study_is_complete_and_current(tmp_path: Path):
    """A user clones this repository's committed study (HEAD): a plain `dvc pull` succeeds, `dvc status` has
    nothing to reproduce (every run folder, table and figure is committed and matches the code and params that
    dvc.lock names), and `git status` stays clean. Fails when a change to the library or params.yaml lands
    without the study regenerated."""
    clone, env = _clone_of_head(tmp_path)
    status = _sh(["dvc", "status"], clone, env)
    assert "up to date" in status.lower(), status[-3000:]
    assert _sh(["git", "status", "--porcelain", "--untracked-files=all"], clone, env) == ""
    assert len(list((clone / "results" / "runs").rglob("metrics.json"))) == len(
        load_study(clone / "params.yaml").plans) * len(load_study(clone / "params.yaml").seeds)


def test_the_committed_eight_node_plans_learn_like_the_smaller_ones():
    """No batching artifact in the committed study: the 8-node plans whose last steps were tiny tail batches
    (sfl-8-iid seed 4, fpl-8-adapter-iid seed 1) learn, and at 8 nodes a plan's spread over seeds is of the
    order of the 2- and 4-node plans' (at most 3x the largest of them)."""
    import pandas as pd

    seeds = pd.read_csv(ROOT / "results" / "seeds.csv").set_index(["name", "seed"])
    assert seeds.loc[("sfl-8-iid", 4), "test_acc_mean"] >= 0.9
    assert seeds.loc[("fpl-8-adapter-iid", 1), "test_acc_mean"] >= 0.9
    sd = seeds.reset_index().groupby(["name", "nodes"])["test_acc_mean"].std().reset_index()
    iid = sd[sd["name"].str.endswith("-iid")]
    small, large = iid[iid["nodes"] < 8]["test_acc_mean"].max(), iid[iid["nodes"] == 8]["test_acc_mean"].max()
    assert large <= 3 * small, iid.sort_values("test_acc_mean").tail(5).to_string()


@pytest.mark.slow  # a clone, three notebooks executed, two `dvc status`: about 2 min here; CI runs it (make test-slow)
def test_running_and_saving_the_notebooks_in_jupyterlab_changes_nothing_tracked(tmp_path: Path):
    """In a clone of the committed study, each notebook is opened, executed and saved through Jupytext's
    contents manager (what JupyterLab's server saves with): `git status` stays clean and `dvc status` has
    nothing to reproduce. Editing one code line of train.ipynb and saving it changes notebooks/train.py, and
    `dvc status` names the train stages."""
    import papermill as pm
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext import build_async_jupytext_contents_manager_class

    from fplstudy.facts.datasets import export_digits

    clone, env = _clone_of_head(tmp_path)
    _sh(["jupytext", "--quiet", "--sync", "--set-kernel", "-",
         *(f"notebooks/{p.name}" for p in sorted((clone / "notebooks").glob("*.py")))], clone, env)  # as `make venv`
    assert "--sync --set-kernel - notebooks/*.py" in (ROOT / "Makefile").read_text()
    export_digits(tmp_path / "data" / "digits")
    smoke = {"train": {"smoke_test": True, "runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path / "data")},
             "tradeoffs": {"smoke_test": True}, "teach": {"smoke_test": True}}
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(clone))
    import asyncio

    for name, params in smoke.items():
        path = f"notebooks/{name}.ipynb"
        model = asyncio.run(_maybe(manager.get(path)))
        executed = pm.execute_notebook(str(clone / path), str(tmp_path / f"{name}-run.ipynb"), parameters=params,
                                       kernel_name="python3", cwd=str(clone), progress_bar=False)
        ran = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        assert len(ran) == len(model["content"].cells)
        for cell, done in zip(model["content"].cells, ran):  # the outputs and kernel metadata a run leaves
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = done.outputs, done.execution_count
        model["content"].metadata.update({k: v for k, v in executed.metadata.items() if k != "papermill"})
        asyncio.run(_maybe(manager.save(model, path)))
        assert any(c.get("outputs") for c in json.loads((clone / path).read_text())["cells"]), name
    assert _sh(["git", "status", "--porcelain", "--untracked-files=all"], clone, env) == ""
    assert "up to date" in _sh(["dvc", "status"], clone, env).lower()

    model = asyncio.run(_maybe(manager.get("notebooks/train.ipynb")))
    cell = next(c for c in model["content"].cells if c.cell_type == "code" and "run_group(" in c.source)
    cell.source = cell.source.replace("workers=workers or None", "workers=workers or None ")  # one code line
    cell.source += "\nprint(len(records))"
    asyncio.run(_maybe(manager.save(model, "notebooks/train.ipynb")))
    assert _sh(["git", "status", "--porcelain"], clone, env).split() == ["M", "notebooks/train.py"]
    status = _sh(["dvc", "status"], clone, env)
    assert "train@fl" in status and "notebooks/train.py" in status


async def _maybe(value):
    """Await ``value`` when the contents manager is asynchronous."""
    return await value if hasattr(value, "__await__") else value


@pytest.mark.xdist_group("repo-dvc")
def test_dvc_plots_show_writes_a_page_that_needs_no_network(tmp_path: Path):
    """`dvc plots show` on the committed study with the project's page template (.dvc/config points at the
    file `make venv` writes): no script or stylesheet from a remote address, Vega inline, the scatter plots
    coloured by strategy, and every figure of the plots list on the page."""
    import configparser

    from fplstudy.views.plotpage import write_page_template

    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config["plots"]["html_template"] == "plots.html"  # relative to .dvc/
    assert "plots-page --out .dvc/plots.html" in (ROOT / "Makefile").read_text()
    template = write_page_template(tmp_path / "plots.html")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    _sh(["dvc", "plots", "show", "--html-template", str(template), "-o", str(tmp_path / "out")], ROOT, env)
    html = (tmp_path / "out" / "index.html").read_text()
    import re

    remote = re.findall(r"""<(?:script|link|img)[^>]+(?:src|href)=["']?(?:https?:)?//[^"'\s>]+""", html)
    assert remote == [] and "cdn.jsdelivr" not in html
    assert "vegaEmbed" in html and len(html) > 500_000  # the libraries are on the page
    assert html.count('"color": {"field": "strategy"') == 2
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    assert "results/dynamics/dropout.png" in plots
    for figure in (p for p in plots if isinstance(p, str)):
        assert (tmp_path / "out" / "static").exists() and Path(figure).name.replace(".png", "") in html, figure


@pytest.mark.slow  # a reduced repo, dvc pull, one train stage: about a minute here; CI runs it (make test-slow)
def test_a_refusal_inside_a_study_worker_is_the_line_dvc_repro_prints(tmp_path: Path):
    """A run folder another fplstudy process is writing (its lock held here) in the reduced study: the train
    stage's worker refuses it, the refusal crosses the pool and papermill whole, and `dvc repro` prints it as
    its line (not a broken pool); the stage fails and the other runs are finished ones."""
    import fcntl

    repo, env = _study_copy(tmp_path, REDUCED["study"])
    busy = repo / "results" / "runs" / "fl" / "fl-4-iid" / "seed-1"
    busy.mkdir(parents=True)
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        proc = subprocess.run(["dvc", "repro", "train@fl"], cwd=repo, env=env, capture_output=True, text=True)
    finally:
        os.close(fd)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "BrokenProcessPool" not in text, text[-3000:]
    lines = [line.split("RunFolderError: ", 1)[1] for line in text.splitlines() if "RunFolderError: run folder" in line]
    assert lines and lines[0].startswith("run folder results/runs/fl/fl-4-iid/seed-1 is being written by another "
                                         "fplstudy run right now"), text[-3000:]
    assert not any(busy.iterdir())
    for metrics in (repo / "results" / "runs").rglob("metrics.json"):
        assert json.loads(metrics.read_text())["status"] == "completed", metrics
