"""Rounds and costs to a target accuracy, by hand on hand-written run files."""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from fplstudy.study.tables import cumulative_costs, plan_roles, read_runs, to_target

# Three rounds of a two-branch plan: n0 and n1 own data, n2 is the trunk and the aggregator.
LEDGER = """round,node,role,device,kind,count,flops,bytes_tx,bytes_rx,seconds,energy_j,round_makespan_s,run_id
0,n0,branch0/stage0,rpi4,forward,1,100,0,0,0.1,1.0,2.0,r
0,n1,branch1/stage0,rpi4,forward,1,100,0,0,0.1,2.0,2.0,r
0,n0,branch0/stage0,rpi4,activations,1,0,1000,0,0.1,0.5,2.0,r
0,n2,trunk/stage0+aggregator,minipc,forward,1,300,0,1000,0.1,4.0,2.0,r
1,n0,branch0/stage0,rpi4,forward,1,100,0,0,0.1,1.0,3.0,r
1,n1,branch1/stage0,rpi4,activations,1,0,2000,0,0.1,3.0,3.0,r
1,n2,trunk/stage0+aggregator,minipc,forward,1,300,0,2000,0.1,4.0,3.0,r
2,n0,branch0/stage0,rpi4,forward,1,100,0,0,0.1,1.0,5.0,r
2,n2,trunk/stage0+aggregator,minipc,params_down,1,0,4000,0,0.1,8.0,5.0,r
"""
ROUNDS = """round,train_loss,test_loss_mean,test_acc_mean
0,2.0,2.0,0.50
1,1.0,1.0,0.91
2,0.5,0.5,0.95
"""
PLAN = {"branches": [{"data_node": "n0"}, {"data_node": "n1"}],
        "nodes": [{"name": "n0", "role": "branch0/stage0"}, {"name": "n1", "role": "branch1/stage0"},
                  {"name": "n2", "role": "trunk/stage0+aggregator"}]}


def _rounds() -> pd.DataFrame:
    led = pd.read_csv(io.StringIO(LEDGER))
    return pd.read_csv(io.StringIO(ROUNDS)).merge(cumulative_costs(led, {"n0", "n1"}), on="round")


def test_cumulative_costs_by_hand():
    r = _rounds().set_index("round")
    # round 0: flops 100+100+300, bytes sent 1000, energy 1+2+0.5+4, data owners' energy (1+2+0.5)/2, makespan 2
    assert r.loc[0, "cum_flops"] == 500 and r.loc[0, "cum_bytes"] == 1000 and r.loc[0, "cum_energy_j"] == 7.5
    assert r.loc[0, "cum_energy_j_per_owner"] == pytest.approx(1.75) and r.loc[0, "cum_makespan_s"] == 2.0
    # round 1 adds flops 400, bytes 2000, energy 8 (owners 4), makespan 3; round 2 adds 100, 4000, 9 (owners 1), 5
    assert list(r["cum_flops"]) == [500, 900, 1000] and list(r["cum_bytes"]) == [1000, 3000, 7000]
    assert list(r["cum_energy_j"]) == [7.5, 15.5, 24.5] and list(r["cum_makespan_s"]) == [2.0, 5.0, 10.0]
    assert list(r["cum_energy_j_per_owner"]) == pytest.approx([1.75, 3.75, 4.25])


@pytest.mark.parametrize("target, rounds, bytes_, energy, per_owner, makespan", [
    (0.9, 2, 3000, 15.5, 3.75, 5.0),    # first reached in round 1: two rounds run
    (0.95, 3, 7000, 24.5, 4.25, 10.0),  # reached exactly at the last round (>=)
    (0.5, 1, 1000, 7.5, 1.75, 2.0),     # reached in round 0
])
def test_costs_to_target_by_hand(target, rounds, bytes_, energy, per_owner, makespan):
    got = to_target(_rounds(), target)
    assert got["reached"] and got["rounds_to_target"] == rounds and got["bytes_to_target"] == bytes_
    assert got["energy_j_to_target"] == energy and got["energy_j_per_owner_to_target"] == pytest.approx(per_owner)
    assert got["makespan_s_to_target"] == makespan and got["best_acc"] == 0.95


def test_a_target_not_reached_gives_the_best_accuracy_and_no_costs():
    got = to_target(_rounds(), 0.96)
    assert got["reached"] is False and got["best_acc"] == 0.95 and got["target_acc"] == 0.96
    assert all(math.isnan(got[k]) for k in ("rounds_to_target", "bytes_to_target", "energy_j_to_target",
                                            "energy_j_per_owner_to_target", "makespan_s_to_target", "flops_to_target"))


def test_roles_of_a_plan():
    assert plan_roles(PLAN) == {"data_owners": 2, "servers": 1, "aggregators": 1}
    mp = {"branches": [{"data_node": "n0"}], "nodes": [{"name": f"n{i}", "role": f"trunk/stage{i}"} for i in range(4)]}
    assert plan_roles(mp) == {"data_owners": 1, "servers": 3, "aggregators": 0}  # n0 holds data and stage 0


def test_read_runs_carries_the_target_columns(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "ledger.csv").write_text(LEDGER)
    (folder / "rounds.csv").write_text(ROUNDS)
    (folder / "metrics.json").write_text(json.dumps({"status": "completed", "plan": PLAN, "test_acc_mean": 0.95}))
    tables = read_runs([({"name": "p", "group": "g"}, 0, folder)], target=0.9)
    row = tables["seeds"].iloc[0]
    assert row["rounds_to_target"] == 2 and row["bytes_to_target"] == 3000 and row["data_owners"] == 2
    assert list(tables["rounds"]["cum_bytes"]) == [1000, 3000, 7000]
    assert "rounds_to_target" not in read_runs([({"name": "p", "group": "g"}, 0, folder)])["seeds"]
