"""The participation model (fplstudy.plans.dynamics): every rule against hand-written turnouts."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from scipy import stats

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import plan_events, price_plan, shard_sizes
from fplstudy.costs.ledger import price
from fplstudy.plans.dynamics import TraceError, plan_turnouts, turnouts
from fplstudy.plans.events import Compute, Transfer
from fplstudy.plans.plan import resolve
from fplstudy.plans.program import catch_up_item
from fplstudy.train.engine import SimulatedTransport, build_holdings, catch_up, train
from fplstudy.train.engine import _flat_state as _flat
from fplstudy.train.runner import prepare


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
        assert t.holder == (None if plan.branch_order != "turns" or rnd == 0 else D - 1)


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


# --------------------------------------------------------------------------- the wiring: runs follow the turnouts

TINY = {"max_train_samples": 96, "rounds": 3, "batch_size": 16}


def _trace(tmp_path, rows: list[tuple[int, str]], name: str = "trace.csv") -> str:
    path = tmp_path / name
    path.write_text("round,node\n" + "".join(f"{r},{n}\n" for r, n in rows))
    return str(path)


def _traced(tmp_path, strategy: str, nodes: int, rows, **keys):
    name = f"trace-{len(list(tmp_path.glob('trace-*.csv')))}.csv"  # one file per plan: a plan reads it when it runs
    return resolve(make_config({"strategy": strategy, "nodes": nodes, **TINY, **keys,
                                "dropout_trace": _trace(tmp_path, rows, name)}))


def _computing(events, rnd: int) -> set[str]:
    return {ev.node for ev in events if isinstance(ev, Compute) and ev.round == rnd}


def _comparable(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


@pytest.mark.parametrize("strategy,nodes,keys", [("fl", 3, {}), ("sl", 4, {}), ("fpl", 5, {"branches": 2, "branch_stages": 2}),
                                                 ("mp", 3, {})])
def test_an_empty_trace_is_a_run_without_dynamics(tmp_path, strategy, nodes, keys):
    """The turnout path with nobody absent gives exactly the run without dynamics: rows, events, weights, ledger."""
    plain = resolve(make_config({"strategy": strategy, "nodes": nodes, **TINY, **keys}))
    traced = _traced(tmp_path, strategy, nodes, [], **keys)
    assert plan_turnouts(plain) is None and plan_turnouts(traced) is not None
    a, b = train(plain), train(traced)
    assert _comparable(a.rounds) == _comparable(b.rounds) and a.events == b.events
    for m, n in zip(a.holdings.all_modules(), b.holdings.all_modules()):
        torch.testing.assert_close(m.state_dict(), n.state_dict(), rtol=0, atol=0)
    pd.testing.assert_frame_equal(price(plain, a.events), price(traced, b.events))


def test_a_fixed_trace_decides_who_computes_in_each_round(tmp_path):
    plan = _traced(tmp_path, "fl", 4, [(0, "n1"), (1, "n0"), (1, "n3"), (2, "n2")])
    result = train(plan)
    assert [_computing(result.events, r) for r in range(3)] == [{"n0", "n2", "n3"}, {"n1", "n2"}, {"n0", "n1", "n3"}]
    assert [r["branches_trained"] for r in result.rounds] == ["0 2 3", "1 2", "0 1 3"]
    assert [r["nodes_absent"] for r in result.rounds] == ["n1", "n0 n3", "n2"]
    # an absent client neither sends nor receives: round 0's sync reaches n0, n2 and n3 only
    talk0 = {(ev.src, ev.dst) for ev in result.events if isinstance(ev, Transfer) and ev.round == 0}
    assert talk0 == {(n, "n4") for n in ("n0", "n2", "n3")} | {("n4", n) for n in ("n0", "n2", "n3")}


def test_fedavg_of_the_present_clients_and_a_catch_up_for_the_one_that_missed_it(tmp_path):
    plan = _traced(tmp_path, "fl", 3, [(0, "n1")], rounds=2)
    init = [_flat(m) for m in build_holdings(plan).branch_parts[1]]
    one = train(resolve(make_config({**plan.config.model_dump(), "rounds": 1})))
    parts = one.holdings.branch_parts
    assert all(torch.equal(_flat(a), _flat(b)) for a, b in zip(parts[0], parts[2]))  # n0 and n2 averaged
    assert all(torch.equal(_flat(a), b) for a, b in zip(parts[1], init))  # n1 untouched: it was away
    two = train(plan)
    downs = [ev for ev in two.events if isinstance(ev, Transfer) and ev.round == 1 and ev.kind == "params_down"]
    assert [ev.dst for ev in downs if ev.step == 0] == ["n1"]  # the catch-up, before n1's first batch
    assert sorted(ev.dst for ev in downs if ev.step > 0) == ["n0", "n1", "n2"]  # round 1's sync
    final = two.holdings.branch_parts
    assert all(torch.equal(_flat(a), _flat(b)) for d in (1, 2) for a, b in zip(final[0], final[d]))


def test_a_catch_up_loads_the_last_average_and_resets_the_optimizer(tmp_path):
    plan = resolve(make_config({"strategy": "fl", "nodes": 3, **TINY, "momentum": 0.9}))
    hold = build_holdings(plan)
    p = next(hold.branch_parts[1][0].parameters())
    hold.optimizer.state[p] = {"momentum_buffer": torch.ones_like(p)}
    average = _flat(hold.branch_parts[0][0]) + 1.0
    hold.average[0] = average
    T = SimulatedTransport()
    catch_up(plan, T, hold, catch_up_item(plan, 0, (1,)), 1)
    assert torch.equal(_flat(hold.branch_parts[1][0]), average)
    assert not torch.equal(_flat(hold.branch_parts[2][0]), average) and p not in hold.optimizer.state
    assert [(ev.src, ev.dst, ev.kind) for ev in T.events] == [("n3", "n1", "params_down")]


def test_a_missing_trunk_node_loses_the_round(tmp_path):
    plan = _traced(tmp_path, "mp", 3, [(1, "n2")])
    result = train(plan)
    assert not any(ev.round == 1 for ev in result.events)
    lost = result.rounds[1]
    assert lost["branches_trained"] == "" and math.isnan(lost["train_loss"])
    assert lost["test_acc_mean"] == result.rounds[0]["test_acc_mean"]  # nothing trained, nothing changed
    ledger = price(plan, result.events)
    assert sorted(set(ledger["round"])) == [0, 2]
    pd.testing.assert_frame_equal(ledger, price(plan, result.events, fast=False))
    assert price_plan(plan, shard_sizes(plan)).equals(ledger)


def test_a_dropped_node_is_priced_for_the_work_it_did_and_nothing_else(tmp_path):
    """n1 is away in round 1, n0 in round 2: neither has a row in those rounds, not even idle; the fast and
    the reference pricer agree, and the dry run prices the same ledger without training."""
    plan = _traced(tmp_path, "fl", 4, [(1, "n1"), (2, "n0")])
    result = train(plan)
    ledger = price(plan, result.events)
    assert set(ledger[ledger["round"] == 1]["node"]) == {"n0", "n2", "n3", "n4"}
    assert set(ledger[ledger["round"] == 2]["node"]) == {"n1", "n2", "n3", "n4"}
    pd.testing.assert_frame_equal(ledger, price(plan, result.events, fast=False))
    mine = ledger[ledger["node"] == "n1"]
    assert set(mine["round"]) == {0, 2}
    present = price(resolve(make_config({**plan.config.model_dump(), "dropout_trace": None})), result.events)
    both = present[(present["node"] == "n1") & (present["round"] != 1)].reset_index(drop=True)
    assert mine.reset_index(drop=True)[["kind", "count", "flops", "bytes_tx"]].equals(both[["kind", "count", "flops", "bytes_tx"]])
    assert price_plan(plan, shard_sizes(plan)).equals(ledger)


def test_resting_clients_are_not_priced_idle(tmp_path):
    plan = resolve(make_config({"strategy": "fl", "nodes": 4, **TINY, "fraction_fit": 0.5}))
    turns = plan_turnouts(plan)
    result = train(plan)
    ledger = price(plan, result.events)
    for rnd, t in enumerate(turns):
        assert len(t.active) == 2
        assert set(ledger[ledger["round"] == rnd]["node"]) == {f"n{d}" for d in t.active} | {"n4"}
        assert _computing(result.events, rnd) == {f"n{d}" for d in t.active}


def test_split_learning_relays_from_the_last_client_that_trained(tmp_path):
    away = _traced(tmp_path, "sl", 4, [(1, "n1")])  # round 1: n0 then n2; the head goes n2 → n0 → n2
    relays = [(ev.src, ev.dst, ev.step) for ev in plan_events(away, shard_sizes(away))
              if ev.round == 1 and isinstance(ev, Transfer) and ev.micro == -1]
    assert [(s, d) for s, d, _ in relays] == [("n2", "n3"), ("n3", "n0"), ("n0", "n3"), ("n3", "n2")]
    gone = _traced(tmp_path, "sl", 4, [(1, "n2")])  # round 1: the holder n2 is away, n0 goes on with its own head
    relays = [(ev.src, ev.dst) for ev in plan_events(gone, shard_sizes(gone))
              if ev.round == 1 and isinstance(ev, Transfer) and ev.micro == -1]
    assert relays == [("n0", "n3"), ("n3", "n1")]
    assert _comparable(train(away).rounds)[1]["branches_trained"] == "0 2"


@pytest.mark.parametrize("rows,field,words", [
    ("round,host\n0,n1\n", "1", "header round,node"),
    ("round,node\nzero,n1\n", "2", "the round in the digits 0-9"),
    ("round,node\n0,n9\n", "2", "unknown node 'n9'"),
    ("round,node\n0,n1\n7,n1\n", "3", "rounds 0..2"),
])
def test_bad_trace_files_are_refused_before_any_work(tmp_path, rows, field, words):
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    cfg = make_config({"strategy": "fl", "nodes": 3, **TINY, "dropout_trace": str(path)})
    with pytest.raises(TraceError) as err:
        prepare(cfg)
    assert err.value.key == field and err.value.file == str(path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_missing_trace_file_and_bad_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        prepare(make_config({"strategy": "fl", "nodes": 3, **TINY, "dropout_trace": str(tmp_path / "none.csv")}))
    for keys in ({"fraction_fit": 0.0}, {"dropout": -0.1}, {"dropout": 0.2, "dropout_trace": "t.csv"}):
        with pytest.raises(ConfigError) as err:
            make_config(keys)
        assert err.value.key in keys


@pytest.mark.parametrize("strategy,nodes,rows", [("fl", 3, [(0, "n1"), (1, "n2")]),  # n1 catches up in round 1
                                                 ("mp", 3, [(1, "n1")]),  # round 1 lost
                                                 ("sl", 4, [(1, "n2")])])  # the head's holder away
def test_simulated_equals_distributed_on_a_traced_plan(tmp_path, strategy, nodes, rows):
    from fplstudy.train.distributed import check_wire, train_distributed

    plan = _traced(tmp_path, strategy, nodes, rows)
    dist = train_distributed(plan, timeout_s=60)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every node process
    try:
        sim = train(plan)
    finally:
        torch.set_num_threads(threads)
    assert dist.status == sim.status == "completed" and dist.events == sim.events
    for a, b in zip(dist.rounds, sim.rounds):
        for key in ("train_loss", "test_acc_mean", "test_acc_per_branch", "branches_trained", "nodes_absent"):
            assert a[key] == b[key] or (key == "train_loss" and math.isnan(a[key]) and math.isnan(b[key])), key
    for m, n in zip(dist.holdings.all_modules(), sim.holdings.all_modules()):
        torch.testing.assert_close(m.state_dict(), n.state_dict(), rtol=0, atol=0)
    check_wire(dist.wire, price(plan, dist.events))
