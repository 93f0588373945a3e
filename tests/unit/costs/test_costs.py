"""Cost accounting: exact hand-computed values on tiny models, and cross-checks against real runs.

The tiny models are registered for these tests only:

- ``mlp2`` — fc1 = Flatten + Linear(64→16) + ReLU, fc2 = Linear(16→10), on digits (1×8×8).
  Per sample (FLOP = 2 MAC): fc1 forward 2·64·16 = 2048, backward 2048 (weight grad) + 2048 (input
  grad) = 4096, or 2048 without the input grad; fc2 forward 2·16·10 = 320, backward 640 / 320.
  Params: fc1 64·16 + 16 = 1040, fc2 16·10 + 10 = 170. The vector adapter on 16 features: Linear(16→16),
  forward 512, backward 1024, 272 params.
  A trained sample of the uncut model costs 2048 + 320 (forward) + 2048 + 640 (backward) = 5056.
- ``mlp3`` — three Linear(64→64) blocks (after a Flatten) for the 3-stage pipeline.
- ``tinyconv`` — conv = Conv2d(1→2, 3×3, pad 1) + ReLU, fc = Flatten + Linear(128→10): a model a
  ``concat`` junction can cut (row views of the image).
"""

from __future__ import annotations

from collections import OrderedDict

import pandas as pd
import pytest
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import dry_run, plan_events
from fplstudy.costs.ledger import (
    event_costs,
    price,
    read_ledger_csv,
    totals,
    write_ledger_csv,
)
from fplstudy.costs.makespan import schedule_round
from fplstudy.costs.memory import model_size, peak_memory
from fplstudy.costs.pricing import chunk_flops, price_compute, price_message
from fplstudy.facts.models import MODELS, ModelInfo
from fplstudy.facts.profiles import (
    STATUSES,
    DeviceProfile,
    LinkProfile,
    ProfileError,
    check_profiles,
    device_key,
    load_profiles,
)
from fplstudy.plans.events import Compute, Transfer
from fplstudy.plans.plan import Node, resolve
from fplstudy.train import engine


def _mlp2(input_shape, num_classes):
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())),  # (B, 16)
        ("fc2", nn.Linear(16, num_classes)),  # (B, 10)
    ]))


def _mlp3(input_shape, num_classes):
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(64, 64))),  # (B, 64)
        ("fc2", nn.Linear(64, 64)),  # (B, 64)
        ("fc3", nn.Linear(64, 64)),  # (B, 64)
    ]))


def _tinyconv(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(OrderedDict([
        ("conv", nn.Sequential(nn.Conv2d(c, 2, 3, padding=1), nn.ReLU())),  # (B, 2, H, W)
        ("fc", nn.Sequential(nn.Flatten(), nn.Linear(2 * h * w, num_classes))),  # (B, 10)
    ]))


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch):
    monkeypatch.setitem(MODELS, "mlp2", ModelInfo(_mlp2, 1, "test-only two-layer MLP"))
    monkeypatch.setitem(MODELS, "mlp3", ModelInfo(_mlp3, 1, "test-only three-layer MLP"))
    monkeypatch.setitem(MODELS, "tinyconv", ModelInfo(_tinyconv, 1, "test-only conv + linear"))


PER_SAMPLE = 2048 + 320 + 2048 + 640  # mlp2, uncut or cut: forward + backward FLOPs of one sample
ADAPTER = 512 + 1024  # the 16-feature vector adapter, forward + backward (its input needs a gradient)

STRATEGIES = {  # strategy -> config of the smallest plan with every message kind it sends
    "centralized": dict(strategy="centralized", nodes=1),
    "fl": dict(strategy="fl", nodes=2),
    "mp": dict(strategy="mp", nodes=2),
    "sl": dict(strategy="sl", nodes=3),
    "sfl": dict(strategy="sfl", nodes=3),
    "fpl": dict(strategy="fpl", nodes=3, branches=2),
}


def _plan(**over):
    values = dict(model="mlp2", batch_size=16, rounds=1)
    values.update(over)
    return resolve(make_config(values))


# --------------------------------------------------------------------------- FLOPs


def test_block_flops_are_measured_per_block_forward_and_backward():
    plan = _plan(strategy="centralized", nodes=1)
    fc1, fc2 = plan.profile
    assert (fc1.flops_fwd, fc1.flops_bwd, fc1.flops_bwd_no_input_grad, fc1.params) == (2048, 4096, 2048, 1040)
    assert (fc2.flops_fwd, fc2.flops_bwd, fc2.flops_bwd_no_input_grad, fc2.params) == (320, 640, 320, 170)
    assert fc1.out_bytes == 16 * 4 and fc2.out_bytes == 10 * 4
    # a chunk that reads the data skips fc1's input gradient, but fc2's input comes from fc1's parameters
    assert chunk_flops(plan, ("fc1", "fc2"), (1, 8, 8), "backward", False) == 2048 + 640
    assert chunk_flops(plan, ("fc2",), (16,), "backward", True) == 640
    assert chunk_flops(plan, ("fc2",), (16,), "backward", False) == 320
    assert chunk_flops(plan, ("adapter",), (16,), "forward", False) == 512
    assert chunk_flops(plan, ("adapter",), (16,), "backward", True) == 1024


# --------------------------------------------------------------------------- bytes of every message kind

# One round, 32 samples per branch, batches of 16 (2 batches per branch). Per batch of 16:
# activations and gradients at the cut 16 × 16 float32 = 1024 B, labels 16 × int64 = 128 B.
# A synced head (fc1) is 1040 float32 = 4160 B; the whole model 1210 float32 = 4840 B.
EXPECTED_BYTES = {
    "centralized": {},
    "fl": {"params_up": 2 * 4840, "params_down": 2 * 4840},
    "mp": {"activations": 2 * 1024, "gradients": 2 * 1024, "labels": 2 * 128},
    # clients in turn: round 0 relays client 0's head to client 1 through the server
    "sl": {"activations": 4 * 1024, "gradients": 4 * 1024, "labels": 4 * 128, "params_up": 4160,
           "params_down": 4160},
    "sfl": {"activations": 4 * 1024, "gradients": 4 * 1024, "labels": 4 * 128, "params_up": 2 * 4160,
            "params_down": 2 * 4160},
    # the adapters stay local: only fc1 is averaged
    "fpl": {"activations": 4 * 1024, "gradients": 4 * 1024, "labels": 4 * 128, "params_up": 2 * 4160,
            "params_down": 2 * 4160},
}
EXPECTED_FLOPS = {"centralized": 32 * PER_SAMPLE, "fl": 64 * PER_SAMPLE, "mp": 32 * PER_SAMPLE,
                  "sl": 64 * PER_SAMPLE, "sfl": 64 * PER_SAMPLE, "fpl": 64 * (PER_SAMPLE + ADAPTER)}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_bytes_of_every_message_kind(strategy):
    plan = _plan(**STRATEGIES[strategy])
    shards = [32] * len(plan.branches)
    ledger = price(plan, plan_events(plan, shards))
    by_kind = ledger.groupby("kind")[["bytes_tx", "bytes_rx"]].sum()
    got = {k: int(v) for k, v in by_kind["bytes_tx"].items() if v}
    assert got == EXPECTED_BYTES[strategy]
    assert (by_kind["bytes_tx"] == by_kind["bytes_rx"]).all()
    assert int(ledger["flops"].sum()) == EXPECTED_FLOPS[strategy]
    samples = 32 * len(plan.branches)
    forward = 2048 + 320 + (512 if strategy == "fpl" else 0)
    assert int(ledger.loc[ledger.kind == "forward", "flops"].sum()) == samples * forward


def test_sl_relays_every_turn_after_the_first():
    plan = _plan(strategy="sl", nodes=3, rounds=2)
    events = plan_events(plan, [32, 32])
    relays = [(e.round, e.step, e.kind, e.src, e.dst) for e in events if e.micro == -1]
    assert relays == [(0, 2, "params_up", "n0", "n2"), (0, 2, "params_down", "n2", "n1"),
                      (1, 0, "params_up", "n1", "n2"), (1, 0, "params_down", "n2", "n0"),
                      (1, 2, "params_up", "n0", "n2"), (1, 2, "params_down", "n2", "n1")]


# --------------------------------------------------------------------------- energy arithmetic

TOY_PROFILES = """
devices:
  toy: {flops_per_s: 1000, active_w: 2.0, idle_w: 0.5}
links:
  toylink: {radio: wifi, up_bps: 800, down_bps: 1600, tx_w: 0.8, rx_w: 0.4, latency_s: 0.5}
"""


@pytest.fixture
def toy_file(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_PROFILES)
    return str(path)


def test_energy_and_time_arithmetic_by_hand(toy_file):
    plan = _plan(strategy="mp", nodes=2, device="toy", link="toylink", profiles_file=toy_file)
    events = [
        Compute(0, 0, 0, 0, "n0", ("fc1",), (1, 8, 8), 1, "forward", False),  # 2048 FLOP / 1000 = 2.048 s
        Transfer(0, 0, 0, 0, "n0", "n1", "activations", (1, 16), "float32", 64),  # 512 bit / 800 + 0.5 = 1.14 s
        Compute(0, 0, 0, 0, "n1", ("fc2",), (16,), 1, "forward", False),  # 320 FLOP -> 0.32 s
    ]
    ledger = price(plan, events)
    rows = {(r.node, r.kind): r for r in ledger.itertuples()}
    assert rows["n0", "forward"].flops == 2048
    assert rows["n0", "forward"].seconds == pytest.approx(2.048)
    assert rows["n0", "forward"].energy_j == pytest.approx(2.0 * 2.048)
    assert rows["n0", "activations"].bytes_tx == 64 and rows["n1", "activations"].bytes_rx == 64
    assert rows["n0", "activations"].seconds == pytest.approx(1.14)
    assert rows["n1", "activations"].seconds == pytest.approx(1.14)
    assert rows["n0", "activations"].energy_j == pytest.approx(0.8 * 512 / 800)  # sender: tx W x airtime
    assert rows["n1", "activations"].energy_j == pytest.approx(0.4 * 512 / 800)  # receiver: rx W x airtime
    assert rows["n1", "forward"].energy_j == pytest.approx(2.0 * 0.32)
    makespan = 2.048 + 1.14 + 0.32
    assert ledger["round_makespan_s"].tolist() == pytest.approx([makespan] * len(ledger))
    # the board at idle W for every second its node does not compute: sending or receiving, then waiting
    assert rows["n0", "idle"].seconds == pytest.approx(1.14 + 0.32)
    assert rows["n0", "idle"].energy_j == pytest.approx(0.5 * (1.14 + 0.32))
    assert rows["n1", "idle"].seconds == pytest.approx(2.048 + 1.14)
    assert rows["n1", "idle"].energy_j == pytest.approx(0.5 * (2.048 + 1.14))
    tot = totals(plan, ledger)
    assert tot["energy_j"] == pytest.approx(4.096 + 0.512 + 0.256 + 0.64 + 0.5 * 1.46 + 0.5 * 3.188)
    assert tot["energy_j_max_node"] == pytest.approx(4.096 + 0.512 + 0.5 * 1.46)
    assert tot["makespan_s"] == pytest.approx(makespan)
    assert tot["bytes_total"] == 64 and tot["flops_total"] == 2048 + 320


def test_server_to_edge_messages_use_the_down_rate(toy_file):
    plan = _plan(strategy="sl", nodes=3, device="toy", server_device="toy", link="toylink",
                 profiles_file=toy_file)
    down = Transfer(0, 0, 0, 0, "n2", "n0", "gradients", (1, 16), "float32", 64)
    up = Transfer(0, 0, 0, 0, "n0", "n2", "activations", (1, 16), "float32", 64)
    ledger = price(plan, [up, down])
    secs = ledger.set_index(["node", "kind"])["seconds"]
    assert secs["n0", "activations"] == pytest.approx(512 / 800 + 0.5)
    assert secs["n0", "gradients"] == pytest.approx(512 / 1600 + 0.5)


TOYLINK = LinkProfile("toylink", up_bps=800, down_bps=1600, tx_w=0.8, rx_w=0.4, latency_s=0.5)
EDGE, EDGE2 = Node("n0", "branch", "toy", branch=0, stage=0), Node("n1", "branch", "toy", branch=1, stage=0)
TRUNK, AGG = Node("n2", "trunk", "toy", stage=0), Node("n3", "aggregator", "toy", aggregates=True)


@pytest.mark.parametrize("src, dst, rate", [
    (EDGE, TRUNK, 800), (EDGE, AGG, 800), (EDGE, EDGE2, 800),  # from an edge node: up
    (TRUNK, EDGE, 1600), (AGG, EDGE, 1600),  # from the server side to an edge node: down
    (TRUNK, AGG, 800), (AGG, TRUNK, 800),  # between server-side nodes: up
])
def test_one_message_is_priced_by_the_sides_of_its_ends(src, dst, rate):
    # 64 bytes = 512 bits: bits / rate + latency at both ends, tx W x airtime at the sender, rx W x airtime at the
    # receiver (the airtime is bits / rate: no radio works through the latency)
    assert price_message(TOYLINK, 64, src, dst) == (512 / rate + 0.5, 0.8 * (512 / rate), 0.4 * (512 / rate))


def test_one_compute_call_is_flops_over_rate_plus_the_call_overhead():
    device = DeviceProfile("toy", flops_per_s=1000, active_w=2.0, idle_w=0.5, call_overhead_s=0.25)
    assert price_compute(device, 2048) == (2048 / 1000 + 0.25, 2.0 * (2048 / 1000 + 0.25))


def test_event_costs_and_both_ledgers_use_the_one_message_price(toy_file):
    plan = _plan(strategy="sl", nodes=3, device="toy", server_device="toy", link="toylink",
                 profiles_file=toy_file)
    up = Transfer(0, 0, 0, 0, "n0", "n2", "activations", (1, 16), "float32", 64)
    down = Transfer(0, 0, 0, 0, "n2", "n0", "gradients", (1, 16), "float32", 64)
    profiles = check_profiles(plan)
    want = {ev.kind: price_message(profiles.link("toylink"), 64, plan.node(ev.src), plan.node(ev.dst))
            for ev in (up, down)}
    assert event_costs(plan, [up, down], profiles) == ([0, 0], [want["activations"][0], want["gradients"][0]])
    for fast in (True, False):
        rows = price(plan, [up, down], profiles, fast=fast).set_index(["node", "kind"])
        for kind, (seconds, tx_j, rx_j) in want.items():
            sender, receiver = ("n0", "n2") if kind == "activations" else ("n2", "n0")
            assert rows.loc[(sender, kind), "seconds"] == rows.loc[(receiver, kind), "seconds"] == seconds
            assert rows.loc[(sender, kind), "energy_j"] == tx_j and rows.loc[(receiver, kind), "energy_j"] == rx_j


@pytest.mark.parametrize("over, roles, keys", [
    (dict(strategy="centralized", nodes=1), ["branch0/stage0"], ["device"]),
    (dict(strategy="fl", nodes=2), ["branch0/stage0", "branch1/stage0", "aggregator"],
     ["device", "device", "server_device"]),
    (dict(strategy="mp", nodes=2), ["trunk/stage0", "trunk/stage1"], ["device", "device"]),
    (dict(strategy="sl", nodes=3), ["branch0/stage0", "branch1/stage0", "trunk/stage0+aggregator"],
     ["device", "device", "server_device"]),
    (dict(strategy="fpl", nodes=3, branches=2, sync="none"), ["branch0/stage0", "branch1/stage0", "trunk/stage0"],
     ["device", "device", "server_device"]),
    (dict(model="mlp3", strategy="fpl", nodes=5, branches=2, branch_stages=2, junction_at=2),
     ["branch0/stage0", "branch0/stage1", "branch1/stage0", "branch1/stage1", "trunk/stage0+aggregator"],
     ["device"] * 4 + ["server_device"]),
])
def test_node_roles_are_typed_fields_written_as_before(over, roles, keys):
    plan = _plan(**over)
    assert [n.role for n in plan.nodes] == roles  # the ledger's and memory table's role column
    assert [n.side for n in plan.nodes] == ["edge" if r.startswith("branch") else "server" for r in roles]
    assert [device_key(plan, n.name) for n in plan.nodes] == keys
    for n in plan.nodes:
        assert n.aggregates == (n.name == plan.aggregator)
        if n.part == "branch":
            assert plan.branches[n.branch].stages[n.stage].node == n.name
        elif n.part == "trunk":
            assert plan.trunk[n.stage].node == n.name


@pytest.mark.parametrize("fields, field", [
    (dict(part="server"), "Node.part"),
    (dict(part="branch", stage=0), "Node.branch"),
    (dict(part="trunk", branch=0, stage=0), "Node.branch"),
    (dict(part="trunk"), "Node.stage"),
    (dict(part="aggregator", stage=0, aggregates=True), "Node.stage"),
    (dict(part="aggregator"), "Node.aggregates"),
])
def test_a_node_with_inconsistent_fields_is_refused_naming_the_field(fields, field):
    with pytest.raises(ValueError, match=rf"^{field}: got "):
        Node("n0", device="toy", **fields)


# --------------------------------------------------------------------------- makespan of a 3-stage pipeline

def _pipeline_events(pipeline, micro=4):
    plan = _plan(model="mlp3", strategy="mp", nodes=3, batch_size=micro, micro_batches=micro, pipeline=pipeline)
    return plan, plan_events(plan, [micro])


def _durations(events, fwd=(1.0, 1.0, 1.0), bwd=(2.0, 2.0, 2.0)):
    stage = {"n0": 0, "n1": 1, "n2": 2}
    return [(fwd if e.phase == "forward" else bwd)[stage[e.node]] if isinstance(e, Compute) else 0.0
            for e in events]


@pytest.mark.parametrize("pipeline, expected", [
    ("sequential", 4 * 3 * (1 + 2)),  # M·S·(t_f + t_b): one micro-batch at a time
    ("gpipe", (4 + 3 - 1) * (1 + 2)),  # (M + S − 1)(t_f + t_b)
    ("1f1b", (4 + 3 - 1) * (1 + 2)),  # same bubble as GPipe
])
def test_makespan_of_a_three_stage_pipeline(pipeline, expected):
    plan, events = _pipeline_events(pipeline)
    assert len(plan.trunk) == 3
    sched = schedule_round(plan, events, _durations(events))
    assert sched.makespan_s == pytest.approx(expected)
    if pipeline == "gpipe":  # every node runs all its forwards before any backward
        for node in ("n0", "n1", "n2"):
            starts = [(e.phase, s) for e, s in zip(events, sched.start) if isinstance(e, Compute) and e.node == node]
            assert max(s for p, s in starts if p == "forward") < min(s for p, s in starts if p == "backward")


def test_gpipe_with_unequal_stages_is_fill_plus_slowest_stage_plus_drain():
    plan, events = _pipeline_events("gpipe")
    f, b = (1.0, 3.0, 2.0), (2.0, 6.0, 4.0)
    sched = schedule_round(plan, events, _durations(events, f, b))
    # forward wave: Σ t_f + (M − 1) max t_f; backward wave likewise (Huang et al. 2019, GPipe)
    assert sched.makespan_s == pytest.approx(sum(f) + 3 * max(f) + sum(b) + 3 * max(b))


def test_1f1b_keeps_at_most_depth_micro_batches_in_flight():
    plan, events = _pipeline_events("1f1b", micro=6)
    sched = schedule_round(plan, events, _durations(events))
    for node, depth in (("n0", 3), ("n1", 2), ("n2", 1)):
        spans = {}
        for e, s, t in zip(events, sched.start, sched.finish):
            if isinstance(e, Compute) and e.node == node:
                spans.setdefault(e.micro, {})[e.phase] = (s, t)
        starts = sorted(v["forward"][0] for v in spans.values())
        for t in starts:  # at each forward start: micro-batches begun and not yet back
            live = sum(1 for v in spans.values() if v["forward"][0] <= t < v["backward"][1])
            assert live <= depth
    gpipe_plan, _ = _pipeline_events("gpipe", micro=6)
    mem_1f1b = peak_memory(plan).set_index("node")["activations_bytes"]
    mem_gpipe = peak_memory(gpipe_plan).set_index("node")["activations_bytes"]
    assert mem_1f1b["n0"] * 6 == mem_gpipe["n0"] * 3  # 3 of 6 micro-batches in flight at stage 0
    assert mem_1f1b["n2"] * 6 == mem_gpipe["n2"] * 1


def test_trunk_serializes_branches_and_branches_run_in_parallel():
    plan = _plan(strategy="sfl", nodes=3)
    events = plan_events(plan, [16, 16])  # one batch per client
    durations = [1.0 if isinstance(e, Compute) and e.node != "n2" else
                 (10.0 if isinstance(e, Compute) else 0.0) for e in events]
    sched = schedule_round(plan, events, durations)
    first = {e.node: s for e, s in zip(events, sched.start) if isinstance(e, Compute) and e.phase == "forward"
             and e.node != "n2"}
    assert first == {"n0": 0.0, "n1": 0.0}  # both clients start at once
    # client fwd 1, server fwd+bwd 20 for client 0 then 20 for client 1, client 1's backward 1
    assert sched.makespan_s == pytest.approx(1 + 20 + 20 + 1)


# --------------------------------------------------------------------------- memory and model size

def test_memory_and_model_size_by_hand():
    plan = _plan(strategy="fpl", nodes=3, branches=2, momentum=0.9)
    mem = peak_memory(plan).set_index("node")
    head = (1040 + 272) * 4  # fc1 + adapter, float32
    assert mem.loc["n0", "params_bytes"] == head
    assert mem.loc["n0", "grads_bytes"] == head
    assert mem.loc["n0", "optimizer_bytes"] == head  # momentum buffer
    assert mem.loc["n2", "params_bytes"] == 170 * 4
    assert mem.loc["n2", "sync_bytes"] == (2 + 1) * 1040 * 4  # aggregator: both heads and the average
    size = model_size(plan)
    assert size["model_params"] == 1040 + 272 + 170
    assert size["model_params_ratio"] == pytest.approx((1040 + 272 + 170) / 1210)
    assert size["params_stored_total"] == 2 * (1040 + 272) + 170
    no_momentum = peak_memory(_plan(strategy="fpl", nodes=3, branches=2)).set_index("node")
    assert no_momentum.loc["n0", "optimizer_bytes"] == 0
    fl = model_size(_plan(strategy="fl", nodes=2))
    assert (fl["model_params"], fl["model_params_ratio"], fl["params_stored_total"]) == (1210, 1.0, 2 * 1210)


# --------------------------------------------------------------------------- link profile changes only communication

def test_changing_only_the_link_changes_only_communication():
    """'Nothing else': FLOPs, bytes, counts, and compute seconds and energy are identical row for row;
    message seconds and energy change; idle time and the makespan change only as their consequence."""
    a = dry_run(_plan(strategy="fpl", nodes=3, branches=2, link="wifi5"), shards=[32, 32]).ledger
    b = dry_run(_plan(strategy="fpl", nodes=3, branches=2, link="lte"), shards=[32, 32]).ledger
    keys = ["round", "node", "role", "device", "kind", "count", "flops", "bytes_tx", "bytes_rx"]
    pd.testing.assert_frame_equal(a[keys], b[keys])
    compute = a.kind.isin(["forward", "backward"])
    pd.testing.assert_frame_equal(a.loc[compute, ["seconds", "energy_j"]], b.loc[compute, ["seconds", "energy_j"]])
    comm = ~compute & (a.kind != "idle")
    assert (a.loc[comm, "seconds"] < b.loc[comm, "seconds"]).all()  # LTE is slower than Wi-Fi 5
    assert (a.loc[comm, "energy_j"] != b.loc[comm, "energy_j"]).all()
    assert a["round_makespan_s"].iloc[0] < b["round_makespan_s"].iloc[0]


# --------------------------------------------------------------------------- profiles

def test_shipped_profiles_carry_status_and_source_for_every_number():
    prof = load_profiles()
    assert set(prof.devices) >= {"rpi4", "rpi5", "jetson_nano", "jetson_orin_nano", "phone", "minipc", "a100"}
    assert set(prof.links) >= {"ethernet", "wifi5", "wifi4", "lte", "nr5g", "ble", "zigbee", "lora"}
    for p in [*prof.devices.values(), *prof.links.values()]:
        assert p.status and set(p.status) == set(p.source)
        assert set(p.status.values()) <= set(STATUSES)
        assert all(s.strip() for s in p.source.values())
    assert prof.devices["rpi4"].flops_per_s == 1.6e10 and prof.links["lora"].up_bps == 5.47e3


def test_a_user_file_overrides_one_number_and_adds_profiles(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("devices:\n  rpi4: {flops_per_s: 2.0e10}\n" + TOY_PROFILES.replace("devices:\n", ""))
    prof = load_profiles(path)
    assert prof.devices["rpi4"].flops_per_s == 2.0e10
    assert prof.devices["rpi4"].idle_w == 2.7  # the rest of the shipped profile stays
    assert prof.devices["rpi4"].status["flops_per_s"] == "U"


@pytest.mark.parametrize("text, key, value", [
    ("devices:\n  toy: {flops_per_s: 1000, active_w: 2.0}\n", "devices.toy.idle_w", "None"),
    ("devices:\n  rpi4: {active_w: -1}\n", "devices.rpi4.active_w", "-1"),
    ("links:\n  wifi5: {up_bps: 0}\n", "links.wifi5.up_bps", "0"),
    ("links:\n  wifi5: {up_bps: fast}\n", "links.wifi5.up_bps", "'fast'"),
    ("devices:\n  rpi4: {watts: 3}\n", "devices.rpi4.watts", "3"),
    ("gadgets:\n  rpi4: {}\n", "gadgets", "{'rpi4': {}}"),
])
def test_a_bad_profile_file_is_refused_naming_file_key_and_value(tmp_path, text, key, value):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        check_profiles(make_config({"profiles_file": str(path)}))
    msg = str(err.value)
    assert str(path) in msg and f"'{key}'" in msg and value in msg


@pytest.mark.parametrize("over, key", [
    (dict(device="rpi9"), "device"),
    (dict(server_device="toaster"), "server_device"),
    (dict(node_devices={"n1": "rpi9"}), "node_devices.n1"),
    (dict(link="carrier_pigeon"), "link"),
    (dict(device=""), "device"),  # a role with no profile
])
def test_an_unknown_profile_or_a_role_without_one_is_refused_before_training(over, key):
    plan = resolve(make_config(dict(strategy="sfl", nodes=3, **over)))
    with pytest.raises(ConfigError) as err:
        check_profiles(plan)
    assert f"'{key}'" in str(err.value)
    assert "rpi4" in str(err.value) or "wifi5" in str(err.value)  # lists the known names


# --------------------------------------------------------------------------- real runs: FLOPs and dry run

REAL = {**STRATEGIES,
        "fpl-1f1b": dict(strategy="fpl", nodes=3, branches=2, micro_batches=3, pipeline="1f1b"),
        "fpl-concat": dict(strategy="fpl", nodes=3, branches=2, junction="concat", partition="features",
                           model="tinyconv")}


@pytest.mark.parametrize("name", list(REAL))
def test_dry_run_equals_the_real_run_and_flops_equal_flopcountermode(name, monkeypatch, tmp_path):
    values = dict(model="mlp2", max_train_samples=64, rounds=2, batch_size=16)
    values.update(REAL[name])
    plan = resolve(make_config(values))
    # evaluation is a measurement, not training: it emits no events, so it is left out of the count
    monkeypatch.setattr(engine, "evaluate", lambda plan, hold, x, y, batch=1024: ([0.0] * len(plan.branches),
                                                                                    [0.0] * len(plan.branches)))
    # the dry run first: it measures the block profiles a concat view needs (cached), which the
    # engine would otherwise measure inside train(), under the counter, on first use
    dry = dry_run(plan)
    with FlopCounterMode(display=False) as counter:
        real = engine.train(plan)
    real_ledger = price(plan, real.events)
    assert int(real_ledger["flops"].sum()) == counter.get_total_flops()
    assert dry.shard_sizes == real.shard_sizes
    assert dry.events == real.events
    pd.testing.assert_frame_equal(dry.ledger, real_ledger)
    led = dry.ledger  # tidy: one row per round x node x kind, an idle row for every node every round
    assert not led.duplicated(["round", "node", "kind"]).any()
    assert (led.kind == "idle").sum() == plan.config.rounds * len(plan.nodes)
    busy = led[led.kind.isin(["forward", "backward", "idle"])].groupby(["round", "node"])["seconds"].sum()
    assert (busy <= led.groupby("round")["round_makespan_s"].first().reindex(busy.index, level=0) + 1e-12).all()
    path = write_ledger_csv(dry.ledger, tmp_path / "ledger.csv")
    back = read_ledger_csv(path)
    pd.testing.assert_frame_equal(back, dry.ledger)
    assert totals(plan, back) == dry.totals
