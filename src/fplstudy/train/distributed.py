"""The ``distributed`` backend: one process per node, real ``send``/``recv`` over ``torch.distributed``.

The engine is written node-locally (SPMD): every process runs the same loop, computes only for its own
node and hands tensors over through :class:`DistributedTransport`, which sends them with gloo
point-to-point operations. Rank ``i`` plays node ``plan.nodes[i].name`` (``n0``, ``n1``, …).

Two ways to start:

- **on this machine** (no ``RANK``/``WORLD_SIZE`` in the environment): :func:`train_distributed` spawns
  one process per node, rendezvous on a free loopback port (the store listens on ``127.0.0.1`` only,
  gloo's sockets on the loopback interface), and stays in the parent to collect the rounds as they
  complete. The node processes are forked from a fork server that re-imports the calling script as
  ``__mp_main__``: a script needs the ``if __name__ == "__main__":`` guard (the CLI, notebooks and
  pytest need nothing);
- **across hosts** (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set): the calling process
  *is* rank ``RANK``; rank 0 holds the results. Rank 0 hosts the rendezvous store on ``MASTER_ADDR``
  itself, which must be an address of its host (a wildcard such as ``0.0.0.0`` is refused): the store
  listens on that one address, never on every interface. Gloo's sockets use the interface named by
  ``GLOO_SOCKET_IFNAME`` or, when it is unset, the interface this host reaches ``MASTER_ADDR`` through.
  Under ``torchrun`` (``TORCHELASTIC_USE_AGENT_STORE=True``) every rank joins torchrun's own store
  instead, whose binding is torchrun's. The store has no authentication: bind it to a private network.

The rendezvous, every message and every collective wait at most ``distributed_timeout_s`` (config key,
default 60 s). A rank whose rendezvous does not complete in time (nothing listens at the master's
address, a program there that is not a rendezvous store, ranks missing) stops with one
:class:`DistributedError`; rank 0 refuses a ``MASTER_PORT`` already in use, or a ``MASTER_ADDR`` that is
not its own, with :class:`LaunchError` before any training.

Nothing a peer sends is unpickled: training tensors travel as raw bytes of a known shape, the
evaluation state as raw tensor bytes whose layout rank 0 derives from its own copy of the model, the
scores as float64 tensors and the wire counts as JSON text in a uint8 tensor.

The ledger check: every process counts the payload bytes it really passes to ``isend`` and receives
with ``irecv``, per round, peer and kind (:data:`WIRE_COLUMNS`); the run fails with
:class:`WireMismatch` when they differ from the bytes the event stream (hence the ledger) records.
Evaluation traffic (each round's trained state gathered to rank 0 to score the branches) is a
measurement, not training: it travels by collectives outside the transport and is not counted.

Failures: every point-to-point operation waits at most ``timeout_s`` and every collective uses the
process group's ``timeout_s``; a node process that dies is noticed at once (its connections close),
one that hangs within ``timeout_s``. The run then stops with :class:`DistributedError`, which names the
node and the round and carries the completed rounds (``on_round`` has seen them too); every child
process is stopped before it is raised.

Dropout draws its masks from each process's own generator, so models with dropout (``vgg11``,
``mobilenetv2``) train with other masks than in the simulated backend; models without it train alike
(up to float summation order).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import math
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import socket
import struct
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from fplstudy.config import Config, ConfigError
from fplstudy.facts.partition import load_partitioned
from fplstudy.plans.events import TRANSFER_KINDS, Compute, Transfer
from fplstudy.plans.plan import Plan
from fplstudy.train import engine
from fplstudy.train.results import atomic_write_text, write_rows_csv

TIMEOUT_KEY = "distributed_timeout_s"  # the config key of the longest wait (s)
DEFAULT_TIMEOUT_S = Config.model_fields[TIMEOUT_KEY].default
FAULT_ENV = "FPLSTUDY_DISTRIBUTED_FAULT"  # test hook: "<node>@<round>" exits that node, "...:hang" hangs it
# exit status of a node the fault hook kills: neither 0, nor 1 (what a rank that reported its error, or lost
# its parent, exits with), nor negative (a signal's), so that "died (exit code 86)" is the hook's doing
FAULT_EXIT_CODE = 86
TRACE_ENV = "FPLSTUDY_TRACE"  # a folder: each rank writes trace-<rank>.csv, the timing of its own work (testbed)
TRACE_COLUMNS = ("round", "node", "op", "kind", "peer", "nbytes", "seq", "post_s", "end_s")
GATE_ENV = "FPLSTUDY_TESTBED_GATE"  # a folder: after the rendezvous, write ready-<rank> and wait for the file go
DILATE_ENV = "FPLSTUDY_TESTBED_DILATE"  # a share of one core: local chunks last their CPU time / share (testbed)
WIRE_COLUMNS = ("round", "node", "peer", "kind", "messages_tx", "bytes_tx", "header_bytes_tx", "messages_rx",
                "bytes_rx", "header_bytes_rx")  # bytes_*: payload, as the ledger counts; header_*: strides
_MAX_PENDING_SENDS = 64  # sends a node may have in flight before it waits for the oldest
_STOP_GRACE_S = 5.0  # after terminate(), seconds before kill()
_REPORT_GRACE_S = 1.5  # after the first failure, seconds to collect the other processes' reports
_EVAL_TAG, _WIRE_TAG = 1, 2  # point-to-point tags of the evaluation state and the wire counts (training: 0)
_MAX_WIRE_JSON_BYTES = 1 << 26  # a rank's wire counts as JSON: far above any real run's


class DistributedError(RuntimeError):
    """A node process died, hung or failed. ``result`` holds the completed rounds (status ``failed``)."""

    def __init__(self, message: str, result: engine.TrainResult | None = None):
        super().__init__(message)
        self.result = result


class WireMismatch(RuntimeError):
    """The payload bytes measured on the wire differ from the ledger's."""


class LaunchError(ConfigError):
    """A multi-host launch variable that cannot work (a ``MASTER_PORT`` in use, a ``MASTER_ADDR`` that is not
    rank 0's), found before any training. The message names the variable, its value and the fix."""

    def __init__(self, var: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = var, value, allowed
        ValueError.__init__(self, f"environment variable '{var}': got {value!r}; {allowed}")


@dataclass
class DistributedResult(engine.TrainResult):
    """:class:`fplstudy.train.engine.TrainResult` plus what only the distributed backend measures.

    Attributes:
        wire: bytes really sent and received, one row per round × node × peer × kind
            (:data:`WIRE_COLUMNS`), every node's (each rank of a multi-host run gets the whole table).
        rank: the rank of this process (0 in the parent of a local run): only rank 0 writes results.
        world_size: processes in the run (= nodes of the plan).

    A local run that stops early (diverged, or :class:`DistributedError`) keeps the completed rounds'
    rows and events; its ``holdings`` are the initial weights (the node processes are gone).
    """

    wire: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=WIRE_COLUMNS))
    rank: int = 0
    world_size: int = 1


# --------------------------------------------------------------------------- the transport

class _NodeFailure(RuntimeError):
    """A point-to-point operation or collective of this node failed or timed out."""

    def __init__(self, message: str, rnd: int | None):
        super().__init__(message)
        self.round = rnd


def module_owners(plan: Plan, hold: engine.Holdings) -> list[tuple[str, str, nn.Module]]:
    """``(key, owner node, module)`` for every module of the plan, in a fixed order."""
    out = []
    for d, b in enumerate(plan.branches):
        out += [(f"branch{d}/stage{s}", st.node, hold.branch_parts[d][s]) for s, st in enumerate(b.stages)]
        if hold.adapters[d] is not None:
            out.append((f"branch{d}/adapter", b.adapter_node, hold.adapters[d]))
    out += [(f"trunk/stage{s}", st.node, hold.trunk_parts[s]) for s, st in enumerate(plan.trunk)]
    return out


def _short(exc: BaseException) -> str:
    text = str(exc)
    if "Timed out" in text or "timed out" in text or "Timeout" in text:
        return "timed out"
    if "Connection closed by peer" in text or "Connection reset" in text or "pair closure" in text:
        return "connection closed (the peer process died or stopped)"
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


class DistributedTransport(engine.Transport):
    """Owns one node; hands tensors to other nodes' processes with gloo ``isend``/``irecv``.

    Every process records every event exactly as :class:`fplstudy.train.engine.SimulatedTransport` would
    (the SPMD loop visits every hand-off and every compute on every rank), so each rank's event stream
    is the whole run's. The bytes really sent and received are counted apart, in :attr:`wire`.

    Args:
        plan: the plan; rank ``i`` is node ``plan.nodes[i].name``.
        rank: this process's rank in the default process group.
        timeout_s: longest wait for one message.
        fault: test hook, ``"<node>@<round>"`` (that node exits at its first step of the round) or
            ``"<node>@<round>:hang"``; None reads :data:`FAULT_ENV`.
    """

    def __init__(self, plan: Plan, rank: int, timeout_s: float = DEFAULT_TIMEOUT_S, fault: str | None = None):
        super().__init__()
        self.plan = plan
        self.rank = rank
        self.node = plan.nodes[rank].name
        self.ranks = {n.name: i for i, n in enumerate(plan.nodes)}
        self.timeout_s = timeout_s
        self.wire: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0] * 6)  # (round, peer, kind)
        self.round = 0
        self._steps: dict[int, int] = {}  # step -> branch, this round
        self._pending: list[tuple[Any, torch.Tensor, str, int]] = []  # sends in flight: (work, buffer, what, round)
        self._fault = _parse_fault(os.environ.get(FAULT_ENV, "") if fault is None else fault)
        self.trace: list[tuple] | None = [] if os.environ.get(TRACE_ENV) else None  # rows of TRACE_COLUMNS
        self._seq: dict[tuple[str, str], int] = defaultdict(int)  # (op, peer) -> messages so far
        self._dilate = float(os.environ.get(DILATE_ENV) or 0)  # 0: off
        self._reset_marks()

    def is_local(self, node: str) -> bool:
        return node == self.node

    @property
    def last_step(self) -> int:
        """The highest batch step of the current round this node has reached a compute of (-1 before the
        first): where a divergence happened, in the step order the simulated backend reports it in."""
        return max(self._steps, default=-1)

    def _maybe_fault(self, rnd: int) -> None:
        if self._fault and self._fault[0] == self.node and self._fault[1] == rnd:
            if self._fault[2] == "hang":
                while True:  # pragma: no cover - stopped from outside
                    time.sleep(1)
            os._exit(FAULT_EXIT_CODE)  # pragma: no cover - the test hook: die without a word

    def compute(self, ev: Compute) -> None:
        self.round = ev.round
        self._maybe_fault(ev.round)
        self._steps.setdefault(ev.step, ev.branch)  # the round's batches, in step order
        super().compute(ev)
        if ev.node != self.node:
            self._skip()
        elif self._dilate or self.trace is not None:  # the chunk has just run
            now, cpu = time.perf_counter(), time.thread_time()
            lasted = now - self._real
            if self._dilate:  # on a CPU `share` times as fast the chunk lasts its CPU time / share
                lasted = max(lasted, (cpu - self._cpu_mark) / self._dilate)
            if self.trace is not None:
                self.trace.append((ev.round, self.node, "compute", ev.phase, "", 0, self._next("compute", ""),
                                   self._mark, self._mark + lasted))
            self._mark, self._real, self._cpu_mark = self._mark + lasted, now, cpu

    def _skip(self) -> None:
        """This rank has just visited another node's event (the SPMD loop visits every event; a real node
        would not): the seconds since the last mark are bookkeeping of the emulation, not this node's
        work, so they do not count in its next chunk, nor (dilated) on its clock."""
        if self._dilate or self.trace is not None:
            self._real, self._cpu_mark = time.perf_counter(), time.thread_time()
            if not self._dilate:
                self._mark = self._real

    def _reset_marks(self) -> None:
        """This rank has just come back from the transport: its emulated clock is the real one again."""
        self._mark = self._real = time.perf_counter()  # CLOCK_MONOTONIC
        self._cpu_mark = time.thread_time()

    def _catch_up(self) -> None:
        """Before this node's next message (or barrier, or evaluation): sleep until the real clock reaches
        the emulated one (:attr:`_mark`), so the message leaves when the slower CPU would have finished.

        Dilation is deferred to here rather than slept after every chunk, so that a node's chunks between
        two messages run back to back, as on the emulated device (a chunk that follows an idle period runs
        slower on this machine: caches and clock speed have cooled), and ``fplstudy calibrate`` measures
        them in a tight loop."""
        left = self._mark - time.perf_counter()
        if left > 0:
            time.sleep(left)

    def _next(self, op: str, peer: str) -> int:
        self._seq[(op, peer)] += 1
        return self._seq[(op, peer)] - 1

    def move(self, tensor, *, src, dst, kind, shape, dtype, where):
        """Send ``tensor`` from ``src`` to ``dst`` as one message: its payload bytes in memory order,
        then its strides (8 bytes per dimension, framing the ledger does not count), so that ``dst``
        gets exactly what :meth:`SimulatedTransport.move` hands over (``clone()`` keeps a conv's
        channels-last layout) and computes bit for bit what the simulated backend computes."""
        rnd, step, branch, micro = where
        self.round = rnd
        self._maybe_fault(rnd)
        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header = 8 * len(shape)  # int64 strides
        at = f"round {rnd}, step {step}, branch {branch}, micro {micro}"
        out = None
        if self.node in (src, dst):
            self._catch_up()
        if self.node == src:
            if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise RuntimeError(f"{kind} {src}->{dst} at {where}: tensor {tuple(tensor.shape)} {tensor.dtype} "
                                   f"differs from the expected {shape} {dtype}")
            dense = tensor.detach().clone()  # dense, with the strides the simulated hand-off gives
            flat = dense.as_strided((dense.numel(),), (1,))  # its memory, in memory order
            buf = torch.empty(flat.numel() * flat.element_size() + header, dtype=torch.uint8)
            buf[:buf.numel() - header].view(dtype).copy_(flat)
            buf[buf.numel() - header:] = torch.tensor(dense.stride(), dtype=torch.int64).view(torch.uint8)
            if self.trace is not None:  # posted now; the receiver's trace says when it arrived
                self.trace.append((rnd, self.node, "send", kind, dst, nbytes, self._next("send", dst),
                                   time.perf_counter(), math.nan))
            # the send completes in gloo's background; its buffer stays referenced until it has
            self._pending.append((dist.isend(buf, dst=self.ranks[dst]), buf, f"sending {kind} to {dst} at {at}", rnd))
            self._settle(_MAX_PENDING_SENDS)
            self._count(rnd, dst, kind, 0, buf.numel() - header, header)
        elif self.node == dst:
            buf = torch.empty(nbytes + header, dtype=torch.uint8)
            posted = time.perf_counter()
            self._wait(dist.irecv(buf, src=self.ranks[src]), f"waiting for {kind} from {src} at {at}", rnd)
            if self.trace is not None:
                self.trace.append((rnd, self.node, "recv", kind, src, nbytes, self._next("recv", src), posted,
                                   time.perf_counter()))
            payload = buf.numel() - header
            strides = tuple(buf[payload:].clone().view(torch.int64).tolist())
            out = buf[:payload].view(dtype).as_strided(shape, strides)
            self._count(rnd, src, kind, 1, payload, header)
        self.events.append(Transfer(rnd, step, branch, micro, src, dst, kind, shape,
                                    str(dtype).removeprefix("torch."), nbytes))
        if self.node in (src, dst):
            self._reset_marks()
        else:
            self._skip()
        return out

    def _settle(self, keep: int = 0) -> None:
        """Wait (each at most ``timeout_s``) for the oldest sends until at most ``keep`` are in flight."""
        while len(self._pending) > keep:
            work, _, what, rnd = self._pending.pop(0)
            self._wait(work, what, rnd)

    def _count(self, rnd: int, peer: str, kind: str, rx: int, payload: int, header: int) -> None:
        count = self.wire[(rnd, peer, kind)]
        count[3 * rx] += 1
        count[3 * rx + 1] += payload
        count[3 * rx + 2] += header

    def _wait(self, work, what: str, rnd: int) -> None:
        try:
            ok = work.wait(timedelta(seconds=self.timeout_s))
        except RuntimeError as exc:
            reason = _short(exc)
            if reason == "timed out":
                reason = self._timed_out()
            raise _NodeFailure(f"node {self.node} (rank {self.rank}) {what}: {reason}", rnd) from None
        if ok is False:
            raise _NodeFailure(f"node {self.node} (rank {self.rank}) {what}: {self._timed_out()}", rnd)

    def _timed_out(self) -> str:
        return (f"timed out after {self.timeout_s:g} s (if a round legitimately keeps a node waiting longer, "
                f"raise the config key {TIMEOUT_KEY}, e.g. --set {TIMEOUT_KEY}=300)")

    def barrier(self) -> None:
        self._catch_up()
        self._settle()
        self.collective(lambda: dist.barrier(), "at a barrier")

    def collective(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn``, a collective of the default process group (it times out after ``timeout_s``); its
        failure becomes one error naming this node, ``what`` it was doing and the round."""
        try:
            return fn()
        except RuntimeError as exc:
            raise _NodeFailure(f"node {self.node} (rank {self.rank}) {what} in round {self.round}: {_short(exc)}",
                               self.round) from None

    def score(self, plan, hold, losses, x, y):
        """Gather every node's trained modules and training losses to rank 0, which scores the branches
        and broadcasts the scores (outside the wire count: evaluation is a measurement).

        Nothing is unpickled: each rank sends its losses as float64 and its modules' state as raw tensor
        bytes, which rank 0 reads into its own copy of those modules (it knows every shape and dtype);
        the scores come back as float64 tensors."""
        self._catch_up()
        self._settle()
        owners = module_owners(plan, hold)
        theirs = [[mod for _, node, mod in owners if node == n.name] for n in plan.nodes]
        state = state_bytes(theirs[self.rank])
        payload = torch.cat([torch.tensor(losses, dtype=torch.float64).view(torch.uint8), state])
        most = [8 * len(self._steps) + state_nbytes(mods) for mods in theirs]
        gathered = self.gather_bytes(payload, [len(losses)], "the trained state for evaluation", _EVAL_TAG, most)
        if self.rank == 0:
            per_rank = [losses]
            for r, ((n_losses,), buf) in enumerate(gathered[1:], start=1):
                if not 0 <= n_losses <= len(self._steps) or buf.numel() - 8 * n_losses != state_nbytes(theirs[r]):
                    raise _NodeFailure(f"node {plan.nodes[r].name} (rank {r}) sent {n_losses} losses and "
                                       f"{buf.numel() - 8 * n_losses} bytes of state; expected at most "
                                       f"{len(self._steps)} losses and {state_nbytes(theirs[r])} bytes", self.round)
                per_rank.append(buf[:8 * n_losses].clone().view(torch.float64).tolist())
                load_state_bytes(theirs[r], buf[8 * n_losses:])
            scores = [self._in_step_order(plan, per_rank), *engine.evaluate(plan, hold, x, y)]
            lengths = torch.tensor([len(v) for v in scores], dtype=torch.int64)
        else:
            lengths = torch.zeros(3, dtype=torch.int64)
        self.collective(lambda: dist.broadcast(lengths, src=0), "broadcasting the round's scores")
        values = (torch.tensor([v for part in scores for v in part], dtype=torch.float64) if self.rank == 0
                  else torch.empty(int(lengths.sum()), dtype=torch.float64))
        self.collective(lambda: dist.broadcast(values, src=0), "broadcasting the round's scores")
        flat, cuts = values.tolist(), lengths.cumsum(0).tolist()
        self._steps = {}
        self._reset_marks()  # evaluation is not training
        return tuple(flat[a:b] for a, b in zip([0, *cuts[:-1]], cuts))

    def write_trace(self, folder: str | Path) -> Path:
        """Write this rank's trace (:data:`TRACE_COLUMNS`; times in seconds of CLOCK_MONOTONIC, which every
        process of the machine shares) to ``folder/trace-<rank>.csv``, atomically.

        A compute row spans from this rank's last mark to when the engine reported the chunk done: the
        mark is set when the rank comes back from the transport, finishes a chunk or visits another
        node's event, so a row holds the chunk and whatever local work came just before it (a batch's
        slicing; the previous batch's optimizer step unless another node's event was visited since).
        Under dilation (:data:`DILATE_ENV`) rows are on the emulated clock, each chunk lasting at least its
        CPU time / share. A send row is the moment the message was posted; a recv row spans from the
        posting of the receive to the message's arrival.
        """
        rows = [dict(zip(TRACE_COLUMNS, row)) for row in self.trace or []]
        return write_rows_csv(Path(folder) / f"trace-{self.rank}.csv", rows, TRACE_COLUMNS)

    def gather_bytes(self, payload: torch.Tensor, head: list[int], what: str, tag: int, most: list[int],
                     ) -> list[tuple[list[int], torch.Tensor]] | None:
        """Every rank's ``(head, payload)`` on rank 0 (None elsewhere), as plain integers and raw bytes.

        The heads (a few int64, the same count on every rank) and the payload sizes travel by a gather,
        the payloads (uint8) point to point with ``tag``. Rank 0 refuses a payload larger than
        ``most[rank]`` bytes before it allocates anything; the caller checks the rest.
        """
        world = dist.get_world_size()
        mine = torch.tensor([*head, payload.numel()], dtype=torch.int64)
        heads = [torch.zeros_like(mine) for _ in range(world)] if self.rank == 0 else None
        self.collective(lambda: dist.gather(mine, heads, dst=0), f"gathering the sizes of {what}")
        if self.rank != 0:
            self._wait(dist.isend(payload, dst=0, tag=tag), f"sending {what} to rank 0", self.round)
            return None
        out = [(list(head), payload)]
        for r in range(1, world):
            *their_head, nbytes = (int(v) for v in heads[r])
            if not 0 <= nbytes <= most[r]:
                raise _NodeFailure(f"node {self.plan.nodes[r].name} (rank {r}) announced {nbytes} bytes of {what}; "
                                   f"at most {most[r]} were expected", self.round)
            buf = torch.empty(nbytes, dtype=torch.uint8)
            self._wait(dist.irecv(buf, src=r, tag=tag), f"receiving {what} from rank {r}", self.round)
            out.append((their_head, buf))
        return out

    def _in_step_order(self, plan: Plan, per_rank: list[list[float]]) -> list[float]:
        """Every batch's training loss in step order, as one process would have listed them: each
        rank lists the losses of the batches it computed the loss of, in step order."""
        queues = [list(reversed(losses)) for losses in per_rank]
        if sum(map(len, queues)) != len(self._steps):  # pragma: no cover - a batch without a loss
            return [v for losses in per_rank for v in losses]
        return [queues[self.ranks[plan.loss_node(max(b, 0))]].pop() for _, b in sorted(self._steps.items())]

    def wire_rows(self) -> list[dict]:
        """This node's wire counts as rows of :data:`WIRE_COLUMNS`."""
        return [dict(zip(WIRE_COLUMNS, (rnd, self.node, peer, kind, *c))) for (rnd, peer, kind), c in self.wire.items()]


def _parse_fault(spec: str) -> tuple[str, int, str] | None:
    if not spec:
        return None
    node, _, rest = spec.partition("@")
    rnd, _, mode = rest.partition(":")
    return node, int(rnd), mode or "exit"


def state_nbytes(mods: list[nn.Module]) -> int:
    """Bytes of the raw state of ``mods`` (every state-dict tensor, in order)."""
    return sum(t.numel() * t.element_size() for m in mods for t in m.state_dict().values())


def state_bytes(mods: list[nn.Module]) -> torch.Tensor:
    """The state-dict tensors of ``mods``, in order, as one uint8 tensor of their raw bytes (no framing: the
    receiver holds modules of the same architecture and reads the layout from them)."""
    parts = [t.detach().contiguous().reshape(-1).view(torch.uint8) for m in mods for t in m.state_dict().values()]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8)


def load_state_bytes(mods: list[nn.Module], buf: torch.Tensor) -> None:
    """Load what :func:`state_bytes` made from modules of the same architecture into ``mods`` (bit for bit).

    Raises:
        ValueError: ``buf`` does not hold exactly their state's bytes.
    """
    if buf.numel() != state_nbytes(mods):
        raise ValueError(f"{buf.numel()} bytes of state for modules holding {state_nbytes(mods)}")
    at = 0
    for m in mods:
        state = {}
        for name, t in m.state_dict().items():
            n = t.numel() * t.element_size()
            state[name] = buf[at:at + n].clone().view(t.dtype).reshape(t.shape)  # clone: aligned, own storage
            at += n
        m.load_state_dict(state)


# --------------------------------------------------------------------------- the wire table

def wire_table(rows: list[dict], plan: Plan) -> pd.DataFrame:
    """Wire counts of every node as one table, sorted by round, plan node order, peer, kind."""
    df = pd.DataFrame(rows, columns=WIRE_COLUMNS)
    if df.empty:
        return df
    order = {n.name: i for i, n in enumerate(plan.nodes)}
    kinds = {k: i for i, k in enumerate(TRANSFER_KINDS)}
    df = df.groupby(["round", "node", "peer", "kind"], as_index=False).sum()  # one row per key
    # np.lexsort sorts by its last key first: round, then node, then peer, then kind, for any number of
    # nodes and rounds (an integer key packed in decimal digits would mis-sort plans of over 100 nodes)
    at = np.lexsort((df["kind"].map(kinds), df["peer"].map(order), df["node"].map(order), df["round"]))
    return df.iloc[at].reset_index(drop=True)[list(WIRE_COLUMNS)]


def write_wire_csv(wire: pd.DataFrame, path: str | Path) -> Path:
    """Write the wire table beside the ledger, atomically (``<run>/wire.csv``)."""
    return write_rows_csv(path, wire.to_dict("records"), WIRE_COLUMNS)


def _per_node_kind(df: pd.DataFrame) -> dict[tuple[int, str, str], tuple[int, int]]:
    if df.empty:
        return {}
    df = df[df["kind"].isin(TRANSFER_KINDS)]
    sums = df.groupby(["round", "node", "kind"])[["bytes_tx", "bytes_rx"]].sum()
    return {(int(r), n, k): (int(tx), int(rx)) for (r, n, k), (tx, rx) in sums.iterrows() if tx or rx}


def events_bytes(events) -> pd.DataFrame:
    """Payload bytes per round, node and kind as the ledger counts them (sender tx, receiver rx)."""
    acc: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for ev in events:
        if isinstance(ev, Transfer):
            acc[(ev.round, ev.src, ev.kind)][0] += ev.nbytes
            acc[(ev.round, ev.dst, ev.kind)][1] += ev.nbytes
    return pd.DataFrame([(r, n, k, tx, rx) for (r, n, k), (tx, rx) in acc.items()],
                        columns=["round", "node", "kind", "bytes_tx", "bytes_rx"])


def check_wire(wire: pd.DataFrame, ledger: pd.DataFrame) -> None:
    """Fail loudly when the wire's payload bytes differ from the ledger's, per round, node and kind.

    Args:
        wire: the wire table (:data:`WIRE_COLUMNS`).
        ledger: a priced ledger (:func:`fplstudy.costs.ledger.price`) or :func:`events_bytes` of the events.

    Raises:
        WireMismatch: listing every (round, node, kind) whose bytes differ.
    """
    got, want = _per_node_kind(wire), _per_node_kind(ledger)
    bad = [f"round {k[0]} {k[1]} {k[2]}: wire tx/rx {got.get(k, (0, 0))} != ledger {want.get(k, (0, 0))}"
           for k in sorted(set(got) | set(want)) if got.get(k, (0, 0)) != want.get(k, (0, 0))]
    if bad:
        raise WireMismatch(f"{len(bad)} (round, node, kind) differ between the wire and the ledger: "
                           + "; ".join(bad[:10]) + (" …" if len(bad) > 10 else ""))


# --------------------------------------------------------------------------- the rendezvous

def interface_of(ip: str) -> str | None:
    """Name of the network interface that holds the local address ``ip`` (None when none does)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:  # /proc/net/if_inet6: "<address, 32 hex digits> <index> <prefix> <scope> <flags> <name>"
        try:
            lines = Path("/proc/net/if_inet6").read_text().splitlines()
        except OSError:  # pragma: no cover - no IPv6
            return None
        return next((f[5] for f in map(str.split, lines) if len(f) >= 6 and int(f[0], 16) == int(addr)), None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:  # SIOCGIFADDR: the interface's IPv4 address, bytes 20..24 of the answer (struct ifreq)
                got = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(got[20:24]) == str(addr):
                return name
    return None


def route_source(ip: str) -> str:
    """The local address this host reaches ``ip`` from (the kernel's route lookup; nothing is sent)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, 9))
        return probe.getsockname()[0]


def resolve_address(host: str, var: str = "MASTER_ADDR") -> str:
    """The IP address of ``host`` (a name or an address).

    Raises:
        LaunchError: it cannot be resolved.
    """
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, UnicodeError, ValueError):
        raise LaunchError(var, host, "cannot be resolved; give rank 0's IP address") from None


def store_server(ip: str, port: int, timeout_s: float) -> dist.TCPStore:
    """The rendezvous store, listening on ``ip`` only (``port`` 0: a free port the OS picks, no race).

    The socket is bound here and handed to the store, whose own listener would take every interface.

    Raises:
        LaunchError: ``ip`` is a wildcard or not an address of this host, or ``port`` is taken.
    """
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified:
        raise LaunchError("MASTER_ADDR", ip, "a wildcard address would open the rendezvous store on every "
                          "interface; give rank 0's own address on the network the ranks share")
    sock = socket.socket(socket.AF_INET6 if addr.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT, never a live listener
        sock.bind((ip, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise LaunchError("MASTER_PORT", port, f"{ip}:{port} is already in use by another program; "
                              "give every rank the same free MASTER_PORT") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise LaunchError("MASTER_ADDR", ip, "is not an address of this host; rank 0 hosts the rendezvous, so "
                              "MASTER_ADDR must be its own address") from None
        raise LaunchError("MASTER_PORT", port, f"cannot listen on {ip}:{port} ({exc.strerror}); "
                          "choose a free port >= 1024") from None
    bound = sock.getsockname()[1]
    return dist.TCPStore(ip, bound, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=timeout_s),
                         master_listen_fd=sock.detach(), use_libuv=True)  # the store owns the socket now


def _wait_for_listener(ip: str, port: int, deadline: float) -> bool:
    """Connect (and close) until something listens at ``ip:port`` or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            socket.create_connection((ip, port), timeout=max(0.05, min(1.0, deadline - time.monotonic()))).close()
            return True
        except OSError:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return False


def rendezvous(rank: int, world: int, ip: str, port: int, timeout_s: float,
               store: dist.TCPStore | None = None) -> dist.TCPStore:
    """Join (``store`` None) or host the rendezvous at ``ip:port`` and start the default gloo process group.

    Everything happens within ``timeout_s``: a store client whose peer never answers (another program
    holds the port) or a world whose ranks never all arrive would otherwise block for good. The wait
    runs in a daemon thread; when it is over time the thread is abandoned (it holds no lock of ours)
    and the caller gets one :class:`DistributedError`.

    Returns:
        The store (keep it as long as the process group).

    Raises:
        DistributedError: the rendezvous did not complete in time, saying what was missing.
    """
    deadline = time.monotonic() + timeout_s
    # torch's own waits end later than ours: the caller reports first, and no C++ warning precedes the report
    lenient = timedelta(seconds=2 * timeout_s + 10)
    stage = ["connecting"]
    box: dict[str, Any] = {}

    def join() -> None:
        try:
            s = store
            if s is None:
                if not _wait_for_listener(ip, port, deadline):
                    return
                stage[0] = "handshake"
                s = dist.TCPStore(ip, port, is_master=False, timeout=lenient)
            stage[0] = "joining"
            dist.init_process_group("gloo", store=s, rank=rank, world_size=world, timeout=lenient)
            dist.set_timeout(timedelta(seconds=timeout_s))  # every collective from now on
            box["store"] = s
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=join, daemon=True, name="fplstudy-rendezvous")
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
    if "store" in box:
        return box["store"]
    why = {"connecting": f"nothing listens at {ip}:{port} (MASTER_ADDR:MASTER_PORT): start rank 0, or check "
                         "MASTER_ADDR, MASTER_PORT and the firewall",
           "handshake": f"{ip}:{port} accepted the connection but does not answer as a rendezvous store (another "
                        "program holds MASTER_PORT there?): give every rank the same free MASTER_PORT",
           "joining": f"not every one of the {world} ranks joined at {ip}:{port}: start all of them with the same "
                      "MASTER_ADDR, MASTER_PORT and WORLD_SIZE"}[stage[0]]
    if "error" in box:
        why += f" ({_short(box['error'])})"
    raise DistributedError(f"rank {rank}: the rendezvous did not complete within {timeout_s:g} s: {why}; "
                           f"raise the config key {TIMEOUT_KEY} if the ranks need longer to start")


class _GlooInterface:
    """Context: gloo's sockets on interface ``name`` (``GLOO_SOCKET_IFNAME``) unless the user set one."""

    def __init__(self, name: str | None):
        self.name, self.old = name, None

    def __enter__(self):
        self.old = os.environ.get("GLOO_SOCKET_IFNAME")
        if self.old is None and self.name:
            os.environ["GLOO_SOCKET_IFNAME"] = self.name
        return self

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)


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

        result = engine.train(plan, T, data=data, on_round=on_round)
        states = ({key: mod.state_dict() for key, _, mod in module_owners(plan, result.holdings)}
                  if rank == 0 else None)
        events = T.events if rank == 0 else None
        _report(reports, "done", rank, dict(status=result.status, message=result.message, wire=T.wire_rows(),
                                         events=events, states=states, at=(T.round, T.last_step)))
    except BaseException as exc:  # report, then die: the parent stops the others
        msg = str(exc) if isinstance(exc, (_NodeFailure, DistributedError)) else (
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
                if time.monotonic() - failed_at > _REPORT_GRACE_S or len({*done, *errors, *dead}) == world:
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
    deadline = time.monotonic() + _STOP_GRACE_S
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
    with _GlooInterface(interface_of(route_source(ip))):
        store = rendezvous(rank, world, ip, port, timeout_s, store)
    if os.environ.get(GATE_ENV):
        _pass_gate(Path(os.environ[GATE_ENV]), rank, timeout_s)
    try:
        T = DistributedTransport(plan, rank, timeout_s)
        try:
            result = engine.train(plan, T, data=data, progress=progress and rank == 0,
                                  on_round=on_round if rank == 0 else None)
            if T.trace is not None:
                T.write_trace(os.environ[TRACE_ENV])
            rows = _share_wire_rows(T, plan)
        except _NodeFailure as exc:
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


def _json_tensor(obj) -> torch.Tensor:
    data = json.dumps(obj).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def _share_wire_rows(T: DistributedTransport, plan: Plan) -> list[dict]:
    """Every rank's wire counts, on every rank: gathered to rank 0 as JSON text, checked there field by
    field, and broadcast back (so that every rank can check the whole wire against the ledger)."""
    world = len(plan.nodes)
    gathered = T.gather_bytes(_json_tensor([list(row.values()) for row in T.wire_rows()]), [], "the wire counts",
                              _WIRE_TAG, [_MAX_WIRE_JSON_BYTES] * world)
    if T.rank == 0:
        rows = [row for r, (_, buf) in enumerate(gathered) for row in _wire_rows_from_json(buf, plan, r)]
        table = _json_tensor([list(row.values()) for row in rows])
        size = torch.tensor([table.numel()], dtype=torch.int64)
    else:
        size = torch.zeros(1, dtype=torch.int64)
    T.collective(lambda: dist.broadcast(size, src=0), "broadcasting the wire counts")
    if not 0 <= int(size) <= _MAX_WIRE_JSON_BYTES * world:
        raise _NodeFailure(f"rank 0 announced {int(size)} bytes of wire counts", None)
    if T.rank != 0:
        table = torch.empty(int(size), dtype=torch.uint8)
    T.collective(lambda: dist.broadcast(table, src=0), "broadcasting the wire counts")
    return rows if T.rank == 0 else _wire_rows_from_json(table, plan, None)


def _pass_gate(folder: Path, rank: int, timeout_s: float) -> None:
    """The testbed's start line: say this rank is ready, wait until the testbed says go (it throttles the hosts'
    CPUs in between, so that start-up runs at full speed and training at the emulated one)."""
    atomic_write_text(folder / f"ready-{rank}", "")
    deadline = time.monotonic() + timeout_s
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise DistributedError(f"rank {rank}: the testbed did not say go within {timeout_s:g} s")
        time.sleep(0.02)


def _wire_rows_from_json(buf: torch.Tensor, plan: Plan, rank: int | None) -> list[dict]:
    """Wire counts from JSON text, checked field by field (plain data, never code): rank ``rank``'s own
    rows, or (``rank`` None) the whole table as rank 0 sent it."""
    names = [n.name for n in plan.nodes]
    who = f"node {names[rank]} (rank {rank})" if rank is not None else "rank 0"
    try:
        rows = json.loads(bytes(buf.numpy()).decode()) if buf.numel() else []
        out = [dict(zip(WIRE_COLUMNS, row, strict=True)) for row in rows]
        ok = all(type(r["round"]) is int and r["node"] in names and r["peer"] in names
                 and (rank is None or r["node"] == names[rank]) and r["kind"] in TRANSFER_KINDS
                 and all(type(r[c]) is int and r[c] >= 0 for c in WIRE_COLUMNS[4:]) for r in out)
    except (ValueError, TypeError, UnicodeError):
        ok = False
    if not ok:
        raise _NodeFailure(f"{who} sent wire counts that are not rows of {', '.join(WIRE_COLUMNS)}", None)
    return out
