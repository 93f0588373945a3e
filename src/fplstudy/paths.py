"""The project's folders, in one place (notebooks and scripts import these, never retype them)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def find_repo_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: this package) that holds ``dvc.yaml``.

    Returns:
        The repository root, or None when fplstudy runs from an installed copy outside a checkout.
    """
    here = (start or PACKAGE).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "src" / "fplstudy").is_dir():
            return folder
    return None


ROOT = find_repo_root()
DATA = (ROOT / "data") if ROOT else Path.cwd() / "data"
RESULTS = (ROOT / "results") if ROOT else Path.cwd() / "results"
RUNS = RESULTS / "runs"
FIGURES = (ROOT / "figures") if ROOT else Path.cwd() / "figures"
NOTEBOOKS = (ROOT / "notebooks") if ROOT else None
