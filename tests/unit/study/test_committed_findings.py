"""The committed study as a reader meets it: every finding line states its test, n, interval (or that the value
is the same on every seed) and verdict; FPL's swept shapes appear under their own names in the tables, the
figures' legends and the findings."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from fplstudy.study.params import load_study
from fplstudy.views import figures

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "results"
SHAPE = "fpl-8-branches2-branch_stages2-adapter-iid"  # 2 branches of 2 stages + a trunk of 4
VERDICTS = ("more accurate", "less accurate", "cheaper", "costlier", "equivalent", "inconclusive",
            "more accurate on Dirichlet", "less accurate on Dirichlet", "not compared", "modest", "not modest")
TEST = re.compile(r"\((TOST, n = \d+|paired t-test, n = \d+|the same on all n = \d+ seeds: a value, no interval or p)")


def _claims() -> list[str]:
    return [line for line in (RESULTS / "findings.md").read_text().splitlines() if line.startswith("- **")]


def test_every_finding_line_states_its_test_n_interval_and_verdict():
    claims = _claims()
    assert len(claims) > 50
    for line in claims:
        assert any(f"— **{w}**" in line for w in VERDICTS), line
        if "not compared" in line or "(deterministic: no seed changes it, no interval or p)" in line:
            continue
        assert TEST.search(line), line
        same = "the same on all" in line
        assert same != bool(re.search(r"\[[-+0-9.e]+, [-+0-9.e]+\]", line.split(" — ")[0])), line  # an interval or a value
        assert not re.search(r"p = 0[ );,]", line), line  # no p of a deterministic number
        if "**equivalent**" in line and not same:
            assert "TOST" in line, line


def test_every_compared_plan_says_who_its_nodes_are():
    text = (RESULTS / "findings.md").read_text()
    for name in ("fpl-8-adapter-iid", "fl-4-iid", "sl-8-iid", "mp-8-iid", SHAPE):
        assert re.search(rf"^\| {re.escape(name)} \| \d+ \| \d+ \| \d+ \|$", text, re.M), name


def test_a_swept_fpl_shape_is_named_in_the_tables_the_legends_and_the_findings():
    summary = pd.read_csv(RESULTS / "summary.csv")
    row = summary.set_index("name").loc[SHAPE]
    assert (row["branches"], row["branch_stages"], row["data_owners"], row["servers"]) == (2, 2, 2, 4)
    assert SHAPE in (RESULTS / "findings.md").read_text()
    seeds, rounds = pd.read_csv(RESULTS / "seeds.csv"), pd.read_csv(RESULTS / "rounds.csv")
    label = "fpl-adapter branches2-branch_stages2"
    for fig in (figures.tradeoff(seeds, "energy_j_budget", "test_acc_budget", maximize_y=True),
                figures.to_accuracy(rounds, "cum_energy_j", 0.93)):
        texts = {t.get_text() for ax in fig.axes for leg in [ax.get_legend()] if leg for t in leg.get_texts()}
        texts |= {t.get_text() for leg in fig.legends for t in leg.get_texts()}
        assert label in texts and "fpl-adapter" in texts, sorted(texts)
        matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("name", ["sfl-8-iid", "fpl-8-adapter-iid"])
def test_the_committed_runs_stop_at_the_target_after_the_fixed_budget(name):
    study = load_study(ROOT / "params.yaml")
    seeds = pd.read_csv(RESULTS / "seeds.csv")
    mine = seeds[seeds["name"] == name]
    assert len(mine) == len(study.seeds) and (mine["reached"]).all()
    assert (mine["rounds_completed"] >= study.train["min_rounds"]).all()
    assert (mine["test_acc_mean"] >= study.train["stop_at_acc"]).all()
