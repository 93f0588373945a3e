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


# ------------------------------------------------------------------ what explore writes and prints, explained

@pytest.fixture(scope="module")
def four_nodes():
    """Every strategy on 4 nodes, the default node count (and fpl the default strategy), so a set column that
    left out the keys at their defaults would not say which plan it is."""
    return explore(SMALL, 4, junctions=("shared", "concat"), cuts="balanced")


def test_every_set_column_rebuilds_its_plan(four_nodes):
    from fplstudy.config import load_config
    from fplstudy.costs.search import plan_name, plans_csv, set_pairs

    table = plans_csv(four_nodes)
    assert set(table["strategy"]) == {"fl", "mp", "sl", "sfl", "fpl"}
    for _, row in table.iterrows():
        pairs = set_pairs(row["set"])
        assert pairs[:2] == [f"strategy={row['strategy']}", f"nodes={row['nodes']}"], row["set"]
        plan = resolve(load_config(None, pairs))
        assert plan_name(plan) == row["name"], row["set"]
        cost = price_candidate(plan)
        for column in four_nodes.objectives:
            assert cost[column] == pytest.approx(row[column], rel=1e-12), (row["name"], column)


def test_set_values_read_back_as_written():
    """A value YAML would read as another type (a device named 1) or with a space (a path) is written so that
    --set reads it back as it was, and the pairs still split on spaces."""
    from fplstudy.config import parse_overrides
    from fplstudy.costs.search import plan_set, set_pairs

    values = {"strategy": "fpl", "nodes": 4, "device": "1", "data_dir": "my data/x", "trunk_cuts": [3, 5],
              "placement": {"n0": "a b", "n1": "c"}, "lr": 1e-05, "download": True, "model": "yes"}
    text = plan_set(values)
    assert len(set_pairs(text)) == len(values)
    assert parse_overrides(set_pairs(text)) == values


def test_refusals_by_reason_sum_to_the_refused(four_nodes):
    res = four_nodes
    assert res.refused > 0 and sum(res.refusals.values()) == res.refused
    assert list(res.refusals.values()) == sorted(res.refusals.values(), reverse=True)
    assert any(r.startswith("nodes: strategy centralized runs on exactly N node") for r in res.refusals)
    counts: list[int] = []
    plans, refused = enumerate_plans(make_config(SMALL), 4, junctions=("shared", "concat"), cuts="balanced",
                                     counted=lambda count, nodes: counts.append(count))
    assert (refused, len(plans)) == (res.refused, len(res.plans))
    assert res.repeats == counts[0] - refused - len(plans) > 0  # one branch: relay is none, concat is shared


def test_plan_names_decode_to_their_columns(four_nodes, three_nodes):
    """The name grammar the legend explains is the one plan_name writes: every name of two searches parses by
    its strategy's pattern into exactly the plan's columns."""
    from fplstudy.costs.search import decode_name

    for table in (four_nodes.plans, three_nodes.plans):
        for _, row in table.iterrows():
            parts = decode_name(row["name"])
            assert parts.pop("strategy") == row["strategy"]
            assert parts, row["name"]
            for key, text in parts.items():
                if key.endswith("_cuts"):
                    assert text.replace("-", " ") == row[key], (row["name"], key)
                elif key == "sync_every" and row["strategy"] == "fpl":
                    assert text == (str(row[key]) if row["sync"] == "fedavg" else ""), row["name"]
                else:
                    assert text == str(row[key]), (row["name"], key)
    with pytest.raises(ValueError, match="not a plan name"):
        decode_name("fpl-3x1")


MARKS = {"nodes": "-N", "branches": "BxS+T", "branch_stages": "BxS+T", "trunk_stages": "BxS+T",
         "junction_at": "jJ", "branch_cuts": "bC", "trunk_cuts": "tC", "placement": "@P0,P1"}


def test_the_name_legend_explains_every_part_of_the_front_names(four_nodes):
    from fplstudy.costs.search import decode_name, name_legend

    legend = "\n".join(name_legend(four_nodes.front["name"]))
    for name in four_nodes.front["name"]:
        parts = decode_name(name)
        assert f"\n{parts['strategy']}-" in "\n" + legend, name
        for key, text in parts.items():
            if key == "sync_every":
                assert "everyK" in legend or "fedavgK" in legend, name
            elif key in ("junction", "sync"):
                assert f"{text} (" in legend or f"{text}:" in legend, (name, text)
            elif key != "strategy":
                assert MARKS[key] in legend, (name, key)
    placed = name_legend(["mp-2-t4@a,b"])
    assert len(placed) == 2 and "@P0,P1" in placed[1]


def test_cli_explore_prints_the_front_its_command_and_why_candidates_were_refused(tmp_path, capsys):
    """The printed run command trains the front's first plan: its costs are those of the CSV's row."""
    import json
    import re
    import shlex

    from fplstudy.cli import main

    out = tmp_path / "front.csv"
    assert main(["explore", "--set", "max_train_samples=200", "--set", "rounds=1", "--cuts", "balanced",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = next(line for line in lines if " candidates refused" in line)
    refused = int(re.search(r"\((\d+) candidates refused", summary).group(1))
    start = lines.index("refused, by reason (N: a number, …: details):")
    counts = [int(line.split()[0]) for line in lines[start + 1:] if re.match(r"^  +\d+  ", line)]
    assert refused > 0 and sum(counts) == refused, lines
    front = pd.read_csv(out)
    table = lines.index("front (objectives minimised):")
    assert lines[table + 1].split() == ["plan", "energy", "J", "sent", "MB", "makespan", "s", "memory", "MB"]
    assert [line.split()[0] for line in lines[table + 2:table + 2 + len(front)]] == front["name"].tolist()
    assert any(line.startswith("  fpl-BxS+T-jJ") for line in lines)
    command = shlex.split(next(line for line in lines if line.startswith("  fplstudy run ")))
    sets = command[3:-2:2]
    assert sets == front["set"].iloc[0].split() and command[-2] == "--out"
    capsys.readouterr()
    assert main([*command[1:-1], str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["bytes_total"] == front["bytes_total"].iloc[0]
    assert metrics["energy_j"] == pytest.approx(front["energy_j_site"].iloc[0], rel=1e-9)
