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
from fplstudy.dryrun import dry_run
from fplstudy.plan import resolve
from fplstudy.planfig import draw_plan, plan_graph

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
