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

# Plans that share a legend label but differ in another swept key (an FPL shape, a junction position, a link)
# are told apart by variant labels, ``<label> <variant>`` (``fpl-adapter branches2-branch_stages2``): each keeps its
# label's hue in a darker or lighter shade and takes a marker of its own.
VARIANT_MARKERS = ("X", "P", "*", "h", "8", "p", "<", ">")


def variant_styles(labels) -> tuple[list[str], dict[str, tuple], dict[str, str]]:
    """Order, colours and markers of legend labels that may carry variants (``<label> <variant>``).

    Args:
        labels: the labels a figure draws (any order, repeats allowed).

    Returns:
        ``(order, palette, markers)``: base labels in :data:`LABEL_ORDER` order, each followed by its variants
        (sorted); a base label keeps :data:`LABEL_PALETTE` and :data:`LABEL_MARKERS`; its variants take shades
        of its colour, alternately darker and lighter, and :data:`VARIANT_MARKERS` in turn.
    """
    present = set(labels)
    order, palette, markers = [], {}, {}
    for base in LABEL_ORDER:
        variants = sorted(lab for lab in present if lab.startswith(base + " "))
        if base in present:
            order.append(base)
            palette[base], markers[base] = LABEL_PALETTE[base], LABEL_MARKERS[base]
        r, g, b = LABEL_PALETTE[base]
        for i, lab in enumerate(variants):
            f = 0.45 + 0.25 * (i // 2) / max(1, len(variants))  # how far from the base colour
            shade = ((r * (1 - f), g * (1 - f), b * (1 - f)) if i % 2 == 0 else
                     (r + (1 - r) * f, g + (1 - g) * f, b + (1 - b) * f))
            order.append(lab)
            palette[lab], markers[lab] = shade, VARIANT_MARKERS[i % len(VARIANT_MARKERS)]
    return order, palette, markers


def strategy_handles(strategies) -> list:
    """Legend handles of ``strategies``: each one's line, colour and marker, labelled with its short name
    (``FL``, ``MP``; :data:`fplstudy.views.looks.LOOKS`)."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=PALETTE[s], marker=MARKERS[s], label=LOOKS[s].short) for s in strategies]


def legend_below(fig, handles, *, title: str | None = None, ncols: int | None = None, fontsize: float = 8):
    """One legend for the whole figure, below its panels and off every axes' data: ``fig`` must use
    constrained layout (``layout="constrained"``), which makes room for it.

    Returns:
        The legend.
    """
    return fig.legend(handles=handles, loc="outside lower center", ncols=ncols or len(handles), title=title,
                      fontsize=fontsize, title_fontsize=fontsize)


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
