"""Fixed seconds per block call (``block_call_s``): a block's step as a line in the batch size, fitted by
``fplstudy calibrate --fit-batch`` from two batch sizes, carried by a device profile, priced by
``pricing.price_compute``, scaled by the emulated testbed; opt-in: without it every float is as before."""

from __future__ import annotations

import pytest

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.pricing import chunk_block_flops, price_compute
from fplstudy.facts.profiles import (
    DeviceProfile,
    ProfileError,
    check_profiles,
    load_profiles,
)
from fplstudy.plans.plan import resolve
from fplstudy.testbed import emulation as tb_emulation
from fplstudy.testbed.calibrate import calibrate, fit_block_costs


def _plan(**kw):
    return resolve(make_config(kw))


# --------------------------------------------------------------------------- the fit by hand

def test_the_fit_through_two_batch_sizes_by_hand():
    """a: 100 FLOPs a sample, 0.5 s per step at batch 4 and 0.3 s at batch 2: 0.1 s a sample (1000 FLOP/s) and
    0.1 s a step whatever the batch (0.05 s per call). b: as slow at 2 as at 4 (noise): its rate at 4, 50 × 4 / 0.3,
    no fixed part. c: faster per sample at 4 than the line allows (the line's fixed part would be negative,
    0.2 − 4 × 0.1 < 0): its rate at 4, no fixed part. d: missing from the second timing: left out."""
    rates, fixed = fit_block_costs({"a": 100, "b": 50, "c": 10, "d": 5}, 4, {"a": 0.5, "b": 0.3, "c": 0.2, "d": 1.0},
                                   2, {"a": 0.3, "b": 0.3, "c": 0.0})
    assert rates == pytest.approx({"a": 1000.0, "b": 200 / 0.3, "c": 40 / 0.2}, rel=1e-12)
    assert list(rates) == ["a", "b", "c"]
    assert fixed == pytest.approx({"a": 0.05}, rel=1e-12)
    # the line gives back both timings of a: 4 samples at its rate plus its two calls' fixed seconds
    assert 4 * 100 / rates["a"] + 2 * fixed["a"] == pytest.approx(0.5, rel=1e-12)
    assert 2 * 100 / rates["a"] + 2 * fixed["a"] == pytest.approx(0.3, rel=1e-12)
    # the order of the two batch sizes does not matter
    again = fit_block_costs({"a": 100}, 2, {"a": 0.3}, 4, {"a": 0.5})
    assert again[0] == pytest.approx({"a": 1000.0}, rel=1e-12) and again[1] == pytest.approx({"a": 0.05}, rel=1e-12)


# --------------------------------------------------------------------------- pricing by hand

def test_fixed_seconds_are_added_per_block_of_a_call_by_hand():
    """A call of conv1 (18 432 FLOPs a sample at 1e9), conv2 (589 824 at 4e10) and the adapter (4096, no name, at
    flops_per_s 2e10), 32 samples: conv1 pays 2e-4 s fixed, conv2 none (not named), the adapter none (no name);
    1 ms per call on top."""
    dev = DeviceProfile("d", flops_per_s=2e10, active_w=3.0, idle_w=0.5, call_overhead_s=0.001,
                        block_flops_per_s={"cnn": {"conv1": 1e9, "conv2": 4e10}},
                        block_call_s={"cnn": {"conv1": 2e-4, "fc3": 1e-3}})
    blocks = (("conv1", 32 * 18432), ("conv2", 32 * 589824), (None, 32 * 4096))
    want = 32 * 18432 / 1e9 + 2e-4 + 32 * 589824 / 4e10 + 32 * 4096 / 2e10 + 0.001
    s, e = price_compute(dev, 32 * (18432 + 589824 + 4096), "cnn", blocks)
    assert s == pytest.approx(want, rel=1e-14) and e == pytest.approx(3.0 * want, rel=1e-14)
    # fixed seconds without block rates: every block at flops_per_s, the named ones pay their fixed part
    bare = DeviceProfile("b", flops_per_s=2e10, active_w=1.0, idle_w=0.0, block_call_s={"cnn": {"conv2": 5e-4}})
    s, _ = price_compute(bare, 32 * (18432 + 589824), "cnn", blocks[:2])
    assert s == pytest.approx(32 * (18432 + 589824) / 2e10 + 5e-4, rel=1e-14)
    # for another model they take no part: the old formula, exactly
    f = 32 * (18432 + 589824)
    assert price_compute(bare, f, "lenet5", blocks[:2]) == (f / 2e10, f / 2e10)


def test_a_partial_batch_costs_more_per_sample_in_the_ledger():
    """The same chunk at 128 and at 52 samples on a profile with fixed seconds: seconds per sample are higher at
    52 by exactly the fixed seconds spread over fewer samples; without them, equal up to the call overhead."""
    plan = _plan(strategy="mp", nodes=8)
    split = chunk_block_flops(plan, ("conv2",), (16, 8, 8), "forward", True)
    with_fixed = DeviceProfile("d", flops_per_s=2e10, active_w=0, idle_w=0, block_flops_per_s={"cnn": {"conv2": 4e10}},
                               block_call_s={"cnn": {"conv2": 1e-3}})
    per_sample = {n: price_compute(with_fixed, sum(f for _, f in split) * n, "cnn",
                                   tuple((b, f * n) for b, f in split))[0] / n for n in (128, 52)}
    assert per_sample[52] - per_sample[128] == pytest.approx(1e-3 / 52 - 1e-3 / 128, rel=1e-9)


# --------------------------------------------------------------------------- the profile field

def test_fixed_seconds_load_plain_and_wrapped_and_bad_ones_are_refused(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("devices:\n  d: {flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, "
                     "block_call_s: {cnn: {conv1: 2.0e-4, fc1: 5.0e-5}}}\n")
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text("devices:\n  d:\n    flops_per_s: 1.0e+9\n    active_w: 1\n    idle_w: 0\n"
                       "    block_call_s: {value: {cnn: {conv1: 2.0e-4, fc1: 5.0e-5}}, status: M, source: bench}\n")
    a, b = load_profiles(plain).device("d"), load_profiles(wrapped).device("d")
    assert a.block_call_s == b.block_call_s == {"cnn": {"conv1": 2e-4, "fc1": 5e-5}}
    assert (a.status["block_call_s"], b.status["block_call_s"], b.source["block_call_s"]) == ("U", "M", "bench")
    assert load_profiles().device("rpi4").block_call_s == {}  # shipped profiles have none
    for value, shown, why in (("-1.0e-3", "-0.001", "must be a number in [0, 3600]"),
                              ("4000", "4000", "must be a number in [0, 3600]"),
                              ("slow", "'slow'", "must be a number")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"devices:\n  d: {{flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, "
                       f"block_call_s: {{cnn: {{conv1: {value}}}}}}}\n")
        with pytest.raises(ProfileError) as err:
            load_profiles(bad)
        msg = str(err.value)
        assert len(msg.splitlines()) == 1 and f"key 'devices.d.block_call_s.cnn.conv1': got {shown}; {why}" in msg, msg
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("devices:\n  d: {flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, "
                       "block_call_s: {cnn: {conv9: 1}}}\n")
    with pytest.raises(ConfigError) as err:
        check_profiles(_plan(strategy="mp", nodes=2, device="d", profiles_file=str(unknown)))
    assert "key 'devices.d.block_call_s.cnn.conv9': got 'conv9'; not a block of cnn" in str(err.value)


# --------------------------------------------------------------------------- the testbed

def test_the_testbed_stretches_fixed_seconds_by_the_cpu_share_by_hand(calibrated):
    """fl on 3 nodes, this machine calibrated at C = 4e10 with conv1 at 2e-4 s fixed per call: a node of device
    FLOP/s F runs at F / (C s) of a core, so it pays 2e-4 C s / F (rpi4, F / C = 0.4: 2e-4 s / 0.4); the time
    scale is as without fixed seconds."""
    plan = _plan(strategy="fl", nodes=3)
    profiles = check_profiles(plan)
    plain = tb_emulation.emulation(plan, profiles, calibrated(call_overhead_s=1e-4), 2)
    emu = tb_emulation.emulation(plan, profiles, calibrated(call_overhead_s=1e-4, block_call_s={"cnn": {"conv1": 2e-4}}), 2)
    s = emu.time_scale
    assert s == plain.time_scale == pytest.approx(2.7 / 1.6, rel=1e-12)
    assert emu.profiles.device("rpi4").block_call_s == {"cnn": pytest.approx({"conv1": 2e-4 * s / 0.4}, rel=1e-12)}
    assert emu.profiles.device("minipc").block_call_s == {"cnn": pytest.approx({"conv1": 2e-4 * s / 1.5}, rel=1e-12)}
    assert plain.profiles.device("rpi4").block_call_s == {}


# --------------------------------------------------------------------------- calibration

def test_calibrate_with_a_fit_batch_writes_fixed_seconds_that_give_back_both_timings(tmp_path):
    """A real calibration of cnn at batch 16 and 4: every block the fit applies to is priced, from the written
    profile, at the seconds per step measured at both batch sizes (to the file's 4 digits); the others at
    batch 16's. Measured here: the fixed part is a large share of a batch-4 step."""
    out = tmp_path / "host.yaml"
    for _ in range(3):  # timings on a machine shared with other jobs: a noisy fit may see no fixed part; measure again
        row = calibrate(out, models=["cnn"], batch_size=16, seconds=0.6, fit_batch=4)[0]
        if row["block_call_s"]:
            break
    assert row["fit_batch"] == 4
    dev = load_profiles(out).device("calibrated_cnn_b16")
    rates, fixed = dev.block_flops_per_s["cnn"], dev.block_call_s.get("cnn", {})
    assert fixed == {b: float(f"{c:.4g}") for b, c in row["block_call_s"].items()}
    assert fixed, "no block of cnn had a fixed part per call: the fit found no batch effect at all"
    per_sample = {b: f // 16 for b, f in row["block_flops"].items()}
    for b in rates:
        at16 = 16 * per_sample[b] / rates[b] + 2 * fixed.get(b, 0.0)
        assert at16 == pytest.approx(row["block_flops"][b] / row["batch_block_flops_per_s"][b], rel=2e-3)  # rounding
        if b in fixed:
            at4 = 4 * per_sample[b] / rates[b] + 2 * fixed[b]
            assert at4 == pytest.approx(4 * per_sample[b] / row["fit_block_flops_per_s"][b], rel=5e-3)
    assert "fit_block_costs" in dev.source["block_call_s"] and dev.status["block_call_s"] == "M"


@pytest.mark.parametrize("fit, shown", [(16, "16"), (0, "0"), (2.5, "2.5")])
def test_a_bad_fit_batch_is_refused_before_any_timing(tmp_path, fit, shown):
    with pytest.raises(ConfigError) as err:
        calibrate(tmp_path / "host.yaml", models=["cnn"], batch_size=16, seconds=0.6, fit_batch=fit)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "--fit-batch" in msg and f"got {shown}" in msg, msg
    assert not (tmp_path / "host.yaml").exists()

