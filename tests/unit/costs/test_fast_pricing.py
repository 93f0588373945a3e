"""The fast pricing path (one-pass schedule, per-batch templates, array sums) gives the reference ledger.

The reference is the event-by-event path: ``ledger.price(..., fast=False)`` (list scheduling of every
round's event DAG, :func:`fplstudy.costs.makespan.schedule_round`). The fast paths are ``ledger.price`` on an
event stream and ``dryrun.price_plan`` (no event stream at all). Floats must agree to 1e-12 relative
(they are in fact the same floats: the fast path does the same additions in the same order).
"""

from __future__ import annotations

import random

import pandas as pd
import pytest

from fplstudy.config import make_config
from fplstudy.costs.dryrun import plan_events, price_plan, settle_deadline, shard_sizes
from fplstudy.costs.ledger import Pricer, price
from fplstudy.costs.makespan import (
    TASK_COMPUTE,
    TASK_DATA,
    fast_path_applies,
    schedule_fixed_order,
    schedule_round,
)
from fplstudy.costs.search import enumerate_plans
from fplstudy.facts.profiles import check_profiles
from fplstudy.plans.events import Compute, Transfer
from fplstudy.plans.plan import resolve

SMALL = {"max_train_samples": 200, "rounds": 3}

PLANS = {  # every strategy, pipelines with micro-batches, concat, non-IID shards, sync_every 2, relay
    "centralized": dict(strategy="centralized", nodes=1),
    "fl-every2": dict(strategy="fl", nodes=3, sync_every=2),
    "mp": dict(strategy="mp", nodes=3),
    "mp-seq-m4": dict(strategy="mp", nodes=3, micro_batches=4),
    "mp-gpipe-m4": dict(strategy="mp", nodes=3, micro_batches=4, pipeline="gpipe"),
    "mp-1f1b-m4": dict(strategy="mp", nodes=3, micro_batches=4, pipeline="1f1b"),
    "mp-1f1b-m1": dict(strategy="mp", nodes=4, pipeline="1f1b"),
    "mp-gpipe-m1": dict(strategy="mp", nodes=4, pipeline="gpipe"),
    "sl": dict(strategy="sl", nodes=4),
    "sfl-every2": dict(strategy="sfl", nodes=3, sync_every=2),
    "fpl": dict(strategy="fpl", nodes=4, branches=2),
    "fpl-shared": dict(strategy="fpl", nodes=4, branches=2, junction="shared"),
    "fpl-concat": dict(strategy="fpl", nodes=4, branches=2, junction="concat", partition="features"),
    "fpl-concat-m3": dict(strategy="fpl", nodes=6, branches=4, junction="concat", partition="features",
                          micro_batches=3),
    "fpl-relay": dict(strategy="fpl", nodes=5, branches=2, branch_stages=2, sync="relay"),
    "fpl-dirichlet": dict(strategy="fpl", nodes=5, branches=3, partition="dirichlet", alpha=0.3),
    "fpl-shards": dict(strategy="fpl", nodes=4, branches=2, partition="shards"),
    "fpl-every2": dict(strategy="fpl", nodes=5, branches=2, branch_stages=2, sync_every=2, rounds=5),
    "fpl-seq-m3": dict(strategy="fpl", nodes=5, branches=2, branch_stages=2, micro_batches=3),
    "fpl-gpipe-m2": dict(strategy="fpl", nodes=5, branches=2, branch_stages=2, micro_batches=2, pipeline="gpipe"),
    "fpl-1f1b-m2": dict(strategy="fpl", nodes=5, branches=2, branch_stages=2, micro_batches=2, pipeline="1f1b"),
    "fpl-1f1b-m1": dict(strategy="fpl", nodes=5, branches=2, branch_stages=2, pipeline="1f1b"),
    "fpl-epochs2-b16": dict(strategy="fpl", nodes=4, branches=3, local_epochs=2, batch_size=16),
}


def _enumerated(n: int = 8) -> list:
    """A seeded sample of the plans the search enumerates for 6 nodes."""
    plans, _ = enumerate_plans(make_config(SMALL), 6)
    return random.Random(0).sample(plans, n)


def _assert_same(fast: pd.DataFrame, ref: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(fast, ref, check_exact=False, rtol=1e-12, atol=0.0)


def _check(plan) -> None:
    shards = shard_sizes(plan)
    profiles = check_profiles(plan)
    events = plan_events(plan, shards)
    ref = price(plan, events, profiles, fast=False)
    _assert_same(price(plan, events, profiles), ref)
    _assert_same(price_plan(plan, shards, profiles), ref)
    if fast_path_applies(plan):  # the fast schedule holds (no silent fallback to the reference)
        assert Pricer(plan, profiles).price_events(events) is not None


@pytest.mark.parametrize("name", list(PLANS))
def test_fast_ledger_equals_the_reference(name):
    _check(resolve(make_config({**SMALL, **PLANS[name]})))


@pytest.mark.parametrize("i", range(8))
def test_fast_ledger_equals_the_reference_on_enumerated_plans(i):
    _check(_enumerated()[i])


def test_the_fixed_order_check_refuses_an_order_the_list_scheduler_does_not_follow():
    """Node C gets a micro-batch from A (ready at 6) and one from B (ready at 2), emitted in that order:
    the list scheduler serves B's first, so the one-pass schedule must not be used."""
    plan = resolve(make_config({**SMALL, "strategy": "fpl", "nodes": 3, "branches": 2}))
    a, b, c = (n.name for n in plan.nodes)
    blocks, shape = plan.block_names[:1], tuple(plan.input_shape)
    events = [Compute(0, 0, 0, 0, a, blocks, shape, 1, "forward", False),
              Transfer(0, 0, 0, 0, a, c, "activations", (1,), "float32", 4),
              Compute(0, 0, 0, 0, c, blocks, shape, 1, "forward", False),
              Compute(0, 0, 1, 1, b, blocks, shape, 1, "forward", False),
              Transfer(0, 0, 1, 1, b, c, "activations", (1,), "float32", 4),
              Compute(0, 0, 1, 1, c, blocks, shape, 1, "forward", False)]
    durations = [5.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    ref = schedule_round(plan, events, durations, "gpipe")
    assert ref.start == [0.0, 5.0, 6.0, 0.0, 1.0, 2.0]
    idx = {n.name: i for i, n in enumerate(plan.nodes)}
    tasks = [(TASK_COMPUTE, 0, idx[a], -1, idx[a], 5.0, False), (TASK_DATA, 0, idx[a], idx[c], 3, 1.0, False),
             (TASK_COMPUTE, 0, idx[c], -1, idx[c], 1.0, False), (TASK_COMPUTE, 1, idx[b], -1, idx[b], 1.0, False),
             (TASK_DATA, 1, idx[b], idx[c], 4, 1.0, False), (TASK_COMPUTE, 1, idx[c], -1, idx[c], 1.0, False)]
    assert schedule_fixed_order(plan, [(0, tasks)], 5, "gpipe") is None
    # the same tasks with B's micro-batch emitted first: the order holds and matches the list schedule
    swapped = [events[i] for i in (3, 4, 5, 0, 1, 2)]
    fast = schedule_fixed_order(plan, [(0, [tasks[i] for i in (3, 4, 5, 0, 1, 2)])], 5, "gpipe")
    ref = schedule_round(plan, swapped, [durations[i] for i in (3, 4, 5, 0, 1, 2)], "gpipe")
    assert fast is not None and list(fast.start) == ref.start and list(fast.finish) == ref.finish


BLOCK_RATED = """devices:
  rated_edge:
    flops_per_s: 2.0e+10
    active_w: 3.0
    idle_w: 0.5
    call_overhead_s: 4.0e-5
    block_flops_per_s: {cnn: {conv1: 1.3e+9, conv2: 2.1e+10, conv3: 1.9e+10, conv4: 2.4e+10, fc1: 1.7e+10,
                              fc3: 4.0e+8}}
  rated_server:
    flops_per_s: 6.0e+10
    active_w: 20.0
    idle_w: 4.0
    block_flops_per_s: {cnn: {conv3: 5.0e+10, conv5: 7.0e+10, fc2: 3.0e+10}}
"""


@pytest.mark.parametrize("name", list(PLANS))
def test_fast_ledger_equals_the_reference_with_block_rates(name, tmp_path):
    """Per-block rates (some blocks rated, conv5 on the edge and others on the server left to flops_per_s), the
    adapter and concat views at flops_per_s: the fast paths still give the reference's floats; and the rates are
    used (the ledger's compute seconds differ from the one-rate ledger's)."""
    path = tmp_path / "rated.yaml"
    path.write_text(BLOCK_RATED)
    plan = resolve(make_config({**SMALL, **PLANS[name], "profiles_file": str(path), "device": "rated_edge",
                                "server_device": "rated_server"}))
    _check(plan)
    flat = tmp_path / "flat.yaml"
    flat.write_text("\n".join(line for line in BLOCK_RATED.splitlines()
                              if "block_flops_per_s" not in line and "fc3: 4.0e+8" not in line) + "\n")
    one = resolve(make_config({**SMALL, **PLANS[name], "profiles_file": str(flat), "device": "rated_edge",
                               "server_device": "rated_server"}))
    events = plan_events(plan, shard_sizes(plan))
    rated, flat_ledger = price(plan, events), price(one, events)
    compute = rated["kind"].isin(["forward", "backward"])
    assert (rated["flops"] == flat_ledger["flops"]).all()
    assert not (rated[compute]["seconds"].to_numpy() == flat_ledger[compute]["seconds"].to_numpy()).all()


COLD = """devices:
  rpi4: {cold_factor: 0.6, batch_s: 2.0e-3}
  minipc: {cold_factor: 0.15, cold_s: 2.0e-4, batch_s: 4.0e-4}
  phone: {cold_factor: 0.45}
"""  # and the batch work outside the blocks (batch_s) on two of them
COLD_EXTRA = {  # dynamics (absences, stragglers, a deadline) and a topology, on top of PLANS
    "fpl-dropout": dict(strategy="fpl", nodes=5, branches=2, dropout=0.3, rounds=5),
    "sl-stragglers": dict(strategy="sl", nodes=4, straggler_prob=0.4, straggler_slowdown=3.0, rounds=4),
    "fl-deadline": dict(strategy="fl", nodes=4, straggler_prob=0.5, straggler_slowdown=4.0, round_deadline_s=0.05),
    "fpl-phones": dict(strategy="fpl", nodes=5, branches=2, topology="phones_lte"),
    "mp-phones-message": dict(strategy="mp", nodes=4, topology="phones_lte", forwarding="message"),
}


@pytest.mark.parametrize("name", list(PLANS) + list(COLD_EXTRA))
def test_fast_ledger_equals_the_reference_with_cold_calls(name, tmp_path):
    """Devices that price a call that starts cold (cold_factor; the fast paths carry which calls start cold
    from one template to the next, across a round's steps and syncs) and a batch's work on the call that opens
    it (batch_s): the reference's floats, and the fields are used (compute seconds above the same plan's
    without them)."""
    path = tmp_path / "cold.yaml"
    path.write_text(COLD)
    spec = {**SMALL, **PLANS.get(name, COLD_EXTRA.get(name))}
    plan = resolve(make_config({**spec, "profiles_file": str(path)}))
    if plan.config.round_deadline_s is not None:  # settled on its own prices: who is late depends on them
        _check(settle_deadline(plan, shard_sizes(plan), check_profiles(plan)))
        return
    _check(plan)
    warm = resolve(make_config(spec))
    events = plan_events(plan, shard_sizes(plan))
    cold_ledger, warm_ledger = price(plan, events), price(warm, events)
    compute = cold_ledger["kind"].isin(["forward", "backward"])
    assert cold_ledger.loc[compute, "seconds"].sum() > warm_ledger.loc[compute, "seconds"].sum()
