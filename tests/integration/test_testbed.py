"""The emulated edge testbed: its arithmetic (everywhere), and real Mininet runs (root and Mininet only).

Times of the tests that build a network, on a 2-core machine shared with other work: the bulk transfer
about 5 s; each training run (``mp`` on 2 hosts, ``fl`` on 4) about 15 s; the run killed mid-round
about 15 s. Each run starts one Python process per host, which import torch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import plan_events
from fplstudy.costs.ledger import price
from fplstudy.costs.makespan import schedule_round
from fplstudy.costs.pricing import chunk_block_flops
from fplstudy.costs.pricing import cold_calls as ledger_cold_calls
from fplstudy.facts.profiles import check_profiles, load_profiles
from fplstudy.plans.events import Compute
from fplstudy.plans.plan import resolve
from fplstudy.testbed import emulation as tb_emulation
from fplstudy.testbed import run as tb_run
from fplstudy.testbed import validation as tb_validation
from fplstudy.testbed import wiring as tb_wiring
from fplstudy.train import engine
from fplstudy.train.distributed import check_wire
from fplstudy.views.style import save_figure
from fplstudy.views.testbed import parity_figure

GOODPUT = 1448 / 1514  # TCP payload bytes per Ethernet frame at MTU 1500 with timestamps
# one worker of a parallel run takes every test here: a test that lists the machine's interfaces around a run must
# not see another test's network come and go (names never collide: each carries its process's tag)
pytestmark = pytest.mark.xdist_group("mininet")


def _plan(**kw):
    return resolve(make_config(kw))


# --------------------------------------------------------------------------- arithmetic (runs everywhere)

def test_time_scale_shares_periods_and_rates_by_hand(calibrated):
    """fl with 3 clients (rpi4, 1.6e10 FLOP/s) and an aggregator (minipc, 6e10) on wifi5, calibrated 4e10 FLOP/s
    per core, 2 cores: the nodes need 0.4, 0.4, 0.4 and 1.5 cores; one node may have 0.9 of a core (1.5 / 0.9 =
    1.667) and all together 0.8 × 2 cores (2.7 / 1.6 = 1.6875): the time scale is 1.6875."""
    plan = _plan(strategy="fl", nodes=3)
    emu = tb_emulation.emulation(plan, check_profiles(plan), calibrated(call_overhead_s=1e-4), 2)
    s = 2.7 / 1.6
    assert emu.time_scale == pytest.approx(s, rel=1e-12)
    assert emu.core_share == pytest.approx((0.4 / s, 0.4 / s, 0.4 / s, 1.5 / s), rel=1e-12)
    assert emu.cpu_fraction == pytest.approx((0.2 / s, 0.2 / s, 0.2 / s, 0.75 / s), rel=1e-12)
    assert emu.period_us == (4219, 4219, 4219, 1125)  # ceil(1 ms / share): quota = share × period >= 1 ms
    up, down = 2.26e8 / s / GOODPUT / 1e6, 2.62e8 / s / GOODPUT / 1e6  # Mbit/s on the wire
    assert emu.egress_mbit == pytest.approx((up, up, up, down), rel=1e-12)  # clients send up, the aggregator down
    assert emu.ingress_mbit == pytest.approx((down, down, down, up), rel=1e-12)
    rpi4, link = emu.profiles.device("rpi4"), emu.profiles.link("wifi5")
    assert rpi4.flops_per_s == pytest.approx(1.6e10 / s, rel=1e-12)
    assert rpi4.call_overhead_s == pytest.approx(1e-4 * 4e10 * s / 1.6e10, rel=1e-12)  # o × C × s / F
    assert emu.profiles.device("minipc").flops_per_s == pytest.approx(6e10 / s, rel=1e-12)
    assert (link.up_bps, link.down_bps, link.latency_s) == pytest.approx((2.26e8 / s, 2.62e8 / s, 0.0), rel=1e-12)


def test_block_rates_scale_with_the_time_scale_and_the_cpu_share_by_hand(tmp_path, calibrated):
    """The same fl plan, this machine calibrated at C = 4e10 with conv1 at 2e9 and conv2 at 5e10 per core: a node
    of device FLOP/s F gets F / (C s) of a core, so it runs conv1 at 2e9 F / (C s) (rpi4: 2e9 × 0.4 / s) — this
    machine's proportions, not the device's own block rates (rpi4's 1e10 for conv1 is dropped); without
    calibrated block rates the emulated profiles carry none."""
    own = tmp_path / "own.yaml"
    own.write_text("devices:\n  rpi4: {block_flops_per_s: {cnn: {conv1: 1.0e+10}}}\n")
    plan = _plan(strategy="fl", nodes=3, profiles_file=str(own))
    profiles = check_profiles(plan)
    assert profiles.device("rpi4").block_flops_per_s == {"cnn": {"conv1": 1e10}}
    emu = tb_emulation.emulation(plan, profiles, calibrated(call_overhead_s=1e-4,
                                                       block_flops_per_s={"cnn": {"conv1": 2e9, "conv2": 5e10}}), 2)
    s = 2.7 / 1.6
    assert emu.time_scale == pytest.approx(s, rel=1e-12)  # block rates do not move the shares or the scale
    rpi4, minipc = emu.profiles.device("rpi4"), emu.profiles.device("minipc")
    assert set(rpi4.block_flops_per_s) == {"cnn"}
    assert rpi4.block_flops_per_s["cnn"] == pytest.approx({"conv1": 2e9 * 0.4 / s, "conv2": 5e10 * 0.4 / s}, rel=1e-12)
    assert minipc.block_flops_per_s["cnn"] == pytest.approx({"conv1": 2e9 * 1.5 / s, "conv2": 5e10 * 1.5 / s},
                                                            rel=1e-12)
    # the calibrated device itself (F = C) runs its blocks at c_b / s, as its flops_per_s runs at C / s
    cal = tmp_path / "host.yaml"
    cal.write_text("devices:\n  calibrated_cnn_b32: {flops_per_s: 4.0e+10, active_w: 0, idle_w: 0, "
                   "block_flops_per_s: {cnn: {conv1: 2.0e+9, conv2: 5.0e+10}}, "
                   "block_call_s: {cnn: {conv1: 3.0e-4}}}\n")
    mine = _plan(strategy="mp", nodes=2, device="calibrated_cnn_b32", server_device="calibrated_cnn_b32",
                 profiles_file=str(cal))
    mp_profiles = check_profiles(mine)
    here = tb_emulation.calibrated_device(mine, mp_profiles)
    assert here.block_flops_per_s == {"cnn": {"conv1": 2e9, "conv2": 5e10}}
    assert here.block_call_s == {"cnn": {"conv1": 3e-4}}
    with pytest.raises(ConfigError, match="'profiles_file': got .*; no device profile 'calibrated_cnn_b32'"):
        tb_emulation.calibrated_device(plan, profiles)  # own.yaml holds no calibration
    # its block rates alone: the prediction below prices no fixed seconds per call
    emu = tb_emulation.emulation(mine, mp_profiles, calibrated(block_flops_per_s=here.block_flops_per_s), 2,
                            time_scale=3.0)
    dev = emu.profiles.device("calibrated_cnn_b32")
    assert dev.flops_per_s == pytest.approx(4e10 / 3, rel=1e-12)
    assert dev.block_flops_per_s["cnn"] == pytest.approx({"conv1": 2e9 / 3, "conv2": 5e10 / 3}, rel=1e-12)
    # predicted busy seconds use them: conv1 + conv2 on n0, priced block by block
    events = [e for e in plan_events(mine, [32]) if isinstance(e, Compute) and e.node == "n0" and e.round == 0]
    per_node, _ = tb_validation.predicted(mine, [32], emu)
    want = sum(sum(f * e.samples / dev.block_flops_per_s["cnn"].get(b, dev.flops_per_s)
                   for b, f in chunk_block_flops(mine, e.blocks, e.in_shape, e.phase, e.input_grad))
               + dev.call_overhead_s for e in events)
    got = per_node[(per_node["round"] == 0) & (per_node["node"] == "n0")]["predicted_busy_s"].iloc[0]
    assert got == pytest.approx(want, rel=1e-12)
    flat = tb_emulation.emulation(plan, profiles, calibrated(), 2)
    assert flat.profiles.device("rpi4").block_flops_per_s == {}


def test_time_scale_for_a_link_faster_than_mininet_shapes_and_refusals(tmp_path, calibrated):
    fast = tmp_path / "fast.yaml"
    fast.write_text("links:\n  fast: {up_bps: 2.0e+9, down_bps: 2.0e+9, tx_j_per_bit: 0, rx_j_per_bit: 0}\n")
    plan = _plan(strategy="mp", nodes=2, link="fast", profiles_file=str(fast))
    # CPUs need little: the link sets the scale
    emu = tb_emulation.emulation(plan, check_profiles(plan), calibrated(1e12), 2)
    assert emu.time_scale == pytest.approx(2e9 / GOODPUT / 1e9, rel=1e-12)
    assert max(emu.egress_mbit) == pytest.approx(1000.0, rel=1e-12)
    with pytest.raises(ConfigError, match="'testbed_time_scale': got 1.5; this plan needs at least 2.091"):
        tb_emulation.emulation(plan, check_profiles(plan), calibrated(1e12), 2, time_scale=1.5)
    assert tb_emulation.emulation(plan, check_profiles(plan), calibrated(1e12), 2, time_scale=4.0).time_scale == 4.0
    big = _plan(strategy="fl", nodes=50)
    with pytest.raises(ConfigError, match="'nodes': got 50; too many or too fast nodes for this machine"):
        tb_emulation.emulation(big, check_profiles(big), calibrated(1e9), 2)  # 50 × 16 cores' worth: a time scale of 500
    up_gt_down = tmp_path / "odd.yaml"
    up_gt_down.write_text("links:\n  odd: {up_bps: 2.0e+7, down_bps: 1.0e+7, tx_j_per_bit: 0, rx_j_per_bit: 0}\n")
    odd = _plan(strategy="fl", nodes=2, link="odd", profiles_file=str(up_gt_down))
    with pytest.raises(ConfigError, match="'link': got 'odd'; up_bps"):
        tb_emulation.check_rates(odd, check_profiles(odd))


def test_star_network_queues_the_aggregators_messages_by_hand():
    """fl, 3 clients of one batch: forward 1 s and backward 2 s in parallel, then 3 params_up and 3 params_down
    of 5 s each. A link per pair: 1 + 2 + 5 + 5. One interface per node: the aggregator receives, then sends,
    one message at a time: 1 + 2 + 3 × 5 + 3 × 5. ``inbox``: the aggregator posts one receive at a time and
    sends to all at once: 1 + 2 + 3 × 5 + 5."""
    durations = {"forward": 1.0, "backward": 2.0}
    for network, want in (("links", 13.0), ("star", 33.0), ("inbox", 23.0)):
        plan = _plan(strategy="fl", nodes=3, batch_size=32, max_train_samples=96, rounds=1, network=network)
        events = plan_events(plan, [32, 32, 32])
        secs = [durations[e.phase] if isinstance(e, Compute) else 5.0 for e in events]
        assert schedule_round(plan, events, secs).makespan_s == want


def test_star_interfaces_are_half_duplex_by_hand():
    """Two messages at once (of two steps, so neither waits for the other), n0 → n1 and n1 → n0, 5 s each: 5 s
    on links of their own, 10 s through the two nodes' half-duplex interfaces; a third pair is not held up."""
    from fplstudy.plans.events import Transfer

    events = [Transfer(0, 0, 0, 0, "n0", "n1", "activations", (1, 16), "float32", 64),
              Transfer(0, 1, 0, 0, "n1", "n0", "activations", (1, 16), "float32", 64),
              Transfer(0, 0, 0, 0, "n2", "n3", "activations", (1, 16), "float32", 64)]
    for network, want in (("links", [5.0, 5.0, 5.0]), ("star", [5.0, 10.0, 5.0])):
        plan = _plan(strategy="mp", nodes=4, network=network)
        assert schedule_round(plan, events, [5.0] * 3).finish == want


def test_inbox_a_message_waits_for_its_receivers_earlier_work_by_hand():
    """n1 computes 5 s (step 0) while n0's message to it (step 1, 3 s) is ready at once: on ``links`` it arrives
    meanwhile (finish 3 s); on ``inbox`` n1 posts the receive after its compute (5 + 3 = 8 s). A message that
    n1 sends is not held up by it (n1 -> n2 from t = 0 in both)."""
    from fplstudy.plans.events import Transfer

    events = [Compute(0, 0, 0, 0, "n1", ("conv1",), (1, 8, 8), 32, "forward", False),
              Transfer(0, 1, 0, 0, "n0", "n1", "activations", (1, 16), "float32", 64),
              Transfer(0, 1, 0, 0, "n2", "n3", "activations", (1, 16), "float32", 64)]
    for network, want in (("links", [5.0, 3.0, 3.0]), ("inbox", [5.0, 8.0, 3.0])):
        plan = _plan(strategy="mp", nodes=4, network=network)
        assert schedule_round(plan, events, [5.0, 3.0, 3.0]).finish == want


def _site_file(tmp_path, fast_bps: float) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(f"""description: two sensors on Wi-Fi 4 to an access point, a gateway on Ethernet, LTE to a server
nodes:
  s0: {{device: rpi4}}
  s1: {{device: rpi4}}
  gw: {{device: rpi4}}
  server: {{device: rpi4}}
sites: [ap]
links:
  - {{between: [s0, ap], profile: wifi4}}
  - {{between: [s1, ap], profile: wifi4}}
  - {{between: [ap, gw], profile: ethernet, up_bps: {fast_bps!r}}}
  - {{between: [gw, server], profile: lte, latency_s: 0.05}}
""")
    return str(path)


def test_topology_wiring_routes_and_rates_by_hand(tmp_path, calibrated):
    """fl with 2 clients on a three-hop site: s0, s1 -(Wi-Fi 4)- ap -(Ethernet)- gw -(LTE)- server; the clients on
    s0 and s1, the aggregator on server, gw runs nothing. The testbed emulates 5 points (ap and gw route), 4
    links with each direction at its own rate, static routes along the model's paths; the Ethernet hop's up rate
    is 2 Gbit/s of goodput on the wire, so the time scale is 2 (Mininet shapes at most 1000 Mbit/s), and the
    prediction prices a message on the three hops at half their rates, without the LTE hop's latency."""
    fast = 2e9 * GOODPUT  # goodput: 2e9 bit/s of frames on the wire
    plan = _plan(strategy="fl", nodes=2, topology=_site_file(tmp_path, fast), batch_size=32, max_train_samples=64)
    assert [(n.name, n.point) for n in plan.nodes] == [("n0", "s0"), ("n1", "s1"), ("n2", "server")]
    w = tb_wiring.wiring(plan)
    assert w.points == ("s0", "s1", "server", "ap", "gw")
    assert w.links == (("s0", "ap", 2.9e7, 4.0e7), ("s1", "ap", 2.9e7, 4.0e7), ("server", "gw", 1.3e7, 6.0e6),
                       ("ap", "gw", fast, 9.4e8))  # between [gw, server]: gw -> server up (6e6), back down (1.3e7)
    assert w.routes == {"s0": (("s1", "ap"), ("server", "ap")), "s1": (("s0", "ap"), ("server", "ap")),
                        "server": (("s0", "gw"), ("s1", "gw")),
                        "ap": (("s0", "s0"), ("s1", "s1"), ("server", "gw")),
                        "gw": (("s0", "ap"), ("s1", "ap"), ("server", "server"))}
    # a fast machine: the CPUs need no slow-down
    emu = tb_emulation.emulation(plan, check_profiles(plan), calibrated(1e13), 2)
    assert emu.time_scale == pytest.approx(2.0, rel=1e-12)
    spec = tb_emulation.network_spec(emu)
    assert spec["routers"] == ["r0", "r1"]  # ap, gw
    mbit = lambda bps: bps / 2.0 / GOODPUT / 1e6  # noqa: E731 - goodput / s, on the wire
    assert [(e["ends"], e["addrs"]) for e in spec["links"]] == [
        (["h0", "r0"], ["10.1.0.1/24", "10.1.0.2/24"]), (["h1", "r0"], ["10.1.1.1/24", "10.1.1.2/24"]),
        (["h2", "r1"], ["10.1.2.1/24", "10.1.2.2/24"]), (["r0", "r1"], ["10.1.3.1/24", "10.1.3.2/24"])]
    assert [r for e in spec["links"] for r in e["mbit"]] == pytest.approx(
        [mbit(2.9e7), mbit(4e7), mbit(2.9e7), mbit(4e7), mbit(1.3e7), mbit(6e6), 1000.0, mbit(9.4e8)], rel=1e-12)
    assert spec["routes"] == {
        "h0": [["10.0.0.2", "10.1.0.2"], ["10.0.0.3", "10.1.0.2"]],
        "h1": [["10.0.0.1", "10.1.1.2"], ["10.0.0.3", "10.1.1.2"]],
        "h2": [["10.0.0.1", "10.1.2.2"], ["10.0.0.2", "10.1.2.2"]],
        "r0": [["10.0.0.1", "10.1.0.1"], ["10.0.0.2", "10.1.1.1"], ["10.0.0.3", "10.1.3.2"]],
        "r1": [["10.0.0.1", "10.1.3.1"], ["10.0.0.2", "10.1.3.1"], ["10.0.0.3", "10.1.2.1"]]}
    # the prediction: n0's params_up on s0 -> ap -> gw -> server at half of each hop's rate: the LTE hop's, packet
    # by packet; each hop's, store-and-forward
    events = plan_events(plan, [32, 32])
    up = next(e for e in events if not isinstance(e, Compute) and e.kind == "params_up" and e.src == "n0")
    for forwarding, spb in (("packet", 1 / 6e6), ("message", 1 / 2.9e7 + 1 / fast + 1 / 6e6)):
        p_node, _ = tb_validation.predicted(resolve(plan.config.model_copy(update={"forwarding": forwarding})), [32, 32], emu)
        sent = p_node.set_index(["round", "node"]).loc[(0, "n0"), "predicted_send_s"]
        assert sent == pytest.approx(up.nbytes * 8 * 2.0 * spb, rel=1e-12), forwarding
    assert [h.link.latency_s for h in plan.site.path("s0", "server")] == [0.0, 0.0, 0.05]
    assert [h.link.latency_s for h in emu.site.path("s0", "server")] == [0.0, 0.0, 0.0]  # netem: not here


def test_topology_on_the_testbed_refuses_what_it_cannot_route(tmp_path, monkeypatch, calibrated):
    """A plan whose paths use more links than the testbed numbers is refused naming the topology, before anything
    is built; the capacity check does not refuse a topology (it is emulated)."""
    plan = _plan(strategy="fl", nodes=2, topology=_site_file(tmp_path, 9.4e8), batch_size=32, max_train_samples=64)
    tb_emulation.check_capacity(plan)
    monkeypatch.setattr(tb_emulation, "MAX_LINKS", 3)
    with pytest.raises(ConfigError, match=r"^config key 'topology'.*paths use 4 links; the testbed numbers at most 3"):
        tb_emulation.emulation(plan, check_profiles(plan), calibrated(1e13), 2)


def test_topology_whose_paths_disagree_with_routing_by_destination_is_refused(tmp_path):
    """a -> q -> {b or c} -> d: from q, the path through c costs 1/2e6 + 1/2e6 = 1e-6 s/bit and through b
    1/3e6 + 1/1.5e6 = 1.0000000000000002e-6 (floating point), so q's own path to d goes through c; from a, both
    sums round to the same value and the names decide: a's path goes on from q through b. IP forwards by
    destination, so q cannot follow both: refused, naming the topology and the fix."""
    path = tmp_path / "tie.yaml"
    path.write_text("""nodes:
  a: {device: rpi4}
  d: {device: rpi4}
sites: [q, b, c]
links:
  - {between: [a, q], profile: ethernet, up_bps: 6.0e+6}
  - {between: [q, b], profile: ethernet, up_bps: 3.0e+6}
  - {between: [b, d], profile: ethernet, up_bps: 1.5e+6}
  - {between: [q, c], profile: ethernet, up_bps: 2.0e+6}
  - {between: [c, d], profile: ethernet, up_bps: 2.0e+6}
""")
    plan = _plan(strategy="mp", nodes=2, topology=str(path))
    assert [h.dst for h in plan.site.path("a", "d")] == ["q", "b", "d"]
    assert [h.dst for h in plan.site.path("q", "d")] == ["c", "d"]
    with pytest.raises(ConfigError, match=r"^config key 'topology'.*the path a -> d goes on from q to b, but q's own "
                                          r"path to d is another; the testbed routes by destination"):
        tb_wiring.wiring(plan)


def test_call_overhead_is_priced_alike_by_the_fast_path_and_the_reference(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("devices:\n  slowcall: {flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, call_overhead_s: 0.002}\n")
    plan = _plan(strategy="fpl", nodes=4, device="slowcall", server_device="slowcall", profiles_file=str(prof),
                 max_train_samples=128, rounds=2)
    events = plan_events(plan, [64, 64])
    fast, ref = price(plan, events), price(plan, events, fast=False)
    pd.testing.assert_frame_equal(fast, ref)
    ev = next(e for e in events if isinstance(e, Compute))
    row = fast[(fast["round"] == 0) & (fast["node"] == ev.node) & (fast["kind"] == ev.phase)].iloc[0]
    assert row.seconds == pytest.approx(row.flops / 1e9 + 0.002 * row["count"], rel=1e-12)


def _trace(rows):
    from fplstudy.train.distributed import TRACE_COLUMNS

    return pd.DataFrame(rows, columns=list(TRACE_COLUMNS))


def test_the_call_table_pairs_each_traced_call_with_its_prediction(calibrated):
    """mp on 2 nodes, 2 batches a round, 2 rounds, cold factor 0.5: each node's calls in its trace's order get the
    emulated price of the same event (1.5x where the model takes the call to start cold) and their measured
    seconds; the table's sums are testbed_table's busy seconds; a trace missing a call is refused."""
    plan = resolve(make_config(dict(strategy="mp", nodes=2, max_train_samples=100, rounds=2, batch_size=64)))
    profiles = check_profiles(plan)
    emu = tb_emulation.emulation(plan, profiles, calibrated(cold_factor=0.5), 2)
    warm = tb_emulation.emulation(plan, profiles, calibrated(), 2)
    shards = [100]
    events = plan_events(plan, shards)
    rows, seq, t = [], {"n0": 0, "n1": 0}, 0.0
    for ev in events:
        if isinstance(ev, Compute):  # the k-th call of a node lasts 0.01 k s (made up, all different)
            seq[ev.node] += 1
            rows.append((ev.round, ev.node, "compute", ev.phase, "", 0, seq[ev.node] - 1, t, t + 0.01 * seq[ev.node]))
            t += 1.0
    calls = tb_validation.call_table(plan, _trace(rows[::-1]), shards, emu)  # any row order: by round and seq
    computes = [ev for ev in events if isinstance(ev, Compute)]
    assert len(calls) == len(computes) == 2 * 2 * 4
    n0 = calls[calls["node"] == "n0"]
    assert n0["measured_s"].tolist() == pytest.approx([0.01 * k for k in range(1, len(n0) + 1)])
    assert n0["phase"].tolist() == ["forward", "backward"] * 4 and set(calls["blocks"]) == {"conv1+conv2+conv3",
                                                                                            "conv4+conv5+fc1+fc2+fc3"}
    assert calls["cold"].sum() == 16  # as tests/unit/costs/test_cold_calls.py counts them by hand: all 8 of a round
    from fplstudy.costs.ledger import event_costs
    _, hot = event_costs(plan, events, warm.profiles)
    flags = ledger_cold_calls(events, frozenset({"n0", "n1"}))
    want = [s * (1.5 if c else 1.0) for n in ("n0", "n1")  # the table is node by node, each in event order
            for ev, s, c in zip(events, hot, flags) if isinstance(ev, Compute) and ev.node == n]
    assert calls["predicted_s"].tolist() == pytest.approx(want, rel=1e-12)
    assert calls["cold"].tolist() == [c for n in ("n0", "n1") for ev, c in zip(events, flags)
                                      if isinstance(ev, Compute) and ev.node == n]
    table = tb_validation.testbed_table(plan, _trace(rows), shards, emu)
    sums = calls.groupby(["round", "node"])[["measured_s", "predicted_s"]].sum()
    got = table.set_index(["round", "node"])
    assert sums["measured_s"].tolist() == pytest.approx(got.loc[sums.index, "measured_busy_s"].tolist(), rel=1e-12)
    assert sums["predicted_s"].tolist() == pytest.approx(got.loc[sums.index, "predicted_busy_s"].tolist(), rel=1e-12)
    with pytest.raises(RuntimeError, match="n0's trace has 7 compute calls, its events 8"):
        tb_validation.call_table(plan, _trace(rows[1:]), shards, emu)


def test_measured_figures_from_a_hand_made_trace():
    """n0 computes 0.0-1.0 and 1.5-2.0, sends at 1.0; n1 posts its receive at 0.2, gets the message at 1.4 and
    computes 1.4-3.0: busy 1.5 and 1.6 s; the message took 1.4 - max(1.0, 0.2) = 0.4 s; the round 3.0 s."""
    trace = _trace([(0, "n0", "compute", "forward", "", 0, 0, 0.0, 1.0),
                    (0, "n0", "send", "activations", "n1", 64, 0, 1.0, math.nan),
                    (0, "n0", "compute", "backward", "", 0, 1, 1.5, 2.0),
                    (0, "n1", "recv", "activations", "n0", 64, 0, 0.2, 1.4),
                    (0, "n1", "compute", "forward", "", 0, 0, 1.4, 3.0)])
    per_node, makespan = tb_validation.measured(trace)
    got = per_node.set_index("node")
    assert got.loc["n0", "measured_busy_s"] == pytest.approx(1.5)
    assert got.loc["n1", "measured_busy_s"] == pytest.approx(1.6)
    assert got.loc["n0", "measured_send_s"] == pytest.approx(0.4) and got.loc["n1", "measured_recv_s"] == pytest.approx(0.4)
    assert got.loc["n0", "measured_recv_s"] == 0 and got.loc["n1", "measured_send_s"] == 0
    assert makespan.tolist() == pytest.approx([3.0])
    unpaired = trace.iloc[:4]  # a receive whose send is missing
    with pytest.raises(RuntimeError, match="do not pair up"):
        tb_validation.measured(unpaired.drop(index=1))


class _Clock:
    """This test's stand-in for the process's clocks: wall and CPU seconds advance only when told."""

    def __init__(self):
        self.wall, self.cpu, self.slept = 100.0, 10.0, []

    def run(self, wall, cpu):  # a chunk that took `wall` seconds and `cpu` seconds of CPU
        self.wall += wall
        self.cpu += cpu

    def sleep(self, s):
        self.slept.append(s)
        self.wall += s


def test_dilation_is_slept_once_before_the_next_message_by_hand(tmp_path, monkeypatch):
    """At share 0.25 three chunks of n0 (wall 0.1, 0.1, 0.3 s; CPU 0.1, 0.05, 0.01 s) last max(wall, CPU / 0.25)
    = 0.4, 0.2, 0.3 s on n0's clock, back to back from 100.0 with no sleep in between; n0's visit of n1's
    event after the first chunk (0.2 s of bookkeeping) counts nowhere. Before its message n0 sleeps once,
    100.9 - 100.7 = 0.2 s, and the message is posted at 100.9. Undilated, the rows are the real times less
    the visit, and nothing is slept."""
    from fplstudy.train.distributed import transport as distributed

    plan = _plan(strategy="sl", nodes=2, rounds=1, batch_size=64)
    computes = [Compute(0, 0, 0, 0, plan.nodes[0].name, ("b0",), (64, 64), 64, phase, False)
                for phase in ("forward", "backward", "backward")]  # what they compute does not matter here
    peer = plan.nodes[1].name
    theirs = Compute(0, 0, 0, 0, peer, ("b1",), (64, 64), 64, "forward", False)
    for share, rows, slept in ((0.25, [(100.0, 100.4), (100.4, 100.6), (100.6, 100.9)], [0.2]),
                               (0, [(100.0, 100.1), (100.3, 100.4), (100.4, 100.7)], [])):
        clock = _Clock()
        monkeypatch.setattr(distributed.time, "perf_counter", lambda c=clock: c.wall)
        monkeypatch.setattr(distributed.time, "thread_time", lambda c=clock: c.cpu)
        monkeypatch.setattr(distributed.time, "sleep", clock.sleep)
        monkeypatch.setenv(distributed.DILATE_ENV, str(share))
        monkeypatch.setenv(distributed.TRACE_ENV, str(tmp_path))
        T = distributed.DistributedTransport(plan, rank=0)
        for ev, (wall, cpu) in zip([computes[0], theirs, *computes[1:]],
                                   [(0.1, 0.1), (0.2, 0.2), (0.1, 0.05), (0.3, 0.01)]):
            clock.run(wall, cpu)
            T.compute(ev)
        assert clock.slept == []  # nothing slept between chunks
        monkeypatch.setattr(distributed.dist, "isend", lambda buf, dst: None)
        monkeypatch.setattr(T, "_settle", lambda keep=0: None)
        T.move(torch.zeros(2), src=T.node, dst=peer, kind="activations", shape=(2,), dtype=torch.float32,
               where=(0, 0, 0, 0))
        assert clock.slept == pytest.approx(slept)
        assert [r[-2:] for r in T.trace[:3]] == [pytest.approx(r) for r in rows]
        assert T.trace[3][2] == "send" and T.trace[3][7] == pytest.approx(rows[-1][1])


def test_the_nodes_wait_for_a_message_up_to_three_predicted_rounds_and_never_less_than_the_config():
    """sl on 8 nodes at 5 Mbit/s: a client waits over a minute for its turn, so the default one-minute timeout
    stopped the run; the emulated nodes get three times the longest predicted round, capped at a day."""
    cfg = make_config({"strategy": "sl", "nodes": 8})
    assert tb_run.node_timeout_s(cfg, pd.Series([10.0, 45.0, 30.0])) == 135.0
    assert tb_run.node_timeout_s(cfg, pd.Series([1.0])) == 60.0 == cfg.distributed_timeout_s
    assert tb_run.node_timeout_s(cfg.model_copy(update={"distributed_timeout_s": 500.0}), pd.Series([100.0])) == 500.0
    assert tb_run.node_timeout_s(cfg, pd.Series([1e6])) == 86400.0


def test_error_summary_leaves_out_the_warmup_round():
    table = pd.DataFrame({"round": [0, 1, 2], "node": ["n0"] * 3, "warmup": [True, False, False],
                          "measured_round_s": [9.0, 1.1, 0.8], "predicted_round_s": [1.0, 1.0, 1.0],
                          "measured_busy_s": [5.0, 0.5, 0.55], "predicted_busy_s": [0.5, 0.5, 0.5],
                          "measured_send_s": [0.0] * 3, "predicted_send_s": [0.0] * 3,
                          "measured_recv_s": [0.0] * 3, "predicted_recv_s": [0.0] * 3, "time_scale": [2.0] * 3})
    s = tb_validation.error_summary(table)
    assert s["rounds_compared"] == 2
    assert s["round_makespan_median_abs_error"] == pytest.approx(0.15)  # |0.1| and |-0.2|
    assert s["round_makespan_max_abs_error"] == pytest.approx(0.2)
    assert s["busy_median_abs_error"] == pytest.approx(0.05)
    assert s["send_points"] == 0 and math.isnan(s["send_median_abs_error"])


def test_calibrate_writes_a_measured_profile_that_loads(tmp_path):
    from fplstudy.testbed.calibrate import calibrate
    from fplstudy.train.results import cpu_model

    out = tmp_path / "host.yaml"
    out.write_text("links:\n  mine: {up_bps: 1.0e+6, down_bps: 1.0e+6, tx_j_per_bit: 0, rx_j_per_bit: 0}\n")
    rows = calibrate(out, models=["cnn"], batch_size=16, seconds=0.6)
    assert [r["profile"] for r in rows] == ["calibrated_cnn_b16"]
    prof = load_profiles(out)
    dev = prof.device("calibrated_cnn_b16")
    assert dev.flops_per_s == float(f"{rows[0]['flops_per_s']:.4g}") and dev.status["flops_per_s"] == "M"
    assert cpu_model() in dev.source["flops_per_s"] and "torch" in dev.source["flops_per_s"]
    assert dev.call_overhead_s >= 0 and "mine" in prof.links  # the file's other entries are kept
    # the two timings it rests on: the whole step, and the step cut per block (more calls, never fewer FLOPs)
    assert rows[0]["whole_s"] > 0 and rows[0]["cut_s"] > 0
    with pytest.raises(ConfigError, match="'--models': got 'gpt2'"):
        calibrate(out, models=["gpt2"])


def test_missing_calibration_is_refused_before_anything_is_built(tmp_path):
    before = set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()
    proc = subprocess.run([sys.executable, "-m", "fplstudy.cli", "run", "--set", "strategy=mp", "--set", "nodes=2",
                           "--backend", "emulated", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                          env={**os.environ, "CI": "1"}, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    reason = tb_emulation.requirements_problem()
    if reason:  # no root or no Mininet here: that is what is named
        assert reason in proc.stderr
    else:
        assert "'profiles_file': got None; no device profile 'calibrated_cnn_b32'" in proc.stderr
        assert "fplstudy calibrate --models cnn --batch-size 32" in proc.stderr
    assert not (tmp_path / "x").exists()
    if before:
        assert set(os.listdir("/sys/class/net")) == before  # no interface was made


def _run_tag(pid: int) -> str:
    """The tag an emulated run of process ``pid`` starts its hosts', links' and state file's names with: "f" and
    the last five base-36 digits of the pid (fplstudy.testbed.run)."""
    digits, out = "0123456789abcdefghijklmnopqrstuvwxyz", ""
    while pid:
        pid, r = divmod(pid, 36)
        out = digits[r] + out
    return "f" + out[-5:]


def _off_path_tools() -> list[str]:
    """The tools the network controller runs by name that live in /usr/sbin or /sbin only (tc here)."""
    return [t for t in ("tc", "brctl", "ip") if shutil.which(t, path="/usr/sbin:/sbin")
            and not shutil.which(t, path="/usr/local/bin:/usr/bin:/bin")]


STRIPPED_PATHS = {"usr-bin-and-bin": "/usr/bin:/bin", "venv-bin-only": str(Path(sys.executable).parent),
                  "empty": "", "unset": None}


@pytest.mark.skipif(not Path(tb_emulation.SYSTEM_PYTHON).is_file() or "tc" not in _off_path_tools(),
                    reason="needs the system Python and tc in /usr/sbin (not also in /usr/bin)")
@pytest.mark.parametrize("path", list(STRIPPED_PATHS.values()), ids=list(STRIPPED_PATHS))
def test_a_path_without_usr_sbin_is_refused_in_one_line_before_anything_is_built(path, tmp_path):
    """Mininet runs tc and ip by name: without /usr/sbin on PATH (env -i, some sudo setups) the refusal names the
    tools and the fix before any namespace exists, root or not; the testbed's own tests skip with that line."""
    env = {k: v for k, v in os.environ.items() if k != "PATH"} | ({} if path is None else {"PATH": path})
    with subprocess.Popen([sys.executable, "-m", "fplstudy.cli", "run", "--set", "strategy=mp", "--set", "nodes=2",
                           "--backend", "emulated", "--out", str(tmp_path / "x")], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env | {"CI": "1"}) as child:
        out, err = child.communicate(timeout=300)
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "IndexError" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'--backend'" in lines[0] and "put /usr/sbin on PATH" in lines[0], lines[0]
    for tool in _off_path_tools():
        assert tool in lines[0], (tool, lines[0])
    assert not (tmp_path / "x").exists()
    assert _run_tag(os.getpid()) == tb_run._tag()
    tag = _run_tag(child.pid)  # the prefix of every name the run would have made (other runs may share the machine)
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(tag)], "no interface was made"
    assert not Path("/run/fplstudy-testbed", tag).exists(), "no network controller was started"
    skip = subprocess.run([sys.executable, "-c", "from fplstudy.testbed.emulation import requirements_problem as r; "
                           "print(r())"], capture_output=True, text=True, env=env, timeout=120)
    assert skip.stdout.strip() in lines[0], "the reason the testbed's tests skip with (REASON) is that line"


# --------------------------------------------------------------------------- on Mininet (root only)

REASON = tb_emulation.requirements_problem()
needs_mininet = pytest.mark.skipif(REASON is not None, reason=f"no emulated testbed here: {REASON}")


def _calibration(tmp_path, batch=32) -> str:
    """A calibrated profile with a round figure: these tests check bytes and results, not times."""
    path = tmp_path / "host.yaml"
    path.write_text(f"devices:\n  calibrated_cnn_b{batch}: {{flops_per_s: 4.0e+10, active_w: 0, idle_w: 0}}\n")
    return str(path)


def _iperf(tmp_path, spec: dict) -> tuple[float, dict]:
    """Run ``spec`` (hosts a: iperf3 server at 10.0.0.1, b: a 3 s client) with netctl: the goodput b -> a (bit/s)
    and netctl's outcome; nothing of the run is left."""
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = subprocess.run([tb_emulation.SYSTEM_PYTHON, str(tb_emulation.NETCTL), "run", str(tmp_path / "spec.json")],
                         capture_output=True, text=True, timeout=120)
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    assert outcome["codes"] == [0, 0], out.stderr
    assert tb_run._netctl("leftovers", spec["tag"]) == {"processes": [], "links": [], "cgroups": []}
    return json.loads((tmp_path / "iperf.json").read_text())["end"]["sum_received"]["bits_per_second"], outcome


@pytest.mark.serial
@needs_mininet
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 missing (apt-get install iperf3): it measures the rate")
def test_bulk_transfer_runs_at_the_shaped_rate(tmp_path):
    """iperf3 between two hosts whose links are shaped to 20 Mbit/s: TCP goodput within 10 % of the shaped rate
    (and within 3 % of it less the frame headers, 1448 of every 1514 bytes)."""
    (tmp_path / "gate").mkdir()
    client = "sleep 0.5; iperf3 -c 10.0.0.1 -t 3 -J > " + str(tmp_path / "iperf.json")
    spec = {"tag": "fqtbk", "cwd": str(tmp_path), "deadline_s": 60, "hosts": [
        {"name": "a", "cpu": -1, "period_us": 100000, "up_mbit": 20, "down_mbit": 20, "argv": ["iperf3", "-s", "-1"]},
        {"name": "b", "cpu": -1, "period_us": 100000, "up_mbit": 20, "down_mbit": 20, "argv": ["sh", "-c", client]}]}
    bps, _ = _iperf(tmp_path, spec)
    assert abs(bps - 20e6) / 20e6 <= 0.10
    assert abs(bps - 20e6 * GOODPUT) / (20e6 * GOODPUT) <= 0.03


def _run_equals_simulated(tmp_path, values: dict):
    """Run ``values`` on the testbed: it finishes, its wire bytes equal the ledger's, its results equal the simulated
    backend's (same seed, one thread), and the measured-vs-predicted table has every round × node."""
    res = tb_run.run_emulated(make_config(values), tmp_path / "run")
    plan = resolve(make_config(values))
    assert res.metrics["status"] == "completed" and len(res.emulation.nodes) == len(plan.nodes)
    check_wire(pd.read_csv(tmp_path / "run" / "wire.csv"), pd.read_csv(tmp_path / "run" / "ledger.csv"))
    sim = engine.train(plan)
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    for key in ("train_loss", "test_loss_mean", "test_acc_mean"):
        assert rounds[key].tolist() == [r[key] for r in sim.rounds], key
    table = pd.read_csv(tmp_path / "run" / "testbed.csv")
    assert len(table) == values["rounds"] * len(plan.nodes) and (table["measured_round_s"] > 0).all()
    calls = pd.read_csv(tmp_path / "run" / "testbed_calls.csv")  # every call; their sums are the busy seconds
    sums = calls.groupby(["round", "node"])[["measured_s", "predicted_s"]].sum()
    got = table.set_index(["round", "node"]).loc[sums.index]
    assert (calls["measured_s"] > 0).all()
    assert sums["measured_s"].tolist() == pytest.approx(got["measured_busy_s"].tolist(), rel=1e-9)
    assert sums["predicted_s"].tolist() == pytest.approx(got["predicted_busy_s"].tolist(), rel=1e-9)
    summary = json.loads((tmp_path / "run" / "testbed_summary.json").read_text())
    longest = table.groupby("round")["predicted_round_s"].first().max()  # the nodes waited up to 3 rounds
    assert summary["distributed_timeout_s"] == pytest.approx(max(60.0, 3 * longest), rel=1e-9)
    return plan, table


@needs_mininet
@pytest.mark.parametrize("strategy, nodes", [("mp", 2), ("fl", 3)])
def test_runs_on_the_testbed_equal_the_simulated_backend(tmp_path, strategy, nodes):
    """Each rank on its own host and address: the run finishes, the wire's bytes equal the ledger's, the results
    equal the simulated backend's (same seed, one thread), and the measured-vs-predicted table is complete."""
    values = dict(strategy=strategy, nodes=nodes, max_train_samples=128, rounds=2, batch_size=32,
                  profiles_file=_calibration(tmp_path))
    plan, table = _run_equals_simulated(tmp_path, values)
    busy = table[table["predicted_busy_s"] > 0]
    assert (busy["measured_busy_s"] > 0).all()  # every node that computes was seen computing
    logs = {p.name for p in (tmp_path / "run" / "testbed").iterdir()}
    assert {f"{n.name}.log" for n in plan.nodes} <= logs
    drawn = save_figure(parity_figure([(strategy, table)]), tmp_path / "run" / "testbed_parity.png")  # as the CLI does
    assert drawn.stat().st_size > 10_000
    assert tb_run._netctl("leftovers", tb_run._tag()) == {"processes": [], "links": [], "cgroups": []}


@needs_mininet
def test_a_plan_on_a_topology_runs_through_its_relays_and_equals_the_simulated_backend(tmp_path):
    """fl with 2 clients on the three-hop site (s0, s1 -Wi-Fi 4- ap -Ethernet- gw -LTE- server): ap and gw are
    routers that run nothing, every message crosses them; the run finishes, its wire bytes equal the ledger's, its
    results equal the simulated backend's, and every emulated link carried at least the payload bytes of the
    messages whose model path crosses it, in each direction (the interfaces' own counters)."""
    values = dict(strategy="fl", nodes=2, max_train_samples=128, rounds=2, batch_size=32,
                  topology=_site_file(tmp_path, 9.4e8), profiles_file=_calibration(tmp_path))
    plan, _ = _run_equals_simulated(tmp_path, values)
    summary = json.loads((tmp_path / "run" / "testbed_summary.json").read_text())
    assert summary["topology"]["points"] == ["s0", "s1", "server", "ap", "gw"]
    carried: dict[tuple[str, str], int] = {}  # (hop src, hop dst) -> payload bytes the model sends over it
    point = {n.name: n.point for n in plan.nodes}
    for ev in plan_events(plan, [64, 64]):
        if not isinstance(ev, Compute):
            for hop in plan.site.path(point[ev.src], point[ev.dst]):
                carried[(hop.src, hop.dst)] = carried.get((hop.src, hop.dst), 0) + ev.nbytes
    links = summary["topology"]["links"]
    assert [tuple(e["ends"]) for e in links] == [("s0", "ap"), ("s1", "ap"), ("server", "gw"), ("ap", "gw")]
    for e in links:
        a, b = e["ends"]
        for (src, dst), sent in ((a, b), e["tx_bytes"][0]), ((b, a), e["tx_bytes"][1]):
            assert sent >= carried.get((src, dst), 0), (src, dst)
        assert carried.get((a, b), 0) > 0 and carried.get((b, a), 0) > 0  # every link is used both ways
    assert tb_run._netctl("leftovers", tb_run._tag()) == {"processes": [], "links": [], "cgroups": []}


@pytest.mark.serial
@needs_mininet
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 missing (apt-get install iperf3): it measures the rate")
def test_two_hops_carry_a_bulk_transfer_at_the_slower_hops_rate(tmp_path):
    """iperf3 from b to a through a router r: b -> r shaped to 40 Mbit/s, r -> a to 20. The goodput is within 10 %
    of the slower hop's (20 Mbit/s less the frame headers): IP forwards packet by packet, so a message over two
    hops takes about bits / 20 Mbit/s, as the default ``forwarding: packet`` prices it; store-and-forward
    (``forwarding: message``) would price bits / 40 + bits / 20, 1.5 times as long (topology.py, README)."""
    client = "sleep 0.5; iperf3 -c 10.0.0.1 -t 3 -J > " + str(tmp_path / "iperf.json")
    spec = {"tag": "fqtbr", "cwd": str(tmp_path), "deadline_s": 60, "hosts": [
        {"name": "a", "cpu": -1, "period_us": 100000, "argv": ["iperf3", "-s", "-1"]},
        {"name": "b", "cpu": -1, "period_us": 100000, "argv": ["sh", "-c", client]}],
        "routers": ["r0"],
        "links": [{"ends": ["h0", "r0"], "mbit": [20, 20], "addrs": ["10.1.0.1/24", "10.1.0.2/24"]},
                  {"ends": ["h1", "r0"], "mbit": [40, 40], "addrs": ["10.1.1.1/24", "10.1.1.2/24"]}],
        "routes": {"h0": [["10.0.0.2", "10.1.0.2"]], "h1": [["10.0.0.1", "10.1.1.2"]],
                   "r0": [["10.0.0.1", "10.1.0.1"], ["10.0.0.2", "10.1.1.1"]]}}
    bps, outcome = _iperf(tmp_path, spec)
    assert abs(bps - 20e6 * GOODPUT) / (20e6 * GOODPUT) <= 0.10
    sent = outcome["link_tx_bytes"]  # r0 -> a carried the data; b -> r0 as much
    assert sent[0][1] >= bps * 3 / 8 * 0.9 and sent[1][0] >= bps * 3 / 8 * 0.9


def _tag_of(pid: int) -> str:
    digits, out = "0123456789abcdefghijklmnopqrstuvwxyz", ""
    while pid:
        pid, r = divmod(pid, 36)
        out = digits[r] + out
    return "f" + out[-5:]


@needs_mininet
def test_a_run_killed_mid_round_leaves_nothing_behind(tmp_path):
    """kill -9 of the fplstudy process in the middle of a round: its controller notices, stops the hosts' processes,
    removes the links, the bridge and the cgroups (no namespace survives its processes)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fplstudy.cli", "run", "--set", "strategy=fl", "--set", "nodes=3", "--set",
           "rounds=200", "--set", "max_train_samples=256", "--set", f"profiles_file={_calibration(tmp_path)}",
           "--backend", "emulated", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CI": "1"})
    tag = _tag_of(proc.pid)
    try:
        deadline = time.monotonic() + 240
        while not (out / "rounds.csv").exists():  # round 0 done: training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        assert tb_run._netctl("leftovers", tag)["links"], "the network was not there"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 60
    while tb_run._netctl("leftovers", tag) != {"processes": [], "links": [], "cgroups": []}:
        assert time.monotonic() < deadline, tb_run._netctl("leftovers", tag)
        time.sleep(0.5)
    ranks = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert ranks == [], "a node process of the run is still alive"
    assert not Path(f"/run/fplstudy-testbed/{tag}").exists()
