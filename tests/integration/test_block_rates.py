"""Per-block training FLOP/s: measured by ``fplstudy calibrate``, carried by a device profile
(``block_flops_per_s``), priced by ``pricing.price_compute``; opt-in: without them every float is as before."""

from __future__ import annotations

import hashlib
import io
import math
import time

import pandas as pd
import pytest
import yaml

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import plan_events, price_plan, shard_sizes
from fplstudy.costs.ledger import event_costs, price
from fplstudy.costs.pricing import chunk_block_flops, chunk_flops, price_compute
from fplstudy.facts.profiles import (
    DeviceProfile,
    ProfileError,
    check_profiles,
    load_profiles,
)
from fplstudy.plans.events import Compute
from fplstudy.plans.plan import resolve
from fplstudy.testbed.calibrate import (
    block_rates,
    block_training_flops,
    calibrate,
    training_flops_per_sample,
)

RATED = """devices:
  rated:
    flops_per_s: 2.0e+10
    active_w: 3.0
    idle_w: 0.5
    call_overhead_s: 0.001
    block_flops_per_s: {cnn: {conv1: 1.0e+9, conv2: 4.0e+10}}
"""


def _plan(**kw):
    return resolve(make_config(kw))


@pytest.fixture
def rated_file(tmp_path):
    path = tmp_path / "rated.yaml"
    path.write_text(RATED)
    return str(path)


# --------------------------------------------------------------------------- pricing by hand

def test_a_chunk_of_two_blocks_with_two_rates_by_hand(rated_file):
    """mp on 4 nodes: n0 holds conv1 (18 432 FLOP forward per sample, at 1e9 FLOP/s) and conv2 (589 824, at 4e10);
    n1 holds conv3, which has no rate (at flops_per_s, 2e10). One batch of 32, 1 ms per call."""
    plan = _plan(strategy="mp", nodes=4, device="rated", server_device="rated", profiles_file=rated_file,
                 batch_size=32, max_train_samples=32, rounds=1)
    dev = check_profiles(plan).device("rated")
    split = chunk_block_flops(plan, ("conv1", "conv2"), (1, 8, 8), "forward", False)
    assert split == (("conv1", 18432), ("conv2", 589824))
    # backward from data: conv1 without its input gradient, conv2 with (conv1 has parameters)
    assert chunk_block_flops(plan, ("conv1", "conv2"), (1, 8, 8), "backward", False) == (("conv1", 18432),
                                                                                       ("conv2", 1179648))
    fwd = 32 * (18432 / 1e9 + 589824 / 4e10) + 0.001  # 2.0616832e-3 s
    bwd = 32 * (18432 / 1e9 + 1179648 / 4e10) + 0.001  # 2.5335424e-3 s
    s, e = price_compute(dev, 32 * 608256, "cnn", tuple((n, 32 * f) for n, f in split))
    assert s == pytest.approx(2.0616832e-3, rel=1e-12) and s == pytest.approx(fwd, rel=1e-15)
    assert e == pytest.approx(3.0 * 2.0616832e-3, rel=1e-12)
    assert price_compute(dev, 32 * 608256)[0] == 32 * 608256 / 2e10 + 0.001  # no split given: the one rate
    assert price_compute(dev, 32 * 608256, "lenet5", split)[0] == 32 * 608256 / 2e10 + 0.001  # no rates for lenet5
    for fast in (True, False):
        ledger = price(plan, plan_events(plan, shard_sizes(plan)), fast=fast)
        rows = {(r.node, r.kind): r for r in ledger.itertuples()}
        assert rows["n0", "forward"].seconds == pytest.approx(2.0616832e-3, rel=1e-12)
        assert rows["n0", "backward"].seconds == pytest.approx(2.5335424e-3, rel=1e-12)
        assert rows["n0", "backward"].seconds == pytest.approx(bwd, rel=1e-15)
        assert rows["n1", "forward"].seconds == 32 * 294912 / 2e10 + 0.001  # conv3: no rate, flops_per_s
        # the makespan is scheduled with the same seconds: one chain of calls, activations and gradients (the
        # labels go to the last stage while the first computes)
        compute = ledger[ledger["kind"].isin(["forward", "backward"])]["seconds"].sum()
        messages = ledger[ledger["kind"].isin(["activations", "gradients"])]["seconds"].sum() / 2  # both ends
        assert ledger["round_makespan_s"].iloc[0] == pytest.approx(compute + messages, rel=1e-12)


def test_concat_views_and_an_adapter_without_a_rate_are_priced_at_flops_per_s(tmp_path):
    """Rates for every cnn block and none of them equal to flops_per_s: the branch heads of concat (fed 4-row views,
    another shape than the rates were measured on) take flops_per_s, named None; the adapter is named ``adapter``
    (the block fplstudy calibrate times at the default junction) and, without a rate of its own, takes flops_per_s."""
    rates = {b: 1e9 * (i + 2) for i, b in enumerate(("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3"))}
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump({"devices": {"all": {"flops_per_s": 5.0e10, "active_w": 1, "idle_w": 0,
                                                        "block_flops_per_s": {"cnn": rates}}}}))
    for junction, extra in (("adapter", {}), ("concat", {"partition": "features"})):
        plan = _plan(strategy="fpl", nodes=4, branches=2, junction=junction, device="all", server_device="all",
                     profiles_file=str(path), batch_size=32, max_train_samples=64, rounds=1, **extra)
        events = plan_events(plan, shard_sizes(plan))
        flops, seconds = event_costs(plan, events, check_profiles(plan))
        checked = 0
        for ev, f, s in zip(events, flops, seconds):
            if not isinstance(ev, Compute):
                continue
            split = chunk_block_flops(plan, ev.blocks, ev.in_shape, ev.phase, ev.input_grad)
            adapter = ev.blocks == ("adapter",)
            view = not adapter and ev.in_shape != plan.profile[plan.block_names.index(ev.blocks[0])].in_shape
            want = f / 5e10 if view or adapter else sum(b * ev.samples / rates[n] for n, b in split)
            assert s == pytest.approx(want, rel=1e-12), (junction, ev)
            assert all(n is None for n, _ in split) == view
            assert (split[0][0] == "adapter") == adapter
            checked += view or adapter
        assert checked >= 2  # each branch's adapter (or view head) at least once


def test_the_adapter_takes_its_own_rate_at_the_default_junction_only(tmp_path):
    """An adapter rate (what fplstudy calibrate measures at cnn's default junction, after conv2: 32 x 4 x 4) prices
    the adapter calls of an fpl plan cut there, by hand: forward 32 768 FLOP per sample (a 1x1 convolution 32 -> 32
    on 16 pixels), backward 65 536 (weights and input); at junction 3 the adapter sees other activations (32 x 4 x
    4 too for cnn's conv3, so cut at 4: 64 x 2 x 2) and is priced at flops_per_s, named None."""
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump({"devices": {"a": {"flops_per_s": 5.0e10, "active_w": 1, "idle_w": 0,
                                                      "call_overhead_s": 1e-4,
                                                      "block_flops_per_s": {"cnn": {"adapter": 2.0e9}}}}}))
    for at, rated in ((None, True), (4, False)):
        plan = _plan(strategy="fpl", nodes=4, branches=2, device="a", server_device="a", profiles_file=str(path),
                     batch_size=32, max_train_samples=64, rounds=1, junction_at=at)
        events = plan_events(plan, shard_sizes(plan))
        flops, seconds = event_costs(plan, events, check_profiles(plan))
        calls = [(ev, f, s) for ev, f, s in zip(events, flops, seconds) if isinstance(ev, Compute)
                 and ev.blocks == ("adapter",)]
        assert len(calls) == 4  # each branch's adapter, forward and backward, one batch of 32
        for ev, f, s in calls:
            per_sample = (32768 if ev.phase == "forward" else 65536) if rated else f // 32
            split = chunk_block_flops(plan, ev.blocks, ev.in_shape, ev.phase, ev.input_grad)
            assert split == (("adapter" if rated else None, per_sample),)
            assert f == 32 * per_sample
            assert s == pytest.approx(32 * per_sample / (2.0e9 if rated else 5.0e10) + 1e-4, rel=1e-12)


def test_block_rates_scale_the_ledger_of_a_whole_model_like_one_rate():
    """price_compute with a rate per block equal to flops_per_s: the same seconds up to rounding (the sum is
    taken block by block), so a flat profile written per block changes nothing but the last bits."""
    flat = DeviceProfile("flat", flops_per_s=3e10, active_w=1, idle_w=0, call_overhead_s=2e-4,
                         block_flops_per_s={"cnn": {"conv1": 3e10, "conv2": 3e10}})
    blocks = (("conv1", 589824), ("conv2", 18874368), (None, 4096))
    assert price_compute(flat, 589824 + 18874368 + 4096, "cnn", blocks)[0] == pytest.approx(
        (589824 + 18874368 + 4096) / 3e10 + 2e-4, rel=1e-14)


# --------------------------------------------------------------------------- without block rates: as before

SNAPSHOT_PLANS = {
    "centralized": dict(strategy="centralized", nodes=1),
    "fl-every2": dict(strategy="fl", nodes=3, sync_every=2),
    "mp-1f1b-m4": dict(strategy="mp", nodes=3, micro_batches=4, pipeline="1f1b"),
    "sl": dict(strategy="sl", nodes=4),
    "sfl": dict(strategy="sfl", nodes=3),
    "fpl": dict(strategy="fpl", nodes=4, branches=2),
    "fpl-concat": dict(strategy="fpl", nodes=4, branches=2, junction="concat", partition="features"),
    "fpl-relay-m2": dict(strategy="fpl", nodes=5, branches=2, branch_stages=2, sync="relay", micro_batches=2,
                         pipeline="gpipe"),
    "mp-star-overhead": dict(strategy="mp", nodes=4, network="star", device="slowcall", server_device="slowcall"),
}
# sha256 (first 16 hex digits) of each plan's ledger as ledger.csv writes it (%.17g) under the no-rates formula
# (seconds = flops / flops_per_s + call_overhead_s); fast, reference and price_plan give the same bytes. Pinned to
# the current pricing rules (radio energy at power x airtime, the board's idle power while its radio works, spread
# batches, the star network); a rule changed on purpose re-pins it.
SNAPSHOT = {
    "centralized": "d20c0fff3f5ca413",
    "fl-every2": "c3654a4fcd4bff4c",
    "mp-1f1b-m4": "9594a74278e071e7",
    "sl": "a76a8be69c441740",
    "sfl": "91bc7bca0bfe5111",
    "fpl": "94c6c951ffdc6658",
    "fpl-concat": "44357eadfe1f244c",
    "fpl-relay-m2": "3edff18dd1cc60b5",
    "mp-star-overhead": "19d5dac4808881b1",
}
SLOWCALL = "devices:\n  slowcall: {flops_per_s: 3.0e+9, active_w: 1.5, idle_w: 0.3, call_overhead_s: 0.0007}\n"


def _digest(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.17g")
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(SNAPSHOT_PLANS))
def test_without_block_rates_the_ledger_is_byte_identical_to_before(name, tmp_path):
    """Also with block rates for another model only (lenet5): a cnn plan does not use them."""
    for text in (SLOWCALL, SLOWCALL.replace("}\n", ", block_flops_per_s: {lenet5: {conv1: 1.0e+9}}}\n")):
        path = tmp_path / "p.yaml"
        path.write_text(text)
        plan = _plan(max_train_samples=200, rounds=3, profiles_file=str(path), **SNAPSHOT_PLANS[name])
        profiles = check_profiles(plan)
        shards = shard_sizes(plan)
        events = plan_events(plan, shards)
        for ledger in (price(plan, events, profiles), price(plan, events, profiles, fast=False),
                       price_plan(plan, shards, profiles)):
            assert _digest(ledger) == SNAPSHOT[name], (name, text)


def test_the_no_rates_path_keeps_the_old_formula_exactly():
    dev = DeviceProfile("d", flops_per_s=1.7e10, active_w=4.0, idle_w=1.0, call_overhead_s=3.3e-5)
    for f in (1, 12345, 608256 * 128, 3 * 10**12):
        old = f / 1.7e10 + 3.3e-5
        assert price_compute(dev, f) == (old, 4.0 * old)
        assert price_compute(dev, f, "cnn", (("conv1", f),)) == (old, 4.0 * old)  # no rates for cnn


# --------------------------------------------------------------------------- the profile field

def test_block_rates_round_trip_through_yaml(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text(RATED)
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text("devices:\n  rated:\n    flops_per_s: 2.0e+10\n    active_w: 3.0\n    idle_w: 0.5\n"
                       "    block_flops_per_s:\n      value: {cnn: {conv1: 1.0e+9, conv2: 4.0e+10}}\n"
                       "      status: M\n      source: my bench\n")
    a, b = load_profiles(plain).device("rated"), load_profiles(wrapped).device("rated")
    assert a.block_flops_per_s == b.block_flops_per_s == {"cnn": {"conv1": 1e9, "conv2": 4e10}}
    assert (a.status["block_flops_per_s"], a.source["block_flops_per_s"]) == ("U", "user file")
    assert (b.status["block_flops_per_s"], b.source["block_flops_per_s"]) == ("M", "my bench")
    assert isinstance(hash(a), int)  # a frozen profile stays hashable with its mapping field
    again = tmp_path / "again.yaml"  # what was read, written back, reads the same
    again.write_text(yaml.safe_dump({"devices": {"rated": {"flops_per_s": a.flops_per_s, "active_w": a.active_w,
                                                           "idle_w": a.idle_w,
                                                           "block_flops_per_s": a.block_flops_per_s}}}))
    assert load_profiles(again).device("rated").block_flops_per_s == a.block_flops_per_s
    assert load_profiles().device("rpi4").block_flops_per_s == {}  # shipped profiles have none


@pytest.mark.parametrize("field, key, value", [
    ("{cnn: {conv1: -1.0e+9}}", "devices.d.block_flops_per_s.cnn.conv1", "-1000000000.0"),
    ("{cnn: {conv1: 0}}", "devices.d.block_flops_per_s.cnn.conv1", "0"),
    ("{cnn: {conv1: .inf}}", "devices.d.block_flops_per_s.cnn.conv1", "inf"),
    ("{cnn: {conv1: .nan}}", "devices.d.block_flops_per_s.cnn.conv1", "nan"),
    ("{cnn: {conv1: fast}}", "devices.d.block_flops_per_s.cnn.conv1", "'fast'"),
    ("{cnn: {conv1: true}}", "devices.d.block_flops_per_s.cnn.conv1", "True"),
    ("{cnn: [1.0e+9]}", "devices.d.block_flops_per_s.cnn", "[1000000000.0]"),
    ("{cnn: {}}", "devices.d.block_flops_per_s.cnn", "{}"),
    ("{cnn: {1: 1.0e+9}}", "devices.d.block_flops_per_s.cnn.1", "1"),
    ("{}", "devices.d.block_flops_per_s", "{}"),
    ("5.0e+9", "devices.d.block_flops_per_s", "5000000000.0"),
    ("[conv1]", "devices.d.block_flops_per_s", "['conv1']"),
    ("{value: {cnn: {conv1: 1.0e+9}}, status: Q}", "devices.d.block_flops_per_s.status", "'Q'"),
])
def test_bad_block_rates_are_refused_naming_the_key_and_value(tmp_path, field, key, value):
    path = tmp_path / "p.yaml"
    path.write_text(f"devices:\n  d: {{flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, block_flops_per_s: {field}}}\n")
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    assert f"key '{key}': got {value};" in msg, msg
    assert str(path) in msg


@pytest.mark.parametrize("rates, key, value, hint", [
    ("{cnnn: {conv1: 1.0e+9}}", "devices.d.block_flops_per_s.cnnn", "'cnnn'", "unknown model; known: cnn"),
    ("{cnn: {conv9: 1.0e+9}}", "devices.d.block_flops_per_s.cnn.conv9", "'conv9'", "not a block of cnn; its blocks"),
    ("{cnn: {adaptor: 1.0e+9}}", "devices.d.block_flops_per_s.cnn.adaptor", "'adaptor'",
     "not a block of cnn; its blocks: conv1, conv2, conv3, conv4, conv5, fc1, fc2, fc3, and adapter (the junction"),
])
def test_rates_for_an_unknown_model_or_block_are_refused_with_the_plan(tmp_path, rates, key, value, hint):
    path = tmp_path / "p.yaml"
    path.write_text(f"devices:\n  d: {{flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, block_flops_per_s: {rates}}}\n")
    plan = _plan(strategy="mp", nodes=2, device="d", profiles_file=str(path))
    with pytest.raises(ConfigError) as err:
        check_profiles(plan)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and f"key '{key}': got {value}; {hint}" in msg, msg


# --------------------------------------------------------------------------- calibration

def test_block_rates_from_timings_by_hand():
    """Blocks a (100 FLOPs, 3 s), b (300, 4 s), z (no FLOPs, 1 s); cut step 10 s, 0.5 s per call. The rest,
    10 − 3 − 4 − 2 × 1 × 0.5 = 2 s (z's call time less its two overheads, and whatever is outside the calls),
    is shared by FLOPs: a 3 − 1 + 0.5 = 2.5 s (40 FLOP/s), b 4 − 1 + 1.5 = 4.5 s (66.7); z gets no rate. The
    FLOP-weighted harmonic mean, 400 / 7, is the step's FLOPs over cut − 2 k o = 10 − 3."""
    r = block_rates({"a": 100, "b": 300, "z": 0}, {"a": 3.0, "b": 4.0, "z": 1.0}, 10.0, 0.5)
    assert r == pytest.approx({"a": 40.0, "b": 300 / 4.5}, rel=1e-12) and list(r) == ["a", "b"]
    assert 400 / (100 / r["a"] + 300 / r["b"]) == pytest.approx(400 / 7, rel=1e-12)
    # a block whose seconds come out not positive gets no rate: rest 9 − 0.9 − 8 = 0.1; a 0.9 − 1 + 0.025 < 0,
    # b 8 − 1 + 0.075 = 7.075 s
    assert block_rates({"a": 100, "b": 300}, {"a": 0.9, "b": 8.0}, 9.0, 0.5) == pytest.approx({"b": 300 / 7.075},
                                                                                             rel=1e-12)
    assert block_rates({"z": 0}, {"z": 1.0}, 1.0, 0.0) == {}


def test_block_training_flops_are_the_ledgers_count():
    per_block, shape, classes = block_training_flops("cnn")
    plan = _plan(strategy="mp", nodes=8)  # one block per node: every block's own chunk, as calibrate cuts
    ledger_count = {}
    in_shape = tuple(shape)
    for i, b in enumerate(plan.block_names):
        ledger_count[b] = (chunk_flops(plan, (b,), in_shape, "forward", False)
                           + chunk_flops(plan, (b,), in_shape, "backward", i > 0))
        in_shape = plan.profile[i].out_shape
    assert per_block == ledger_count
    assert sum(per_block.values()) == training_flops_per_sample("cnn")[0]
    assert per_block["conv1"] == 18432 + 18432  # its input is the data: no input gradient


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "host.yaml"
    rows = calibrate(out, models=["cnn"], batch_size=16, seconds=0.6)
    return out, rows[0]


@pytest.mark.serial
def test_calibrate_times_the_adapter_and_the_ledger_prices_its_two_calls_at_what_was_measured(calibrated):
    """The junction adapter is timed in steps of its own: its FLOPs per step are the ledger's count of an fpl plan's
    adapter forward and backward at cnn's default junction (two independent counts: calibrate's from the adapter's
    profile, the ledger's from the plan's events), its rate is those FLOPs over its seconds less two call overheads,
    and pricing that plan with the written profile gives its two calls back the measured seconds (to the file's 4
    digits). Its seconds are positive and far below a cut step's (one small 1x1 convolution)."""
    out, row = calibrated
    o, s = row["call_overhead_s"], row["block_s"]["adapter"]
    assert 0 < s < row["cut_s"] / 2
    assert row["block_flops_per_s"]["adapter"] == row["block_flops"]["adapter"] / (s - 2 * o)
    plan = _plan(strategy="fpl", nodes=4, branches=2, device="calibrated_cnn_b16", server_device="calibrated_cnn_b16",
                 profiles_file=str(out), batch_size=16, max_train_samples=32, rounds=1)
    events = [ev for ev in plan_events(plan, shard_sizes(plan)) if isinstance(ev, Compute) and ev.blocks == ("adapter",)]
    _, seconds = event_costs(plan, events, check_profiles(plan))
    by_node: dict = {}
    for ev, sec in zip(events, seconds):
        assert ev.samples == 16
        by_node.setdefault(ev.node, []).append((ev, sec))
    assert len(by_node) == 2 and all(len(calls) == 2 for calls in by_node.values())  # each branch: forward, backward
    for calls in by_node.values():
        flops = sum(16 * chunk_flops(plan, ev.blocks, ev.in_shape, ev.phase, ev.input_grad) for ev, _ in calls)
        assert flops == row["block_flops"]["adapter"]
        assert sum(sec for _, sec in calls) == pytest.approx(s, rel=2e-3)  # rate and overhead written to 4 digits
    dev = load_profiles(out).device("calibrated_cnn_b16")
    assert "junction adapter" in dev.source["block_flops_per_s"]


@pytest.mark.serial
def test_calibrate_writes_block_rates_whose_harmonic_mean_is_the_whole_model_rate(calibrated):
    """By construction (:func:`block_rates`) the blocks' seconds add up to ``cut_s − 2 k o``, which is
    ``whole_s − 2 o`` whenever the overhead ``o = (cut_s − whole_s) / (2k − 2)`` is positive, so the FLOP-weighted
    harmonic mean of the block rates equals the whole-model rate to rounding. It can differ only where ``o`` is
    clamped to 0 (the cut step, with more calls, came out faster than the whole: noise of a shared machine),
    by ``whole_s / cut_s`` > 1 — bounded loosely by 1.25 here, since this 2-core machine shares its cores with
    other jobs and the two steps' medians can move apart by that much — or where a block got no rate (not so
    for cnn, all of whose blocks have FLOPs); and the file rounds each rate to 4 digits (5e-4 each)."""
    out, row = calibrated
    assert row["blocks"] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3"]
    assert set(row["block_flops_per_s"]) == set(row["block_flops"]) == set(row["blocks"]) | {"adapter"}
    assert all(math.isfinite(r) and r > 0 for r in row["block_flops_per_s"].values())
    flops = {b: row["block_flops"][b] for b in row["blocks"]}  # the model's blocks (the adapter is timed apart)
    rates = {b: row["block_flops_per_s"][b] for b in row["blocks"]}
    k = len(flops)
    harmonic = sum(flops.values()) / sum(flops[b] / rates[b] for b in rates)
    assert harmonic == pytest.approx(sum(flops.values()) / (row["cut_s"] - 2 * k * row["call_overhead_s"]), rel=1e-9)
    if row["call_overhead_s"] > 0:
        assert harmonic == pytest.approx(row["flops_per_s"], rel=1e-9)
    else:
        assert harmonic / row["flops_per_s"] == pytest.approx(row["whole_s"] / row["cut_s"], rel=1e-9)
    assert 1.0 - 1e-9 <= harmonic / row["flops_per_s"] <= 1.25
    dev = load_profiles(out).device("calibrated_cnn_b16")
    written = dev.block_flops_per_s["cnn"]
    assert written == {b: float(f"{r:.4g}") for b, r in row["block_flops_per_s"].items()}
    written = {b: written[b] for b in row["blocks"]}
    assert dev.status["block_flops_per_s"] == "M" and "fplstudy.testbed.calibrate.block_rates" in dev.source["block_flops_per_s"]
    h_written = sum(flops.values()) / sum(flops[b] / written[b] for b in written)
    assert h_written == pytest.approx(harmonic, rel=1e-3)


def test_calls_after_a_wait_time_the_calls_never_the_sleeps(tmp_path):
    """With ``wait_s`` every compute call follows a sleep, and only the calls are timed: a whole step of two
    calls after 0.05 s idle each would count at least 0.1 s if the sleeps were timed (the cut step of 16 calls,
    0.8 s; the adapter's two, 0.1 s); the cnn step at batch 2 takes milliseconds. The profile says how it was
    measured."""
    from fplstudy.testbed.calibrate import measure

    row = measure("cnn", batch_size=2, seconds=0.2, wait_s=0.05)
    assert row["wait_s"] == 0.05 and row["steps"] == 15  # one step of each of 3 kinds per window: the sleeps fill it
    assert 0 < row["whole_s"] < 0.1 and 0 < row["cut_s"] < 0.1  # 2 and 16 calls each after 0.05 s idle: not timed
    assert 0 < row["block_s"]["adapter"] < 0.1  # the adapter's 2 calls, each after 0.05 s idle
    out = tmp_path / "host.yaml"
    calibrate(out, models=["cnn"], batch_size=2, seconds=0.2, wait_s=0.01)
    dev = load_profiles(out).device("calibrated_cnn_b2")
    assert "each call after 0.01 s idle" in dev.source["flops_per_s"] and "0.01 s idle" in dev.description


def test_the_cpu_clock_leaves_out_the_seconds_a_call_is_off_the_cpu(tmp_path, monkeypatch):
    """A first block that sleeps 20 ms in each forward (as a process waiting for a core is off the CPU): by the
    wall its calls take at least 20 ms per cut step, by the CPU clock less than 5 ms (the cnn block at batch 2
    computes for about a millisecond); the whole step likewise loses the sleep. The profile says which clock timed it."""
    from torch import nn

    from fplstudy.testbed import calibrate as cal

    class Sleepy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            time.sleep(0.02)
            return self.inner(x)

    real = cal.build_model

    def build(model, shape, classes):
        net = real(model, shape, classes)
        name, block = next(iter(net.named_children()))
        setattr(net, name, Sleepy(block))
        return net

    monkeypatch.setattr(cal, "build_model", build)
    first = next(iter(cal.block_training_flops("cnn")[0]))
    wall = cal.measure("cnn", batch_size=2, seconds=0.3, clock="wall")
    cpu = cal.measure("cnn", batch_size=2, seconds=0.3, clock="cpu")
    assert wall["clock"] == "wall" and cpu["clock"] == "cpu"
    assert wall["block_s"][first] >= 0.02 and wall["whole_s"] >= 0.02
    assert cpu["block_s"][first] < 0.005 and wall["whole_s"] - cpu["whole_s"] > 0.01
    out = tmp_path / "host.yaml"
    calibrate(out, models=["cnn"], batch_size=2, seconds=0.2, clock="cpu")
    dev = load_profiles(out).device("calibrated_cnn_b2")
    assert "CPU seconds" in dev.source["flops_per_s"] and "CPU seconds" in dev.description


def test_calibration_in_processes_at_once_gives_the_medians_over_them(tmp_path):
    """``processes=2`` measures in two spawned processes together; the rate is the median (the mean of two)
    of theirs, every block has one, the steps add up, and the profile says so."""
    out = tmp_path / "host.yaml"
    row = calibrate(out, models=["cnn"], batch_size=4, seconds=0.3, processes=2)[0]  # fplstudy.testbed.calibrate.measure_together
    assert row["processes"] == 2 and row["steps"] >= 2 * 2 * 5
    assert math.isfinite(row["flops_per_s"]) and row["flops_per_s"] > 0
    assert set(row["block_flops_per_s"]) <= set(row["block_flops"]) and row["block_flops_per_s"]
    dev = load_profiles(out).device("calibrated_cnn_b4")
    assert "2 processes at once" in dev.source["flops_per_s"] and dev.flops_per_s == float(f"{row['flops_per_s']:.4g}")


@pytest.mark.parametrize(("kwargs", "key", "value"), [
    ({"wait_s": -1.0}, "--after-wait", "-1.0"), ({"wait_s": 11.0}, "--after-wait", "11.0"),
    ({"processes": 0}, "--processes", "0"), ({"processes": 1.5}, "--processes", "1.5"),
    ({"clock": "gpu"}, "--clock", "'gpu'")])
def test_bad_calibration_settings_are_refused_naming_the_flag(tmp_path, kwargs, key, value):
    with pytest.raises(ConfigError, match=f"'{key}': got {value}") as err:
        calibrate(tmp_path / "host.yaml", models=["cnn"], **kwargs)
    assert "\n" not in str(err.value) and not (tmp_path / "host.yaml").exists()
