"""The study over seeds: params.yaml validated before work, plans expanded in one place, resumable
groups, tables whose intervals equal the statistics of their per-seed rows, findings from paired tests,
and the same bytes on another CPU."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fplstudy.config import StudyError
from fplstudy.plans.plan import resolve
from fplstudy.study import stats
from fplstudy.study.findings import comparisons, degenerate, findings
from fplstudy.study.params import load_study, smoke_params
from fplstudy.study.pool import run_group, train_runs
from fplstudy.study.provenance import code_hash

ROOT = Path(__file__).resolve().parents[3]


def test_repository_study_expands_to_named_plans():
    s = load_study(ROOT / "params.yaml")
    names = [p.name for p in s.plans]
    assert len(names) == len(set(names)) == 32 and len(s.seeds) >= 8
    assert {"centralized-1-iid", "mp-8-iid", "fl-4-dirichlet", "fpl-4-adapter-iid", "fpl-8-concat-features"} <= set(names)
    fpl = next(p for p in s.plans if p.name == "fpl-4-shared-dirichlet")
    assert (fpl.group, fpl.config.junction, fpl.config.partition, fpl.config.rounds) == ("fpl", "shared", "dirichlet", 30)
    assert (fpl.config.min_rounds, fpl.config.stop_at_acc) == (10, s.findings["target_acc"])
    assert s.groups == ["centralized", "mp", "fl", "sl", "sfl", "fpl", "fpl-shape", "fpl-deep", "fpl-junction",
                        "fpl-nosync", "fpl-concat"]
    # FPL's configuration space at 8 nodes: four branches x branch_stages + trunk_stages shapes, the junction at
    # three positions, adapter branches with and without sync, each under its own name
    shapes = {}
    for p in s.plans:
        if p.config.strategy == "fpl" and p.config.nodes == 8 and p.junction == "adapter" and p.config.partition == "iid":
            plan = resolve(p.config)
            shapes[p.name] = (len(plan.branches), len(plan.branches[0].stages), len(plan.trunk), plan.junction_at,
                              plan.sync)
    assert shapes["fpl-8-adapter-iid"] == (4, 1, 4, 2, "fedavg")
    assert shapes["fpl-8-branches2-branch_stages2-adapter-iid"][:3] == (2, 2, 4)
    assert shapes["fpl-8-branches3-branch_stages2-adapter-iid"][:3] == (3, 2, 2)
    assert shapes["fpl-8-branches2-branch_stages3-junction_at3-adapter-iid"][:4] == (2, 3, 2, 3)
    assert {shapes[f"fpl-8-junction_at{j}-adapter-iid"][3] for j in (1, 3)} == {1, 3}
    assert shapes["fpl-8-adapter-syncnone-iid"][4] == "none"


def _bad(mutate) -> str:
    params = smoke_params()
    mutate(params["study"])
    with pytest.raises(StudyError) as err:
        load_study(params)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s["train"].update(link="wifi5; touch x"), "link"),
    (lambda s: s["groups"]["fl"].update(nodes=[2, "4; rm -rf /"]), "study.groups.fl.nodes"),
    (lambda s: s["groups"].update({"Bad Group": {"nodes": [2]}}), "group name"),
    (lambda s: s["groups"]["mp"].update(nodes=[9]), "study.groups.mp.nodes: got 9; "),
    (lambda s: s["groups"]["fl"].update(colour=["red"]), "study.groups.fl.colour"),
    (lambda s: s["groups"]["fl"].update(nodes=[]), "non-empty list"),
    (lambda s: s["train"].update(seed=3), "study.train.seed"),
    (lambda s: s["train"].update(lr=-1.0), "lr"),
    (lambda s: s.update(seeds=[0, 0, 1]), "study.seeds"),
    (lambda s: s.update(seeds=[-1]), "study.seeds"),
    (lambda s: s.update(workers=0), "study.workers"),
    (lambda s: s.update(kernels="avx512"), "study.kernels"),
    (lambda s: s["findings"].update(confidence=1.5), "findings.confidence"),
    (lambda s: s["findings"].update(target_acc=93), "study.findings.target_acc: got 93; give the test accuracy"),
    (lambda s: s["findings"].update(pairs=[["fpl-8-adapter-iid", "fl-4-iid"]]),
     "study.findings.pairs: got 'fpl-8-adapter-iid'; not a plan of the study"),
    (lambda s: s["findings"].update(pairs=[["fl-4-iid"]]), "give each pair as [plan, other plan]"),
    (lambda s: s["groups"].update({"fl2": {"strategy": ["fl"], "nodes": [2], "partition": ["iid"]}}),
     "also in group"),
])
def test_bad_params_are_refused_naming_the_entry(mutate, expected):
    assert expected in _bad(mutate)


def test_a_bad_value_never_reaches_the_dvc_command(tmp_path: Path):
    """Group names are the only values dvc.yaml puts into a shell command; a hostile one is refused."""
    params = smoke_params()
    params["study"]["groups"]["x; touch pwned"] = {"strategy": ["fl"], "nodes": [2]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "fplstudy.stages.check", "--params", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "group name" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


@pytest.mark.xdist_group("tiny-study")
def test_summary_intervals_are_the_statistics_of_the_seed_rows(tiny_study):
    the_study, folder = tiny_study
    seeds = pd.read_csv(folder / "seeds.csv")
    summary = pd.read_csv(folder / "summary.csv")  # written with 10 significant digits (float_format)
    assert len(seeds) == len(the_study.plans) * len(the_study.seeds) and (seeds["status"] == "completed").all()
    for _, row in summary.iterrows():
        values = seeds[seeds["name"] == row["name"]]["test_acc_mean"].to_numpy()
        low, high = stats.logit_interval(values)  # an accuracy: the logit interval, inside [0, 1]
        assert row["test_acc_mean_mean"] == pytest.approx(values.mean(), rel=1e-8)
        assert row["test_acc_mean_ci_low"] == pytest.approx(low, rel=1e-8, abs=1e-10)
        assert row["test_acc_mean_ci_high"] == pytest.approx(high, rel=1e-8, abs=1e-10)
        assert 0 <= row["test_acc_mean_ci_low"] <= row["test_acc_mean_ci_high"] <= 1
        energy = seeds[seeds["name"] == row["name"]]["energy_j"].to_numpy()  # a cost: Student-t
        assert (row["energy_j_ci_low"], row["energy_j_ci_high"]) == pytest.approx(stats.t_interval(energy), rel=1e-8)
        assert row["seeds"] == len(the_study.seeds)
    headline = json.loads((folder / "metrics.json").read_text())
    assert headline["runs_completed"] == len(seeds) and len(json.dumps(headline)) < 2000  # readable in a terminal
    fl4 = summary.set_index("name").loc["fl-4-iid"]
    assert headline["test_acc"]["fl@4"] == pytest.approx(fl4["test_acc_mean_mean"], abs=1e-4)
    for key, column in (("energy_j", "energy_j_mean"), ("bytes_total", "bytes_total_mean"),
                        ("makespan_s", "makespan_s_mean")):  # the costs beside the accuracy, per strategy
        assert headline[key]["fl@4"] == pytest.approx(fl4[column], rel=1e-3)
        assert set(headline[key]) == set(headline["test_acc"])
    for key, column in (("rounds_to_target", "rounds_to_target_mean"), ("energy_j_to_target", "energy_j_to_target_mean")):
        assert headline[key]["fl@4"] == pytest.approx(fl4[column], rel=1e-3)  # at equal accuracy too
        assert set(headline[key]) == set(headline["test_acc"])


@pytest.mark.xdist_group("tiny-study")
def test_seeds_change_the_data_and_pair_the_plans(tiny_study):
    the_study, folder = tiny_study
    seeds = pd.read_csv(folder / "seeds.csv")
    fl = seeds[seeds["name"] == "fl-2-iid"]
    assert fl["test_acc_mean"].nunique() > 1  # the seed moves the result: an axis, not a constant
    shards = {s: json.loads((folder / "runs" / "fl" / "fl-2-dirichlet" / f"seed-{s}" / "metrics.json").read_text())
              ["shard_sizes"] for s in the_study.seeds}
    assert len({json.dumps(v) for v in shards.values()}) == len(the_study.seeds)  # a new partition per seed


@pytest.mark.xdist_group("tiny-study")
def test_group_resumes_and_reruns_give_identical_files(tiny_study, tmp_path: Path):
    the_study, folder = tiny_study
    runs = tmp_path / "runs"
    shutil.copytree(folder / "runs" / "sl", runs / "sl")
    assert run_group(the_study, "sl", runs, log=lambda line: None) == []  # all complete: nothing trained
    gone = runs / "sl" / "sl-2-dirichlet" / "seed-1"
    before = {p.name: p.read_bytes() for p in gone.iterdir()}
    shutil.rmtree(gone)
    (runs / "sl" / "sl-9-stale").mkdir()  # a plan no longer in the group
    records = run_group(the_study, "sl", runs, log=lambda line: None)
    assert [r["run"] for r in records] == ["sl-2-dirichlet seed 1"]
    assert {p.name: p.read_bytes() for p in gone.iterdir()} == before  # same config, seed, threads: same bytes
    assert not (runs / "sl" / "sl-9-stale").exists()


@pytest.mark.xdist_group("tiny-study")
def test_findings_name_test_n_interval_and_verdict(tiny_study):
    the_study, folder = tiny_study
    seeds = pd.read_csv(folder / "seeds.csv")
    table = comparisons(the_study.findings, seeds)
    acc = table[table["family"] == "accuracy"]
    # the fixed variant (adapter) against fl, sl, mp wherever both ran with more than one branch: fl at 4 only,
    # fpl-2 has one branch (sl with an adapter) and is named as degenerate
    assert list(zip(acc["a"], acc["b"])) == [("fpl-4-adapter-iid", "fl-4-iid")]
    assert degenerate(the_study.findings, seeds) == ["fpl-2-adapter-iid"]
    # an explicit registered pair joins every family, and widens its Bonferroni correction
    cfg = {**the_study.findings, "pairs": [["fpl-2-adapter-iid", "fl-2-iid"]]}
    table = comparisons(cfg, seeds)
    acc = table[table["family"] == "accuracy"]
    assert len(acc) == 2 and list(acc["alpha"]) == pytest.approx([0.025, 0.025]) and list(acc["level"]) == pytest.approx([0.975] * 2)
    summary = pd.read_csv(folder / "summary.csv")
    lines = findings(cfg, table, summary, budget_rounds=2)
    claims = [line for line in lines if line.startswith("- **fpl-2-adapter-iid vs fl-2-iid**")]
    fixed = [c for c in claims if " ratio " in c and "rounds ratio" not in c or "difference" in c]
    assert len(fixed) >= 3  # accuracy, bytes, energy at the fixed budget (and the to-target families)
    for c in claims:  # every line names its test and n, and an interval unless the value is the same on every seed
        assert re.search(r"(TOST, n = [23]|paired t-test, n = [23]|the same on all n = [23] seeds|not compared)", c), c
        assert ("[" in c) != ("the same on all" in c) or "not compared" in c, c
        assert "p = 0 " not in c and "p = 0)" not in c
        assert any(f"**{w}**" in c for w in ("more accurate", "less accurate", "equivalent", "inconclusive",
                                              "cheaper", "costlier", "not compared")), c
    assert any(line.startswith("| fpl-4-adapter-iid | 2 | 2 | 1 |") for line in lines)  # who the plans are
    assert any("Fixed budget: accuracy after 2 rounds" in line for line in lines)


@pytest.mark.xdist_group("tiny-study")
def test_findings_test_the_configured_variant_not_the_best(tiny_study):
    the_study, folder = tiny_study
    seeds = pd.read_csv(folder / "seeds.csv")
    shared = {**the_study.findings, "fpl_junction": "shared"}
    table = comparisons(shared, seeds)
    assert set(table[table["family"] == "accuracy"]["a"]) == {"fpl-4-shared-iid"}  # fpl-2: one branch, degenerate


def test_runs_record_what_can_change_their_floats(tmp_path: Path):
    """The study's worker pins the kernels and the run records it (volatile: kept out of tracked files)."""
    cfg = load_study(smoke_params()).plans[0].config
    [record] = train_runs([(cfg, tmp_path / "run", "one")], workers=1, log=lambda line: None)
    env = record["environment"]
    assert env["torch_threads"] == 1 and env["cpu_capability"] == "AVX2" and env["torch"] == torch.__version__
    assert env["cpu_model"] and env["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and env["env"]["MKL_CBWR"] == "COMPATIBLE"
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "environment" not in doc and "timing" not in doc and "git_commit" not in doc["code_version"]
    assert doc["config"]["threads"] == 1 and doc["code_version"]["code_hash"] == code_hash()


@pytest.mark.xdist_group("tiny-study")
def test_workers_do_not_change_results(tiny_study, tmp_path: Path):
    """Two runs at once (the study's default) or one at a time: the same bytes."""
    the_study, folder = tiny_study
    run_group(the_study, "mp", tmp_path / "runs", workers=1, log=lambda line: None)
    ours = sorted((tmp_path / "runs" / "mp").rglob("*.*"))
    theirs = sorted((folder / "runs" / "mp").rglob("*.*"))
    assert [p.relative_to(tmp_path / "runs") for p in ours] == [p.relative_to(folder / "runs") for p in theirs]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs))


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_the_same_seed_gives_every_strategy_the_same_data(partition):
    """The paired design: plans with the same seed and branch count see the same train/test split and the same
    shards, whatever their strategy (fl with 2 clients, sl/sfl with 2 clients + a server, fpl with 2 branches);
    another seed moves both."""
    from fplstudy.config import make_config
    from fplstudy.facts.partition import load_partitioned
    from fplstudy.plans.plan import resolve

    def data(strategy: str, nodes: int, seed: int):
        cfg = make_config({"strategy": strategy, "nodes": nodes, "partition": partition, "seed": seed})
        split, part = load_partitioned(resolve(cfg))
        return split, [ix.tolist() for ix in part.indices]

    ref_split, ref_shards = data("fl", 2, 3)
    for strategy, nodes in (("sl", 3), ("sfl", 3), ("fpl", 4)):
        split, shards = data(strategy, nodes, 3)
        assert torch.equal(split.x_train, ref_split.x_train) and torch.equal(split.y_test, ref_split.y_test)
        assert shards == ref_shards, strategy
    other_split, other_shards = data("fl", 2, 4)
    assert not torch.equal(other_split.y_train, ref_split.y_train) and other_shards != ref_shards


def test_a_study_that_sweeps_other_keys_keeps_them_in_every_table(tmp_path: Path):
    """A hand-written study sweeping `link` (fl) and `branches` (fpl): both are columns of seeds.csv and
    summary.csv, the plans that differ only in them are all in curves.csv and metrics.json, each named."""
    from fplstudy.study.tables import aggregate, write_aggregate

    params = smoke_params()
    params["study"]["seeds"] = [0, 1]
    params["study"]["groups"] = {"fl": {"nodes": [2], "link": ["wifi5", "lte"]},
                                 "fpl": {"nodes": [5], "branches": [2, 4], "junction": ["adapter"]}}
    params["study"]["findings"] = {}
    the_study = load_study(params)
    run_group(the_study, None, tmp_path / "runs", log=lambda line: None)
    written = write_aggregate(the_study, aggregate(the_study, tmp_path / "runs"), tmp_path)
    assert {p.name for p in written} >= {"seeds.csv", "summary.csv", "curves.csv", "metrics.json"}
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert {"link", "branches"} <= set(summary.columns) and len(summary) == 4
    assert sorted(summary[summary["strategy"] == "fl"]["link"]) == ["lte", "wifi5"]
    assert sorted(summary[summary["strategy"] == "fpl"]["branches"]) == [2, 4]
    assert {"link", "branches"} <= set(pd.read_csv(tmp_path / "seeds.csv").columns)
    fl = summary[summary["strategy"] == "fl"].set_index("link")
    assert fl.at["lte", "energy_j_mean"] != fl.at["wifi5", "energy_j_mean"]  # the swept key changes the costs
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert {"fl fl-2-wifi5", "fl fl-2-lte", "fpl-adapter fpl-5-branches2-adapter", "fpl-adapter fpl-5-branches4-adapter"} <= set(curves)
    headline = json.loads((tmp_path / "metrics.json").read_text())
    assert set(headline["energy_j"]) == {"fl@2 fl-2-wifi5", "fl@2 fl-2-lte", "fpl-adapter@5 fpl-5-branches2-adapter",
                                         "fpl-adapter@5 fpl-5-branches4-adapter"}
