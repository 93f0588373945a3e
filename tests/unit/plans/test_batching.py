"""How an epoch is cut into batches (config key ``last_batch``), by hand, and the ledger's FLOPs, bytes and
message counts for those batches: the dry run prices exactly the batches the engine trains."""

from __future__ import annotations

import math

import pytest

from fplstudy.config import make_config
from fplstudy.costs.dryrun import dry_run
from fplstudy.plans.events import Transfer
from fplstudy.plans.plan import resolve
from fplstudy.plans.program import epoch_sizes, round_batches


@pytest.mark.parametrize("rule, sizes", [
    ("spread", [30, 30, 29, 29, 29, 29, 29]),  # k = ceil(205 / 32) = 7; 205 = 2 x 30 + 5 x 29
    ("drop", [32] * 6),  # 13 samples left out
    ("keep", [32] * 6 + [13]),  # the 13-sample tail
])
def test_epoch_sizes_of_205_samples_at_32_by_hand(rule, sizes):
    assert epoch_sizes(205, 32, rule) == sizes


def test_epoch_sizes_without_a_remainder_or_below_one_batch_are_the_same_for_every_rule():
    for rule in ("spread", "drop", "keep"):
        assert epoch_sizes(192, 32, rule) == [32] * 6
        assert epoch_sizes(20, 32, rule) == [20]
        assert epoch_sizes(0, 32, rule) == []
    for n in range(1, 400):  # spread: every batch within one sample of the others, none above batch_size
        sizes = epoch_sizes(n, 32, "spread")
        assert sum(sizes) == n and len(sizes) == math.ceil(n / 32) and max(sizes) - min(sizes) <= 1
        assert max(sizes) <= 32


def test_round_batches_start_each_local_epoch_on_its_own_permutation():
    plan = resolve(make_config({"strategy": "centralized", "nodes": 1, "batch_size": 32, "local_epochs": 2,
                                "last_batch": "drop", "max_train_samples": 205}))
    batches = round_batches(plan, [205])
    assert [b.size for b in batches] == [32] * 12
    assert [b.start for b in batches] == [32 * i for i in range(6)] + [205 + 32 * i for i in range(6)]


@pytest.mark.parametrize("rule, sizes", [("spread", [30, 30, 29, 29, 29, 29, 29]), ("drop", [32] * 6),
                                         ("keep", [32] * 6 + [13])])
def test_the_ledger_prices_the_batches_by_hand(rule, sizes):
    """mp on 2 nodes, one branch of 205 samples: per batch one activation message forward and one gradient back
    of (cut numel x 4) bytes per sample and a label message of 8 bytes per sample; FLOPs per sample times the
    samples trained."""
    cfg = make_config({"strategy": "mp", "nodes": 2, "model": "cnn", "batch_size": 32, "rounds": 1,
                       "last_batch": rule})
    dry = dry_run(cfg, shards=[205])
    plan = dry.plan
    prof = plan.profile
    numel = math.prod(prof[plan.trunk[1].start - 1].out_shape)
    sent = [ev.nbytes // (4 * numel) for ev in dry.events if isinstance(ev, Transfer) and ev.kind == "activations"]
    assert sent == sizes  # one message per batch, in order, of the batch's samples
    led = dry.ledger.groupby("kind")[["count", "flops", "bytes_tx", "bytes_rx"]].sum()
    n = sum(sizes)
    assert led.loc["activations", "bytes_tx"] == led.loc["gradients", "bytes_tx"] == 4 * numel * n
    assert led.loc["labels", "bytes_tx"] == 8 * n
    assert led.loc["activations", "count"] == 2 * len(sizes)  # sent + received, one message per batch
    per_sample = sum(p.flops_fwd for p in prof)
    assert led.loc["forward", "flops"] == per_sample * n
