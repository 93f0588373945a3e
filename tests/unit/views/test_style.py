"""One palette for every figure, and figure modules that never choose matplotlib's backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import seaborn as sns

from fplstudy.views import style

ROOT = Path(__file__).resolve().parents[3]


def test_palettes_are_seaborns_colorblind():
    from fplstudy.plans.events import KINDS, TRANSFER_KINDS

    assert list(style.KIND_PALETTE) == list(KINDS)
    # relay (only on a topology) takes the colour after idle's, so the other kinds keep theirs
    in_colour_order = [k for k in KINDS if k != "relay"] + ["relay"]
    assert [style.KIND_PALETTE[k] for k in in_colour_order] == list(sns.color_palette("colorblind", len(KINDS)))
    assert list(style.PALETTE.values()) == list(sns.color_palette("colorblind", len(style.STRATEGY_ORDER)))
    assert set(TRANSFER_KINDS) < set(KINDS)
    assert len(set(style.MARKERS.values())) == len(style.STRATEGY_ORDER)


def test_study_figures_use_the_same_colours():
    from fplstudy.views import figures

    assert dict(figures.KIND_PALETTE) == style.KIND_PALETTE and dict(figures.PALETTE) == style.PALETTE
    assert figures.MARKERS == style.MARKERS


def test_every_strategy_and_label_has_a_look():
    """A strategy added to the registry without a look (title, colour, marker) is named here."""
    from fplstudy.plans.strategies import LABEL_ORDER, STRATEGIES
    from fplstudy.views.looks import LOOKS

    assert set(LOOKS) == set(STRATEGIES), f"strategies without a look in views/looks.py: {set(STRATEGIES) - set(LOOKS)}"
    assert set(style.LABEL_PALETTE) == set(LABEL_ORDER) == set(style.LABEL_MARKERS)
    assert len(set(style.LABEL_PALETTE.values())) == len(LABEL_ORDER)  # every label its own colour


def test_figure_modules_leave_the_backend_alone(tmp_path):
    """Importing every fplstudy module (every folder's too), and saving a plan picture and a testbed parity figure,
    keep the backend a user chose."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil
        import matplotlib
        import fplstudy
        before = matplotlib.get_backend()
        for module in pkgutil.walk_packages(fplstudy.__path__, "fplstudy."):  # every module of the package
            importlib.import_module(module.name)
        from fplstudy.config import make_config
        from fplstudy.plans.plan import resolve
        from fplstudy.views.planfig import draw_plan
        after_import = matplotlib.get_backend()
        draw_plan(resolve(make_config({{"strategy": "mp", "nodes": 2, "max_train_samples": 200}})),
                  path={str(tmp_path / "plan.png")!r})
        import pandas as pd
        from fplstudy.views.style import save_figure
        from fplstudy.views.testbed import parity_figure
        trace = pd.DataFrame({{"warmup": [True, False, False], "round": [0, 1, 1], "node": ["n0", "n0", "n1"],
                              "predicted_round_s": [1.0, 2.0, 2.0], "measured_round_s": [1.5, 2.2, 2.2],
                              "predicted_busy_s": [0.5, 1.0, 0.7], "measured_busy_s": [0.6, 1.1, 0.8]}})
        save_figure(parity_figure([("fl", trace)]), {str(tmp_path / "parity.png")!r})
        print(before, after_import, matplotlib.get_backend())
    """)
    env = {"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "svg", "svg"]
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "parity.png").read_bytes()[:4] == b"\x89PNG"
