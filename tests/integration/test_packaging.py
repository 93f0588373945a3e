"""The two ways to install (pip: pyproject.toml, conda: environment.yml) ask for the same packages."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(conda_pip) - {"-e ."} == pip_reqs
    assert "-e ." in conda_pip


def test_torch_pair_is_pinned_where_it_imports_on_these_machines():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
    assert {_name(d) for d in deps} >= {"jupyterlab", "papermill", "torch", "torchvision", "seaborn", "dvc"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)


def test_the_docs_speak_of_the_project_only():
    """README, docs and the pipeline's files describe what the project does, never how it was built; and the
    README stays a front page (depth lives in docs/)."""
    texts = {p: p.read_text() for p in [ROOT / "README.md", ROOT / "params.yaml", ROOT / "dvc.yaml",
                                        *sorted((ROOT / "docs").glob("*.md"))]}
    history = re.compile(r"\bstop \d+|\bissue \d+|\breview mend\b|\bmain's model\b", re.I)
    found = [f"{p.name}: {m.group(0)}" for p, text in texts.items() for m in history.finditer(text)]
    assert not found, found
    assert len(texts[ROOT / "README.md"].splitlines()) <= 300
