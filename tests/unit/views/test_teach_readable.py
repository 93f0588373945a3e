"""The teaching panel reads at 7–8 nodes and compares like with like: text at least ``MIN_FONT`` points,
no two labels on top of each other, the energy legend beside the bars, reference plans priced on the
panel's own device and link, numbers with units, plan names in full and objectives in words."""

from __future__ import annotations

import re
from itertools import combinations
from types import SimpleNamespace

import pandas as pd
import pytest
from matplotlib.text import Text

from fplstudy.costs.search import OBJECTIVES
from fplstudy.facts.profiles import load_profiles
from fplstudy.views import teach

SMALL = {"max_train_samples": 200, "rounds": 1}


@pytest.fixture(scope="module")
def space():
    return teach.SliderSpace(SMALL, tuple(range(2, 9)))


@pytest.fixture(scope="module")
def reference():
    return teach.walk(SMALL, 4)[1]


def _figures_at(space, reference, nodes: int):
    """The panel's figure for every branch count at ``nodes`` (the other sliders settled)."""
    for branches in space.options("branches", {"nodes": nodes}):
        position, _ = space.settle({"nodes": nodes, "branches": branches, "junction_at": 1, "junction": "adapter"},
                                   "branches")
        dry = teach.price_choice(teach.slider_values(SMALL, **position, device="rpi4", link="wifi5"))
        fig = teach.draw_choice(dry, reference, "rpi4, wifi5")
        fig.canvas.draw()
        yield branches, fig


def _texts(container) -> list[Text]:
    """The texts drawn in a figure or axes: visible, not empty, and no tick label of a tick outside its
    axis's view (matplotlib keeps those but does not draw them)."""
    undrawn = set()
    for ax in container.findobj(lambda a: hasattr(a, "xaxis") and hasattr(a, "yaxis")):
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = (hi - lo) * 1e-9
            undrawn |= {id(tick.label1) for tick, loc in zip(axis.get_major_ticks(), axis.get_majorticklocs())
                        if not lo - span <= loc <= hi + span}
    return [t for t in container.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


@pytest.mark.parametrize("nodes", [7, 8])
def test_panel_figure_reads_at_many_nodes(space, reference, nodes):
    """Every text of the figure is at least MIN_FONT points (the panel shows the PNG at its own size),
    inside the figure, and no two texts of the two charts or of the plan picture's words overlap; the
    energy legend covers no bar."""
    for branches, fig in _figures_at(space, reference, nodes):
        renderer = fig.canvas.get_renderer()
        texts = _texts(fig)
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < teach.MIN_FONT]
        assert not small, (branches, small)
        frame = fig.bbox
        for t in texts:
            box = t.get_window_extent(renderer)
            assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= frame.x1 + 1 and box.y1 <= frame.y1 + 1, \
                (branches, t.get_text())
        plan_ax, energy_ax, trade_ax = fig.axes
        for ax in (energy_ax, trade_ax):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(ax)]
            clashes = [(a, b) for (a, ba), (b, bb) in combinations(boxes, 2) if _overlap(ba, bb) > 1.0]
            assert not clashes, (nodes, branches, clashes)
        bars = [p.get_window_extent(renderer) for p in energy_ax.patches]
        legend = energy_ax.get_legend().get_window_extent(renderer)
        assert len(bars) >= nodes and not any(_overlap(legend, bar) > 0 for bar in bars)
        points = trade_ax.transData.transform([o for c in trade_ax.collections for o in c.get_offsets()])
        for ann in trade_ax.texts:  # no label sits on a point
            box = ann.get_window_extent(renderer)
            assert not any(box.x0 < x < box.x1 and box.y0 < y < box.y1 for x, y in points), ann.get_text()


def test_reference_plans_are_priced_on_the_panels_device_and_link(reference, monkeypatch):
    profiles = load_profiles()
    panel = teach.slider_panel(SMALL, reference, sorted(profiles.devices), sorted(profiles.links), nodes=8)
    drawn = []
    original = teach.draw_choice
    monkeypatch.setattr(teach, "draw_choice", lambda dry, ref, where="": drawn.append((ref, where)) or
                        original(dry, ref, where))
    panel.controls["link"].value = "lora"
    ref, where = drawn[-1]
    device = panel.position()["device"]
    fresh = teach.walk({**SMALL, "device": device, "link": "lora"}, 4)[1]
    before = teach.walk({**SMALL, "device": device, "link": "wifi5"}, 4)[1]
    assert "lora" in where
    assert list(ref["plan"]) == list(fresh["plan"])
    assert ref["energy_j_per_round"].tolist() == pytest.approx(fresh["energy_j_per_round"].tolist())
    talk = ref["bytes_per_round"] > 0  # every plan that sends messages costs otherwise on another link
    assert talk.sum() >= 5
    assert all(abs(a - b) > 1e-6 * b for a, b in zip(ref.loc[talk, "energy_j_per_round"],
                                                       before.loc[talk, "energy_j_per_round"]))
    other = next(d for d in sorted(profiles.devices) if d != device)
    panel.controls["device"].value = other
    ref, where = drawn[-1]
    fresh = teach.walk({**SMALL, "device": other, "link": "lora"}, 4)[1]
    assert other in where
    assert ref["energy_j_per_round"].tolist() == pytest.approx(fresh["energy_j_per_round"].tolist())


def test_numbers_carry_units_and_prefixes(reference):
    assert teach.si(2595704832, "FLOP") == "2.60 GFLOP"
    assert teach.si(0.0123, "J") == "12.3 mJ"
    assert teach.si(999_700, "B") == "1.00 MB"  # rounding up moves to the next prefix
    assert teach.si(0, "B") == "0 B"
    dry = teach.price_choice(teach.slider_values(SMALL, 6, 2, 2, "adapter", "rpi4", "wifi5"))
    costs = teach.node_cost_table(dry)
    shown = teach.readable_table(costs)
    prefix = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "µ": 1e-6}
    for column, unit in (("flops", "FLOP"), ("energy_j", "J"), ("bytes_tx", "B")):
        heading, _ = teach.COST_COLUMNS[column]
        for raw, text in zip(costs[column], shown[heading]):
            number, scale = re.fullmatch(rf"([\d.]+) ([kMGTmµ]?){unit}", text).groups()
            assert float(number) * prefix[scale] == pytest.approx(raw, rel=5e-3, abs=1e-12)
    assert not any("_" in heading for heading in shown.columns)


def _search(rows: list[dict]):
    front = pd.DataFrame(rows)
    return SimpleNamespace(front=front, plans=front, seconds=0.1, objectives=OBJECTIVES)


LONG = {"strategy": "fpl", "nodes": 8, "branches": 5, "branch_stages": 1, "trunk_stages": 3, "junction": "shared",
        "junction_at": 2, "sync": "fedavg", "sync_every": 2, "nodes_used": 8, "bytes_per_round": 1.2e7,
        "bytes_total": 1.2e7, "energy_j_site": 51.0, "makespan_s": 0.8, "memory_bytes_max_node": 3.1e6}


def test_search_table_shows_plan_names_in_full():
    res = _search([LONG, {**LONG, "sync_every": 3, "energy_j_site": 52.0}])
    names = [teach.readable_name(row) for _, row in res.front.iterrows()]
    assert min(len(n) for n in names) > 60  # longer than pandas' default column width
    html = teach.html_table(teach.front_table(res))
    for name in names:
        assert f">{name}<" in html
    assert "…" not in html and "..." not in html


def test_lessons_name_objectives_in_words(reference):
    res = _search([LONG, {**LONG, "energy_j_site": 40.0, "makespan_s": 2.0}])
    text = teach.lessons(reference.assign(plan=reference["strategy"]), res)
    for column in OBJECTIVES:
        assert column not in text
    assert f"({teach.si(40.0, 'J')})" in text
