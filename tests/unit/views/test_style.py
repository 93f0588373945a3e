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
    assert list(style.KIND_PALETTE) == list(style.KIND_ORDER)
    # relay (only on a topology) takes the colour after idle's, so the other kinds keep theirs
    in_colour_order = [k for k in style.KIND_ORDER if k != "relay"] + ["relay"]
    assert [style.KIND_PALETTE[k] for k in in_colour_order] == list(sns.color_palette("colorblind",
                                                                                       len(style.KIND_ORDER)))
    assert list(style.PALETTE.values()) == list(sns.color_palette("colorblind", len(style.STRATEGY_ORDER)))
    assert set(style.MESSAGE_KINDS) < set(style.KIND_ORDER)
    assert len(set(style.MARKERS.values())) == len(style.STRATEGY_ORDER)


def test_study_figures_use_the_same_colours():
    from fplstudy.views import figures as plots

    assert dict(plots.KIND_PALETTE) == style.KIND_PALETTE and dict(plots.PALETTE) == style.PALETTE
    assert plots.MARKERS == style.MARKERS and tuple(plots.KIND_ORDER) == style.KIND_ORDER


def test_figure_modules_leave_the_backend_alone(tmp_path):
    """Importing every fplstudy module, and saving a plan picture and a testbed parity figure, keep the backend a
    user chose."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil
        import matplotlib
        import fplstudy
        before = matplotlib.get_backend()
        for module in pkgutil.iter_modules(fplstudy.__path__):  # every module of the package
            importlib.import_module("fplstudy." + module.name)
        from fplstudy.config import make_config
        from fplstudy.plans.plan import resolve
        from fplstudy.views.planfig import draw_plan
        after_import = matplotlib.get_backend()
        draw_plan(resolve(make_config({{"strategy": "mp", "nodes": 2, "max_train_samples": 200}})),
                  path={str(tmp_path / "plan.png")!r})
        import pandas as pd
        from fplstudy.testbed.emulation import parity_figure
        trace = pd.DataFrame({{"warmup": [True, False, False], "round": [0, 1, 1], "node": ["n0", "n0", "n1"],
                              "predicted_round_s": [1.0, 2.0, 2.0], "measured_round_s": [1.5, 2.2, 2.2],
                              "predicted_busy_s": [0.5, 1.0, 0.7], "measured_busy_s": [0.6, 1.1, 0.8]}})
        parity_figure([("fl", trace)], {str(tmp_path / "parity.png")!r})
        print(before, after_import, matplotlib.get_backend())
    """)
    env = {"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "svg", "svg"]
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "parity.png").read_bytes()[:4] == b"\x89PNG"
