"""Every dvc.yaml stage lists in its deps exactly the code it runs (its notebook, the fplstudy modules of
its import closure, function-local imports included, and their data files), and a run's code hash covers
exactly the code a run executes, docstrings, comments and layout left out: a change elsewhere re-runs no
train stage and keeps the finished runs a resumed train stage skips."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from fplstudy import cli
from fplstudy.config import StudyError, read_yaml_file
from fplstudy.study.provenance import (
    MODULE_DATA,
    RUN_MODULES,
    code_hash,
    code_hash_of,
    import_closure,
    imported_modules,
    normalized_code,
    stage_deps,
)

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "src" / "fplstudy"


def test_every_dvc_stage_lists_exactly_the_code_it_runs():
    stages = stage_deps(ROOT / "dvc.yaml")
    assert set(stages) >= {"check", "code", "train", "aggregate", "tradeoffs", "scale", "dynamics"}
    wrong = []
    for name, (_other, listed, runs) in stages.items():
        assert len(listed) == len(set(listed)), f"stage {name} lists a dep twice: {listed}"
        if set(listed) != set(runs):
            wrong.append(f"stage {name}: lists {sorted(set(listed) - set(runs))} that it does not run and misses "
                         f"{sorted(set(runs) - set(listed))}")
    assert not wrong, ("dvc.yaml's code deps are out of date (an import changed); run "
                       "`fplstudy deps --write`:\n" + "\n".join(wrong))


def test_the_train_stage_depends_on_the_code_of_every_run_through_the_code_stage():
    """The train stages depend on the code of a run through the file the code stage writes (the code hash),
    and the code stage lists every file of a run's code: DVC re-runs a train stage exactly when a run's hash
    changes. The figures and tables are code of neither."""
    stages = stage_deps(ROOT / "dvc.yaml")
    other, listed, _ = stages["train"]
    assert listed == ["notebooks/train.py"] and "results/code/train.txt" in other
    code_outs = read_yaml_file(ROOT / "dvc.yaml")["stages"]["code"]["outs"]
    assert [next(iter(o)) for o in code_outs] == ["results/code/train.txt"]
    run_code = {f"src/fplstudy/{rel}" for rel in import_closure(RUN_MODULES)}
    assert run_code <= set(stages["code"][1])
    for module in ("views/figures.py", "views/style.py", "views/looks.py", "study/tables.py", "study/findings.py",
                   "study/stats.py", "cli.py"):
        assert f"src/fplstudy/{module}" not in run_code, module
    assert {"src/fplstudy/train/engine.py", "src/fplstudy/costs/ledger.py"} <= run_code


def test_every_data_file_of_the_package_is_claimed_by_a_module():
    """A file the package ships besides its sources is code of the module that reads it (MODULE_DATA):
    a new one must be claimed there, or stages and run hashes would miss it."""
    claimed = [PACKAGE / rel for rels in MODULE_DATA.values() for rel in rels]
    assert all(p.exists() for p in claimed), claimed
    files = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
             and "__pycache__" not in p.parts]
    assert files, "the package ships no data file: the profiles are gone?"
    unclaimed = [p.relative_to(PACKAGE).as_posix() for p in files
                 if not any(p == c or c in p.parents for c in claimed)]
    assert not unclaimed, f"{unclaimed}: claim them in fplstudy.study.provenance.MODULE_DATA under the module that reads them"


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
    "helper.py": "from typing import TYPE_CHECKING\nfrom .facts import profiles\nif TYPE_CHECKING:\n"
                 "    from fplstudy import figures  # named in signatures only: never imported\nhelper = 1\n",
    "lazy.py": "import fplstudy.sub.leaf\nx = 2\n",
    "sub/__init__.py": "from .leaf import y\n",
    "sub/leaf.py": "y = 3\n",
    "facts/__init__.py": "",
    "facts/profiles.py": "SHIPPED = 'profiles'\n",
    "facts/profiles/devices.yaml": "rpi4: {}\n",
    "unused.py": "import fplstudy.entry\n",  # imports the entry; nothing imports it
    "figures.py": "from fplstudy import helper\n",
}


def test_the_import_closure_follows_every_import_and_only_imports(tmp_path: Path):
    package = _package(tmp_path, FAKE)
    assert import_closure(["fplstudy.entry"], package) == [
        "__init__.py", "entry.py", "facts/__init__.py", "facts/profiles", "facts/profiles.py", "helper.py", "lazy.py",
        "sub/__init__.py", "sub/leaf.py"]
    assert import_closure(["fplstudy.sub.leaf"], package) == ["__init__.py", "sub/__init__.py", "sub/leaf.py"]
    assert imported_modules("from fplstudy import helper, SHIPPED_NAME\nimport os", "", package) == {
        "fplstudy", "fplstudy.helper"}
    with pytest.raises(StudyError, match="'fplstudy.nowhere': not a module"):
        import_closure(["fplstudy.nowhere"], package)
    with pytest.raises(StudyError, match="relative import"):
        imported_modules("from . import helper", "", package)


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
                     src/fplstudy/facts/profiles.py, src/fplstudy/facts/profiles, src/fplstudy/__init__.py,
                     src/fplstudy/facts/__init__.py,
                     src/fplstudy/sub/__init__.py, src/fplstudy/sub/leaf.py]
        """))
    stages = stage_deps(dvc)
    assert stages["run"] == (["data"], ["src/fplstudy/entry.py"],
                             [f"src/fplstudy/{f}" for f in import_closure(["fplstudy.entry"],
                                                                                tmp_path / "src" / "fplstudy")])
    other, listed, runs = stages["draw"]
    assert other == ["out"] and runs[0] == "notebooks/draw.ipynb" and set(listed) == set(runs)  # this one is right
    assert "src/fplstudy/unused.py" not in runs  # a markdown cell imports nothing

    assert cli.main(["deps", "--dvc", str(dvc)]) == 1
    printed = capsys.readouterr().out
    assert "stage run:" in printed and "stage draw" not in printed and "src/fplstudy/lazy.py" in printed
    before = dvc.read_text()
    assert cli.main(["deps", "--dvc", str(dvc), "--write"]) == 0
    after = dvc.read_text()
    assert cli.main(["deps", "--dvc", str(dvc)]) == 0
    assert after.startswith("# a comment that stays\n") and "  run:  # the entry\n" in after
    assert after.split("draw:")[1] == before.split("draw:")[1]  # a right list is left as it was
    assert stage_deps(dvc)["run"][1][:2] == ["src/fplstudy/__init__.py", "src/fplstudy/entry.py"]
    assert read_yaml_file(dvc)["stages"]["run"]["deps"][0] == "data"  # other deps first, kept


def test_a_stage_running_no_fplstudy_code_is_refused_naming_it(tmp_path: Path):
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text("stages:\n  s:\n    cmd: python other.py\n    deps: [other.py]\n")
    with pytest.raises(StudyError, match="runs no `python -m fplstudy"):
        stage_deps(dvc)


def test_the_code_hash_moves_with_the_code_of_a_run_and_with_nothing_else(tmp_path: Path):
    package = tmp_path / "fplstudy"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_hash_of(package) == code_hash_of(PACKAGE) == code_hash()
    closure = import_closure(RUN_MODULES, package)
    inside = [package / rel for rel in closure if rel.endswith(".py")]
    outside = [p for p in package.rglob("*.py") if p.relative_to(package).as_posix() not in closure]
    assert {"figures.py", "cli.py", "tables.py"} <= {p.name for p in outside}
    assert {"engine.py", "ledger.py"} <= {p.name for p in inside}
    start = code_hash_of(package)
    for path in outside:  # figures, tables, the command line, the teaching helpers: a run does not execute them
        path.write_text(path.read_text() + "\n_edited = 1\n")
    assert code_hash_of(package) == start
    for path in inside:  # a comment, a blank line, a docstring: not what a run executes
        text = path.read_text()
        path.write_text("# edited\n" + text.replace('"""', '"""edited ', 1) + "\n\n# edited\n")
    assert code_hash_of(package) == start
    profiles = package / "facts" / "profiles" / "devices.yaml"
    profiles.write_text(profiles.read_text() + "\n# a comment\n")
    assert code_hash_of(package) == start
    text = profiles.read_text()  # where a number comes from, not what it is: a run computes the same
    reworded = text.replace('source: "', 'source: "reworded ').replace("status: E", "status: U")
    reworded = reworded.replace("description: ", "description: reworded ")
    assert reworded.count("reworded") > 10 and "status: U" in reworded
    profiles.write_text(reworded)
    assert code_hash_of(package) == start
    profiles.write_text(text.replace("value: 6.4,", "value: 6.5,", 1))  # one number: a run prices otherwise
    assert code_hash_of(package) != start
    profiles.write_text(text)
    for path in [*inside, profiles]:  # one statement, or one profile entry more: a run may compute otherwise
        text = path.read_text()
        path.write_text(text + ("\n_edited = 1\n" if path.suffix == ".py" else "\nedited: {}\n"))
        assert code_hash_of(package) != start, path.name
        path.write_text(text)
    assert code_hash_of(package) == start


def test_normalized_yaml_keeps_a_node_called_source(tmp_path: Path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("source: a site\nnodes:\n  source: {device: rpi4}\n")
    two.write_text("source: another site\nnodes:\n  source: {device: rpi4}\n")
    assert normalized_code(one) == normalized_code(two)
    two.write_text("nodes:\n  source: {device: rpi5}\n")
    assert normalized_code(one) != normalized_code(two)


def test_normalized_code_drops_docstrings_comments_and_layout_only(tmp_path: Path):
    one, two = tmp_path / "one.py", tmp_path / "two.py"
    one.write_text('"""Module."""\nimport os\n\n\ndef f(x):\n    """Twice."""\n    return 2 * x  # doubled\n')
    two.write_text('import os\ndef f(x):\n    return 2*x\n')
    assert normalized_code(one) == normalized_code(two)
    two.write_text('import os\ndef f(x):\n    return 3*x\n')
    assert normalized_code(one) != normalized_code(two)
    only_doc = tmp_path / "doc.py"
    only_doc.write_text('def g():\n    """Nothing else."""\n')
    assert normalized_code(only_doc) == b"def g():\n    pass"  # a body left empty still parses
