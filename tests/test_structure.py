"""The package's structure, read from its folders: every folder is a layer of docs/DESIGN.md's table, no
import goes up a layer, no import cycle (function-local and type-checking imports included, so neither can
hide one) and no private name taken from another module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fplstudy"


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("fplstudy", *parts))


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """Every ``fplstudy`` import of a module, wherever it stands (inside functions and under ``if
    TYPE_CHECKING:`` too): ``(module, names, line)``; ``from fplstudy.x import y`` where ``y`` is a module
    counts as an import of ``fplstudy.x.y``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("fplstudy"):
            names = tuple(a.name for a in node.names)
            out.append((node.module, names, node.lineno))
            out += [(f"{node.module}.{n}", (), node.lineno) for n in names if _is_module(f"{node.module}.{n}")]
        elif isinstance(node, ast.Import):
            out += [(a.name, (), node.lineno) for a in node.names if a.name.startswith("fplstudy.")]
    return out


def _is_module(name: str, src: Path = SRC) -> bool:
    rel = Path(*name.split(".")[1:])
    return (src / rel).with_suffix(".py").is_file() or (src / rel / "__init__.py").is_file()


def _graph(src: Path = SRC) -> dict[str, set[str]]:
    graph = {}
    for path in sorted(src.rglob("*.py")):
        name = _module_name(path, src)
        graph[name] = {m for m, _names, _line in _imports(path) if m != name and _is_module(m, src)
                       and not name.startswith(m + ".")}  # a module does not depend on its own package
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def _layers(design: Path = ROOT / "docs" / "DESIGN.md") -> list[tuple[str, list[str]]]:
    """The rows of docs/DESIGN.md's structure table, top (lowest layer) first: ``(layer, places)``, a place
    being a top-level module file (``config.py``) or a folder (``facts/``)."""
    text = design.read_text()
    table = text[text.index("| layer | folder | owns |"):].split("\n\n", 1)[0].splitlines()[2:]
    return [(row.split("|")[1].strip(), re.findall(r"`([a-z_]+(?:\.py|/))`", row.split("|")[2])) for row in table]


def _rank(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """The row of a module: its folder's (``fplstudy.facts.models`` → ``facts/``) or its file's."""
    parts = module.split(".")[1:]
    place = f"{parts[0]}/" if len(parts) > 1 or (SRC / parts[0]).is_dir() else f"{parts[0]}.py" if parts else None
    for i, (_layer, places) in enumerate(layers):
        if place in places:
            return i
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_inside_functions_and_for_type_checking_count(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fplstudy.plans.plan import Plan\n"
                   "def f():\n    from fplstudy.train.engine import train\n")
    assert [m for m, _n, _l in _imports(mod)] == ["fplstudy.plans.plan", "fplstudy.train.engine"]


def test_every_folder_and_top_module_is_a_layer_of_the_design_table():
    layers = _layers()
    places = {p for _layer, ps in layers for p in ps}
    here = {f"{p.name}/" for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    here |= {p.name for p in SRC.glob("*.py") if p.name != "__init__.py"}
    assert len(layers) >= 8 and [layer for layer, _ in layers][:2] == ["keys", "facts"]
    assert here == places, (f"folders or modules missing from docs/DESIGN.md's structure table: {sorted(here - places)}; "
                            f"named there but absent: {sorted(places - here)}")


def test_no_import_goes_up_a_layer():
    graph, layers = _graph(), _layers()
    up = [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
          if m != "fplstudy" and (rm := _rank(m, layers)) is not None and (rd := _rank(d, layers)) is not None
          and rd > rm]
    assert not up, f"imports that go up docs/DESIGN.md's layers: {up}"
    assert _rank("fplstudy.costs.ledger", layers) < _rank("fplstudy.train.engine", layers)


def test_an_import_up_a_layer_or_around_a_cycle_is_caught(tmp_path):
    """The checks on a hand-made package: a facts module importing the engine, and a type-checking cycle."""
    src = tmp_path / "fplstudy"
    for rel, code in {"__init__.py": "", "config.py": "", "facts/__init__.py": "", "train/__init__.py": "",
                      "facts/models.py": "from fplstudy.train.engine import train\n",
                      "train/engine.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from fplstudy.facts import models\ndef train(): pass\n"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(code)
    graph = _graph(src)
    assert graph["fplstudy.facts.models"] == {"fplstudy.train.engine"}
    assert _cycle(graph) == ["fplstudy.facts.models", "fplstudy.train.engine", "fplstudy.facts.models"]


def test_no_import_cycle_counting_function_local_and_type_checking_imports():
    graph = _graph()
    assert "fplstudy.plans.program" in graph["fplstudy.train.engine"]
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_no_private_name_is_imported_from_another_module():
    private = [f"{path.relative_to(SRC)}:{line}: {mod}.{n}" for path in sorted(SRC.rglob("*.py"))
               for mod, names, line in _imports(path) for n in names if n.startswith("_")]
    assert not private, private


def test_every_benchmark_script_imports(tmp_path):
    """Benchmarks run by hand, never in the suite: a renamed or moved name would break them unseen."""
    import subprocess
    import sys

    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    assert len(scripts) >= 5
    code = ("import importlib.util, sys\n"
            "for path in sys.argv[1:]:\n"
            "    spec = importlib.util.spec_from_file_location('bench', path)\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, scripts)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
