"""A compute call that starts cold (``cold_factor``: after a receive, or opening its node's round): which calls,
by hand; the ledger prices exactly those at 1 + the device's factor times their seconds; the profile field, the
testbed and the calibration that measures it. Opt-in: a profile without it prices every float as before (tests/integration/test_block_rates.py's snapshots);
the fast paths against the reference: tests/unit/costs/test_fast_pricing.py."""

from __future__ import annotations

import pytest

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import plan_events, price_plan, shard_sizes
from fplstudy.costs.ledger import event_costs, price
from fplstudy.costs.pricing import cold_calls, cold_flow, price_compute
from fplstudy.facts.profiles import DeviceProfile, check_profiles, load_profiles
from fplstudy.plans.events import Compute, Transfer
from fplstudy.plans.plan import resolve
from fplstudy.testbed import emulation as tb_emulation
from fplstudy.testbed.calibrate import calibrate, fit_cold

TINY = {"max_train_samples": 100, "rounds": 2, "batch_size": 64}  # two batches a round


def _plan(**kw):
    return resolve(make_config({**TINY, **kw}))


def _cold(plan) -> list[tuple]:
    events = plan_events(plan, shard_sizes(plan))
    flags = cold_calls(events, frozenset(n.name for n in plan.nodes))
    return [(ev.round, ev.node, ev.phase) for ev, f in zip(events, flags) if f]


# --------------------------------------------------------------------------- which calls, by hand

def test_which_calls_start_cold_by_hand():
    """mp on 2 nodes, 2 batches a round: every call. n0's first forward and n1's first forward and backward open
    their phases in the round; n0's first backward follows the gradients; each second-batch call follows a receive
    of its node since its phase's previous call (n0's forward: the gradients, after its first forward; n1's
    backward: the second activations). fl on 2 clients with 150 samples each (batches of 64, 64, 22): each client's
    first forward and first backward of a round, its other four calls warm (no message until the round's end).
    sl on 3 nodes: every call (each client's two open their phases, the server receives before each of its
    own). centralized: the round's first forward and first backward. The labels never count: n1's backward
    follows them without being cold on their account (it is the activations before its forward)."""
    mp_round = [("n0", "forward"), ("n1", "forward"), ("n1", "backward"), ("n0", "backward")] * 2
    assert _cold(_plan(strategy="mp", nodes=2)) == [(r, *c) for r in (0, 1) for c in mp_round]
    assert _cold(_plan(strategy="fl", nodes=2, max_train_samples=300)) == \
        [(r, n, p) for r in (0, 1) for n in ("n0", "n1") for p in ("forward", "backward")]
    sl_round = [("n0", "forward"), ("n2", "forward"), ("n2", "backward"), ("n0", "backward"), ("n1", "forward"),
                ("n2", "forward"), ("n2", "backward"), ("n1", "backward")]
    assert _cold(_plan(strategy="sl", nodes=3)) == [(r, *c) for r in (0, 1) for c in sl_round]
    assert _cold(_plan(strategy="centralized", nodes=1)) == [(r, "n0", p) for r in (0, 1) for p in ("forward", "backward")]


def test_a_receive_leaves_both_phases_cold_and_a_call_warms_only_its_own():
    """cold_flow on a hand-made run: a receive (not labels) makes both of its node's phases cold; a call warms its
    own phase only; the entry decides a (node, phase)'s first call; lead and ends say what the run changes."""
    def comp(node, phase):
        return Compute(0, 0, 0, 0, node, ("conv1",), (1, 8, 8), 4, phase, False)

    def msg(kind, src, dst):
        return Transfer(0, 0, 0, 0, src, dst, kind, (4,), "float32", 16)

    run = [comp("a", "forward"), msg("labels", "b", "a"), comp("a", "forward"), msg("activations", "b", "a"),
           comp("a", "backward"), comp("a", "forward"), comp("a", "backward"), comp("b", "backward")]
    flags, lead, ends = cold_flow(run, frozenset({("a", "forward"), ("b", "backward")}))
    assert flags == [True, False, False, False, True, True, False, True]
    assert lead == {("a", "forward"), ("b", "backward")}  # a's backward comes after the receive: the entry is moot
    assert ends == {("a", "forward"): False, ("a", "backward"): False, ("b", "backward"): False}
    assert cold_flow(run[:4], frozenset())[2] == {("a", "forward"): True, ("a", "backward"): True}


def test_price_compute_scales_a_cold_call_only_by_hand():
    """The whole call scales, its overhead and blocks' fixed seconds included; a warm call, or a device without the
    factor, is the old formula float for float."""
    dev = DeviceProfile("d", flops_per_s=2e10, active_w=3.0, idle_w=0.5, call_overhead_s=1e-4, cold_factor=0.6)
    f = 123_456_789
    assert price_compute(dev, f) == (f / 2e10 + 1e-4, 3.0 * (f / 2e10 + 1e-4))
    s, e = price_compute(dev, f, cold=True)
    assert s == (f / 2e10 + 1e-4) * 1.6 and e == 3.0 * s
    plain = DeviceProfile("p", flops_per_s=2e10, active_w=3.0, idle_w=0.5, call_overhead_s=1e-4)
    assert price_compute(plain, f, cold=True) == price_compute(plain, f)
    rated = DeviceProfile("r", flops_per_s=2e10, active_w=1.0, idle_w=0.0, cold_factor=0.25,
                          block_flops_per_s={"cnn": {"conv1": 1e9}}, block_call_s={"cnn": {"conv2": 1e-4}})
    s, _ = price_compute(rated, 1000 + 4000, "cnn", (("conv1", 1000), ("conv2", 4000)), True)
    assert s == pytest.approx((1000 / 1e9 + 4000 / 2e10 + 1e-4) * 1.25, rel=1e-15)
    both = DeviceProfile("b", flops_per_s=2e10, active_w=2.0, idle_w=0.0, cold_factor=0.5, cold_s=4e-4)
    assert price_compute(both, f, cold=True) == ((f / 2e10) * 1.5 + 4e-4, 2.0 * ((f / 2e10) * 1.5 + 4e-4))
    assert price_compute(both, f) == (f / 2e10, 2.0 * f / 2e10)
    only = DeviceProfile("o", flops_per_s=2e10, active_w=1.0, idle_w=0.0, cold_s=4e-4)  # fixed seconds alone
    assert price_compute(only, f, cold=True)[0] == f / 2e10 + 4e-4


def test_fit_cold_draws_the_line_through_a_short_and_a_long_call_by_hand():
    """16 block calls of 8 ms in all (0.5 ms each), 16 ms cold (0.5 ms more each); a 4.5 ms forward, 5.5 ms cold (1 ms
    more): slope 0.5 / 4 = 0.125, intercept 0.5 - 0.125 x 0.5 = 0.4375 ms; both points lie on it. A long call that
    gained less than the short ones: no factor, the short calls' extra seconds. One that gained so much that the line
    would start below 0: no fixed seconds, the long call's own factor. Nothing gained: 0 and 0."""
    factor, fixed = fit_cold(16, 8e-3, 16e-3, 4.5e-3, 5.5e-3)
    assert factor == pytest.approx(0.125, rel=1e-12) and fixed == pytest.approx(0.4375e-3, rel=1e-12)
    assert fixed + factor * 0.5e-3 == pytest.approx(0.5e-3, rel=1e-12)
    assert fixed + factor * 4.5e-3 == pytest.approx(1e-3, rel=1e-12)
    assert fit_cold(16, 8e-3, 16e-3, 4.5e-3, 4.8e-3) == (0.0, pytest.approx(0.5e-3, rel=1e-12))
    factor, fixed = fit_cold(16, 8e-3, 8.8e-3, 4.5e-3, 9e-3)  # 0.05 ms a short call, 4.5 ms the long: steep
    assert (factor, fixed) == (pytest.approx(1.0, rel=1e-12), 0.0)
    assert fit_cold(16, 8e-3, 8e-3, 4.5e-3, 4.5e-3) == (0.0, 0.0)


@pytest.mark.parametrize("spec", [dict(strategy="mp", nodes=3, micro_batches=2, pipeline="gpipe"),
                                  dict(strategy="fpl", nodes=4, branches=2), dict(strategy="sfl", nodes=3)])
def test_the_ledger_scales_exactly_the_calls_that_start_cold(spec, tmp_path):
    """Per round, node and phase: the compute seconds with cold_factor (and, on rpi4, cold_s) less those without
    them are the factor times the seconds of the calls marked cold (cold_calls, each priced warm by hand) plus
    cold_s per such call, the joules active_w times that; FLOPs and bytes do not change, and no round gets
    shorter."""
    path = tmp_path / "cold.yaml"
    path.write_text("devices:\n  rpi4: {cold_factor: 0.6, cold_s: 3.0e-4}\n  minipc: {cold_factor: 0.2}\n")
    plan = _plan(**spec, profiles_file=str(path))
    warm = _plan(**spec)
    shards = shard_sizes(plan)
    cold_l, warm_l = price_plan(plan, shards), price_plan(warm, shards)
    factor = {"rpi4": 0.6, "minipc": 0.2}
    fixed = {"rpi4": 3e-4, "minipc": 0.0}
    profiles = check_profiles(plan)
    events = plan_events(plan, shards)
    _, warm_s = event_costs(warm, events, check_profiles(warm))
    extra: dict = {}  # (round, node, phase) -> the factor times the warm seconds of its cold calls
    for ev, s, cold in zip(events, warm_s, cold_calls(events, frozenset(n.name for n in plan.nodes))):
        if cold:
            key = (ev.round, ev.node, ev.phase)
            device = plan.node(ev.node).device
            extra[key] = extra.get(key, 0.0) + factor[device] * s + fixed[device]
    assert extra, "no call started cold"
    for (c, w) in zip(cold_l.itertuples(), warm_l.itertuples()):
        assert (c.round, c.node, c.kind, c.flops, c.bytes_tx, c.bytes_rx) == (w.round, w.node, w.kind, w.flops,
                                                                               w.bytes_tx, w.bytes_rx)
        assert c.round_makespan_s >= w.round_makespan_s
        if c.kind in ("forward", "backward"):
            want = extra.get((c.round, c.node, c.kind), 0.0)
            assert c.seconds - w.seconds == pytest.approx(want, rel=1e-9, abs=1e-15)
            assert c.energy_j - w.energy_j == pytest.approx(profiles.device(c.device).active_w * want, abs=1e-9)


# --------------------------------------------------------------------------- the profile field

# the field's loading and bounds: tests/unit/costs/test_batch_work.py (one test for both optional number fields)


# --------------------------------------------------------------------------- the testbed and the calibration

def test_the_testbed_carries_the_factor_to_every_emulated_device(calibrated):
    """A factor of the call's own seconds: a node slowed to any CPU share runs a cold call that much slower too, so
    every emulated profile carries this machine's factor unchanged (and none without it); the time scale and
    the other numbers are those without it."""
    plan = _plan(strategy="fl", nodes=3)
    profiles = check_profiles(plan)
    plain = tb_emulation.emulation(plan, profiles, calibrated(call_overhead_s=1e-4), 2)
    emu = tb_emulation.emulation(plan, profiles, calibrated(call_overhead_s=1e-4, cold_factor=0.55), 2)
    assert emu.profiles.device("rpi4").cold_factor == emu.profiles.device("minipc").cold_factor == 0.55
    assert plain.profiles.device("rpi4").cold_factor == 0.0
    assert emu.time_scale == plain.time_scale
    assert emu.profiles.device("rpi4").flops_per_s == plain.profiles.device("rpi4").flops_per_s


def test_calibrate_with_a_cold_wait_writes_the_factor_it_measured(tmp_path):
    """A real calibration: the cold cut step's block calls (each after the idle) over the tight cut step's, less 1,
    are written (4 digits) as cold_factor and loaded; the tight ones are the cut step's block calls (their sum is
    the blocks' seconds); without --cold-wait none is written. A negative, too long or bool wait is refused."""
    out = tmp_path / "host.yaml"
    row = calibrate(out, models=["cnn"], batch_size=16, seconds=0.6, cold_wait_s=0.01)[0]
    assert (row["cold_factor"], row["cold_s"]) == fit_cold(16, row["calls_s"], row["cold_calls_s"], row["forward_s"],
                                                           row["cold_forward_s"])
    assert 0 < row["calls_s"] <= row["cut_s"] and row["cold_calls_s"] > 0
    assert 0 < row["forward_s"] < row["whole_s"] and row["cold_forward_s"] > 0
    dev = load_profiles(out).device("calibrated_cnn_b16")
    assert dev.cold_factor == float(f"{row['cold_factor']:.4g}") and dev.cold_s == float(f"{row['cold_s']:.4g}")
    assert "fplstudy.testbed.calibrate.fit_cold" in dev.source["cold_s"]
    plain = tmp_path / "plain.yaml"
    row = calibrate(plain, models=["cnn"], batch_size=16, seconds=0.3)[0]
    assert "cold_factor" not in row and load_profiles(plain).device("calibrated_cnn_b16").cold_factor == 0.0
    for bad in (-0.1, 11.0, True):
        with pytest.raises(ConfigError) as err:
            calibrate(tmp_path / "x.yaml", models=["cnn"], cold_wait_s=bad)
        assert "--cold-wait" in str(err.value)


def test_a_device_without_the_field_prices_every_call_as_before(tmp_path):
    """cold_factor: 0 written out is the same ledger as no field (the fast path skips the bookkeeping)."""
    path = tmp_path / "zero.yaml"
    path.write_text("devices:\n  rpi4: {cold_factor: 0}\n")
    spec = dict(strategy="fpl", nodes=4, branches=2)
    plan, bare = _plan(**spec, profiles_file=str(path)), _plan(**spec)
    events = plan_events(plan, shard_sizes(plan))
    assert price(plan, events).equals(price(bare, events))
    assert price_plan(plan, shard_sizes(plan)).equals(price(bare, events, fast=False))
