"""Which code a run and a DVC stage are made of: import closures, the code hash of the training
code, and the ``deps`` lists of ``dvc.yaml``."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
from pathlib import Path

import yaml

from fplstudy.config import StudyError, YamlError, read_yaml_file
from fplstudy.paths import PACKAGE
from fplstudy.train.results import atomic_write_text

# Files of the package that a module reads besides its source (a folder stands for every file in it). They
# decide what the module computes (the shipped device and link profiles price every run), so they count as
# its code. tests/unit/study/test_study.py fails when the package holds a data file that no module here claims.
MODULE_DATA: dict[str, tuple[str, ...]] = {"fplstudy.facts.profiles": ("facts/profiles",),
                                  "fplstudy.facts.topology": ("facts/topologies",)}


# What a run is made by: the module whose function a worker process runs (:func:`_worker_run`, which
# imports everything else it needs). :func:`code_hash` covers its import closure.
RUN_MODULES = ("fplstudy.study.pool",)
# The stage entry that hashes the training code (writes :func:`code_hash` into a file): it reads the sources
# of RUN_MODULES' closure, so they are its code too. A stage that depends on that file (the train stages)
# lists no package code of its own: the file changes exactly when the training code does.
CODE_ENTRY = "fplstudy.stages.code"
DVC_FILE = "dvc.yaml"

_ENTRY = re.compile(r"python3? -m (fplstudy(?:\.\w+)*)")  # a stage's Python entry module
_NOTEBOOK = re.compile(r"\bpapermill\b[^&|]*?\s(\S+\.ipynb)")  # the notebook papermill runs (its input)
_SCRIPT = re.compile(r"\bjupytext\b[^&|]*?\s(\S+\.py)\s*\|")  # a percent script Jupytext converts for papermill


def _notebooks(cmd: str) -> list[str]:
    """The notebooks a stage command runs, one per command of the ``&&`` chain: the percent script piped
    through Jupytext into papermill (``jupytext ... notebooks/x.py | papermill ... - out.ipynb``), else
    papermill's input notebook."""
    found = []
    for part in cmd.split("&&"):
        found += _SCRIPT.findall(part) or _NOTEBOOK.findall(part)
    return found


def _module_file(module: str, package: Path) -> Path | None:
    """The source of an fplstudy module (``fplstudy.x``: ``x.py`` or ``x/__init__.py``), None if not one."""
    parts = module.split(".")[1:]
    candidates = [package.joinpath(*parts).with_suffix(".py")] if parts else []
    for path in (*candidates, package.joinpath(*parts, "__init__.py")):
        if path.is_file():
            return path
    return None


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (names for signatures, never imported)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)


def imported_modules(source: str, module: str = "", package: Path = PACKAGE) -> set[str]:
    """The fplstudy modules that importing and running ``source`` imports, function-local imports
    included (``ast``: every ``import`` statement anywhere in the code but under ``if TYPE_CHECKING:``),
    with the packages above them (importing ``fplstudy.x`` runs ``fplstudy/__init__.py`` first).

    Args:
        source: Python source.
        module: its dotted name (resolves relative imports; empty for a notebook or script).
        package: the folder of the ``fplstudy`` package.

    Raises:
        SyntaxError: ``source`` is not Python.
        StudyError: a relative import in code that is no module of the package.
    """
    names: set[str] = set()
    for node in runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if not module.startswith("fplstudy"):
                    raise StudyError(f"a relative import (from {'.' * node.level}{base} import ...) outside the "
                                     f"fplstudy package; write `from fplstudy.<module> import ...`")
                here = module.split(".")
                is_package = _module_file(module, package) == package.joinpath(*here[1:], "__init__.py")
                up = here if is_package else here[:-1]
                up = up[:len(up) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if parts[0] == "fplstudy" and _module_file(prefix, package) is not None:
                found.add(prefix)
    return found


def notebook_source(path: str | Path) -> str:
    """The Python of a notebook's code cells, IPython's ``%magic`` and ``!shell`` lines left out; a notebook
    kept as a percent script (``.py``, Jupytext) is Python as it is (its magics are comments)."""
    if Path(path).suffix == ".py":
        return Path(path).read_text(encoding="utf-8")
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            lines += [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
            lines.append("")
    return "\n".join(lines)


def import_closure(modules: list[str] | tuple[str, ...], package: Path = PACKAGE) -> list[str]:
    """Every file of the package that running ``modules`` reads as code: the sources of the modules and of
    every fplstudy module they import, transitively (function-local imports included), and the data files
    those modules read (:data:`MODULE_DATA`).

    Args:
        modules: dotted names of fplstudy modules (e.g. the stage's entry module and a notebook's imports).
        package: the folder of the ``fplstudy`` package.

    Returns:
        Paths relative to ``package``, POSIX-style and sorted (a data folder as the folder, e.g. ``profiles``).

    Raises:
        StudyError: a name that is no module of the package.
    """
    todo, seen = list(modules), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, package)
        if path is None:
            raise StudyError(f"module {name!r}: not a module of the fplstudy package at {package}; "
                             f"name one of its files (e.g. fplstudy.study.params)")
        seen.add(name)
        todo += [m for m in imported_modules(path.read_text(encoding="utf-8"), name, package) if m not in seen]
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) not in seen]
    files = {_module_file(name, package).relative_to(package).as_posix() for name in seen}
    files.update(data for name in seen for data in MODULE_DATA.get(name, ()))
    return sorted(files)


@functools.cache
def code_hash() -> str:
    """SHA-256 (first 16 hex digits) of the code a run is made by (:func:`code_hash_of` this package),
    computed once per process."""
    return code_hash_of(PACKAGE)


def code_hash_of(package: Path) -> str:
    """SHA-256 (first 16 hex digits) of the training code in ``package``: the files of
    :func:`import_closure` of :data:`RUN_MODULES` (every module a worker imports to train and price a run)
    and the shipped profiles and topologies they read, each under its path in the package and in
    :func:`normalized_code` form, so only what a run executes counts: a docstring, a comment or the layout
    of a line leaves it unchanged, and so does any edit of code a run does not import (tables, findings,
    figures, the command line, the notebooks). A plan's settings are compared by
    :func:`fplstudy.study.pool.run_complete` separately."""
    digest = hashlib.sha256()
    for rel in import_closure(RUN_MODULES, package):
        path = package / rel
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            if "__pycache__" not in file.parts:
                digest.update(file.relative_to(package).as_posix().encode() + b"\0" + normalized_code(file) + b"\0")
    return digest.hexdigest()[:16]


def normalized_code(path: Path) -> bytes:
    """What a file contributes to the code hash: for Python, its syntax tree without docstrings, written
    back by :func:`ast.unparse` (comments and layout do not survive the parse); for YAML data, its content
    as canonical JSON (comments and key order left out) without its prose (:data:`PROSE_KEYS`: sources,
    status letters, descriptions); other files as they are.

    The syntax tree is used rather than compiled code objects because bytecode differs between Python
    versions and carries line numbers (a docstring that grows by a line would move every line after it).
    ``ast.unparse`` is stable within a Python minor version, which the study's environment pins.
    """
    text = path.read_bytes()
    if path.suffix == ".py":
        tree = ast.parse(text, filename=str(path))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        return ast.unparse(tree).encode()
    if path.suffix in (".yaml", ".yml"):
        return json.dumps(_without_prose(yaml.safe_load(text)), sort_keys=True, default=str).encode()
    return text


# Keys of a profile or topology file that say where a number comes from and what it is, never what a run
# computes: a reworded source, a new status letter or a clearer description keeps the study's runs as they are.
PROSE_KEYS = frozenset({"source", "status", "description"})


def _without_prose(data):
    """``data`` (parsed YAML) without the :data:`PROSE_KEYS` whose value is text, at any depth (a node
    or a device that happens to be called ``source`` maps to a mapping, and is kept)."""
    if isinstance(data, dict):
        return {k: _without_prose(v) for k, v in data.items() if not (k in PROSE_KEYS and isinstance(v, str))}
    if isinstance(data, list):
        return [_without_prose(v) for v in data]
    return data


def stage_code(cmd: str, root: str | Path = ".", *, hashed: bool = False) -> list[str]:
    """The code a DVC stage command runs, as ``dvc.yaml`` lists it in the stage's ``deps``: the notebook it
    runs through papermill, then the files of :func:`import_closure` of its entry module
    (``python -m fplstudy.X``; for :data:`CODE_ENTRY` also of :data:`RUN_MODULES`, whose sources it hashes)
    and of the fplstudy modules the notebook imports.

    Args:
        cmd: the stage's ``cmd`` (``${...}`` left unexpanded).
        root: the repository root: the notebook's path and ``src/fplstudy`` start there.
        hashed: the stage depends on the training code's hash file (a train stage): its package code is that
            file, so only its notebook is listed.

    Returns:
        Paths relative to ``root``: the notebook first, then ``src/fplstudy/...`` sorted.

    Raises:
        StudyError: the command runs neither an fplstudy module nor a notebook.
    """
    package = Path(root) / "src" / "fplstudy"
    modules = _ENTRY.findall(cmd)
    notebooks = _notebooks(cmd)
    if hashed and notebooks:
        return notebooks
    for notebook in notebooks:
        modules += sorted(imported_modules(notebook_source(Path(root) / notebook), "", package))
    if not modules:
        raise StudyError(f"dvc stage command {cmd!r}: runs no `python -m fplstudy.<module>` and no notebook "
                         f"through papermill that imports fplstudy, so its code cannot be derived; list its "
                         f"deps by hand")
    if CODE_ENTRY in modules:
        modules += RUN_MODULES
    return [*notebooks, *(f"src/fplstudy/{rel}" for rel in import_closure(modules, package))]


def stage_deps(dvc_file: str | Path = DVC_FILE) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Per stage of ``dvc.yaml``: its other deps, the code deps it lists and the code it runs.

    The code deps listed are the stage's deps under ``src/`` or ``notebooks/``; the others (data, tables,
    the check stamp, the training code's hash file) are not code, and :func:`write_stage_deps` keeps them as
    they are. A stage that depends on the hash file written by the :data:`CODE_ENTRY` stage runs only its
    notebook as code of its own (:func:`stage_code` with ``hashed``).

    Returns:
        ``{stage: (other deps, code deps listed, code it runs)}``, the last from :func:`stage_code`.
    """
    dvc_file = Path(dvc_file)
    try:
        doc = read_yaml_file(dvc_file)
    except YamlError as exc:
        raise StudyError(f"{dvc_file}: {exc}; run from the repository root or pass --dvc <file>") from None
    stages = {name: stage.get("do", stage) for name, stage in doc["stages"].items()}  # foreach: under do:
    commands = {name: " && ".join(s["cmd"] if isinstance(s["cmd"], list) else [s["cmd"]]) for name, s in stages.items()}
    hash_files = {next(iter(o)) if isinstance(o, dict) else str(o) for name, s in stages.items()
                  if CODE_ENTRY in _ENTRY.findall(commands[name]) for o in s.get("outs", [])}
    out = {}
    for name, stage in stages.items():
        deps = [str(d) for d in stage.get("deps", [])]
        code = [d for d in deps if d.startswith(("src/", "notebooks/"))]
        out[name] = ([d for d in deps if d not in code], code,
                     stage_code(commands[name], dvc_file.parent, hashed=bool(hash_files & set(deps))))
    return out


def check_stage_deps(dvc_file: str | Path = DVC_FILE) -> list[str]:
    """The stages of ``dvc.yaml`` whose code deps differ from the code they run, each as the lines that say
    so and give the deps to list (empty: every stage is right)."""
    return [f"stage {name}: its deps miss or add code; give it (or run `fplstudy deps --write`):\n"
            f"{_flow_list('  ', 'deps', [*other, *runs])}"
            for name, (other, listed, runs) in stage_deps(dvc_file).items() if sorted(listed) != sorted(runs)]


_DEPS_LINE = re.compile(r"^(?P<indent>[ ]*)deps: \[[^\]]*\]", re.M)


def write_stage_deps(dvc_file: str | Path = DVC_FILE) -> list[str]:
    """Rewrite the ``deps:`` of every stage of ``dvc.yaml`` whose code deps differ from the code it runs
    (:func:`stage_deps`): its other deps first, as they were, then the code. Comments and everything else
    are kept; each stage's ``deps`` must be one flow list (``deps: [a, b]``, lines may wrap).

    Returns:
        The stages rewritten.

    Raises:
        StudyError: ``dvc.yaml`` has a stage without such a ``deps`` list.
    """
    dvc_file = Path(dvc_file)
    deps = stage_deps(dvc_file)
    text = dvc_file.read_text(encoding="utf-8")
    lines = list(_DEPS_LINE.finditer(text))
    if len(lines) != len(deps):
        raise StudyError(f"{dvc_file}: {len(lines)} `deps: [...]` lists for {len(deps)} stages; give every stage "
                         f"one, written as a flow list (deps: [a, b])")
    changed, out, at = [], [], 0
    for (name, (other, listed, runs)), match in zip(deps.items(), lines):
        out.append(text[at:match.start()])
        at = match.end()
        if sorted(listed) == sorted(runs):
            out.append(match.group(0))
            continue
        changed.append(name)
        out.append(_flow_list(match.group("indent"), "deps", [*other, *runs]))
    atomic_write_text(dvc_file, "".join(out) + text[at:])
    return changed


def _flow_list(indent: str, key: str, items: list[str], width: int = 116) -> str:
    """``key: [a, b, ...]`` wrapped at ``width`` characters, continuation lines under the first item."""
    lines, line = [], f"{indent}{key}: ["
    for i, item in enumerate(items):
        word = item + ("," if i < len(items) - 1 else "]")
        if len(line) + len(word) > width and not line.endswith("["):
            lines.append(line.rstrip())
            line = " " * (len(indent) + len(key) + 3)
        line += word + " "
    return "\n".join([*lines, line.rstrip()])
