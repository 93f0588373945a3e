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


def _doc_commands() -> list[tuple[str, str]]:
    """``(file, command)`` for every command of the ```bash blocks of README.md and docs/*.md, continuation
    lines joined and trailing comments left out."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"^```bash\n(.*?)^```", path.read_text(), re.M | re.S)
        for block in blocks:
            for command in block.replace("\\\n", " ").splitlines():
                command = re.split(r"\s+#\s", command)[0].strip()
                if command and not command.startswith("#"):
                    found.append((path.name, command))
    return found


def test_the_readme_and_docs_commands_parse_against_the_project():
    """Every `fplstudy ...` line of the README and docs parses with the command line's own parser; every
    `make` target, notebook, script and `python -m` module a line names exists."""
    import importlib.util
    import shlex

    from fplstudy.cli import build_parser

    commands = _doc_commands()
    checked = 0
    makefile = (ROOT / "Makefile").read_text()
    for name, command in commands:
        words = shlex.split(command)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value prefixes
        if not words:
            continue
        head, rest = words[0], words[1:]
        if head == "fplstudy":
            try:
                build_parser().parse_args(rest)
            except SystemExit as exc:
                raise AssertionError(f"{name}: `{command}` does not parse (exit {exc.code})") from None
        elif head == "make":
            for target in rest:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{name}: make target {target}"
        elif head == "papermill":
            notebook = Path(rest[0])
            assert (ROOT / notebook.with_suffix(".py")).is_file(), f"{name}: {notebook}"
        elif head in ("python", "python3"):
            if rest[0] == "-m":
                assert importlib.util.find_spec(rest[1]) is not None, f"{name}: module {rest[1]}"
            else:
                assert (ROOT / rest[0]).is_file(), f"{name}: script {rest[0]}"
        else:
            continue
        checked += 1
    assert checked >= 30, checked
