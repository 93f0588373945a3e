"""The participation model (fplstudy.dynamics, issue 13 part 3): every rule against hand-written turnouts."""

from __future__ import annotations

import pytest
from scipy import stats

from fplstudy.config import ConfigError, make_config
from fplstudy.dynamics import turnouts
from fplstudy.plan import resolve


def _plan(strategy: str, **keys):
    return resolve(make_config({"strategy": strategy, "nodes": 4, "rounds": 4, **keys}))


@pytest.mark.parametrize("strategy,keys", [("fl", {}), ("sl", {}), ("sfl", {}), ("mp", {}),
                                           ("fpl", {"nodes": 5, "branches": 2, "branch_stages": 2}),
                                           ("fpl", {"junction": "concat", "partition": "features"}),
                                           ("fl", {"sync_every": 2})])
def test_without_dynamics_every_round_has_everyone(strategy, keys):
    plan = _plan(strategy, **keys)
    D, names = len(plan.branches), {n.name for n in plan.nodes}
    for rnd, t in enumerate(turnouts(plan)):
        assert t.absent == frozenset() and t.active == tuple(range(D)) and t.catch_up == ()
        assert t.engaged == names  # every node is priced idle time, as the ledger does today
        assert t.syncs == (plan.sync == "fedavg" and (rnd + 1) % plan.sync_every == 0)
        assert t.holder == (None if plan.schedule != "turns" or rnd == 0 else D - 1)


def test_a_trace_decides_who_trains_and_who_catches_up():
    plan = _plan("fl")  # clients n0..n3 (branches 0..3), aggregator n4, FedAvg every round
    got = turnouts(plan, trace={0: ["n1"], 2: ["n0", "n3"]})
    assert [t.active for t in got] == [(0, 2, 3), (0, 1, 2, 3), (1, 2), (0, 1, 2, 3)]
    # n1 missed round 0's sync: it fetches the average in round 1; n0 and n3 missed round 2's
    assert [t.catch_up for t in got] == [(), (1,), (), (0, 3)]
    assert got[2].engaged == {"n1", "n2", "n4"} and got[2].absent == {"n0", "n3"}
    assert all(t.syncs for t in got)


def test_a_stale_branch_catches_up_once_after_rounds_without_a_sync():
    plan = _plan("fl", sync_every=2)  # syncs end rounds 1 and 3
    got = turnouts(plan, trace={1: ["n2"], 2: ["n2"]})
    assert [t.syncs for t in got] == [False, True, False, True]
    assert [t.catch_up for t in got] == [(), (), (), (2,)]  # n2 trained in round 0, missed the sync at 1


def test_a_missing_trunk_or_aggregator_loses_the_round():
    mp = turnouts(_plan("mp"), trace={1: ["n2"]})  # mp: every node is a trunk stage
    assert [t.lost for t in mp] == [False, True, False, False] and mp[1].engaged == frozenset()
    fl = turnouts(_plan("fl"), trace={3: ["n4"]})  # the aggregator coordinates every FedAvg round
    assert fl[3].lost and not fl[3].syncs
    fpl = _plan("fpl", nodes=5, branches=2, branch_stages=2)  # n0 n1 | n2 n3 | trunk n4
    got = turnouts(fpl, trace={0: ["n3"], 1: ["n4"]})
    assert got[0].active == (0,) and got[0].engaged == {"n0", "n1", "n4"}  # a stage holder: its branch only
    assert got[1].lost
    concat = turnouts(_plan("fpl", junction="concat", partition="features"), trace={2: ["n1"]})
    assert [t.lost for t in concat] == [False, False, True, False]  # the views train together or not at all


def test_split_learnings_head_comes_from_the_last_client_within_reach():
    got = turnouts(_plan("sl", rounds=5), trace={1: ["n2"], 3: ["n1"]})
    assert [t.active for t in got] == [(0, 1, 2), (0, 1), (0, 1, 2), (0, 2), (0, 1, 2)]
    # round 1: the holder (n2, branch 2) is absent, its head out of reach; round 4: branch 2 trained last
    assert [t.holder for t in got] == [None, None, 1, 2, 2]


def test_fraction_fit_samples_floor_of_the_share_seeded():
    plan = _plan("fl", nodes=10, rounds=50)  # 10 clients n0..n9, aggregator n10
    got = turnouts(plan, fraction_fit=0.3)
    assert {len(t.active) for t in got} == {3}
    assert got == turnouts(plan, fraction_fit=0.3) and len({t.active for t in got}) > 10
    assert all(t.engaged == {f"n{d}" for d in t.active} | {"n10"} for t in got)
    assert {len(t.active) for t in turnouts(plan, fraction_fit=0.01)} == {1}  # at least one
    other = turnouts(resolve(make_config({"strategy": "fl", "nodes": 10, "rounds": 50, "seed": 1})), fraction_fit=0.3)
    assert [t.active for t in other] != [t.active for t in got]
    # of the available ones: with n0 absent, 9 available, floor(2.7) = 2 take part
    traced = turnouts(resolve(make_config({"strategy": "fl", "nodes": 10, "rounds": 2})), fraction_fit=0.3,
                      trace={0: ["n0"]})
    assert len(traced[0].active) == 2 and 0 not in traced[0].active and len(traced[1].active) == 3


def test_dropout_hits_edge_nodes_at_its_rate_and_never_the_server():
    plan = _plan("sfl", rounds=2000)  # 3 edge clients, one server
    got = turnouts(plan, dropout=0.25)
    assert got == turnouts(plan, dropout=0.25)
    assert not any("n3" in t.absent for t in got)
    hits = sum(len(t.absent) for t in got)
    assert stats.binomtest(hits, 3 * 2000, 0.25).pvalue > 1e-4  # the draws are Bernoulli(0.25)
    assert all(t.active == tuple(d for d in range(3) if f"n{d}" not in t.absent) for t in got)
    assert turnouts(plan, dropout=0.0) == turnouts(plan)
    assert all(t.lost for t in turnouts(_plan("mp"), dropout=1.0))


@pytest.mark.parametrize("kwargs,key,words", [
    ({"fraction_fit": 0.0}, "fraction_fit", "(0, 1]"),
    ({"dropout": 1.5}, "dropout", "[0, 1]"),
    ({"trace": {0: ["n9"]}}, "dropout_trace.0", "unknown node"),
    ({"trace": {7: ["n0"]}}, "dropout_trace.7", "rounds 0..3"),
    ({"trace": {0: ["n0"]}, "dropout": 0.1}, "dropout", "not both"),
])
def test_bad_dynamics_are_refused_in_one_line(kwargs, key, words):
    with pytest.raises(ConfigError) as err:
        turnouts(_plan("fl"), **kwargs)
    assert err.value.key == key and words in str(err.value) and "\n" not in str(err.value)
