"""The profile sensitivity: a corner's prices equal a dry run with the profile changed in a user's file, the
nominal prices equal the committed runs', the range rule by hand for a number of each status, a verdict flip on
a hand-made table, and a bad ranges entry refused in one line before any pricing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from fplstudy.costs.dryrun import dry_run
from fplstudy.facts.profiles import load_profiles
from fplstudy.stages.sensitivity import main
from fplstudy.study.params import load_study, smoke_params
from fplstudy.study.ranges import RangesError, profile_ranges
from fplstudy.study.sensitivity import (
    METRICS,
    NOMINAL,
    corners,
    nominal_mismatches,
    reprice,
    rounds_run,
    verdicts,
)

ROOT = Path(__file__).resolve().parents[3]


def _spec(study, name):
    return next(p for p in study.plans if p.name == name)


def test_a_corner_prices_as_a_dry_run_with_that_number_changed_in_a_profiles_file(tmp_path: Path):
    study = load_study(smoke_params())
    spec = _spec(study, "fl-2-dirichlet")
    table = reprice(study, runs=[(spec, 1)])
    row = table[table["corner"] == "rpi4.flops_per_s:high"].iloc[0]
    assert row["value"] == 1.6e10 * 1.5  # D: x 1.5
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump({"devices": {"rpi4": {"flops_per_s": float(row["value"])}}}))
    by_hand = dry_run(spec.for_seed(1).model_copy(update={"profiles_file": str(user)})).totals
    assert {m: row[m] for m in METRICS} == {m: by_hand[m] for m in METRICS}
    nominal = table[table["corner"] == NOMINAL].iloc[0]
    assert row["makespan_s"] < nominal["makespan_s"] and row["bytes_total"] == nominal["bytes_total"]


def test_the_nominal_prices_equal_the_committed_runs_totals():
    study = load_study(ROOT / "params.yaml")
    runs = [(_spec(study, "fl-8-dirichlet"), 0), (_spec(study, "fpl-4-adapter-iid"), 1),
            (_spec(study, "sl-8-dirichlet"), 2), (_spec(study, "mp-4-iid"), 3)]
    done = rounds_run(study, ROOT / "results" / "runs")  # runs stop at the target: each is priced for its rounds
    assert len({done[(spec.name, s)] for spec, s in runs}) > 1
    table = reprice(study, runs=runs, completed=done)
    assert nominal_mismatches(table, study, ROOT / "results" / "runs") == []
    assert nominal_mismatches(reprice(study, runs=runs), study, ROOT / "results" / "runs")  # all 30 rounds: not the runs
    off = table.copy()
    off.loc[(off["kind"] == NOMINAL) & (off["name"] == "mp-4-iid"), "energy_j"] *= 1 + 1e-12
    assert [line.split(": ")[1].split()[0] for line in nominal_mismatches(off, study, ROOT / "results" / "runs")] == [
        "energy_j"]


def test_the_range_rule_by_hand_for_a_number_of_each_status(tmp_path: Path):
    ranges = profile_ranges(load_profiles())
    by_hand = {("devices", "rpi4", "idle_w"): ("M", 2.7 / 1.1, 2.7 * 1.1),
               ("devices", "jetson_nano", "active_w"): ("S", 10.0 / 1.1, 10.0 * 1.1),
               ("devices", "rpi4", "flops_per_s"): ("D", 1.6e10 / 1.5, 1.6e10 * 1.5),
               ("devices", "minipc", "flops_per_s"): ("E", 3.0e10, 1.2e11),
               ("devices", "nrf52840", "active_w"): ("U", 0.005, 0.02)}
    for key, (status, low, high) in by_hand.items():
        r = ranges[key]
        assert (r.status, r.low, r.high) == (status, pytest.approx(low, rel=1e-15), pytest.approx(high, rel=1e-15))
    assert ("devices", "rpi4", "memory_bytes") not in ranges  # prices nothing
    file = tmp_path / "ranges.yaml"
    file.write_text("devices:\n  rpi4:\n    idle_w: {low: 2.2, high: 3.0, source: three meters}\n")
    r = profile_ranges(load_profiles(), file)[("devices", "rpi4", "idle_w")]
    assert (r.low, r.high, r.source) == (2.2, 3.0, "three meters")


def test_a_verdict_that_one_number_flips_is_found_on_a_hand_made_table():
    rows = []
    # a / b per corner: nominal 0.8 (seeds 0.64 and 1.0), x.y:low 0.7, x.y:high 0.95, mc-0 0.8; makespan 0.5
    for corner, kind, ratios in ((NOMINAL, NOMINAL, (0.64, 1.0)), ("x.y:low", "low", (0.7, 0.7)),
                                 ("x.y:high", "high", (0.95, 0.95)), ("mc-0", "mc", (0.8, 0.8))):
        for seed, r in enumerate(ratios):
            number = "x.y" if kind in ("low", "high") else ""
            rows.append({"name": "a", "seed": seed, "corner": corner, "kind": kind, "number": number,
                         "energy_j": 10.0 * r, "makespan_s": 1.0})
            rows.append({"name": "b", "seed": seed, "corner": corner, "kind": kind, "number": number,
                         "energy_j": 10.0, "makespan_s": 2.0})
    v = verdicts(pd.DataFrame(rows), [("a", "b")], 0.10).set_index("metric")
    energy, makespan = v.loc["energy_j"], v.loc["makespan_s"]
    assert energy["ratio"] == pytest.approx(0.8) and energy["verdict"] == "cheaper"
    assert (energy["ratio_min"], energy["ratio_max"]) == (pytest.approx(0.7), pytest.approx(0.95))
    assert (energy["holds"], energy["flips"], energy["mc_flips"], energy["moves_most"]) == (False, "x.y:high", 0,
                                                                                         "x.y")
    assert (makespan["verdict"], makespan["holds"], makespan["flips"]) == ("cheaper", True, "")


def test_monte_carlo_corners_stay_in_their_ranges_and_repeat_with_their_seed():
    numbers = [r for k, r in profile_ranges(load_profiles()).items() if k[1] in ("rpi4", "wifi5")]
    drawn = corners(numbers, draws=5, seed=3)
    assert [c.name for c in drawn[:3]] == [NOMINAL, f"{numbers[0].key}:low", f"{numbers[0].key}:high"]
    mc = [c for c in drawn if c.kind == "mc"]
    assert len(mc) == 5 and mc == [c for c in corners(numbers, draws=5, seed=3) if c.kind == "mc"]
    for c in mc:
        for (key, value), n in zip(c.values, numbers):
            assert key == (n.section, n.profile, n.field) and n.low <= value <= n.high


@pytest.mark.parametrize("entry, words", [
    ("rpi4:\n    active_w: {low: 7.0, high: 8.0, source: a meter}", ["devices.rpi4.active_w.low", "7", "at most 6.4"]),
    ("rpi4:\n    activ_w: {low: 5.0, high: 7.0, source: a meter}", ["devices.rpi4.activ_w", "use one of", "active_w"]),
])
def test_a_bad_ranges_entry_is_refused_in_one_line_naming_file_field_value_and_fix(tmp_path: Path, capsys, entry,
                                                                                     words):
    file = tmp_path / "ranges.yaml"
    file.write_text("devices:\n  " + entry + "\n")
    with pytest.raises(RangesError) as caught:
        profile_ranges(load_profiles(), file)
    assert "ranges.yaml" in str(caught.value) and all(w in str(caught.value) for w in words)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(smoke_params()))
    rc = main(["--params", str(params), "--runs", str(tmp_path / "runs"), "--ranges", str(file),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("python -m fplstudy.stages.sensitivity: error: ")
    assert all(w in err[0] for w in ["ranges.yaml", *words])
    assert not (tmp_path / "out").exists()  # refused before any work


def test_the_ratio_verdict_uses_the_findings_margin():
    from fplstudy.study.sensitivity import cost_verdict

    assert [cost_verdict(r, 0.1) for r in (1 / 1.1 - 1e-9, 1 / 1.1 + 1e-9, 1.0, 1.1 - 1e-9, 1.1 + 1e-9)] == [
        "cheaper", "equivalent", "equivalent", "equivalent", "costlier"]


def test_the_rounds_to_target_and_their_nominal_prices_equal_the_committed_to_target_columns():
    """Two independent routes to the equal-accuracy costs: the aggregate stage's cumulative ledger sums up to the
    first round at the target (results/seeds.csv) and a re-pricing of the plan for exactly that many rounds."""
    from fplstudy.study.sensitivity import rounds_to_target

    study = load_study(ROOT / "params.yaml")
    target = float(study.findings["target_acc"])
    seeds = pd.read_csv(ROOT / "results" / "seeds.csv").set_index(["name", "seed"])
    reached = rounds_to_target(study, ROOT / "results" / "runs", target)
    committed = seeds[seeds["reached"].astype(bool)]
    assert set(reached) == set(committed.index) and len(reached) > 100
    assert all(reached[key] == int(committed.at[key, "rounds_to_target"]) for key in reached)
    assert not seeds[~seeds["reached"].astype(bool)].index.isin(list(reached)).any()  # "not reached" stays out
    runs = [(_spec(study, "fl-8-iid"), 3), (_spec(study, "fpl-8-adapter-iid"), 1), (_spec(study, "sl-4-dirichlet"), 2)]
    table = reprice(study, runs=runs, completed=reached, nominal_only=True).set_index(["name", "seed"])
    for spec, s in runs:
        row, want = table.loc[(spec.name, s)], committed.loc[(spec.name, s)]
        # seeds.csv keeps 10 significant digits
        assert row["energy_j"] == pytest.approx(want["energy_j_to_target"], rel=1e-9)
        assert row["makespan_s"] == pytest.approx(want["makespan_s_to_target"], rel=1e-9)
        assert row["bytes_total"] == pytest.approx(want["bytes_to_target"], rel=1e-9)


@pytest.mark.xdist_group("tiny-study")
def test_the_stage_checks_each_equal_accuracy_verdict_across_the_ranges_on_a_tiny_study(tmp_path: Path, tiny_study):
    """The tiny study trained for real, then the stage: to-target verdict rows beside the fixed-budget ones, over
    the runs that reached the target, each priced for the rounds it took."""
    from fplstudy.study.sensitivity import TO_TARGET_METRICS, rounds_to_target

    study, folder = tiny_study
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(smoke_params(), sort_keys=False))  # the groups' keys in order: the plans' names
    rc = main(["--params", str(params), "--runs", str(folder / "runs"), "--ranges", str(ROOT / "profile_ranges.yaml"),
               "--out", str(tmp_path / "out")])
    assert rc == 0
    v = pd.read_csv(tmp_path / "out" / "verdicts.csv")
    budget = v[v["metric"].isin(["energy_j", "makespan_s"])]
    target = v[v["metric"].isin(TO_TARGET_METRICS)]
    assert len(budget) and len(target) and set(zip(target["a"], target["b"])) <= set(zip(budget["a"], budget["b"]))
    priced = pd.read_csv(tmp_path / "out" / "repriced_to_target.csv")
    reached = rounds_to_target(study, folder / "runs", float(study.findings["target_acc"]))
    nominal = priced[priced["kind"] == NOMINAL]
    assert set(zip(nominal["name"], nominal["seed"])) == set(reached)
    seeds = pd.read_csv(folder / "seeds.csv").set_index(["name", "seed"])
    for _, row in nominal.iterrows():
        assert row["energy_j_to_target"] == pytest.approx(seeds.at[(row["name"], row["seed"]), "energy_j_to_target"],
                                                          rel=1e-9)
