"""Every dvc.yaml stage lists in its deps exactly the code it runs (its notebook, the fplstudy modules of
its import closure, function-local imports included, and their data files), and a run's code hash covers
exactly the code a run executes: a change elsewhere re-runs no stage that does not run it and keeps the
finished runs a resumed train stage skips."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from fplstudy.study import params as study

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fplstudy"


def test_every_dvc_stage_lists_exactly_the_code_it_runs():
    stages = study.stage_deps(ROOT / "dvc.yaml")
    assert set(stages) >= {"check", "train", "aggregate", "tradeoffs", "scale"}
    wrong = []
    for name, (other, listed, runs) in stages.items():
        assert len(listed) == len(set(listed)), f"stage {name} lists a dep twice: {listed}"
        if set(listed) != set(runs):
            wrong.append(f"stage {name}: lists {sorted(set(listed) - set(runs))} that it does not run and misses "
                         f"{sorted(set(runs) - set(listed))}; give it\n{study._flow_list('  ', 'deps', [*other, *runs])}")
    assert not wrong, ("dvc.yaml's code deps are out of date (an import changed); run "
                       "`python -m fplstudy.study.params deps --write`:\n" + "\n".join(wrong))


def test_the_train_stage_covers_the_code_of_every_run():
    """The code hash of a run (item: resume) is made of files the train stage depends on, so DVC re-runs the
    stage whenever a run's hash would change; the figures it draws are in the stage but not in the hash."""
    _, listed, _ = study.stage_deps(ROOT / "dvc.yaml")["train"]
    run_code = {f"src/fplstudy/{rel}" for rel in study.import_closure(study.RUN_MODULES)}
    assert run_code <= set(listed)
    assert "src/fplstudy/plots.py" in listed and "src/fplstudy/plots.py" not in run_code
    assert "notebooks/train.ipynb" in listed


def test_every_data_file_of_the_package_is_claimed_by_a_module():
    """A file the package ships besides its sources is code of the module that reads it (study.MODULE_DATA):
    a new one must be claimed there, or stages and run hashes would miss it."""
    claimed = [PACKAGE / rel for rels in study.MODULE_DATA.values() for rel in rels]
    assert all(p.exists() for p in claimed), claimed
    files = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
             and "__pycache__" not in p.parts]
    assert files, "the package ships no data file: the profiles are gone?"
    unclaimed = [p.relative_to(PACKAGE).as_posix() for p in files
                 if not any(p == c or c in p.parents for c in claimed)]
    assert not unclaimed, f"{unclaimed}: claim them in fplstudy.study.params.MODULE_DATA under the module that reads them"


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / "src" / "fplstudy"
    for rel, text in files.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(textwrap.dedent(text))
    return package


FAKE = {
    "__init__.py": '"""fake"""\n',
    "entry.py": """
        import json
        from fplstudy.helper import helper

        def main():
            from fplstudy import lazy  # function-local: runs only when main does, still code of the entry
            return lazy.x
        """,
    "helper.py": "from typing import TYPE_CHECKING\nfrom . import profiles\nif TYPE_CHECKING:\n"
                 "    from fplstudy import figures  # named in signatures only: never imported\nhelper = 1\n",
    "lazy.py": "import fplstudy.sub.leaf\nx = 2\n",
    "sub/__init__.py": "from .leaf import y\n",
    "sub/leaf.py": "y = 3\n",
    "profiles.py": "SHIPPED = 'profiles'\n",
    "profiles/devices.yaml": "rpi4: {}\n",
    "unused.py": "import fplstudy.entry\n",  # imports the entry; nothing imports it
    "figures.py": "from fplstudy import helper\n",
}


def test_the_import_closure_follows_every_import_and_only_imports(tmp_path: Path):
    package = _package(tmp_path, FAKE)
    assert study.import_closure(["fplstudy.entry"], package) == [
        "__init__.py", "entry.py", "helper.py", "lazy.py", "profiles", "profiles.py", "sub/__init__.py",
        "sub/leaf.py"]
    assert study.import_closure(["fplstudy.sub.leaf"], package) == ["__init__.py", "sub/__init__.py", "sub/leaf.py"]
    assert study.imported_modules("from fplstudy import helper, SHIPPED_NAME\nimport os", "", package) == {
        "fplstudy", "fplstudy.helper"}
    with pytest.raises(study.StudyError, match="'fplstudy.nowhere': not a module"):
        study.import_closure(["fplstudy.nowhere"], package)
    with pytest.raises(study.StudyError, match="relative import"):
        study.imported_modules("from . import helper", "", package)


def test_a_stage_lists_its_notebook_its_entry_and_their_closure_and_deps_write_fixes_a_stale_list(tmp_path: Path,
                                                                                                   capsys):
    _package(tmp_path, FAKE)
    (tmp_path / "notebooks").mkdir()
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["import fplstudy.unused\n"]},
             {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": ["%matplotlib inline\n", "from fplstudy import figures\n", "!ls\n",
                         "def f():\n", "    import fplstudy.sub\n"]}]
    (tmp_path / "notebooks" / "draw.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                                                   "nbformat_minor": 4}))
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(textwrap.dedent("""\
        # a comment that stays
        stages:
          run:  # the entry
            cmd: python -m fplstudy.entry --x 1
            deps: [data, src/fplstudy/entry.py]
            outs: [out]
          draw:
            foreach: [a, b]
            do:
              cmd: >-
                mkdir -p o && papermill --kernel python3 notebooks/draw.ipynb o/'${key}'.ipynb -p x '${key}'
              deps: [out, notebooks/draw.ipynb, src/fplstudy/figures.py, src/fplstudy/helper.py,
                     src/fplstudy/profiles.py, src/fplstudy/profiles, src/fplstudy/__init__.py,
                     src/fplstudy/sub/__init__.py, src/fplstudy/sub/leaf.py]
        """))
    stages = study.stage_deps(dvc)
    assert stages["run"] == (["data"], ["src/fplstudy/entry.py"],
                             [f"src/fplstudy/{f}" for f in study.import_closure(["fplstudy.entry"],
                                                                                tmp_path / "src" / "fplstudy")])
    other, listed, runs = stages["draw"]
    assert other == ["out"] and runs[0] == "notebooks/draw.ipynb" and set(listed) == set(runs)  # this one is right
    assert "src/fplstudy/unused.py" not in runs  # a markdown cell imports nothing

    assert study.main(["deps", "--dvc", str(dvc)]) == 1
    printed = capsys.readouterr().out
    assert "stage run:" in printed and "stage draw" not in printed and "src/fplstudy/lazy.py" in printed
    before = dvc.read_text()
    assert study.main(["deps", "--dvc", str(dvc), "--write"]) == 0
    after = dvc.read_text()
    assert study.main(["deps", "--dvc", str(dvc)]) == 0
    assert after.startswith("# a comment that stays\n") and "  run:  # the entry\n" in after
    assert after.split("draw:")[1] == before.split("draw:")[1]  # a right list is left as it was
    assert study.stage_deps(dvc)["run"][1][:2] == ["src/fplstudy/__init__.py", "src/fplstudy/entry.py"]
    assert study.read_yaml_file(dvc)["stages"]["run"]["deps"][0] == "data"  # other deps first, kept


def test_a_stage_running_no_fplstudy_code_is_refused_naming_it(tmp_path: Path):
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text("stages:\n  s:\n    cmd: python other.py\n    deps: [other.py]\n")
    with pytest.raises(study.StudyError, match="runs no `python -m fplstudy"):
        study.stage_deps(dvc)


def test_the_code_hash_moves_with_the_code_of_a_run_and_with_nothing_else(tmp_path: Path):
    package = tmp_path / "fplstudy"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    assert study.code_hash_of(package) == study.code_hash_of(PACKAGE) == study.code_hash()
    closure = study.import_closure(study.RUN_MODULES, package)
    inside = [package / rel for rel in closure if rel.endswith(".py")]
    outside = [p for p in package.rglob("*.py") if p.relative_to(package).as_posix() not in closure]
    assert {"plots.py", "cli.py"} <= {p.name for p in outside} and {"engine.py", "ledger.py"} <= {p.name for p in inside}
    start = study.code_hash_of(package)
    for path in outside:  # figures, the command line, the teaching helpers: a run does not execute them
        path.write_text(path.read_text() + "\n# edited\n")
    assert study.code_hash_of(package) == start
    for path in [*inside, package / "profiles" / "devices.yaml"]:
        text = path.read_text()
        path.write_text(text + "\n# edited\n")
        assert study.code_hash_of(package) != start, path.name
        path.write_text(text)
    assert study.code_hash_of(package) == start
