"""The package's structure, read from its source: no import cycle (function-local imports included, so a
local import cannot hide one) and no private name taken from another module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from fplstudy.study.params import runtime_nodes

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fplstudy"


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """Every ``fplstudy`` import of a module: ``(module, names, line)``, wherever it stands at run time."""
    out = []
    for node in runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("fplstudy"):
            names = tuple(a.name for a in node.names)
            if node.module == "fplstudy":  # `from fplstudy import engine`
                for name in names:
                    out.append((f"fplstudy.{name}", (), node.lineno))
            else:
                out.append((node.module, names, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, (), node.lineno) for a in node.names if a.name.startswith("fplstudy.")]
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(SRC.glob("*.py")):
        name = f"fplstudy.{path.stem}" if path.stem != "__init__" else "fplstudy"
        graph[name] = {m for m, _names, _line in _imports(path) if m != name}
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


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_inside_functions_count_and_type_checking_ones_do_not(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fplstudy.plans.plan import Plan\n"
                   "def f():\n    from fplstudy.train.engine import train\n")
    assert [m for m, _n, _l in _imports(mod)] == ["fplstudy.train.engine"]


def test_no_import_cycle_counting_function_local_imports():
    graph = _graph()
    assert "fplstudy.train.engine" in graph and "fplstudy.plans.program" in graph["fplstudy.train.engine"]
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_no_private_name_is_imported_from_another_module():
    private = [f"{path.name}:{line}: {mod}.{n}" for path in sorted(SRC.glob("*.py"))
               for mod, names, line in _imports(path) for n in names if n.startswith("_")]
    assert not private, private


def test_costing_never_climbs_into_the_training_engine():
    """What depends only on the plan (the round program, shapes, costs, memory) is computed without
    importing the engine."""
    graph = _graph()

    def closure(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo += graph.get(n, ())
        return seen

    for module in ("fplstudy.plans.program", "fplstudy.costs.dryrun", "fplstudy.costs.ledger", "fplstudy.costs.memory",
                   "fplstudy.costs.makespan"):
        assert "fplstudy.train.engine" not in closure(module), module


def _layers() -> list[list[str]]:
    """The module rows of docs/DESIGN.md's structure table ("Structure: which module owns what")."""
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    table = text[text.index("| layer | modules | owns |"):].split("\n\n", 1)[0].splitlines()[2:]
    return [[f"fplstudy.{m}" for m in re.findall(r"`([a-z_]+)`", row.split("|")[2])] for row in table]


def test_every_module_stands_in_the_design_tables_rows_and_imports_only_its_row_or_above():
    graph, layers = _graph(), _layers()
    row = {m: i for i, mods in enumerate(layers) for m in mods}
    assert len(layers) >= 10 and row["fplstudy.plans.program"] < row["fplstudy.train.engine"]
    unplaced = sorted(set(graph) - set(row) - {"fplstudy"})
    assert not unplaced, f"modules missing from docs/DESIGN.md's structure table: {unplaced}"
    assert not set(row) - set(graph), f"the table names modules that do not exist: {sorted(set(row) - set(graph))}"
    up = [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
          if m in row and d in row and row[d] > row[m]]
    assert not up, f"imports that go up docs/DESIGN.md's structure table: {up}"


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
