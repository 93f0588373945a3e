"""Starting the distributed backend: one process per node on this machine (:func:`train_distributed`), or this
process as one rank of a multi-host run (``torchrun``, :func:`launch_env`); the failures of either."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from fplstudy.config import ConfigError
from fplstudy.facts.partition import load_partitioned
from fplstudy.plans.plan import Plan
from fplstudy.train import engine
from fplstudy.train.distributed.rendezvous import (
    GlooInterface,
    interface_of,
    rendezvous,
    resolve_address,
    route_source,
    store_server,
)
from fplstudy.train.distributed.transport import (
    FAULT_ENV,
    GATE_ENV,
    REPORT_GRACE_S,
    STOP_GRACE_S,
    TRACE_ENV,
    WIRE_COLUMNS,
    DistributedError,
    DistributedResult,
    DistributedTransport,
    LaunchError,
    NodeFailure,
    module_owners,
)
from fplstudy.train.distributed.wire import (
    check_wire,
    events_bytes,
    pass_gate,
    share_wire_rows,
    wire_table,
)

# --------------------------------------------------------------------------- one rank

def _watch_parent(parent_pid: int) -> None:
    """End this process when its parent is gone (no orphan is left behind, even after a kill -9)."""

    def loop() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)  # the parent of the run, not the fork server this was forked from
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - the pid was reused by another user's process
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True, name="fplstudy-parent-watch").start()


def _report(reports, *message) -> None:
    """Send a message to the parent as plain pickled bytes: tensors travel by value, not as shared
    memory that would vanish with this process."""
    reports.put(pickle.dumps(message))


def _spawned_rank(rank: int, world: int, plan: Plan, data, port: int, timeout_s: float, parent_pid: int,
                  fault: str, reports) -> None:
    """A child process of a local run: rendezvous on loopback, train as node ``rank``, report back."""
    _watch_parent(parent_pid)
    os.environ["GLOO_SOCKET_IFNAME"] = interface_of("127.0.0.1") or "lo"  # gloo listens on loopback only
    torch.set_num_threads(1)  # one core per node process; the processes share the machine
    node = plan.nodes[rank].name
    T = None
    try:
        rendezvous(rank, world, "127.0.0.1", port, timeout_s)
        T = DistributedTransport(plan, rank, timeout_s, fault)
        sent = [0]

        def on_round(row: dict) -> None:
            if rank == 0:
                _report(reports, "round", rank, row, T.events[sent[0]:])
                sent[0] = len(T.events)

        result = engine.train(plan, T, data=data, on_round=on_round, device=torch.device("cpu"))  # gloo: CPU tensors
        states = ({key: mod.state_dict() for key, _, mod in module_owners(plan, result.holdings)}
                  if rank == 0 else None)
        events = T.events if rank == 0 else None
        _report(reports, "done", rank, dict(status=result.status, message=result.message, wire=T.wire_rows(),
                                         events=events, states=states, at=(T.round, T.last_step)))
    except BaseException as exc:  # report, then die: the parent stops the others
        msg = str(exc) if isinstance(exc, (NodeFailure, DistributedError)) else (
            f"node {node} (rank {rank}) failed in round {T.round if T else 0}: "
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        _report(reports, "error", rank, dict(message=msg, round=getattr(exc, "round", T.round if T else None)))
        reports.close()
        reports.join_thread()
        os._exit(1)
    reports.close()
    reports.join_thread()
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the run is over; nothing to keep
        pass


# --------------------------------------------------------------------------- the parent (local run)

def _external_launch() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def train_distributed(plan: Plan, *, data=None, progress: bool = False, on_round: Callable[[dict], None] | None = None,
                      timeout_s: float | None = None) -> DistributedResult:
    """Train ``plan`` with one process per node over ``torch.distributed`` (gloo).

    Without ``RANK``/``WORLD_SIZE`` in the environment, spawns the node processes on this machine
    (loopback) and collects the results here; with them (``torchrun`` or the standard variables), this
    process is one rank of a multi-host run.

    Args:
        plan: a resolved plan; the run has ``len(plan.nodes)`` processes.
        data: the loaded dataset and partition (loaded from the plan when None).
        progress: show a tqdm bar over rounds (rank 0).
        on_round: called with each completed round's row, in this process (rank 0 of a multi-host run).
        timeout_s: longest wait for the rendezvous, one message or one collective; a hung node stops the
            run after it (a dead one at once). None: the plan's config key ``distributed_timeout_s``. It must
            exceed the longest wait a round imposes on a node (an ``fl`` aggregator waits a whole epoch).

    Returns:
        A :class:`DistributedResult` with the full event stream (equal to the simulated backend's)
        and the wire table.

    Raises:
        DistributedError: a node process died, hung or failed, or the rendezvous did not complete in time
            (names the node and the round; carries the completed rounds); every child process is stopped first.
        LaunchError: (multi-host) a launch variable that cannot work, e.g. ``MASTER_PORT`` already in use on
            rank 0, found before any training.
        WireMismatch: the wire's bytes differ from the ledger's.
    """
    if timeout_s is None:
        timeout_s = float(plan.config.distributed_timeout_s)
    if data is None:
        data = load_partitioned(plan)
    if _external_launch():
        return _train_this_rank(plan, data, progress, on_round, timeout_s)
    return _train_local(plan, data, progress, on_round, timeout_s)


def _result(plan, rows, events, status, message, states, data, wall_s, wire, rank=0) -> DistributedResult:
    hold = engine.build_holdings(plan)
    if states:
        mods = {key: mod for key, _, mod in module_owners(plan, hold)}
        for key, state in states.items():
            mods[key].load_state_dict(state)
    shard_sizes = [len(ix) for ix in data[1].indices]
    return DistributedResult(plan, rows, list(events), status, message, hold, shard_sizes, wall_s,
                             wire=wire, rank=rank, world_size=len(plan.nodes))


def _context():
    """Node processes are forked from a fork server that has imported this module once (and never
    started a thread pool): starting four is then about as cheap as forking, and as safe as spawning.
    The fork server lives as long as this interpreter, like multiprocessing's resource tracker.
    """
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["fplstudy.train.distributed"])
    return ctx


def _train_local(plan, data, progress, on_round, timeout_s) -> DistributedResult:
    world = len(plan.nodes)
    names = [n.name for n in plan.nodes]
    t0 = time.perf_counter()
    store = store_server("127.0.0.1", 0, timeout_s)  # loopback only; port 0: the OS picks a free one
    ctx = _context()
    reports = ctx.Queue()
    procs = [ctx.Process(target=_spawned_rank, name=f"fplstudy-{names[r]}", daemon=True,
                         args=(r, world, plan, data, store.port, timeout_s, os.getpid(),
                               os.environ.get(FAULT_ENV, ""), reports))  # the fork server's env is older
             for r in range(world)]
    rows: list[dict] = []
    events: list = []
    done: dict[int, dict] = {}
    errors: dict[int, dict] = {}
    dead: dict[int, int] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.config.rounds, desc=f"{plan.strategy} rounds (distributed)", unit="round")
    failed_at = None
    try:
        for p in procs:
            p.start()
        while len(done) < world:
            try:
                kind, rank, *payload = pickle.loads(reports.get(timeout=0.2))
            except queue_mod.Empty:
                kind = None
            if kind == "round":
                row, new_events = payload
                rows.append(row)
                events += new_events
                if on_round:
                    on_round(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(acc=f"{row['test_acc_mean']:.3f}")
            elif kind == "done":
                done[rank] = payload[0]
            elif kind == "error":
                errors[rank] = payload[0]
            if kind is None:  # nothing to read: has a process died without a word?
                for r, p in enumerate(procs):
                    if r not in done and r not in errors and r not in dead and not p.is_alive():
                        dead[r] = p.exitcode
            diverged = [r for r, d in done.items() if d["status"] != "completed"]
            if errors or dead or diverged:  # collect the others' reports a moment, then stop them
                if failed_at is None:
                    failed_at = time.monotonic()
                if time.monotonic() - failed_at > REPORT_GRACE_S or len({*done, *errors, *dead}) == world:
                    break
        hung = [r for r, p in enumerate(procs) if r not in done and r not in errors and r not in dead and p.is_alive()]
    finally:
        _stop(procs)
        if bar is not None:
            bar.close()
        reports.close()
        reports.cancel_join_thread()
        del store
    wall = time.perf_counter() - t0
    diverged = [r for r, d in done.items() if d["status"] != "completed"]
    if diverged:  # the first divergence in step order, as the simulated backend reports it; the peers'
        # errors are its consequence (it stopped answering). Events: the completed rounds'.
        d = done[min(diverged, key=lambda r: done[r]["at"])]
        return _result(plan, rows, events, d["status"], d["message"], None, data, wall,
                       pd.DataFrame(columns=WIRE_COLUMNS))
    if errors or dead:
        msg = _failure_message(plan, rows, errors, dead, hung)
        result = _result(plan, rows, events, "failed", msg, None, data, wall, pd.DataFrame(columns=WIRE_COLUMNS))
        raise DistributedError(msg, result)
    wire = wire_table([row for r in range(world) for row in done[r]["wire"]], plan)
    result = _result(plan, rows, done[0]["events"], "completed", "", done[0]["states"], data, wall, wire)
    check_wire(wire, events_bytes(result.events))
    return result


def _failure_message(plan, rows, errors, dead, hung) -> str:
    names = [n.name for n in plan.nodes]
    rounds = [e["round"] for e in errors.values() if e.get("round") is not None]
    rnd = min(rounds) if rounds else len(rows)
    parts = [f"node {names[r]} (rank {r}) died (exit code {code}) without reporting an error"
             for r, code in sorted(dead.items())]
    parts += [e["message"] for _, e in sorted(errors.items())]
    parts += [f"node {names[r]} (rank {r}) was still running (hung?) and was stopped" for r in hung]
    kept = f"rounds 0..{len(rows) - 1}" if rows else "none"
    return (f"distributed run stopped in round {rnd}: " + "; ".join(parts)
            + f". Completed rounds kept: {len(rows)} ({kept}).")


def _stop(procs) -> None:
    """Terminate, then kill, every child process still alive, and reap them all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        if p.pid is None:
            continue
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)


# --------------------------------------------------------------------------- multi-host (torchrun)

def launch_env(plan: Plan) -> tuple[int, int, str, int]:
    """``(RANK, WORLD_SIZE, MASTER_ADDR's IP, MASTER_PORT)`` of a multi-host launch, checked.

    Raises:
        LaunchError: a variable missing or out of range.
        ConfigError: ``WORLD_SIZE`` differs from the plan's node count.
    """
    env = os.environ
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except ValueError:
        raise LaunchError("RANK", f"{env['RANK']}/{env['WORLD_SIZE']}", "RANK and WORLD_SIZE must be integers") from None
    if world != len(plan.nodes):
        raise ConfigError("nodes", plan.config.nodes,
                          f"the plan has {len(plan.nodes)} node processes ({', '.join(n.name for n in plan.nodes)}) "
                          f"but WORLD_SIZE={world}; launch exactly one process per node")
    if not 0 <= rank < world:
        raise LaunchError("RANK", rank, f"must lie in 0..{world - 1} (WORLD_SIZE={world})")
    if not env.get("MASTER_ADDR"):
        raise LaunchError("MASTER_ADDR", env.get("MASTER_ADDR"), "set it to rank 0's address on every rank")
    try:
        port = int(env.get("MASTER_PORT", ""))
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise LaunchError("MASTER_PORT", env.get("MASTER_PORT"), "set it to the same free TCP port (1..65535) "
                          "on every rank")
    return rank, world, resolve_address(env["MASTER_ADDR"]), port


def _train_this_rank(plan, data, progress, on_round, timeout_s) -> DistributedResult:
    rank, world, ip, port = launch_env(plan)
    t0 = time.perf_counter()
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent hosts the store
    store = store_server(ip, port, timeout_s) if rank == 0 and not agent else None
    with GlooInterface(interface_of(route_source(ip))):
        store = rendezvous(rank, world, ip, port, timeout_s, store)
    if os.environ.get(GATE_ENV):
        pass_gate(Path(os.environ[GATE_ENV]), rank, timeout_s)
    try:
        T = DistributedTransport(plan, rank, timeout_s)
        try:
            result = engine.train(plan, T, data=data, progress=progress and rank == 0,
                                  on_round=on_round if rank == 0 else None, device=torch.device("cpu"))
            if T.trace is not None:
                T.write_trace(os.environ[TRACE_ENV])
            rows = share_wire_rows(T, plan)
        except NodeFailure as exc:
            when = f"in round {exc.round}" if exc.round is not None else "after training"
            raise DistributedError(f"distributed run stopped {when}: {exc}") from None
        out = DistributedResult(plan, result.rounds, result.events, result.status, result.message, result.holdings,
                                result.shard_sizes, time.perf_counter() - t0, wire=wire_table(rows, plan),
                                rank=rank, world_size=world)
        if rank == 0 and result.status == "completed":
            check_wire(out.wire, events_bytes(out.events))
        return out
    finally:
        dist.destroy_process_group()
        del store
