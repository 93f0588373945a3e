"""A message's energy by hand: the radio's power times the message's airtime (bits / rate) at each end, and the
board's idle power for every second a node does not compute (waiting, or with its radio busy), on one fl and one
mp round; the dry run's ledger is the one checked (it equals a real run's row for row: test_costs.py)."""

from __future__ import annotations

import pytest

from fplstudy.config import make_config
from fplstudy.costs.dryrun import dry_run
from fplstudy.plans.events import TRANSFER_KINDS
from fplstudy.plans.plan import resolve

PROFILES = """\
devices:
  dev: {flops_per_s: 1.0e+9, active_w: 5.0, idle_w: 2.0}
  srv: {flops_per_s: 4.0e+9, active_w: 20.0, idle_w: 8.0}
links:
  radio: {radio: wifi, up_bps: 1.0e+6, down_bps: 2.0e+6, tx_w: 0.8, rx_w: 0.1, latency_s: 0.01}
"""
TX_W, RX_W, UP, DOWN = 0.8, 0.1, 1.0e6, 2.0e6
WATTS = {"dev": (5.0, 2.0), "srv": (20.0, 8.0)}


@pytest.mark.parametrize("strategy, nodes", [("fl", 2), ("mp", 2)])
def test_message_and_board_energy_by_hand(tmp_path, strategy, nodes):
    path = tmp_path / "p.yaml"
    path.write_text(PROFILES)
    cfg = make_config({"strategy": strategy, "nodes": nodes, "model": "cnn", "batch_size": 32, "rounds": 1,
                       "device": "dev", "server_device": "srv", "link": "radio", "profiles_file": str(path)})
    dry = dry_run(cfg, shards=[64] * len(resolve(cfg).branches))
    plan, led = dry.plan, dry.ledger
    side = {n.name: n.side for n in plan.nodes}
    device = {n.name: n.device for n in plan.nodes}
    want: dict[tuple[str, str], float] = {}
    for ev in dry.events:
        if getattr(ev, "kind", None) not in TRANSFER_KINDS:
            continue
        rate = DOWN if side[ev.src] == "server" and side[ev.dst] == "edge" else UP
        airtime = ev.nbytes * 8 / rate
        want[(ev.src, ev.kind)] = want.get((ev.src, ev.kind), 0.0) + TX_W * airtime
        want[(ev.dst, ev.kind)] = want.get((ev.dst, ev.kind), 0.0) + RX_W * airtime
    assert want, "the plan sends no message"
    rows = led.set_index(["node", "kind"])
    for (node, kind), joules in want.items():
        assert rows.loc[(node, kind), "energy_j"] == pytest.approx(joules, rel=1e-12), (node, kind)
    makespan = led["round_makespan_s"].iloc[0]
    for node in side:  # the board: active while computing, idle for every other second of the round
        mine = led[led["node"] == node]
        computing = mine[mine["kind"].isin(["forward", "backward"])]["seconds"].sum()
        idle = mine[mine["kind"] == "idle"]
        active_w, idle_w = WATTS[device[node]]
        assert idle["seconds"].iloc[0] == pytest.approx(makespan - computing, rel=1e-9), node
        assert idle["energy_j"].iloc[0] == pytest.approx(idle_w * (makespan - computing), rel=1e-9)
        radio = sum(j for (n, _k), j in want.items() if n == node)
        total = mine["energy_j"].sum()
        assert total == pytest.approx(active_w * computing + idle_w * (makespan - computing) + radio, rel=1e-9)
