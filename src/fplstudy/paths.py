"""The project's folders, in one place: the library and the notebooks take them from here (a notebook's
folder parameters left empty mean :func:`folders`' folders), and ``dvc.yaml`` passes the study's stages
their folders explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def honour_umask(fd: int) -> None:
    """Give a file made by :func:`tempfile.mkstemp` (mode 0600, for the atomic writes: a temporary file
    renamed into place) the mode an ordinary ``open`` would: 0666 less the process's umask."""
    try:  # the umask without changing it (os.umask sets it to read it, which races with other threads)
        status = Path("/proc/self/status").read_text()
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)


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


@dataclass(frozen=True)
class Folders:
    """The folders of one checkout.

    Attributes:
        root: the repository root (``params.yaml`` and ``dvc.yaml`` are there).
    """

    root: Path

    @property
    def data(self) -> Path:
        """Datasets: the DVC-tracked digits (``dvc pull data.dvc``) and torchvision's downloads."""
        return self.root / "data"

    @property
    def results(self) -> Path:
        """The study's tables and run folders (what ``dvc repro`` writes)."""
        return self.root / "results"

    @property
    def notebook_runs(self) -> Path:
        """Where the train notebook writes run folders by default (git-ignored ``runs/``)."""
        return self.root / "runs" / "notebook"

    @property
    def notebook_figures(self) -> Path:
        """Where the trade-offs notebook saves figures by default (git-ignored ``runs/``)."""
        return self.root / "runs" / "figures"


def folders(start: Path | None = None) -> Folders:
    """The folders of the checkout at or above ``start`` (a notebook passes its working directory, the
    checkout papermill or JupyterLab runs in), else of the checkout this package lies in, else of the
    working directory."""
    return Folders((find_repo_root(start) if start is not None else None) or ROOT or Path.cwd())


ROOT = find_repo_root()
DATA = folders().data  # the default data_dir (fplstudy.facts.datasets)
