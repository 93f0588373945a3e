"""The engine against references: centralized training, hand-computed FedAvg, itself (determinism)."""

from __future__ import annotations

import json

import pytest
import torch

from fplstudy.config import load_config
from fplstudy.plans.events import Transfer
from fplstudy.plans.plan import resolve
from fplstudy.plans.program import round_batches
from fplstudy.train.engine import (
    SimulatedTransport,
    build_holdings,
    fedavg,
    sync_branches,
    train,
)
from fplstudy.train.runner import run

TINY = {"max_train_samples": 128, "rounds": 2, "batch_size": 16}


def _train(**overrides):
    return train(resolve(load_config(None, {**TINY, **overrides})))


def _whole_state(result) -> dict[str, torch.Tensor]:
    """Every trained parameter by its name in the whole model (branch 0's copy + the trunk)."""
    state: dict[str, torch.Tensor] = {}
    hold = result.holdings
    for mod in [*hold.branch_parts[0], *hold.trunk_parts]:
        for key, value in mod.state_dict().items():
            assert key not in state, f"{key} held twice"
            state[key] = value
    return state


def _assert_same_training(a, b):
    sa, sb = _whole_state(a), _whole_state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], msg=lambda m, k=key: f"{k}: {m}")
    assert [r["test_acc_mean"] for r in a.rounds] == pytest.approx([r["test_acc_mean"] for r in b.rounds])
    assert [r["train_loss"] for r in a.rounds] == pytest.approx([r["train_loss"] for r in b.rounds], rel=1e-5)


@pytest.fixture(scope="module")
def centralized():
    return _train(strategy="centralized", nodes=1)


def test_fl_with_one_node_equals_centralized(centralized):
    _assert_same_training(_train(strategy="fl", nodes=1), centralized)


@pytest.mark.parametrize("nodes", [2, 3, 5, 8])
def test_mp_equals_centralized(centralized, nodes):
    mp = _train(strategy="mp", nodes=nodes)
    assert len(mp.plan.trunk) == nodes
    _assert_same_training(mp, centralized)


def test_mp_with_micro_batches_equals_centralized(centralized):
    _assert_same_training(_train(strategy="mp", nodes=4, micro_batches=4), centralized)


def test_sfl_with_one_client_equals_centralized(centralized):
    _assert_same_training(_train(strategy="sfl", nodes=2), centralized)


def test_fpl_adapter_one_branch_starts_as_the_uncut_model():
    """Identity adapters: before any step, branch + adapter + trunk computes the uncut model."""
    plan = resolve(load_config(None, {"strategy": "fpl", "nodes": 2}))
    hold = build_holdings(plan)
    torch.manual_seed(plan.config.seed)
    from fplstudy.facts.models import build_model

    whole = build_model(plan.model, plan.input_shape, plan.num_classes)
    x = torch.randn(5, *plan.input_shape)
    cut_out = torch.nn.Sequential(*hold.chain_modules(plan, 0))(x)
    torch.testing.assert_close(cut_out, whole(x))


def test_fedavg_two_clients_is_the_sample_weighted_mean():
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([3.0, -2.0, 0.0])
    torch.testing.assert_close(fedavg([a, b], [30, 10]), torch.tensor([1.5, 1.0, 3.0]))


def test_sync_through_the_aggregator_averages_branch_stages_and_keeps_adapters():
    plan = resolve(load_config(None, {"strategy": "fpl", "nodes": 4, "branches": 2}))
    hold = build_holdings(plan)
    with torch.no_grad():
        for d, value in ((0, 1.0), (1, 4.0)):
            for p in hold.branch_parts[d][0].parameters():
                p.fill_(value)
            for p in hold.adapters[d].parameters():
                p.fill_(value)
    T = SimulatedTransport()
    sync_branches(plan, T, hold, samples=[100, 50], rnd=0, step=7)
    for d in range(2):
        for p in hold.branch_parts[d][0].parameters():
            torch.testing.assert_close(p, torch.full_like(p, (100 * 1.0 + 50 * 4.0) / 150))
    assert all(float(p.detach().flatten()[0]) == 1.0 for p in hold.adapters[0].parameters())
    assert all(float(p.detach().flatten()[0]) == 4.0 for p in hold.adapters[1].parameters())
    kinds = [(e.kind, e.src, e.dst) for e in T.events if isinstance(e, Transfer)]
    agg = plan.aggregator
    assert kinds == [("params_up", "n0", agg), ("params_up", "n1", agg),
                     ("params_down", agg, "n0"), ("params_down", agg, "n1")]


def test_round_batches_interleave_branches_and_cover_every_sample():
    plan = resolve(load_config(None, {"strategy": "fl", "nodes": 3, "batch_size": 4, "local_epochs": 2}))
    batches = round_batches(plan, [10, 4, 7])
    assert [b.step for b in batches] == list(range(len(batches)))
    for d, n in enumerate([10, 4, 7]):
        assert sum(b.size for b in batches if b.branch == d) == 2 * n
    assert [b.branch for b in batches[:3]] == [0, 1, 2]


def test_sl_clients_take_turns_and_relay_heads():
    res = _train(strategy="sl", nodes=3, rounds=2)
    relays = [e for e in res.events if isinstance(e, Transfer) and e.kind.startswith("params")]
    # round 0: hand-over 0 -> 1; round 1: 1 -> 0 and 0 -> 1, each an up and a down message
    assert len(relays) == 2 * 3
    order = [e.branch for e in res.events if isinstance(e, Transfer) and e.kind == "activations"]
    assert order == sorted(order[: len(order) // 2]) + sorted(order[len(order) // 2:])


def test_concat_branches_see_their_rows_only():
    res = _train(strategy="fpl", nodes=3, branches=2, junction="concat", partition="features")
    computes = {(e.node, e.in_shape) for e in res.events if getattr(e, "phase", None) == "forward"}
    assert ("n0", (1, 4, 8)) in computes and ("n1", (1, 4, 8)) in computes
    assert res.rounds[-1]["test_acc_mean"] == res.rounds[-1]["test_acc_worst"]


def test_same_config_and_seed_give_identical_results(tmp_path):
    cfg = load_config(None, {**TINY, "strategy": "fpl", "nodes": 4, "partition": "dirichlet"})
    run(cfg, tmp_path / "a", progress=False)
    run(cfg, tmp_path / "b", progress=False)
    for name in ("rounds.csv", "ledger.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    ma, mb = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    ma.pop("timing"), mb.pop("timing")
    assert ma == mb
    other = load_config(None, {**TINY, "strategy": "fpl", "nodes": 4, "partition": "dirichlet", "seed": 1})
    run(other, tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "rounds.csv").read_bytes() != (tmp_path / "a" / "rounds.csv").read_bytes()


def test_diverging_loss_stops_and_keeps_completed_rounds(tmp_path):
    cfg = load_config(None, {**TINY, "strategy": "centralized", "nodes": 1, "lr": 1e6, "rounds": 4})
    out = run(cfg, tmp_path / "nan", progress=False)
    assert out.status == "diverged" and "lower lr" in out.message
    metrics = json.loads((tmp_path / "nan" / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    rows = (tmp_path / "nan" / "rounds.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == metrics["rounds_completed"] < 4


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["centralized", "fl", "mp", "sl", "sfl", "fpl"])
def test_every_strategy_learns_digits_with_four_nodes(strategy):
    nodes = 1 if strategy == "centralized" else 4
    res = train(resolve(load_config(None, {"strategy": strategy, "nodes": nodes})))
    acc = res.rounds[-1]["test_acc_mean"]
    print(f"{strategy}: test accuracy mean {acc:.4f} worst {res.rounds[-1]['test_acc_worst']:.4f} "
          f"in {res.wall_s:.1f} s")
    assert acc >= 0.85
