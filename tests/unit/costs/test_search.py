"""The search over plans: only valid plans, a non-dominated front, exact totals, a hand-checked front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fplstudy.config import make_config
from fplstudy.costs.dryrun import dry_run
from fplstudy.costs.search import (
    enumerate_plans,
    explore,
    front_csv,
    pareto_front,
    price_candidate,
)
from fplstudy.plans.plan import resolve

SMALL = {"max_train_samples": 200, "rounds": 1}


def test_pareto_front_by_hand():
    table = pd.DataFrame({"a": [1, 2, 3, 2, 1, 4], "b": [4, 2, 1, 3, 4, 4]})
    # row 3 (2, 3) is dominated by row 1 (2, 2); row 5 (4, 4) by every other; rows 0 and 4 tie (kept)
    assert pareto_front(table, ["a", "b"]).tolist() == [True, True, True, False, True, False]
    # b maximised (accuracy against a cost, as the study's figures draw it): (1, 4) twice, then nothing else
    assert pareto_front(table, ["a", "b"], maximize=["b"]).tolist() == [True, False, False, False, True, False]


def test_two_node_model_parallel_front_by_hand():
    """mp on 2 nodes: one cut c in 1..7; per sample it sends the activation at the cut forward and its
    gradient back (4 bytes per float each) plus one int64 label. Bytes: 200 samples x (2 x out_bytes[c-1] + 8).
    The cnn's block outputs: conv1 16x8x8, conv2 32x4x4, conv3 32x4x4, conv4 64x2x2, conv5 64x2x2,
    fc1 128, fc2 64 floats, so the fewest bytes are at c = 7 (after fc2), and the front on bytes alone
    is exactly that plan."""
    res = explore(SMALL, 2, strategies=("mp",), objectives=("bytes_total",))
    out_floats = [16 * 8 * 8, 32 * 4 * 4, 32 * 4 * 4, 64 * 2 * 2, 64 * 2 * 2, 128, 64]
    expected = {f"mp-2-t{c}": 200 * (2 * 4 * out_floats[c - 1] + 8) for c in range(1, 8)}
    assert dict(zip(res.plans["name"], res.plans["bytes_total"])) == expected
    assert res.front["name"].tolist() == ["mp-2-t7"]
    # a byte budget below every plan leaves nothing; one between the two cheapest keeps only the cheapest
    assert explore(SMALL, 2, strategies=("mp",), objectives=("bytes_total",),
                   budget_bytes_per_round=1000).front.empty
    cheap = explore(SMALL, 2, strategies=("mp",), objectives=("bytes_total", "memory_bytes_max_node"),
                    budget_bytes_per_round=expected["mp-2-t7"])
    assert cheap.plans["within_budget"].sum() == 1 and cheap.front["name"].tolist() == ["mp-2-t7"]


@pytest.fixture(scope="module")
def three_nodes():
    return explore(SMALL, 3, cuts="all")


def test_search_returns_only_valid_distinct_plans(three_nodes):
    res = three_nodes
    assert len(res.plans) > 20 and res.refused > 0
    assert res.plans["name"].is_unique
    assert set(res.plans["strategy"]) == {"fl", "mp", "sl", "sfl", "fpl"}  # centralized needs nodes=1
    for overrides in res.plans["overrides"]:
        plan = resolve(make_config(overrides))  # raises ConfigError if not valid
        assert plan.config.nodes == 3


def test_front_is_non_dominated(three_nodes):
    res = three_nodes
    objectives = list(res.objectives)
    front = res.front[objectives].to_numpy(dtype=float)
    every = res.plans[objectives].to_numpy(dtype=float)
    for row in front:
        dominated = (every <= row).all(axis=1) & (every < row).any(axis=1)
        assert not dominated.any()
    # and every plan off the front is dominated by one on it
    for row in res.plans.loc[~res.plans["on_front"], objectives].to_numpy(dtype=float):
        assert ((front <= row).all(axis=1) & (front < row).any(axis=1)).any()
    assert front_csv(res)["set"].str.contains("nodes=3").all()


def test_front_configs_rebuild_the_plans(three_nodes):
    for cfg, name in zip(three_nodes.configs(), three_nodes.front["name"]):
        from fplstudy.costs.search import plan_name

        assert plan_name(resolve(cfg)) == name


@pytest.mark.parametrize("values", [
    {"strategy": "fpl", "nodes": 4, "rounds": 5, "sync_every": 2},
    {"strategy": "sl", "nodes": 4, "rounds": 3},
    {"strategy": "fl", "nodes": 3, "rounds": 4, "sync_every": 3},
    {"strategy": "fpl", "nodes": 4, "rounds": 3, "junction": "concat", "partition": "features", "branches": 2},
])
def test_price_equals_the_dry_run(values):
    plan = resolve(make_config({"max_train_samples": 200, **values}))
    fast, full = price_candidate(plan), dry_run(plan).totals
    for key, value in full.items():
        assert fast[key] == pytest.approx(value, rel=1e-12), key


def test_enumerate_balanced_is_a_subset(three_nodes):
    plans, _ = enumerate_plans(make_config(SMALL), 3, cuts="balanced")
    from fplstudy.costs.search import plan_name

    assert {plan_name(p) for p in plans} <= set(three_nodes.plans["name"])


def test_cli_explore(tmp_path):
    from fplstudy.cli import main

    out = tmp_path / "front.csv"
    assert main(["explore", "--set", "nodes=2", "--set", "max_train_samples=200", "--set", "rounds=1",
                 "--budget-energy-j-per-node", "1e9", "--out", str(out)]) == 0
    front = pd.read_csv(out)
    assert len(front) >= 1 and {"name", "set", "energy_j", "bytes_per_round"} <= set(front.columns)
    assert np.isfinite(front["energy_j"]).all()
