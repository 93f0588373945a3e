"""The distributed backend: four node processes on loopback (gloo), checked against the simulated backend.

Every run is tiny (64 training samples, 2 rounds, batches of 16): the cost is starting four Python
processes that import torch, not the training. The multi-host tests start real ``fplstudy run``
processes with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set, as ``torchrun`` would.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psutil
import pytest
import torch

from fplstudy.config import make_config
from fplstudy.costs.ledger import price
from fplstudy.facts.partition import load_partitioned
from fplstudy.facts.profiles import check_profiles
from fplstudy.plans.events import TRANSFER_KINDS, Compute, Transfer
from fplstudy.plans.plan import resolve
from fplstudy.train import engine
from fplstudy.train.distributed import (
    FAULT_ENV,
    FAULT_EXIT_CODE,
    WIRE_COLUMNS,
    DistributedError,
    DistributedTransport,
    LaunchError,
    WireMismatch,
    check_wire,
    events_bytes,
    store_server,
    train_distributed,
    wire_table,
)
from fplstudy.train.distributed.transport import load_state_bytes, state_bytes

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
    data = load_partitioned(plan)
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


@pytest.mark.xdist_group("distributed-both")
def test_four_processes(both):
    plan, _, dist = both
    assert len(plan.nodes) == 4 and dist.world_size == 4
    talkers = {n for ev in dist.events if isinstance(ev, Transfer) for n in (ev.src, ev.dst)}
    assert set(dist.wire["node"]) == talkers == {n.name for n in plan.nodes}


@pytest.mark.xdist_group("distributed-both")
def test_event_stream_equals_simulated(both):
    _, sim, dist = both
    assert dist.events == sim.events


@pytest.mark.xdist_group("distributed-both")
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


@pytest.mark.xdist_group("distributed-both")
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


def test_wire_table_sorts_by_round_node_peer_kind_for_any_number_of_nodes():
    """Sorted as tuples: with 102 nodes, round 0's rows from n101 still come before round 1's (an integer key
    packed as round·10⁶ + node·10⁴ + … put round 1 of n0 first). Rows of one key are summed."""
    plan = SimpleNamespace(nodes=[SimpleNamespace(name=f"n{i}") for i in range(102)])

    def row(rnd, node, peer, kind, nbytes):
        return dict(zip(WIRE_COLUMNS, (rnd, node, peer, kind, 1, nbytes, 16, 0, 0, 0)))

    rows = [row(1, "n0", "n1", "activations", 8), row(0, "n101", "n0", "gradients", 8),
            row(0, "n2", "n101", "gradients", 8), row(0, "n2", "n101", "activations", 8),
            row(0, "n2", "n101", "activations", 4), row(0, "n2", "n11", "activations", 8)]
    table = wire_table(rows, plan)
    assert table[["round", "node", "peer", "kind"]].values.tolist() == [
        [0, "n2", "n11", "activations"], [0, "n2", "n101", "activations"], [0, "n2", "n101", "gradients"],
        [0, "n101", "n0", "gradients"], [1, "n0", "n1", "activations"]]
    assert table.loc[1, "bytes_tx"] == 12 and table.loc[1, "messages_tx"] == 2 and list(table) == list(WIRE_COLUMNS)


def test_last_step_is_the_highest_step_computed_this_round():
    plan = _plan("fpl")
    transport = DistributedTransport(plan, 0, fault="")  # no process group needed to record events
    assert transport.last_step == -1
    for step in (0, 2, 1):  # another node's chunks: recorded, not computed here
        transport.compute(Compute(0, step, step % 2, -1, plan.nodes[1].name, ("b",), (1,), 1, "forward", False))
    assert transport.last_step == 2 and len(transport.events) == 3


def test_killed_worker_stops_the_run_with_the_node_and_round_and_keeps_round_0(tmp_path, monkeypatch):
    from fplstudy.train.runner import run

    monkeypatch.setenv(FAULT_ENV, "n2@1")  # node n2 calls os._exit at its first step of round 1
    before = _children()
    t0 = time.monotonic()
    with pytest.raises(DistributedError) as info:
        run(make_config(dict(strategy="fpl", nodes=4, **TINY)), tmp_path, progress=False, backend="distributed")
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert "round 1" in msg and f"node n2 (rank 2) died (exit code {FAULT_EXIT_CODE})" in msg, msg
    assert elapsed < 60 + 30  # the default timeout plus start-up: a dead node is noticed at once
    kept = info.value.result
    assert kept.status == "failed" and [r["round"] for r in kept.rounds] == [0]
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert rounds["round"].tolist() == [0]
    assert _children() <= before, "a node process was left behind"


@pytest.mark.serial
def test_hung_worker_times_out_naming_the_node(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "n3@1:hang")  # the trunk node stops answering in round 1
    plan = _plan("fpl")
    before = _children()
    rows = []
    t0 = time.monotonic()
    with pytest.raises(DistributedError, match=r"round 1.*n3") as info:
        train_distributed(plan, timeout_s=5, on_round=rows.append)
    assert time.monotonic() - t0 < 60
    assert "timed out after 5 s" in str(info.value) and "distributed_timeout_s" in str(info.value)
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



# --------------------------------------------------------------------------- a closed backend

def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in state LISTEN held by one of ``pids`` (from /proc, as ss reads
    them)."""
    owner = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in owner:  # 0A: LISTEN
                continue
            addr, port = f[1].split(":")
            raw = bytes.fromhex(addr)  # the kernel writes each 32-bit word in host (little-endian) order
            ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
            out.append((owner[f[9]], str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip), int(port, 16)))
    return out


def test_store_and_gloo_listen_on_loopback_only():
    """During a real local run, every listening socket of the run's processes (the parent's rendezvous store,
    the nodes' gloo listeners) is bound to 127.0.0.1: nothing listens on a wildcard or another address."""
    plan = _plan("mp")
    seen: list[list[tuple[int, str, int]]] = []
    tree = lambda: {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}  # noqa: E731
    train_distributed(plan, timeout_s=60, on_round=lambda row: seen.append(_listening(tree())))
    assert len(seen) == TINY["rounds"]
    for sockets in seen:
        assert [pid for pid, _, _ in sockets].count(os.getpid()) == 1, sockets  # the store, in this process
        assert {ip for _, ip, _ in sockets} == {"127.0.0.1"}, sockets
    assert any(pid != os.getpid() for pid, _, _ in seen[0]), seen  # node processes listen too (gloo)


def test_store_listens_on_the_named_address_only():
    """Across hosts the store binds MASTER_ADDR itself: named 127.0.0.2 (an address of this host, not the usual
    loopback one), the only listener of this process is 127.0.0.2:<port>, not a wildcard. (The emulated
    testbed runs the same path with rank 0 at 10.0.0.1 inside its own network namespace.)"""
    before = {(ip, port) for _, ip, port in _listening({os.getpid()})}
    store = store_server("127.0.0.2", 0, 5)
    try:
        new = {(ip, port) for _, ip, port in _listening({os.getpid()})} - before
        assert len(new) == 1 and next(iter(new))[0] == "127.0.0.2", new
        store.set("k", "v")
        assert store.get("k") == b"v"  # a working store, not only a socket
    finally:
        del store


def test_store_refuses_a_wildcard_a_foreign_address_and_a_taken_port():
    with pytest.raises(LaunchError, match="'MASTER_ADDR': got '0.0.0.0'; a wildcard"):
        store_server("0.0.0.0", 0, 5)
    with pytest.raises(LaunchError, match="'MASTER_ADDR'.*not an address of this host"):
        store_server("192.0.2.1", 0, 5)  # TEST-NET-1: never a local address; the bind fails, nothing is sent
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(LaunchError, match=rf"'MASTER_PORT': got {port}; 127.0.0.1:{port} is already in use"):
            store_server("127.0.0.1", port, 5)


def test_state_bytes_round_trip_bit_for_bit():
    plan = _plan("fpl")
    a, b = engine.build_holdings(plan), engine.build_holdings(resolve(make_config(dict(
        strategy="fpl", nodes=4, seed=1, **TINY))))
    with torch.no_grad():
        for m in a.all_modules():
            for t in m.state_dict().values():
                if t.is_floating_point():
                    t.add_(torch.randn_like(t) * 1e-3)  # values no initialisation gives
    buf = state_bytes(a.all_modules())
    load_state_bytes(b.all_modules(), buf)
    for ma, mb in zip(a.all_modules(), b.all_modules()):
        torch.testing.assert_close(ma.state_dict(), mb.state_dict(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="bytes of state"):
        load_state_bytes(b.all_modules(), buf[:-4])


_RANK0_SCORES = """
import sys, torch, torch.distributed
from datetime import timedelta
torch.set_num_threads(1)
from fplstudy.train import engine
from fplstudy.config import make_config
from fplstudy.train.distributed import DistributedTransport, NodeFailure, rendezvous, store_server
from fplstudy.facts.partition import load_partitioned
from fplstudy.plans.plan import resolve
plan = resolve(make_config(dict(strategy="mp", nodes=2, max_train_samples=64, rounds=1, batch_size=16)))
store = store_server("127.0.0.1", 0, 120)  # the peer starts only now: its imports count against the rendezvous
print(store.port, flush=True)
rendezvous(0, 2, "127.0.0.1", store.port, 120, store)
torch.distributed.set_timeout(timedelta(seconds=10))  # collectives: as short as before
T = DistributedTransport(plan, 0, 10)
split, _ = load_partitioned(plan)
try:
    T.score(plan, engine.build_holdings(plan), [0.5], split.x_test, split.y_test)
    print("scored")
except NodeFailure as exc:
    print("refused:", exc)
"""

_EVIL_PEER = """
import pathlib, sys, torch.distributed as dist
from datetime import timedelta
from fplstudy.train.distributed import rendezvous

class Payload:  # unpickling it creates the marker file: what a malicious peer would make run on rank 0
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(sys.argv[2]),))

rendezvous(1, 2, "127.0.0.1", int(sys.argv[1]), 120)
dist.set_timeout(timedelta(seconds=10))
try:  # what the evaluation gather of the old protocol carried: a pickled object, unpickled on rank 0
    dist.gather_object(Payload(), None, dst=0)
except Exception:
    pass
"""


def test_rank0_never_unpickles_what_a_peer_sends(tmp_path):
    """A peer that sends a pickled object where rank 0 gathers the evaluation state cannot make rank 0 run
    it: rank 0 gathers sizes and raw bytes of a known layout, and stops on what does not fit. (Against the
    old protocol, ``gather_object`` on both sides, rank 0 unpickled the payload: the marker file existed.)"""
    marker = tmp_path / "code-ran-on-rank-0"
    env = {**os.environ, "CI": "1"}
    rank0 = subprocess.Popen([sys.executable, "-c", _RANK0_SCORES], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        port = rank0.stdout.readline().strip()
        assert port.isdigit(), rank0.stderr.read()
        peer = subprocess.run([sys.executable, "-c", _EVIL_PEER, port, str(marker)], capture_output=True, text=True,
                              env=env, timeout=240)
        out, err = rank0.communicate(timeout=240)
    finally:
        rank0.kill()
    assert not marker.exists(), "rank 0 ran code a peer sent"
    assert out.startswith("refused: node n0 (rank 0) gathering the sizes of the trained state"), (out, err, peer.stderr)


def _launch(world: int, ranks, port: int, out: Path, timeout_s: float = 5, strategy: str = "mp", **extra):
    """Start one ``fplstudy run --backend distributed`` process per rank in ``ranks``, torchrun-style."""
    sets = dict(strategy=strategy, nodes=world, distributed_timeout_s=timeout_s, **TINY, **extra)
    procs = {}
    for r in ranks:
        env = {**os.environ, "CI": "1", "RANK": str(r), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # one intra-op thread, as the simulated run here
        env.pop("GLOO_SOCKET_IFNAME", None)
        cmd = [sys.executable, "-m", "fplstudy.cli", "run", "--backend", "distributed", "--out", str(out / f"rank{r}")]
        cmd += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        procs[r] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return procs


def _finish(procs, limit_s: float) -> dict[int, tuple[int, str, str]]:
    """Exit code, stdout and stderr of each process; kills them all and fails after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    out = {}
    try:
        for r, p in procs.items():
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out[r] = (p.returncode, stdout, stderr)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_host_launch_gives_the_simulated_results(tmp_path):
    """Two ranks started as separate programs (the multi-host path: rank 0 hosts the store on MASTER_ADDR, the
    results are gathered without pickles): both exit 0 and rank 0's rounds equal the simulated backend's."""
    plan = resolve(make_config(dict(strategy="mp", nodes=2, **TINY)))
    res = _finish(_launch(2, [0, 1], _free_port(), tmp_path, timeout_s=60), limit_s=300)
    assert [res[r][0] for r in (0, 1)] == [0, 0], res
    sim = engine.train(plan)
    rounds = pd.read_csv(tmp_path / "rank0" / "rounds.csv")
    for key in ("train_loss", "test_loss_mean", "test_acc_mean"):
        assert rounds[key].tolist() == [r[key] for r in sim.rounds], key
    wire = pd.read_csv(tmp_path / "rank0" / "wire.csv")
    check_wire(wire, events_bytes(sim.events))
    assert set(wire["node"]) == {"n0", "n1"}
    assert not (tmp_path / "rank1").exists()  # results are written once, by rank 0


@pytest.mark.slow  # about 70 s on 2 busy cores: five processes that import torch
def test_taken_master_port_and_missing_master_end_with_one_line_within_the_timeout(tmp_path):
    """torchrun-style launch (a) with MASTER_PORT held by another program that accepts connections and never
    answers: rank 0 exits 2 naming MASTER_PORT, ranks 1-2 exit 4 after the timeout; (b) with no rank 0 at all:
    ranks 1-2 exit 4. Each prints exactly one line, no traceback, to stderr; only rank 0 says beforehand what it
    was about to train."""
    timeout_s = 5
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(16)  # accepts (the kernel completes the handshake) and never answers
        taken = squatter.getsockname()[1]
        procs = _launch(3, [0, 1, 2], taken, tmp_path / "taken", timeout_s)
        procs.update({10 + r: p for r, p in _launch(3, [1, 2], _free_port(), tmp_path / "none", timeout_s).items()})
        res = _finish(procs, limit_s=timeout_s + 240)  # start-up of five processes that import torch, on 2 cores
    for r, (_code, stdout, stderr) in res.items():
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, (r, stderr)
        # rank 0 says what it was about to train (two "run:" lines); the other ranks say nothing
        assert (len(stdout.splitlines()) == 2 and all(line.startswith("run: ") for line in stdout.splitlines())
                if r == 0 else stdout == ""), (r, stdout)
    assert res[0][0] == 2 and f"'MASTER_PORT': got {taken}; 127.0.0.1:{taken} is already in use" in res[0][2]
    for r in (1, 2):
        assert res[r][0] == 4, res[r]
        assert f"rank {r}: the rendezvous did not complete within 5 s: 127.0.0.1:{taken} accepted the connection " \
               "but does not answer as a rendezvous store" in res[r][2]
        assert res[10 + r][0] == 4, res[10 + r]
        assert f"rank {r}: the rendezvous did not complete within 5 s: nothing listens at 127.0.0.1:" in res[10 + r][2]
