"""A compute call that follows a receive (``receive_call_s``): which calls start cold, by hand; the ledger adds
the device's seconds to exactly those; the profile field, the testbed's stretching and the calibration that
measures it. Opt-in: a profile without it prices every float as before (tests/test_block_rates.py's snapshots);
the fast paths against the reference: tests/test_fast_pricing.py."""

from __future__ import annotations

import pytest

from fplstudy import testbed
from fplstudy.calibrate import calibrate
from fplstudy.config import ConfigError, make_config
from fplstudy.dryrun import plan_events, price_plan, shard_sizes
from fplstudy.ledger import follows_receive, price, price_compute
from fplstudy.plan import resolve
from fplstudy.profiles import DeviceProfile, ProfileError, check_profiles, load_profiles

TINY = {"max_train_samples": 100, "rounds": 2, "batch_size": 64}  # two batches a round


def _plan(**kw):
    return resolve(make_config({**TINY, **kw}))


def _cold(plan) -> list[tuple]:
    events = plan_events(plan, shard_sizes(plan))
    flags = follows_receive(events, frozenset(n.name for n in plan.nodes))
    return [(ev.round, ev.node, ev.phase) for ev, f in zip(events, flags) if f]


# --------------------------------------------------------------------------- which calls, by hand

def test_which_calls_start_cold_by_hand():
    """mp on 2 nodes, 2 batches a round: n0's first forward of the round (it opens the round), n1's forward
    after the activations, n0's backward after the gradients; n1's backward follows its forward (the labels
    came behind the activations), n0's second forward its backward. fl on 2 clients: each client's first
    forward of a round, nothing else (the parameters go down at the round's end). sl on 3 nodes: each client's
    forward opens its turn (n1 after the parameters come down), the server's forward after the activations."""
    mp_round = [("n0", "forward"), ("n1", "forward"), ("n0", "backward"), ("n1", "forward"), ("n0", "backward")]
    assert _cold(_plan(strategy="mp", nodes=2)) == [(r, *c) for r in (0, 1) for c in mp_round]
    assert _cold(_plan(strategy="fl", nodes=2)) == [(r, n, "forward") for r in (0, 1) for n in ("n0", "n1")]
    sl_round = [("n0", "forward"), ("n2", "forward"), ("n0", "backward"), ("n1", "forward"), ("n2", "forward"),
                ("n1", "backward")]
    assert _cold(_plan(strategy="sl", nodes=3)) == [(0, *c) for c in sl_round] + [(1, *c) for c in sl_round]
    assert _cold(_plan(strategy="centralized", nodes=1)) == [(0, "n0", "forward"), (1, "n0", "forward")]


def test_price_compute_adds_the_seconds_to_a_call_after_a_receive_only():
    dev = DeviceProfile("d", flops_per_s=2e10, active_w=3.0, idle_w=0.5, call_overhead_s=1e-4, receive_call_s=2e-3)
    f = 123_456_789
    assert price_compute(dev, f) == (f / 2e10 + 1e-4, 3.0 * (f / 2e10 + 1e-4))
    s, e = price_compute(dev, f, after_receive=True)
    assert s == f / 2e10 + 1e-4 + 2e-3 and e == 3.0 * s
    rated = DeviceProfile("r", flops_per_s=2e10, active_w=1.0, idle_w=0.0, receive_call_s=5e-4,
                          block_flops_per_s={"cnn": {"conv1": 1e9}})
    s, _ = price_compute(rated, 1000 + 4000, "cnn", (("conv1", 1000), ("conv2", 4000)), True)
    assert s == pytest.approx(1000 / 1e9 + 4000 / 2e10 + 5e-4, rel=1e-15)


@pytest.mark.parametrize("spec", [dict(strategy="mp", nodes=3, micro_batches=2, pipeline="gpipe"),
                                  dict(strategy="fpl", nodes=4, branches=2), dict(strategy="sfl", nodes=3)])
def test_the_ledger_adds_the_seconds_to_exactly_the_calls_that_start_cold(spec, tmp_path):
    """Per round, node and phase: the compute seconds with receive_call_s less those without it are the cold
    calls counted by hand (follows_receive) times the node's receive_call_s, the joules active_w times that;
    FLOPs and bytes do not change, and no round gets shorter."""
    path = tmp_path / "cold.yaml"
    path.write_text("devices:\n  rpi4: {receive_call_s: 3.0e-3}\n  minipc: {receive_call_s: 5.0e-4}\n")
    plan = _plan(**spec, profiles_file=str(path))
    warm = _plan(**spec)
    shards = shard_sizes(plan)
    cold_l, warm_l = price_plan(plan, shards), price_plan(warm, shards)
    extra = {"rpi4": 3e-3, "minipc": 5e-4}
    counts: dict = {}
    for rnd, node, phase in _cold(plan):
        counts[(rnd, node, phase)] = counts.get((rnd, node, phase), 0) + 1
    assert counts, "no call started cold"
    profiles = check_profiles(plan)
    for (c, w) in zip(cold_l.itertuples(), warm_l.itertuples()):
        assert (c.round, c.node, c.kind, c.flops, c.bytes_tx, c.bytes_rx) == (w.round, w.node, w.kind, w.flops,
                                                                               w.bytes_tx, w.bytes_rx)
        assert c.round_makespan_s >= w.round_makespan_s
        if c.kind in ("forward", "backward"):
            want = counts.get((c.round, c.node, c.kind), 0) * extra[c.device]
            assert c.seconds - w.seconds == pytest.approx(want, abs=1e-12)
            assert c.energy_j - w.energy_j == pytest.approx(profiles.device(c.device).active_w * want, abs=1e-9)


# --------------------------------------------------------------------------- the profile field

def test_the_field_loads_defaults_to_zero_and_bad_values_are_refused(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("devices:\n  d: {flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, receive_call_s: 2.5e-3}\n"
                    "  rpi4: {receive_call_s: {value: 1.0e-3, status: M, source: bench}}\n")
    profiles = load_profiles(good)
    assert profiles.device("d").receive_call_s == 2.5e-3
    assert (profiles.device("rpi4").receive_call_s, profiles.device("rpi4").source["receive_call_s"]) == (1e-3, "bench")
    assert load_profiles().device("rpi4").receive_call_s == 0.0  # shipped profiles have none
    for value, shown, why in (("-1.0e-3", "-0.001", "must be a number in [0, 3600]"),
                              ("4000", "4000", "must be a number in [0, 3600]"), ("cold", "'cold'", "must be a number")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"devices:\n  d: {{flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, receive_call_s: {value}}}\n")
        with pytest.raises(ProfileError) as err:
            load_profiles(bad)
        msg = str(err.value)
        assert len(msg.splitlines()) == 1 and f"key 'devices.d.receive_call_s': got {shown}; {why}" in msg, msg


# --------------------------------------------------------------------------- the testbed and the calibration

def test_the_testbed_stretches_the_seconds_by_the_cpu_share_by_hand():
    """fl on 3 nodes, this machine calibrated at C = 4e10 with r = 2e-3 s more per call after a receive: a node of
    device FLOP/s F pays r C s / F (rpi4, F / C = 0.4: 2e-3 s / 0.4); without r its profile has none."""
    plan = _plan(strategy="fl", nodes=3)
    profiles = check_profiles(plan)
    emu = testbed.emulation(plan, profiles, 4e10, 2, calibrated_call_s=1e-4, calibrated_receive_s=2e-3)
    s = emu.time_scale
    assert emu.profiles.device("rpi4").receive_call_s == pytest.approx(2e-3 * s / 0.4, rel=1e-12)
    assert emu.profiles.device("minipc").receive_call_s == pytest.approx(2e-3 * s / 1.5, rel=1e-12)
    assert testbed.emulation(plan, profiles, 4e10, 2).profiles.device("rpi4").receive_call_s == 0.0


def test_calibrate_with_a_receive_wait_writes_the_extra_seconds_it_measured(tmp_path):
    """A real calibration: the cold steps' median less the whole steps' is written (4 digits) as receive_call_s,
    and it is loaded and priced; without --receive-wait none is written. A negative or bool wait is refused."""
    out = tmp_path / "host.yaml"
    row = calibrate(out, models=["cnn"], batch_size=16, seconds=0.6, receive_wait_s=0.01)[0]
    assert row["receive_call_s"] == max(0.0, row["cold_s"] - row["whole_s"])
    dev = load_profiles(out).device("calibrated_cnn_b16")
    assert dev.receive_call_s == float(f"{row['receive_call_s']:.4g}")
    plain = tmp_path / "plain.yaml"
    row = calibrate(plain, models=["cnn"], batch_size=16, seconds=0.3)[0]
    assert "receive_call_s" not in row and load_profiles(plain).device("calibrated_cnn_b16").receive_call_s == 0.0
    for bad in (-0.1, 11.0, True):
        with pytest.raises(ConfigError) as err:
            calibrate(tmp_path / "x.yaml", models=["cnn"], receive_wait_s=bad)
        assert "--receive-wait" in str(err.value)


def test_a_device_without_the_field_prices_every_call_as_before(tmp_path):
    """receive_call_s: 0 written out is the same ledger as no field (the fast path skips the bookkeeping)."""
    path = tmp_path / "zero.yaml"
    path.write_text("devices:\n  rpi4: {receive_call_s: 0}\n")
    spec = dict(strategy="fpl", nodes=4, branches=2)
    plan, bare = _plan(**spec, profiles_file=str(path)), _plan(**spec)
    events = plan_events(plan, shard_sizes(plan))
    assert price(plan, events).equals(price(bare, events))
    assert price_plan(plan, shard_sizes(plan)).equals(price(bare, events, fast=False))
