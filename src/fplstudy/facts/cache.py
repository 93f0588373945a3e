"""fplstudy's caches on disk: what takes seconds to compute and never changes for the same inputs and code
(a model's FLOP profile, a dataset's split), kept between processes as small JSON files.

An entry is named by a digest of everything its value depends on (the arguments, library versions, the
bytes of the code that computes it), so an entry is never read by code that would compute otherwise. An
entry that cannot be read is computed again; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fplstudy.paths import honour_umask

CACHE_VARIABLE = "FPLSTUDY_CACHE"  # the folder of fplstudy's caches; empty: no cache on disk


def cache_dir(kind: str) -> Path | None:
    """The folder of one cache: ``$FPLSTUDY_CACHE/<kind>``, else ``$XDG_CACHE_HOME/fplstudy/<kind>``
    (``~/.cache/fplstudy/<kind>``); None when ``FPLSTUDY_CACHE`` is empty."""
    root = os.environ.get(CACHE_VARIABLE)
    if root is not None:
        return Path(root) / kind if root.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fplstudy" / kind


def entry(kind: str, name: str, key: Any, code: tuple[Path, ...] = ()) -> Path | None:
    """The file of the entry ``name`` for ``key`` (JSON-serialisable) computed by the sources ``code``."""
    folder = cache_dir(kind)
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps(key).encode())
    for path in code:
        digest.update(path.read_bytes())
    return folder / f"{name}-{digest.hexdigest()[:24]}.json"


def read(path: Path | None) -> Any:
    """The value kept in ``path``, or None when there is none or it cannot be read."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write(path: Path | None, value: Any) -> None:
    """Keep ``value`` in ``path`` (atomically: readers see the old file or the new)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        honour_umask(fd)  # the mode an ordinary open gives, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
