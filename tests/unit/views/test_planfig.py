"""The plan picture: the data it is drawn from (boxes, arrows, shards) and the PNG.

Expected counts are derived by hand from the plans of the default cnn on digits (8 blocks, junction
after block 2) with 4 nodes; arrows are one per (sender, receiver, kind) that carries bytes:

- centralized (1 node): 1 box, no message.
- fl: 4 clients + 1 aggregator = 5 boxes; params_up and params_down per client = 8 arrows.
- mp: 4 stages; activations n0→n1→n2→n3 (3), gradients back (3), labels n0→n3 (1) = 7.
- sl: 3 clients + server = 4 boxes; per client activations, gradients, labels (9), relay params up and
  down through the server (6) = 15.
- sfl: the same 9 + FedAvg params up and down (6) = 15.
- fpl (D=2, S_b=1, S_t=2): per branch activations and gradients to/from n2, labels to n3 (6), trunk
  activations n2→n3 and gradients back (2), FedAvg of the two branches through n2 (4) = 12.
"""

from __future__ import annotations

import pytest

from fplstudy.config import make_config
from fplstudy.costs.dryrun import dry_run
from fplstudy.plans.plan import resolve
from fplstudy.views.planfig import draw_plan, plan_graph

EXPECTED = {  # strategy -> (nodes, boxes, arrows)
    "centralized": (1, 1, 0),
    "fl": (4, 5, 8),
    "mp": (4, 4, 7),
    "sl": (4, 4, 15),
    "sfl": (4, 4, 15),
    "fpl": (4, 4, 12),
}
SMALL = {"max_train_samples": 200, "rounds": 2}


@pytest.fixture(scope="module", params=list(EXPECTED))
def case(request):
    strategy = request.param
    plan = resolve(make_config({**SMALL, "strategy": strategy, "nodes": EXPECTED[strategy][0]}))
    return strategy, plan, dry_run(plan)


def test_boxes_and_arrows(case):
    strategy, plan, dry = case
    g = plan_graph(plan, dry)
    _, boxes, arrows = EXPECTED[strategy]
    assert len(g.boxes) == boxes
    assert [b.node for b in g.boxes] == [n.name for n in plan.nodes]
    assert len(g.arrows) == arrows
    assert len({(a.src, a.dst, a.kind) for a in g.arrows}) == arrows
    assert len(g.shards) == len(plan.branches)


def test_arrow_bytes_add_up_to_the_ledger(case):
    _, plan, dry = case
    g = plan_graph(plan, dry)
    rounds = plan.config.rounds
    assert sum(a.bytes_per_round for a in g.arrows) * rounds == pytest.approx(dry.ledger["bytes_tx"].sum())
    for kind in ("activations", "gradients", "labels", "params_up", "params_down"):
        sent = dry.ledger.loc[dry.ledger["kind"] == kind, "bytes_tx"].sum()
        drawn = sum(a.bytes_per_round for a in g.arrows if a.kind == kind) * rounds
        assert drawn == pytest.approx(sent), kind


def test_boxes_hold_every_layer(case):
    _, plan, dry = case
    g = plan_graph(plan, dry)
    held = [layer for b in g.boxes for layer in b.layers if layer != "adapter"]
    copies = max(1, len(plan.branches)) if plan.strategy in ("fl", "centralized") else None
    if copies:  # every branch holds the whole model
        assert sorted(held) == sorted(list(plan.block_names) * copies)
    else:  # each head block once per branch, each trunk block once
        j = plan.junction_at
        expected = list(plan.block_names[:j]) * len(plan.branches) + list(plan.block_names[j:])
        assert sorted(held) == sorted(expected)
    adapters = sum(layer == "adapter" for b in g.boxes for layer in b.layers)
    assert adapters == (len(plan.branches) if plan.junction == "adapter" else 0)


def test_png_is_written(case, tmp_path):
    strategy, plan, dry = case
    path = tmp_path / f"{strategy}.png"
    draw_plan(plan, path=path, ledger=dry)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_cli_plan_figure(tmp_path):
    from fplstudy.cli import main

    path = tmp_path / "plan.png"
    assert main(["plan", "--set", "strategy=sfl", "--set", "max_train_samples=200", "--figure", str(path)]) == 0
    assert path.is_file()


# ----------------------------------------------------------------------------------- the drawing's geometry

SHAPES = {  # the walk's fpl and shapes the teaching sliders reach, plus split branches and a relay
    "fpl-6-2": {"strategy": "fpl", "nodes": 6, "branches": 2},
    "fpl-8-7-collapsed": {"strategy": "fpl", "nodes": 8, "branches": 7, "junction_at": 1},
    "fpl-12-5": {"strategy": "fpl", "nodes": 12, "branches": 5, "junction_at": 1},
    "fpl-8-1": {"strategy": "fpl", "nodes": 8, "branches": 1, "junction_at": 1},
    "fpl-concat": {"strategy": "fpl", "nodes": 6, "branches": 4, "junction": "concat", "partition": "features"},
    "fpl-relay": {"strategy": "fpl", "nodes": 5, "branches": 2, "sync": "relay"},
    "fpl-split-branches": {"strategy": "fpl", "nodes": 7, "branches": 2, "branch_stages": 2, "junction_at": 3},
}


def _graphs():
    for strategy, (nodes, _, _) in EXPECTED.items():
        yield strategy, {"strategy": strategy, "nodes": nodes}, None
    for name, values in SHAPES.items():
        yield name, values, 3 if "collapsed" in name else None


GRAPHS = list(_graphs())


def _segments(route):
    return list(zip(route.path[:-1], route.path[1:]))


def _inside(x, y, rect, margin=0.0):
    x0, y0, x1, y1 = rect
    return x0 + margin < x < x1 - margin and y0 + margin < y < y1 - margin


def _segment_hits_rect(seg, rect):
    """Whether an axis-parallel segment passes through the open interior of a rectangle."""
    (xa, ya), (xb, yb) = seg
    x0, y0, x1, y1 = rect
    eps = 1e-9
    if abs(ya - yb) < eps:  # horizontal
        return y0 + eps < ya < y1 - eps and max(xa, xb) > x0 + eps and min(xa, xb) < x1 - eps
    assert abs(xa - xb) < eps, "routes are axis-parallel"
    return x0 + eps < xa < x1 - eps and max(ya, yb) > y0 + eps and min(ya, yb) < y1 - eps


def _label_rect(route):
    from fplstudy.views.planfig import FONT_ARROW, LINE_H, text_width

    w, h = text_width(route.label, FONT_ARROW) + 0.05, FONT_ARROW * LINE_H + 0.03
    x, y = route.label_xy
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def _cross(s, t):
    """Whether two axis-parallel segments meet at a point inside both (or overlap along a line)."""
    (ax0, ay0), (ax1, ay1) = s
    (bx0, by0), (bx1, by1) = t
    eps = 1e-9
    s_h, t_h = abs(ay0 - ay1) < eps, abs(by0 - by1) < eps
    if s_h == t_h:  # parallel: overlap on the same line
        if s_h:
            return abs(ay0 - by0) < eps and min(max(ax0, ax1), max(bx0, bx1)) - max(min(ax0, ax1), min(bx0, bx1)) > eps
        return abs(ax0 - bx0) < eps and min(max(ay0, ay1), max(by0, by1)) - max(min(ay0, ay1), min(by0, by1)) > eps
    h, v = (s, t) if s_h else (t, s)
    (hx0, hy), (hx1, _) = h
    (vx, vy0), (_, vy1) = v
    return min(hx0, hx1) - eps <= vx <= max(hx0, hx1) + eps and min(vy0, vy1) - eps <= hy <= max(vy0, vy1) + eps


@pytest.fixture(scope="module", params=GRAPHS, ids=[name for name, _, _ in GRAPHS])
def routed(request):
    from fplstudy.views.planfig import arrow_routes

    _, values, max_rows = request.param
    plan = resolve(make_config({**SMALL, **values}))
    g = plan_graph(plan, dry_run(plan), max_rows=max_rows)
    return g, arrow_routes(g)


def test_arrows_run_through_no_box_and_no_label(routed):
    g, routes = routed
    rects = {b.node: (b.left, b.bottom, b.right, b.top) for b in g.boxes if not b.hidden}
    rects.update({f"shard {s.branch}": (s.x - s.w / 2, s.y - s.h / 2, s.x + s.w / 2, s.y + s.h / 2)
                  for s in g.shards if not s.hidden})
    labels = [(r, _label_rect(r)) for r in routes if r.label]
    for r in routes:
        for seg in _segments(r):
            for name, rect in rects.items():
                assert not _segment_hits_rect(seg, rect), f"{r.arrow} runs through {name}"
            for owner, rect in labels:
                same_lane = {owner.arrow.src, owner.arrow.dst} == {r.arrow.src, r.arrow.dst} and \
                    owner.path[0][1] - r.path[0][1] in (0.0, pytest.approx(2 * 0.045))
                if owner is not r and not same_lane:
                    assert not _segment_hits_rect(seg, rect), f"{r.arrow} runs through the label of {owner.arrow}"
    for i, (a, ra) in enumerate(labels):
        assert not any(_segment_hits_rect(((ra[0], ra[1]), (ra[2], ra[1])), rect) for rect in rects.values())
        for b, rb in labels[i + 1:]:
            overlap = min(ra[2], rb[2]) > max(ra[0], rb[0]) and min(ra[3], rb[3]) > max(ra[1], rb[1])
            assert not overlap, f"labels of {a.arrow} and {b.arrow} overlap"


def test_no_two_kinds_of_message_cross(routed):
    """Routes of different kinds never meet (same-kind routes may merge, as a bus of one colour);
    with split branches two routed kinds share the margin, so only boxes and labels are checked."""
    g, routes = routed
    if any(b.column > 0 and b.group.startswith("branch") for b in g.boxes):
        pytest.skip("split branches: routed kinds may cross (boxes and labels still checked)")
    for i, r in enumerate(routes):
        for q in routes[i + 1:]:
            if q.arrow.kind == r.arrow.kind:
                continue
            for s in _segments(r):
                for t in _segments(q):
                    shared_end = set(s) & set(t)
                    assert not (_cross(s, t) and not shared_end), f"{r.arrow} crosses {q.arrow}"


def test_every_drawn_arrow_is_routed_and_ends_at_its_boxes(routed):
    g, routes = routed
    drawn = [a for a in g.arrows if not (g.box(a.src).hidden or g.box(a.dst).hidden)]
    assert [r.arrow for r in routes] == drawn
    for r in routes:
        src, dst = g.box(r.arrow.src), g.box(r.arrow.dst)
        for (x, y), box in ((r.path[0], src), (r.path[-1], dst)):
            on_edge = (abs(x - box.left) < 1e-9 or abs(x - box.right) < 1e-9 or abs(y - box.top) < 1e-9)
            assert on_edge and box.left - 1e-9 <= x <= box.right + 1e-9 and box.bottom - 1e-9 <= y <= box.top + 1e-9


def test_titles_are_plain_words():
    plan = resolve(make_config({**SMALL, "strategy": "fpl", "nodes": 4}))
    g = plan_graph(plan, dry_run(plan))
    assert g.title == ("Flexible parallel learning (FPL) on 4 nodes: 2 branches of 1 node each hold layers 1–2 "
                       "(conv1, conv2) plus an adapter; a trunk of 2 nodes holds the other 6 layers; the branches' "
                       "layers are averaged every round.")
    assert g.junction_note == "junction after layer 2 (conv2): each branch ends in its own adapter"
    sl = resolve(make_config({**SMALL, "strategy": "sl", "nodes": 4}))
    assert plan_graph(sl, dry_run(sl)).title == (
        "Split learning (SL) on 4 nodes: 3 clients each hold layers 1–2 (conv1, conv2); server n3 holds the other 6 "
        "layers; the clients take turns, each handing its layers on through n3.")
    for strategy in EXPECTED:
        p = resolve(make_config({**SMALL, "strategy": strategy, "nodes": EXPECTED[strategy][0]}))
        title = plan_graph(p, dry_run(p)).title
        assert not any(jargon in title for jargon in ("D=", "@", "fedavg", "branch(es)"))


def test_collapsed_rows_keep_the_data_and_hide_the_middle():
    plan = resolve(make_config({**SMALL, "strategy": "fpl", "nodes": 8, "branches": 7, "junction_at": 1}))
    g = plan_graph(plan, dry_run(plan), max_rows=3)
    assert [b.node for b in g.boxes if b.hidden] == ["n2", "n3", "n4", "n5"]
    assert [s.branch for s in g.shards if s.hidden] == [2, 3, 4, 5]
    assert len(g.boxes) == 8 and g.ellipsis[2] == "⋮  4 more branches (n2–n5), like the ones drawn"
    assert plan_graph(plan, dry_run(plan)).ellipsis is None


def test_message_colours_are_the_shared_palette(tmp_path):
    from matplotlib.colors import to_rgb

    from fplstudy.views.style import KIND_PALETTE

    plan = resolve(make_config({**SMALL, "strategy": "sl", "nodes": 3}))
    fig = draw_plan(plan, ledger=dry_run(plan))
    ax = fig.axes[0]
    coloured = {to_rgb(line.get_color()) for line in ax.lines} - {to_rgb("0.45"), to_rgb("0.35")}
    assert coloured == {KIND_PALETTE[k] for k in ("activations", "gradients", "labels", "params_up", "params_down")}
    legend = {t.get_text(): to_rgb(h.get_color()) for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert legend == {k.replace("_", " "): KIND_PALETTE[k] for k in KIND_PALETTE if k in
                      ("activations", "gradients", "labels", "params_up", "params_down")}


def test_junction_line_stops_above_its_words():
    plan = resolve(make_config({**SMALL, "strategy": "fpl", "nodes": 4}))
    g = plan_graph(plan, dry_run(plan))
    fig = draw_plan(plan, ledger=dry_run(plan))
    ax = fig.axes[0]
    dashed = [line for line in ax.lines if set(line.get_xdata()) == {g.junction_x}]
    note = [t for t in ax.texts if t.get_text() == g.junction_note]
    assert len(dashed) == 1 and len(note) == 1
    fig.canvas.draw()
    line_box = dashed[0].get_window_extent()
    text_box = note[0].get_window_extent()
    assert line_box.y0 > text_box.y1  # the words sit wholly below the line's end
    for t in ax.texts:  # and no other text is struck through by the line
        if t is not note[0] and t.get_text():
            box = t.get_window_extent()
            crosses = box.x0 < line_box.x0 < box.x1 and box.y0 < line_box.y1 and box.y1 > line_box.y0
            assert not crosses, t.get_text()
