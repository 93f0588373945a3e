"""Stragglers and a round deadline: who is slow, who is late, what it costs and trains."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import dry_run, plan_events, price_plan, settle_deadline
from fplstudy.costs.ledger import event_costs, price
from fplstudy.costs.search import explore
from fplstudy.plans.dynamics import plan_turnouts, turnouts
from fplstudy.plans.events import Compute
from fplstudy.plans.plan import resolve
from fplstudy.train.engine import _flat_state as _flat
from fplstudy.train.engine import build_holdings, train
from fplstudy.train.runner import prepare

COMPUTE = ["forward", "backward"]


def _prepared(strategy: str = "fl", nodes: int = 3, rounds: int = 2, **keys):
    return prepare(make_config({"strategy": strategy, "nodes": nodes, "rounds": rounds, **keys}))


def test_stragglers_come_at_their_rate_on_the_edge_only_and_leave_absences_alone():
    plan = resolve(make_config({"strategy": "fl", "nodes": 8, "rounds": 750}))
    got = turnouts(plan, straggler_prob=0.3, straggler_slowdown=4.0)
    slow = [name for t in got for name, f in t.slow if f == 4.0]
    assert "n8" not in slow  # the aggregator, on the server side
    edge_draws = 8 * 750
    assert stats.binomtest(len(slow), edge_draws, 0.3).pvalue > 1e-3
    # their own random stream: absences drawn with and without stragglers are the same
    with_both = turnouts(plan, dropout=0.2, straggler_prob=0.3, straggler_slowdown=4.0)
    alone = turnouts(plan, dropout=0.2)
    assert [t.absent for t in with_both] == [t.absent for t in alone]
    assert all(not {n for n, _ in t.slow} & t.absent for t in with_both)  # an absent node is nobody's straggler
    # the same seed draws the same stragglers; another seed others
    again = turnouts(plan, straggler_prob=0.3, straggler_slowdown=4.0)
    assert [t.slow for t in again] == [t.slow for t in got]
    other = turnouts(resolve(make_config({"strategy": "fl", "nodes": 8, "rounds": 750, "seed": 1})),
                     straggler_prob=0.3, straggler_slowdown=4.0)
    assert [t.slow for t in other] != [t.slow for t in got]


def test_a_straggler_takes_its_slowdown_times_the_seconds_and_joules_and_nothing_else(tmp_path):
    base, profiles, data = _prepared(rounds=2)
    slowed, _, _ = _prepared(rounds=2, straggler_prob=1.0, straggler_slowdown=3.0)
    events = plan_events(base, data[1].samples())
    assert plan_events(slowed, data[1].samples()) == events  # the same work
    a, b = price(base, events, profiles), price(slowed, events, profiles)
    for frame in (a, b):
        assert not frame.empty
    key = ["round", "node", "kind"]
    m = a.merge(b, on=key, suffixes=("", "_slow"))
    assert len(m) == len(a) == len(b)
    edge = m["node"].isin(["n0", "n1", "n2"])
    comp = m["kind"].isin(COMPUTE)
    np.testing.assert_allclose(m.loc[edge & comp, "seconds_slow"], 3 * m.loc[edge & comp, "seconds"], rtol=1e-13)
    np.testing.assert_allclose(m.loc[edge & comp, "energy_j_slow"], 3 * m.loc[edge & comp, "energy_j"], rtol=1e-13)
    msgs = ~comp & (m["kind"] != "idle")
    for col in ("seconds", "energy_j", "bytes_tx", "bytes_rx", "count"):
        assert (m.loc[msgs, col] == m.loc[msgs, col + "_slow"]).all(), col
    assert (m.loc[~edge & comp, "seconds"] == m.loc[~edge & comp, "seconds_slow"]).all()
    # fl clients compute one after another and then upload: every round is longer by 2x their compute
    assert (b["round_makespan_s"] > a["round_makespan_s"]).all()
    # both pricing paths and the dry run agree
    pd.testing.assert_frame_equal(b, price(slowed, events, profiles, fast=False))
    pd.testing.assert_frame_equal(b, price_plan(slowed, data[1].samples(), profiles))
    # and stragglers without a deadline train exactly what the plan without them trains
    r0, r1 = train(base, data=data), train(slowed, data=data)
    assert [r["test_acc_per_branch"] for r in r0.rounds] == [r["test_acc_per_branch"] for r in r1.rounds]
    for m0, m1 in zip(r0.holdings.all_modules(), r1.holdings.all_modules()):
        torch.testing.assert_close(m0.state_dict(), m1.state_dict(), rtol=0, atol=0)


def _two_clients(**keys):
    """fl on 2 clients (+ aggregator n2), n0 on the slower device: its update comes after n1's."""
    return _prepared(**{"nodes": 2, "rounds": 3, "node_devices": {"n0": "rpi4", "n1": "jetson_orin_nano"}, **keys})


def _by_hand(plan, profiles, data):
    """Round 0 of the plan without a deadline, priced event by event: per client its steps' compute seconds
    and joules in order, its upload's seconds, and the aggregator's send-down seconds."""
    events = [ev for ev in plan_events(plan, data[1].samples()) if ev.round == 0]
    flops, seconds = event_costs(plan, events, profiles)
    steps: dict[str, dict[int, float]] = {"n0": {}, "n1": {}}
    up, down = {}, {}
    for ev, s in zip(events, seconds):
        if isinstance(ev, Compute):
            steps[ev.node][ev.step] = steps[ev.node].get(ev.step, 0.0) + s
        elif ev.kind == "params_up":
            up[ev.src] = s
        elif ev.kind == "params_down":
            down[ev.dst] = s
    return steps, up, down


def test_a_late_branch_by_hand_seconds_joules_and_the_round_that_waits():
    plan, profiles, data = _two_clients()
    steps, up, down = _by_hand(plan, profiles, data)
    arrive = {n: sum(steps[n].values()) + up[n] for n in ("n0", "n1")}  # clients compute, then upload
    assert arrive["n0"] > arrive["n1"]
    deadline = (arrive["n0"] + arrive["n1"]) / 2
    late_plan, _, _ = _two_clients(round_deadline_s=deadline)
    got = plan_turnouts(late_plan)
    cum, kept = 0.0, 0
    for s in steps["n0"].values():  # n0 runs its batches one after another; it stops after the one in flight
        if cum >= deadline:
            break
        cum += s
        kept += 1
    assert 0 < kept < len(steps["n0"]) and cum > deadline
    assert got[0].late == (0,) and got[0].kept == ((0, kept),) and got[0].wait_s == deadline and got[0].syncs
    assert got[1].catch_up == (0,) and got[1].late == (0,)  # stale after it: it fetches the average first
    ledger = price(late_plan, plan_events(late_plan, data[1].samples()), profiles)
    r0 = ledger[ledger["round"] == 0].set_index(["node", "kind"])
    # the aggregator waits for the deadline, then sends the average to n1 only; n0 ends its batch in flight
    kept_s = sum(list(steps["n0"].values())[:kept])
    makespan = r0["round_makespan_s"].iloc[0]
    assert makespan == pytest.approx(max(deadline + down["n1"], kept_s), rel=1e-12) and makespan > deadline
    assert ("n0", "params_up") not in r0.index and r0.loc[("n1", "params_up"), "count"] == 1
    assert ("n0", "params_down") not in r0.index  # no average comes down to it
    assert r0.loc[("n2", "params_down"), "count"] == 1
    # n0 is priced the batches it started before the deadline, and not one more
    n0_compute = r0.loc[("n0", "forward"), "seconds"] + r0.loc[("n0", "backward"), "seconds"]
    assert n0_compute == pytest.approx(kept_s, rel=1e-12)
    active_w = profiles.device("rpi4").active_w
    n0_joules = r0.loc[("n0", "forward"), "energy_j"] + r0.loc[("n0", "backward"), "energy_j"]
    assert n0_joules == pytest.approx(active_w * kept_s, rel=1e-12)
    # idle until the round ends: makespan minus its compute
    assert r0.loc[("n0", "idle"), "seconds"] == pytest.approx(makespan - kept_s, rel=1e-9)
    # both pricing paths and the dry run agree
    pd.testing.assert_frame_equal(ledger, price(late_plan, plan_events(late_plan, data[1].samples()), profiles,
                                                fast=False))
    pd.testing.assert_frame_equal(ledger, price_plan(late_plan, data[1].samples(), profiles))


def test_a_branch_late_every_round_leaves_the_model_of_a_run_without_it(tmp_path):
    """Its update never arrives: the average and the on-time client are those of a run where it is absent."""
    plan, profiles, data = _two_clients()
    steps, up, _ = _by_hand(plan, profiles, data)
    deadline = (sum(steps["n0"].values()) + up["n0"] + sum(steps["n1"].values()) + up["n1"]) / 2
    late_plan, _, _ = _two_clients(round_deadline_s=deadline)
    assert [t.late for t in plan_turnouts(late_plan)] == [(0,)] * 3
    trace = tmp_path / "away.csv"
    trace.write_text("round,node\n0,n0\n1,n0\n2,n0\n")
    away, _, _ = _two_clients(dropout_trace=str(trace))
    late, gone = train(late_plan, data=data), train(away, data=data)
    assert [r["branches_late"] for r in late.rounds] == ["0"] * 3
    assert [r["branches_trained"] for r in late.rounds] == ["0 1"] * 3 and all(r["branches_trained"] == "1" for r in gone.rounds)
    for s in late.holdings.average:
        assert torch.equal(late.holdings.average[s], gone.holdings.average[s])
    assert torch.equal(_flat(late.holdings.branch_parts[1][0]), _flat(gone.holdings.branch_parts[1][0]))
    # the late client did work (priced) that the absent one did not
    ledger = price(late_plan, late.events, profiles)
    assert ledger[(ledger["node"] == "n0") & ledger["kind"].isin(COMPUTE)]["flops"].sum() > 0
    assert late.events == plan_events(late_plan, data[1].samples())  # the engine runs what the dry run priced


def test_a_deadline_within_the_first_batch_makes_everyone_late_and_nobody_averages():
    plan, profiles, data = _prepared(nodes=2, rounds=2, round_deadline_s=1e-4)
    got = plan_turnouts(plan)
    assert [t.late for t in got] == [(0, 1), (0, 1)] and not any(t.syncs for t in got)
    assert got[0].kept == ((0, 1), (1, 1)) and got[1].catch_up == (0, 1)  # the batch in flight, then stop
    assert got[1].kept == ((0, 0), (1, 0))  # in round 1 the catch-up alone outlasts the deadline: no batch starts
    result = train(plan, data=data)
    steps = {(ev.round, ev.branch, ev.step) for ev in result.events if isinstance(ev, Compute)}
    assert {(r, d) for r, d, _ in steps} == {(0, 0), (0, 1)} and len(steps) == 2
    # no FedAvg ever: the aggregator still holds the common initial model, which the catch-up brings back
    init = build_holdings(plan)
    assert torch.equal(result.holdings.average[0], _flat(init.branch_parts[0][0]))
    assert [r["branches_late"] for r in result.rounds] == ["0 1", "0 1"]
    ledger = dry_run(plan, shards=data[1].samples(), profiles=profiles).ledger
    assert not ledger["kind"].eq("params_up").any()
    assert (ledger.groupby("round")["round_makespan_s"].first() > 1e-4).all()


def test_a_deadline_with_stragglers_on_fpl_agrees_everywhere():
    plan, profiles, data = _prepared("fpl", nodes=5, rounds=3, branches=2, branch_stages=2, straggler_prob=0.4,
                                     straggler_slowdown=5.0, round_deadline_s=0.15)
    got = plan_turnouts(plan)
    assert any(t.late for t in got) and any(t.slow for t in got)
    result = train(plan, data=data)
    events = plan_events(plan, data[1].samples())
    assert result.events == events
    fast = price(plan, events, profiles)
    pd.testing.assert_frame_equal(fast, price(plan, events, profiles, fast=False))
    pd.testing.assert_frame_equal(fast, price_plan(plan, data[1].samples(), profiles))
    # every round with a late branch lasts at least the deadline
    for rnd, t in enumerate(got):
        if t.late:
            assert fast[fast["round"] == rnd]["round_makespan_s"].iloc[0] >= 0.15


@pytest.mark.parametrize("keys,key,words", [
    ({"strategy": "mp", "round_deadline_s": 1.0}, "round_deadline_s", "leave it out"),
    ({"strategy": "sl", "round_deadline_s": 1.0}, "round_deadline_s", "FedAvg"),
    ({"strategy": "fpl", "junction": "concat", "partition": "features", "round_deadline_s": 1.0},
     "round_deadline_s", "lockstep"),
])
def test_a_deadline_on_a_plan_without_updates_to_drop_is_refused_before_any_work(keys, key, words):
    with pytest.raises(ConfigError) as err:
        prepare(make_config({"nodes": 4, "rounds": 2, **keys}))
    assert err.value.key == key and words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("keys", [{"straggler_prob": 1.5}, {"straggler_prob": -0.1}, {"straggler_slowdown": 0.5},
                                  {"straggler_slowdown": math.inf}, {"straggler_slowdown": 5000.0},
                                  {"round_deadline_s": 0.0}, {"round_deadline_s": -1.0},
                                  {"round_deadline_s": math.nan}])
def test_bad_straggler_keys_are_refused_in_one_line(keys):
    with pytest.raises(ConfigError) as err:
        make_config({"strategy": "fl", **keys})
    assert err.value.key in keys and "\n" not in str(err.value)


def test_an_unsettled_deadline_plan_is_not_priced_and_explore_refuses_a_deadline():
    plan = resolve(make_config({"strategy": "fl", "nodes": 2, "rounds": 2, "round_deadline_s": 1.0}))
    with pytest.raises(RuntimeError, match="settle_deadline"):
        plan_turnouts(plan)
    settled = settle_deadline(plan, [100, 100])
    assert settled.turnouts is not None and settle_deadline(settled, [1, 1]) is settled
    with pytest.raises(ConfigError) as err:
        explore(make_config({"strategy": "fl", "nodes": 2, "round_deadline_s": 1.0}))
    assert err.value.key == "round_deadline_s"


def test_simulated_equals_distributed_with_a_late_branch():
    from fplstudy.train.distributed import check_wire, train_distributed

    plan, profiles, data = _two_clients()
    steps, up, _ = _by_hand(plan, profiles, data)
    deadline = (sum(steps["n0"].values()) + up["n0"] + sum(steps["n1"].values()) + up["n1"]) / 2
    plan, _, data = _two_clients(round_deadline_s=deadline, rounds=2)
    dist = train_distributed(plan, data=data, timeout_s=60)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every node process
    try:
        sim = train(plan, data=data)
    finally:
        torch.set_num_threads(threads)
    assert dist.status == sim.status == "completed" and dist.events == sim.events
    assert [r["branches_late"] for r in dist.rounds] == ["0", "0"]
    for a, b in zip(dist.rounds, sim.rounds):
        for key in ("train_loss", "test_acc_per_branch", "branches_trained", "branches_late"):
            assert a[key] == b[key], key
    for m, n in zip(dist.holdings.all_modules(), sim.holdings.all_modules()):
        torch.testing.assert_close(m.state_dict(), n.state_dict(), rtol=0, atol=0)
    check_wire(dist.wire, price(plan, dist.events))


@pytest.mark.parametrize("keys", [{"straggler_prob": 0.2, "straggler_slowdown": 2.0}, {"round_deadline_s": 1.0}])
def test_the_emulated_testbed_refuses_stragglers_and_deadlines_before_anything_is_built(keys):
    from fplstudy.testbed.run import prepare_emulation

    with pytest.raises(ConfigError) as err:
        prepare_emulation(make_config({"strategy": "fl", "nodes": 2, "rounds": 1, **keys}))
    assert err.value.key in keys and "simulated backend" in str(err.value)


def test_fplstudy_cost_counts_the_late_branches(tmp_path, capsys):
    """``fplstudy cost`` with a deadline prints how many branches the deadline dropped, and in how many rounds:
    the settled turnouts' count (a deadline inside the first batch: both clients late in both rounds); without a
    deadline it prints no such line."""
    from fplstudy.cli import main

    keys = ["--set", "strategy=fl", "--set", "nodes=2", "--set", "rounds=2"]
    assert main(["cost", *keys, "--set", "round_deadline_s=0.0001"]) == 0
    out = capsys.readouterr().out
    plan, _, _ = _prepared(nodes=2, rounds=2, round_deadline_s=1e-4)  # prepare settles the deadline
    assert [len(t.late) for t in plan.turnouts] == [2, 2]
    assert "branches_late            4 (in 2 of 2 rounds; deadline 0.0001 s)" in out
    assert main(["cost", *keys]) == 0
    assert "branches_late" not in capsys.readouterr().out
