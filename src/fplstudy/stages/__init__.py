"""One entry per DVC stage (``python -m fplstudy.stages.<stage>``): each reads its parameters, calls the
library and writes the stage's outputs; ``dvc.yaml`` runs them.

Also the check that every entry (these and :mod:`fplstudy.cli`) makes of an output before any work: that it
can be written at all. It lives here, with the entries, rather than in :mod:`fplstudy.paths`, so that it stays
out of the training code's hash (:mod:`fplstudy.study.provenance`): it decides what is refused, not what a
run computes.
"""

from __future__ import annotations

import os
from pathlib import Path

from fplstudy.config import short_repr


def unwritable(path: str | Path, *, folder: bool = False) -> str | None:
    """Why a file (or, with ``folder``, a folder to write files in) cannot be created at ``path``, folders
    above it created as needed; None when it can.

    The nearest existing folder at (a folder) or above ``path`` decides: it must be a folder, not a file,
    that this process may write, which ``os.access`` answers for a read-only file system as well as for
    permissions (a read-only mount refuses root too).

    Returns:
        One clause naming the folder and what is wrong with it, or None when ``path`` can be written.
    """
    path = Path(path).absolute()
    above = path if folder else path.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        return f"{str(above)!r} is a file, not a folder"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"the folder {str(above)!r} is not writable"
    return None


def output_problem(flag: str, path: str, *, folder: bool = False) -> str | None:
    """The one-line refusal of an output a stage cannot write (:func:`unwritable`), checked before the stage
    reads anything; None when ``path`` can be written.

    Args:
        flag: the argument that named ``path`` (``--out``).
        path: the file, or with ``folder`` the folder of files, the stage writes.
        folder: ``path`` is a folder the stage writes files in.
    """
    problem = unwritable(path, folder=folder) if str(path).strip() else "give a path"
    if problem is None:
        return None
    return f"argument {flag}: got {short_repr(path)}; {problem}; choose another {flag}"
