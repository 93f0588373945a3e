"""The colours and markers that every figure of fplstudy shares.

One palette for the kinds of work and messages (``forward`` … ``idle``: the stacked bars of the study's
figures, the arrows of the plan picture and the teaching panel's energy bars) and one for the
strategies (colour and marker, so the figures also read in greyscale). Both are seaborn's
colour-blind-safe ``colorblind`` palette, written out so that drawing a plan does not need seaborn:
the kinds' here, the strategies' in :data:`fplstudy.views.looks.LOOKS` (each strategy's colour and
marker; its place in the legends is the registry's), from which this module builds the tables the
figures read; ``tests/unit/views/test_style.py`` checks the values against seaborn's.

Importing this module does not import pyplot and never chooses a matplotlib backend.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.colors import to_rgb

from fplstudy.plans.events import KINDS
from fplstudy.plans.strategies import LABEL_ORDER, LEGEND_ORDER
from fplstudy.views.looks import LOOKS

# seaborn's "colorblind" palette, in seaborn's order
COLORBLIND = ("#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC", "#CA9161", "#FBAFE4", "#949494",
              "#ECE133", "#56B4E9")

STRATEGY_ORDER = LEGEND_ORDER  # strategies in every legend (centralized, mp, fl, sl, sfl, fpl)
PALETTE = {s: to_rgb(LOOKS[s].colour) for s in STRATEGY_ORDER}  # strategy -> RGB
MARKERS = {s: LOOKS[s].marker for s in STRATEGY_ORDER}

# kinds of a ledger row in every legend: fplstudy.plans.events.KINDS (compute, messages, forwarding, waiting)
# kind -> RGB; relay (only on a topology) takes the colour after idle's, so the others keep theirs
_KIND_COLOURS = dict(zip((*(k for k in KINDS if k != "relay"), "relay"), (to_rgb(c) for c in COLORBLIND)))
KIND_PALETTE = {k: _KIND_COLOURS[k] for k in KINDS}

# The legend labels (fplstudy.plans.strategies.LABEL_ORDER: centralized, mp, fl, sl, sfl, fpl-shared,
# fpl-adapter, fpl-concat) and each one's colour and marker.


def _look(label: str) -> tuple[str, str]:
    """``(colour, marker)`` of a legend label: its strategy's, or its junction's (``fpl-adapter``)."""
    name, _, junction = label.partition("-")
    look = LOOKS[name]
    return (look.junctions or {}).get(junction, (look.colour, look.marker))


_LOOKS = {label: _look(label) for label in LABEL_ORDER}
LABEL_PALETTE = {label: to_rgb(colour) for label, (colour, _) in _LOOKS.items()}  # label -> RGB
LABEL_MARKERS = {label: marker for label, (_, marker) in _LOOKS.items()}

DPI = 150  # fixed, so the PNG bytes do not depend on the matplotlib rc of the machine

# The formats save_figure writes with matplotlib alone (pgf needs LaTeX, eps and ps Ghostscript for some
# options), each with the mark by which a file of it is recognised as save_figure's: the PNG signature (its
# PNG carries no software tag), the PDF backend's producer line (in the document info, near the end) and the
# SVG backend's creator line (in the metadata, near the start).
FIGURE_FORMATS = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"Matplotlib pdf backend", "svg": b"Matplotlib v"}
_MARK_BYTES = 65536  # where a mark is looked for: the first (png, svg) or last (pdf) bytes of the file


def is_saved_figure(path: str | Path) -> bool:
    """Whether the file ``path`` is a figure as :func:`save_figure` writes it in the format its suffix names
    (:data:`FIGURE_FORMATS`), so that writing a figure over it replaces a figure and nothing else."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    if kind not in FIGURE_FORMATS or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            if kind == "pdf":
                if fh.read(5) != b"%PDF-":
                    return False
                fh.seek(max(0, path.stat().st_size - _MARK_BYTES))
            head = fh.read(_MARK_BYTES)
    except OSError:
        return False
    return head.startswith(FIGURE_FORMATS[kind]) if kind == "png" else FIGURE_FORMATS[kind] in head


def save_figure(fig, path: str | Path, *, tight: bool = False) -> Path | None:
    """Save ``fig`` (a PNG, or the format of ``path``'s suffix) with a fixed dpi and, for a PNG, no
    software/version metadata (same bytes on every identical run), creating the folder; the file is written whole or not at all (a temporary file
    renamed). Every figure of fplstudy is saved here. ``fig`` None (no data for it) writes nothing.

    Args:
        fig: a matplotlib figure.
        path: the file to write (``.png``; ``.svg`` and ``.pdf`` too).
        tight: crop to what is drawn (``bbox_inches="tight"``).

    Returns:
        The path written, or None.
    """
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = path.suffix.lstrip(".").lower() or "png"
    meta = {"metadata": {"Software": None}} if kind == "png" else {}  # no version stamp: same bytes
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format=kind, dpi=DPI, **meta, **({"bbox_inches": "tight"} if tight else {}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
