"""The distributed backend's transport: a node's messages as gloo point-to-point operations, its wire counts, the
raw-byte state exchange, and the backend's constants and errors (see :mod:`fplstudy.train.distributed`)."""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from fplstudy.config import Config, ConfigError, PicklableError
from fplstudy.plans.events import Compute, Transfer
from fplstudy.plans.plan import Plan
from fplstudy.train import engine
from fplstudy.train.results import write_rows_csv

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
STOP_GRACE_S = 5.0  # after terminate(), seconds before kill()
REPORT_GRACE_S = 1.5  # after the first failure, seconds to collect the other processes' reports
_EVAL_TAG, WIRE_TAG = 1, 2  # point-to-point tags of the evaluation state and the wire counts (training: 0)
MAX_WIRE_JSON_BYTES = 1 << 26  # a rank's wire counts as JSON: far above any real run's


class DistributedError(PicklableError, RuntimeError):
    """A node process died, hung or failed. ``result`` holds the completed rounds (status ``failed``)."""

    def __init__(self, message: str, result: engine.TrainResult | None = None):
        super().__init__(message)
        self.result = result


class WireMismatch(PicklableError, RuntimeError):
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

class NodeFailure(PicklableError, RuntimeError):
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


def short(exc: BaseException) -> str:
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
            reason = short(exc)
            if reason == "timed out":
                reason = self._timed_out()
            raise NodeFailure(f"node {self.node} (rank {self.rank}) {what}: {reason}", rnd) from None
        if ok is False:
            raise NodeFailure(f"node {self.node} (rank {self.rank}) {what}: {self._timed_out()}", rnd)

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
            raise NodeFailure(f"node {self.node} (rank {self.rank}) {what} in round {self.round}: {short(exc)}",
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
                    raise NodeFailure(f"node {plan.nodes[r].name} (rank {r}) sent {n_losses} losses and "
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
                raise NodeFailure(f"node {self.plan.nodes[r].name} (rank {r}) announced {nbytes} bytes of {what}; "
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
