"""The distributed backend: four node processes on loopback (gloo), checked against the simulated backend.

Every run is tiny (64 training samples, 2 rounds, batches of 16): the cost is starting four Python
processes that import torch, not the training.
"""

from __future__ import annotations

import os
import time

import pandas as pd
import psutil
import pytest
import torch

from fplstudy import engine
from fplstudy.config import make_config
from fplstudy.distributed import (FAULT_ENV, WIRE_COLUMNS, DistributedError, WireMismatch, check_wire,
                                  events_bytes, train_distributed)
from fplstudy.events import TRANSFER_KINDS, Transfer
from fplstudy.ledger import price
from fplstudy.plan import resolve
from fplstudy.profiles import check_profiles

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

TINY = dict(max_train_samples=64, rounds=2, batch_size=16)
NODES = {"fl": 3, "mp": 4, "sfl": 4, "fpl": 4}  # fl: 3 clients + its aggregator = 4 processes


def _plan(strategy: str, **extra):
    return resolve(make_config(dict(strategy=strategy, nodes=NODES[strategy], **{**TINY, **extra})))


def _children() -> set[int]:
    """Child processes of this test process, except multiprocessing's resource tracker and fork server (one per
    interpreter, started with the first spawned process and kept until the interpreter exits)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if not any(helper in " ".join(p.cmdline()) for helper in ("resource_tracker", "forkserver")):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module", params=sorted(NODES))
def both(request):
    """The same plan trained by both backends: (plan, simulated result, distributed result)."""
    plan = _plan(request.param)
    data = engine.load_partitioned(plan)
    before = _children()
    dist = train_distributed(plan, data=data, timeout_s=60)
    assert _children() <= before, "a node process was left behind"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every node process: the same kernels, the same float sums
    try:
        sim = engine.train(plan, data=data)
    finally:
        torch.set_num_threads(threads)
    return plan, sim, dist


def test_four_processes(both):
    plan, _, dist = both
    assert len(plan.nodes) == 4 and dist.world_size == 4
    talkers = {n for ev in dist.events if isinstance(ev, Transfer) for n in (ev.src, ev.dst)}
    assert set(dist.wire["node"]) == talkers == {n.name for n in plan.nodes}


def test_event_stream_equals_simulated(both):
    _, sim, dist = both
    assert dist.events == sim.events


def test_wire_bytes_equal_ledger_bytes_per_node_and_kind(both):
    plan, _, dist = both
    ledger = price(plan, dist.events, check_profiles(plan))
    check_wire(dist.wire, ledger)  # per round, node and kind; raises WireMismatch otherwise
    msgs = ledger[ledger["kind"].isin(TRANSFER_KINDS)]
    want = msgs.groupby(["node", "kind"])[["bytes_tx", "bytes_rx"]].sum()
    got = dist.wire.groupby(["node", "kind"])[["bytes_tx", "bytes_rx"]].sum()
    pd.testing.assert_frame_equal(got.sort_index(), want.sort_index(), check_dtype=False)
    assert int(got["bytes_tx"].sum()) > 0
    assert got["bytes_tx"].sum() == got["bytes_rx"].sum()
    strides = sum(8 * len(ev.shape) for ev in dist.events if isinstance(ev, Transfer))  # framing: int64 strides
    assert dist.wire["header_bytes_tx"].sum() == dist.wire["header_bytes_rx"].sum() == strides


def test_metrics_and_weights_equal_simulated(both):
    """Bit for bit: the hand-offs keep the simulated tensors' layout (strides), the training losses are
    listed in step order, and both runs use one intra-op thread per node."""
    _, sim, dist = both
    assert dist.status == sim.status == "completed"
    assert len(dist.rounds) == len(sim.rounds) == TINY["rounds"]
    for a, b in zip(dist.rounds, sim.rounds):
        for key in ("train_loss", "test_loss_mean", "test_acc_mean", "test_acc_worst", "test_acc_per_branch"):
            assert a[key] == b[key], key
    for m_dist, m_sim in zip(dist.holdings.all_modules(), sim.holdings.all_modules()):
        torch.testing.assert_close(m_dist.state_dict(), m_sim.state_dict(), rtol=0, atol=0)


def test_check_wire_fails_loudly_on_a_difference():
    plan = _plan("sfl")
    events = engine.train(plan, engine.SimulatedTransport()).events
    want = events_bytes(events)
    wire = pd.DataFrame([dict(round=r.round, node=r.node, peer="?", kind=r.kind, messages_tx=1, bytes_tx=r.bytes_tx,
                              messages_rx=1, bytes_rx=r.bytes_rx) for r in want.itertuples()], columns=WIRE_COLUMNS)
    check_wire(wire, want)
    wire.loc[0, "bytes_tx"] += 4
    with pytest.raises(WireMismatch, match=rf"round 0 {wire.loc[0, 'node']} {wire.loc[0, 'kind']}"):
        check_wire(wire, want)


def test_killed_worker_stops_the_run_with_the_node_and_round_and_keeps_round_0(tmp_path, monkeypatch):
    from fplstudy.runner import run

    monkeypatch.setenv(FAULT_ENV, "n2@1")  # node n2 calls os._exit at its first step of round 1
    before = _children()
    t0 = time.monotonic()
    with pytest.raises(DistributedError) as info:
        run(make_config(dict(strategy="fpl", nodes=4, **TINY)), tmp_path, progress=False, backend="distributed")
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert "round 1" in msg and "node n2 (rank 2) died" in msg, msg
    assert elapsed < 60 + 30  # the default timeout plus start-up: a dead node is noticed at once
    kept = info.value.result
    assert kept.status == "failed" and [r["round"] for r in kept.rounds] == [0]
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert rounds["round"].tolist() == [0]
    assert _children() <= before, "a node process was left behind"


def test_hung_worker_times_out_naming_the_node(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "n3@1:hang")  # the trunk node stops answering in round 1
    plan = _plan("fpl")
    before = _children()
    rows = []
    t0 = time.monotonic()
    with pytest.raises(DistributedError, match=r"round 1.*n3") as info:
        train_distributed(plan, timeout_s=5, on_round=rows.append)
    assert time.monotonic() - t0 < 60
    assert "timed out after 5 s" in str(info.value) and "FPLSTUDY_DISTRIBUTED_TIMEOUT_S" in str(info.value)
    assert [r["round"] for r in rows] == [0]
    assert _children() <= before


def test_divergence_is_reported_as_the_simulated_backend_reports_it():
    plan = _plan("fl", lr=1e4, rounds=3)  # every client's loss is NaN at its first step of round 1
    sim = engine.train(plan)
    before = _children()
    dist = train_distributed(plan, timeout_s=30)
    assert sim.status == dist.status == "diverged"
    assert dist.message == sim.message and "round 1, step 0, branch 0" in dist.message
    assert [r["round"] for r in dist.rounds] == [r["round"] for r in sim.rounds] == [0]
    assert _children() <= before


def test_multi_host_world_size_must_match_the_plan(monkeypatch):
    from fplstudy.config import ConfigError

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="WORLD_SIZE=3"):
        train_distributed(_plan("fpl"))

