"""The teaching panel: every slider position reachable on it prices a plan, the ranges follow the
hand-derived rules, a refused position keeps the figure, and the notebook shows its figures inline.

Hand rules for the default cnn (8 layers) on FPL plans with one node per branch: the trunk gets
``nodes - branches`` nodes, each needing at least one of the ``8 - cut`` layers above the cut, so
``1 <= nodes - branches <= 8 - cut``: branches run from ``max(1, nodes - 7)`` to ``nodes - 1`` and the
cut point from 1 to ``8 - (nodes - branches)`` for ``shared`` and ``adapter``; ``concat`` splits the 8
image rows evenly, so its branches divide 8. A person who tried every combination of the old panel
(nodes 2–12, branches 1–11, cut 1–7, three junctions: 2,541) counted 576 plans.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import papermill as pm
import pytest

from fplstudy.facts.profiles import load_profiles
from fplstudy.views import teach

SMALL = {"max_train_samples": 200, "rounds": 1}
ROOT = Path(__file__).resolve().parents[3]
START = {"nodes": 6, "branches": 2, "junction_at": 2, "junction": "adapter"}


@pytest.fixture(scope="module")
def space():
    return teach.SliderSpace(SMALL)


@pytest.fixture(scope="module")
def reference():
    return teach.walk(SMALL, 4)[1]


@pytest.fixture(scope="module")
def panel(reference):
    profiles = load_profiles()
    return teach.slider_panel(SMALL, reference, sorted(profiles.devices), sorted(profiles.links))


def _key(position: dict) -> tuple:
    return tuple(position[s] for s in teach.SHAPE_SLIDERS)


def _reachable(space: teach.SliderSpace, start: dict) -> set[tuple]:
    """Every shape position the panel can reach from ``start``: move any slider to any value it
    offers, through the same :meth:`SliderSpace.move` the panel's sliders call."""
    seen, todo = {_key(start)}, [start]
    while todo:
        position = todo.pop()
        for name in teach.SHAPE_SLIDERS:
            for value in space.options(name, position):
                moved, _ = space.move(position, name, value)
                if _key(moved) not in seen:
                    seen.add(_key(moved))
                    todo.append(moved)
    return seen


def test_space_counts_the_plans_a_person_counted(space):
    # the old panel's 2,541 less the 1,155 with branches >= nodes, which leave no node for the trunk
    assert len(list(space.candidates())) == 2541 - 1155 == 3 * 7 * sum(n - 1 for n in range(2, 13))
    assert len(space.valid) == 576
    assert space.nodes == tuple(range(2, 13))


def test_every_reachable_position_prices_a_plan(space):
    start, _ = space.settle(START)
    assert start == START  # the notebook's default position is a plan
    reachable = _reachable(space, start)
    assert reachable == set(space.valid)  # every plan can be reached, and nothing else
    profiles = load_profiles()
    devices, links = sorted(profiles.devices), sorted(profiles.links)
    for i, (nodes, branches, cut, junction) in enumerate(sorted(reachable)):
        device, link = devices[i % len(devices)], links[i % len(links)]  # every profile, many times over
        dry = teach.price_choice(teach.slider_values(SMALL, nodes, branches, cut, junction, device, link))
        plan = dry.plan
        assert (plan.config.nodes, len(plan.branches), plan.junction_at, plan.junction) == (nodes, branches, cut,
                                                                                                junction)
        assert len(plan.trunk) == nodes - branches and dry.totals["energy_j"] > 0


def test_slider_ranges_follow_the_hand_rules(space):
    for nodes in range(2, 13):
        position = {"nodes": nodes}
        assert space.options("branches", position) == list(range(max(1, nodes - 7), nodes))
        for branches in space.options("branches", position):
            trunk = nodes - branches
            position = {"nodes": nodes, "branches": branches}
            assert space.options("junction_at", position) == list(range(1, 8 - trunk + 1))
            for cut in space.options("junction_at", position):
                junctions = space.options("junction", {**position, "junction_at": cut})
                assert junctions[:2] == ["shared", "adapter"]
                assert "concat" not in junctions or 8 % branches == 0


def test_a_move_settles_the_later_sliders_and_says_why_in_slider_words(space):
    moved, notes = space.move(START, "nodes", 12)
    assert moved == {"nodes": 12, "branches": 5, "junction_at": 1, "junction": "adapter"}
    assert notes[0].startswith("branches 2 → 5: with 12 nodes, branches go from 5 to 11")
    assert notes[1].startswith("cut point 2 → 1: with 12 nodes and 5 branches the trunk has 7 nodes")
    moved, notes = space.move({"nodes": 5, "branches": 3, "junction_at": 1, "junction": "shared"}, "junction_at", 2)
    assert notes == [] and space.options("junction", moved) == ["shared", "adapter"]
    hint = " ".join(space.hints(moved))
    assert "concat splits the image rows evenly" in hint and "branches 1–2, 4" in hint
    for text in notes + space.hints(moved) + space.hints(START):
        for key in ("trunk_stages", "junction_at", "branch_stages", "partition"):
            assert key not in text


def test_panel_offers_only_the_space_and_redraws(panel):
    c = panel.controls
    assert panel.position()["nodes"] == 6 and panel.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    first = panel.image.value
    c["nodes"].value = 12  # as a person drags the slider
    assert panel.position()["branches"] == 5 and list(c["branches"].options) == list(range(5, 12))
    assert [v for _, v in c["junction_at"].options] == [1]
    assert panel.image.value != first and "moved branches 2 → 5, cut point 2 → 1 to stay a plan" in panel.status.value
    c["branches"].value = 8
    assert list(c["junction"].options) == ["shared", "adapter", "concat"]
    c["junction"].value = "concat"
    assert panel.dry.plan.junction == "concat" and len(panel.dry.plan.branches) == 8


def test_refused_position_keeps_the_figure(panel):
    c = panel.controls
    c["nodes"].value, c["branches"].value = 6, 2
    shown, dry = panel.image.value, panel.dry
    refused = {**panel.position(), "nodes": 12, "branches": 2}  # a position no slider offers
    assert panel.show(refused) is False
    assert panel.image.value == shown and panel.dry is dry
    assert "not a plan" in panel.status.value and "branches go from 5 to 11" in panel.status.value
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == shown


def test_panel_figure_reads_at_screen_size(panel):
    """The panel's figure fits a 1500 × 950 screen under the sliders, and its plan picture's box text
    is at least 8.5 pt (12 px at the panel's 100 dpi) at the default position."""
    from fplstudy.views.planfig import FONT_BOX

    fig = teach.draw_choice(teach.price_choice(teach.slider_values(SMALL, **START, device="rpi4", link="wifi5")),
                            panel.reference)
    width_px, height_px = fig.get_size_inches() * fig.dpi
    assert width_px <= 1300 and height_px <= 700
    plan_ax = fig.axes[0]
    box_text = [t for t in plan_ax.texts if " · " in t.get_text()]
    assert len(box_text) == 6 and min(t.get_fontsize() for t in box_text) >= 8.5
    assert max(t.get_fontsize() for t in box_text) <= FONT_BOX * 1.2
    titles = [ax.get_title() for ax in fig.axes[1:]]
    assert fig.axes[1].get_ylabel().endswith("J per round") and "priced at 4 nodes" in titles[1]
    assert fig.axes[2].get_xlabel() == "data moved per round (MB)"


def test_readable_names():
    row = {"strategy": "fpl", "nodes": 6, "branches": 5, "branch_stages": 1, "trunk_stages": 1, "junction": "shared",
           "junction_at": 7, "sync": "none", "sync_every": 1}
    assert teach.readable_name(row) == ("FPL: 5 branches + a trunk of 1 node, cut after layer 7, shared junction, "
                                        "no averaging")
    assert teach.readable_name({**row, "branches": 1, "branch_stages": 2, "trunk_stages": 4, "sync": "fedavg",
                                "sync_every": 2}) == ("FPL: 1 branch of 2 nodes + a trunk of 4 nodes, cut after "
                                                      "layer 7, shared junction, branches averaged every 2 rounds")
    assert teach.readable_name({"strategy": "sl", "nodes": 2, "junction_at": 3}) == \
        "SL: 1 client + a server, cut after layer 3"
    assert teach.readable_name({"strategy": "mp", "nodes": 3, "trunk_cuts": "2 5"}) == \
        "MP: a chain of 3 nodes, cuts after layers 2, 5"


def test_notebook_shows_every_figure_inline(notebook, tmp_path):
    """Executed headless, teach.ipynb leaves a PNG in each step of the walk, the side-by-side cell, the
    slider panel (without the old static copy), the search and ResNet-18 against the digits CNN; its lessons
    name plans in words."""
    out = tmp_path / "teach.ipynb"
    pm.execute_notebook(str(notebook("teach")), str(out), parameters={"smoke_test": True},
                        kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    cells = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
    pngs = [sum("image/png" in o.get("data", {}) for o in c["outputs"]) for c in cells]
    sources = ["".join(c["source"]) for c in cells]
    walk = [i for i, s in enumerate(sources) if "show_step" in s]
    assert len(walk) == 1 and pngs[walk[0]] == 6  # one loop over the walk's six steps, a figure each
    panel = [i for i, s in enumerate(sources) if "slider_panel" in s]
    assert len(panel) == 1 and pngs[panel[0]] == 1
    assert not any("show_choice" in s for s in sources)
    scale = [i for i, s in enumerate(sources) if "compare_to_reference" in s]
    assert len(scale) == 1 and pngs[scale[0]] == 1
    flip = "".join(cells[scale[0]]["outputs"][-1]["data"]["text/markdown"])
    assert "resnet18" in flip and "cnn on digits" in flip and "FL ships" in flip
    assert sum(pngs) == 10  # 6 steps, side by side, panel, search, ResNet-18 against the digits CNN
    lessons = "".join(cells[-1]["outputs"][0]["data"]["text/markdown"])
    assert "Cheapest plan per objective" in lessons and "fpl-" not in lessons


def test_the_panel_and_the_notebook_on_a_topology(reference, notebook, tmp_path):
    """With a topology the device and link menus are off (the site gives both), the status line says which
    topology node hosts each plan node and equals the priced plan's, node counts the site cannot host are not
    offered, and the notebook's plan search also places the nodes."""
    base = {**SMALL, "topology": "wearables_ble"}
    profiles = load_profiles()
    panel = teach.slider_panel(base, reference, sorted(profiles.devices), sorted(profiles.links), nodes=3)
    assert panel.controls["device"].disabled and panel.controls["link"].disabled
    where = ", ".join(f"{n.name} on {n.point}" for n in panel.dry.plan.nodes)
    assert panel.dry.plan.site is not None and f"topology wearables_ble ({where})" in panel.status.value
    from fplstudy.config import make_config
    from fplstudy.facts.topology import site_of

    assert max(panel.space.nodes) <= len(site_of(make_config(base)).nodes)
    plain = teach.slider_panel(SMALL, reference, sorted(profiles.devices), sorted(profiles.links), nodes=3)
    assert not plain.controls["device"].disabled and "topology" not in plain.status.value
    out = tmp_path / "teach.ipynb"
    pm.execute_notebook(str(notebook("teach")), str(out),
                        parameters={"smoke_test": True, "topology": "fog_wifi"}, kernel_name="python3",
                        cwd=str(ROOT), progress_bar=False)
    done = json.loads(out.read_text())
    outputs = json.dumps([o for c in done["cells"] for o in c.get("outputs", [])])
    widgets = json.dumps(done["metadata"].get("widgets", {}))  # the panel's widgets' saved state
    # what the cells printed and the panel showed (the sources name neither): the front's placements and
    # the panel's site line
    assert "n0=d0" in outputs and "Devices and links: topology fog_wifi (n0 on d0" in widgets
