"""The dropout sweep (fplstudy.study.dropout, fplstudy.stages.dynamics): its refusals, its statistics by hand, and a
tiny real sweep end to end (trained runs, tables, findings, figure, resume)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from fplstudy.config import StudyError
from fplstudy.stages.dynamics import run_sweep
from fplstudy.study.dropout import kept, kept_comparisons, train_sweep
from fplstudy.study.params import load_sweep

TINY = {"dataset": "digits", "max_train_samples": 96, "rounds": 2, "batch_size": 16, "threads": 1}


def _params(**block):
    base = {"train": dict(TINY), "strategies": {"fpl": {"nodes": 3}, "fl": {"nodes": 3}},
            "dropout": [0, 0.5], "seeds": [0, 1], "workers": 1, "kernels": "native"}
    return {"dynamics": {**base, **block}}


@pytest.mark.parametrize("block,where", [
    ({"dropout": [0.1, 0.2]}, "dynamics.dropout"),
    ({"dropout": [0, 1.0]}, "dynamics.dropout"),
    ({"seeds": [0]}, "dynamics.seeds"),
    ({"train": {**TINY, "seed": 3}}, "dynamics.train.seed"),
    ({"train": {**TINY, "dropout": 0.1}}, "dynamics.train.dropout"),
    ({"fpl": "sfl"}, "dynamics.fpl"),
    ({"strategies": {"fpl": {"nodes": 3}, "fl": {"nodes": 3, "topology": "fog_wifi", "lr": -1}}},
     "dynamics.strategies.fl"),
])
def test_a_bad_sweep_is_refused_in_one_line_naming_the_entry(block, where):
    with pytest.raises(StudyError) as err:
        load_sweep(_params(**block))
    assert where in str(err.value) and "\n" not in str(err.value)


def test_accuracy_kept_and_the_paired_comparison_by_hand():
    sweep = load_sweep(_params())
    rows = [("fpl", 0.0, 0, 0.90), ("fpl", 0.0, 1, 0.80), ("fpl", 0.5, 0, 0.85), ("fpl", 0.5, 1, 0.78),
            ("fl", 0.0, 0, 0.90), ("fl", 0.0, 1, 0.82), ("fl", 0.5, 0, 0.70), ("fl", 0.5, 1, 0.66)]
    seeds = pd.DataFrame(rows, columns=["strategy", "dropout", "seed", "test_acc_mean"])
    assert kept(seeds, "fpl", 0.5) == pytest.approx({0: -0.05, 1: -0.02})
    table = kept_comparisons(sweep, seeds)
    diffs = [-0.05 - -0.20, -0.02 - -0.16]  # fpl kept − fl kept, per seed
    half = stats.t.ppf(0.975, 1) * stats.tstd(diffs) / math.sqrt(2)  # one comparison: no Bonferroni
    (row,) = table.to_dict("records")
    assert row["mean_diff"] == pytest.approx(sum(diffs) / 2)
    assert row["ci_low"] == pytest.approx(sum(diffs) / 2 - half) and row["ci_high"] == pytest.approx(sum(diffs) / 2 + half)
    assert row["p_value"] == pytest.approx(stats.ttest_rel([-0.05, -0.02], [-0.20, -0.16]).pvalue)
    assert row["verdict"] == ("better" if sum(diffs) / 2 - half > 0 else "inconclusive")


def test_a_tiny_sweep_end_to_end(tmp_path):
    params = _params()
    res = run_sweep(params, tmp_path)
    seeds = res["seeds"]
    assert len(seeds) == 8 and set(seeds["status"]) == {"completed"}
    assert (seeds[seeds["dropout"] == 0]["rounds_lost"] == 0).all()
    every = [1, 1, 3, 3]  # fpl on 3 nodes: one branch (its head) and a 2-stage trunk; fl: 3 clients
    assert (seeds[seeds["dropout"] == 0]["branches_per_round"] == every).all()
    assert (seeds[seeds["dropout"] == 0.5]["branches_per_round"] < every).any()  # someone dropped out
    # the tables re-read from disk, and the comparison recomputed from seeds.csv alone
    on_disk = pd.read_csv(tmp_path / "seeds.csv")
    mine = on_disk.set_index(["strategy", "dropout", "seed"]).sort_index()["test_acc_mean"]
    diffs = [(mine["fpl", 0.5, s] - mine["fpl", 0.0, s]) - (mine["fl", 0.5, s] - mine["fl", 0.0, s]) for s in (0, 1)]
    assert pd.read_csv(tmp_path / "comparisons.csv")["mean_diff"].iloc[0] == pytest.approx(sum(diffs) / 2, abs=1e-9)
    summary = pd.read_csv(tmp_path / "summary.csv")
    fl0 = summary[(summary["strategy"] == "fl") & (summary["dropout"] == 0)].iloc[0]
    assert fl0["test_acc_mean_mean"] == pytest.approx(mine["fl", 0.0].mean(), abs=1e-9) and fl0["seeds"] == 2
    text = (tmp_path / "findings.md").read_text()
    assert "p = 0.5: fpl " in text and res["comparisons"]["verdict"].iloc[0] in text.replace("degrades more gracefully than", "better").replace("is inconclusive against", "inconclusive").replace("degrades worse than", "worse").replace("degrades as", "equivalent")
    assert (tmp_path / "dropout.png").stat().st_size > 10_000
    assert train_sweep(load_sweep(params), tmp_path) == []  # every run complete: a rerun trains nothing
