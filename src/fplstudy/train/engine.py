"""The training engine: runs any plan, round by round, and emits the event stream.

One loop serves all six strategies. A round is: every branch trains on its shard for
``local_epochs`` (batches interleaved round-robin, in turns for ``relay``, in lockstep for
``concat``); each batch runs the branch's chain of chunks (its stages, its junction adapter, the
trunk's stages), handing activations forward and gradients back across every node boundary through a
:class:`Transport`; replicated parts are then synchronised as the plan says; every branch is
evaluated as its data owner would deploy it (its blocks + its adapter + the trunk).

The code is written node-locally (SPMD): every tensor operation is guarded by
``transport.is_local(node)``, and every hand-off goes through ``transport.move``. The
:class:`SimulatedTransport` owns every node and hands tensors over in memory; a distributed transport
owns one node per process and sends them over the wire. The same code decides what is sent.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fplstudy.config import ConfigError, PicklableError
from fplstudy.facts.datasets import DatasetSplit
from fplstudy.facts.models import build_model, cut, make_adapter
from fplstudy.facts.partition import Partition, load_partitioned
from fplstudy.plans.dynamics import plan_turnouts
from fplstudy.plans.events import Compute, Event, Transfer
from fplstudy.plans.plan import Plan
from fplstudy.plans.program import (
    TRUNK,
    BatchStep,
    CatchUp,
    Handoff,
    Join,
    Loss,
    Relay,
    Run,
    Split,
    Sync,
    plan_chains,
    round_batches,
    round_program,
    run_event,
    sync_item,
)


class TrainingDiverged(PicklableError, RuntimeError):
    """The training loss became NaN or infinite; completed rounds are kept."""


# --------------------------------------------------------------------------- transports

class Transport:
    """Moves tensors between nodes and records the event stream. Subclasses decide locality."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def is_local(self, node: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def move(self, tensor: torch.Tensor | None, *, src: str, dst: str, kind: str, shape: tuple[int, ...],
             dtype: torch.dtype, where: tuple[int, int, int, int]) -> torch.Tensor | None:
        """Hand ``tensor`` (held by ``src``) to ``dst``; returns it on ``dst`` (None elsewhere).

        ``where`` is ``(round, step, branch, micro)``. ``shape``/``dtype`` are what ``dst`` expects.
        """
        raise NotImplementedError  # pragma: no cover - interface

    def compute(self, ev: Compute) -> None:
        self.events.append(ev)

    def barrier(self) -> None:
        """Wait for every node (no-op in one process)."""

    def score(self, plan: Plan, hold: Holdings, losses: list[float], x: torch.Tensor, y: torch.Tensor,
              ) -> tuple[list[float], list[float], list[float]]:
        """End of a round: every batch's training loss, and every branch's test accuracy and loss.

        A measurement, not training: it emits no events. In one process every module and every loss
        is here; a transport whose nodes live in other processes gathers them first.

        Returns:
            ``(train losses, test accuracies, test losses)``.
        """
        return losses, *evaluate(plan, hold, x, y)


class SimulatedTransport(Transport):
    """Every node lives in this process; a hand-off is an in-memory copy, recorded as a Transfer."""

    def is_local(self, node: str) -> bool:
        return True

    def move(self, tensor, *, src, dst, kind, shape, dtype, where):
        if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
            raise RuntimeError(f"{kind} {src}->{dst} at {where}: tensor {tuple(tensor.shape)} {tensor.dtype} "
                               f"differs from the expected {tuple(shape)} {dtype}")
        rnd, step, branch, micro = where
        self.events.append(Transfer(rnd, step, branch, micro, src, dst, kind, tuple(tensor.shape),
                                    str(tensor.dtype).removeprefix("torch."),
                                    tensor.numel() * tensor.element_size()))
        return tensor.detach().clone()


# --------------------------------------------------------------------------- the model, held by nodes

@dataclass
class Holdings:
    """The modules of a plan, by branch and trunk stage, and one optimizer per module."""

    branch_parts: list[list[nn.Module]]  # [d][s] stage modules of branch d
    adapters: list[nn.Module | None]  # [d] junction adapter of branch d
    trunk_parts: list[nn.Module]  # [s] trunk stage modules (shared by every branch)
    optimizer: torch.optim.Optimizer | None = None  # SGD over every parameter (updates are per parameter)
    chains: dict[int, list[nn.Module]] = field(default_factory=dict)  # chain -> its modules, a cache
    average: dict[int, torch.Tensor] = field(default_factory=dict)  # stage position -> the aggregator's last FedAvg

    def chain_modules(self, plan: Plan, d: int) -> list[nn.Module]:
        mods: list[nn.Module] = list(self.branch_parts[d])
        if self.adapters[d] is not None:
            mods.append(self.adapters[d])
        if plan.junction != "concat":
            mods += self.trunk_parts
        return mods

    def all_modules(self) -> list[nn.Module]:
        mods = [m for parts in self.branch_parts for m in parts]
        mods += [a for a in self.adapters if a is not None]
        return mods + list(self.trunk_parts)


def training_device(accelerator: str) -> torch.device:
    """The torch device that trains for the config key ``accelerator`` (``cpu``, ``cuda`` or ``auto``).

    On ``cuda`` it also makes training deterministic: ``torch.use_deterministic_algorithms`` and cuBLAS's
    fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, unless already set), so a rerun on the same GPU, driver
    and CUDA gives the same bytes.

    Raises:
        ConfigError: ``cuda`` where torch sees no CUDA device, before any work.
    """
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("accelerator", accelerator, "torch sees no CUDA device on this machine "
                                                      "(torch.cuda.is_available() is False); use cpu, or auto")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    return torch.device("cuda")


def build_holdings(plan: Plan, device: torch.device | None = None) -> Holdings:
    """Build every node's modules from one seeded initialisation of the model, on ``device`` (default CPU).

    Every branch starts as a copy of the same lower part (FedAvg's common initialisation); adapters
    are identity-initialised. Only nodes local to the transport need theirs, but building all is cheap
    and keeps the initialisation identical across backends. The weights are drawn on the CPU and then
    moved, so every device starts from the same model.
    """
    cfg = plan.config
    torch.manual_seed(cfg.seed)
    whole = build_model(plan.model, plan.input_shape, plan.num_classes)
    j = plan.junction_at
    lower = cut(whole, 0, j)
    branch_parts, adapters = [], []
    for b in plan.branches:
        mine = copy.deepcopy(lower)
        branch_parts.append([cut(mine, s.start, s.stop) for s in b.stages])
        adapters.append(make_adapter(plan.junction_shape()) if b.adapter_node else None)
    trunk_parts = [cut(whole, s.start, s.stop) for s in plan.trunk]
    hold = Holdings(branch_parts, adapters, trunk_parts)
    if device is not None and device.type != "cpu":
        for mod in hold.all_modules():
            mod.to(device)
    # One SGD over all parameters is the same as one per node: SGD updates every parameter on its
    # own (and its momentum buffer stays with it), and only parameters that received a gradient in
    # the batch -- those of the modules it ran through -- are updated.
    params = [p for mod in hold.all_modules() for p in mod.parameters()]
    hold.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.round_deadline_s is not None and plan.sync == "fedavg":
        # the aggregator holds the common initial model: a branch late before the first FedAvg fetches it
        hold.average = {s: _flat_state(part).clone() for s, part in enumerate(branch_parts[0])}
    return hold


# --------------------------------------------------------------------------- one batch

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def _modules(plan: Plan, hold: Holdings, c: int) -> list[nn.Module]:
    """The modules of chain ``c`` (a branch, or the trunk after a ``concat`` join), cached per run."""
    if c not in hold.chains:
        hold.chains[c] = list(hold.trunk_parts) if c == TRUNK else hold.chain_modules(plan, c)
    return hold.chains[c]


def _run_micro(plan: Plan, T: Transport, hold: Holdings, ops: tuple, xs: list, y, where: tuple, k: int,
               batch_size: int):
    """Execute one micro-batch's program (:func:`fplstudy.plans.program.micro_program`) with tensors.

    Per chain, ``h`` is the value going forward and ``g`` the gradient coming back; a node that is not
    local to the transport skips the tensor work of its operations but records their events, and
    :meth:`Transport.move` hands a value on (on a distributed transport: sends or receives it).

    Returns:
        The micro-batch's loss (weighted k / B) on the loss node, None elsewhere.
    """
    h: dict[int, torch.Tensor | None] = dict(enumerate(xs))
    g: dict[int, torch.Tensor | None] = {}
    ins: dict[int, list] = {}
    outs: dict[int, list] = {}
    leaves: list = []
    joined = loss = None
    for op in ops:
        if isinstance(op, Run):
            c, node = op.chain, op.chunk.node
            if op.phase == "forward":
                x = None
                if T.is_local(node):
                    x = h[c].detach().requires_grad_(True) if op.input_grad else h[c]
                    h[c] = _modules(plan, hold, c)[op.index](x)
                ins.setdefault(c, []).append(x)
                outs.setdefault(c, []).append(h[c])
            elif T.is_local(node):
                torch.autograd.backward(outs[c][op.index], g.get(c))
                g[c] = ins[c][op.index].grad if op.input_grad else None
            T.compute(run_event(op, where, k))
        elif isinstance(op, Handoff):
            held = y if op.kind == "labels" else (h if op.kind == "activations" else g).get(op.chain)
            moved = T.move(held, src=op.src, dst=op.dst, kind=op.kind, shape=op.full_shape(k),
                           dtype=_DTYPES[op.dtype], where=where)
            if op.kind == "labels":
                y = moved
            else:
                (h if op.kind == "activations" else g)[op.chain] = moved
        elif isinstance(op, Loss):
            if T.is_local(op.node):  # the loss is the batch mean: a micro-batch weighs k / B
                loss = F.cross_entropy(outs[op.chain][-1], y) * (k / batch_size)
                outs[op.chain][-1] = loss
        elif isinstance(op, Join):
            if T.is_local(op.node):
                leaves = [h[d].detach().requires_grad_(True) for d in range(len(plan.branches))]
                joined = torch.cat(leaves, dim=2)  # (k, C, H, W): the views' rows side by side again
            h[TRUNK] = joined
        elif isinstance(op, Split):
            if T.is_local(op.node):
                torch.autograd.backward(joined, g[TRUNK])  # split the join's gradient into the branch leaves
            for d in range(len(plan.branches)):
                g[d] = leaves[d].grad if leaves else None
    return loss


def run_batch(plan: Plan, T: Transport, hold: Holdings, step: BatchStep, xs: list[torch.Tensor | None],
              y: torch.Tensor | None, rnd: int) -> float | None:
    """Forward and backward one batch, micro-batch by micro-batch, then step the parameters the batch
    touched once (gradients of the micro-batches accumulate).

    Args:
        plan: the plan.
        T: the transport.
        hold: the modules.
        step: the batch (which branch, how many samples, which micro-batches) and its program.
        xs: per branch, the batch inputs as that branch sees them (None where not local); an
            interleaved/turns batch uses ``xs[batch.branch]`` only.
        y: the batch labels on the data owner (None where not local).
        rnd: round number.

    Returns:
        The batch's mean training loss on the loss node (None elsewhere).
    """
    batch = step.batch
    total: float | None = None
    offsets = np.cumsum((0, *batch.micro_sizes))
    for micro, k in enumerate(batch.micro_sizes):
        sl = slice(int(offsets[micro]), int(offsets[micro + 1]))
        xs_m = [x[sl] if x is not None else None for x in xs]
        y_m = y[sl] if y is not None else None
        loss = _run_micro(plan, T, hold, step.program.ops, xs_m, y_m, (rnd, batch.step, batch.branch, micro), k, batch.size)
        if loss is not None:
            total = (total or 0.0) + float(loss.detach())
    hold.optimizer.step()  # parameters without a gradient (not in this batch's chain) are skipped
    hold.optimizer.zero_grad(set_to_none=True)
    return total


# --------------------------------------------------------------------------- sync

def _flat_state(mod: nn.Module) -> torch.Tensor:
    """The floating-point state of a module (parameters and float buffers), as one vector."""
    return torch.cat([v.detach().reshape(-1) for v in mod.state_dict().values() if v.is_floating_point()])


def _load_flat(mod: nn.Module, vec: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for v in mod.state_dict(keep_vars=True).values():
            if v.is_floating_point():
                n = v.numel()
                v.copy_(vec[offset:offset + n].view_as(v))
                offset += n


def fedavg(vectors: list[torch.Tensor], samples: list[int]) -> torch.Tensor:
    """Sample-weighted mean of replicas (McMahan et al. 2017, FedAvg): sum_d (n_d / n) * w_d."""
    total = sum(samples)
    out = torch.zeros_like(vectors[0])
    for vec, n in zip(vectors, samples):
        out += (n / total) * vec
    return out


def sync_branches(plan: Plan, T: Transport, hold: Holdings, samples: list[int], rnd: int, step: int,
                  item: Sync | None = None) -> None:
    """FedAvg of every branch stage across the branches that trained, through the aggregator (adapters stay
    local).

    Walks ``item`` (:func:`fplstudy.plans.program.sync_item` of ``step`` over every branch when None): per stage
    position, every copy of ``item.branches`` goes up (where its holder is not the aggregator), the
    aggregator averages them weighted by their samples, keeps the average (``hold.average``, for a later
    :func:`catch_up`) and sends it down to them.
    """
    agg = plan.aggregator
    item = item or sync_item(plan, step)
    weights = [samples[d] for d in item.branches]
    for st in item.stages:
        received = []
        for d, hop in zip(item.branches, st.up):
            node = plan.branches[d].stages[st.stage].node
            vec = _flat_state(hold.branch_parts[d][st.stage]) if T.is_local(node) else None
            if hop is not None:
                vec = T.move(vec, src=hop.src, dst=hop.dst, kind=hop.kind, shape=hop.shape, dtype=torch.float32,
                             where=(rnd, step, d, -1))
            received.append(vec)
        avg = fedavg(received, weights) if T.is_local(agg) else None
        if avg is not None:
            hold.average[st.stage] = avg
        _send_down(plan, T, hold, st, item.branches, avg, rnd, step)


def _send_down(plan: Plan, T: Transport, hold: Holdings, st, branches: tuple[int, ...], avg, rnd: int,
               step: int) -> None:
    """The average of stage position ``st.stage`` down to ``branches`` (``st.down``): loaded, and the
    optimizer state of the loaded parameters dropped under ``client_optimizer: reset``."""
    for d, hop in zip(branches, st.down):
        node = plan.branches[d].stages[st.stage].node
        vec = avg
        if hop is not None:
            vec = T.move(avg, src=hop.src, dst=hop.dst, kind=hop.kind, shape=hop.shape, dtype=torch.float32,
                         where=(rnd, step, d, -1))
        if T.is_local(node):
            _load_flat(hold.branch_parts[d][st.stage], vec)
            if plan.config.client_optimizer == "reset":
                forget_optimizer_state(hold.optimizer, hold.branch_parts[d][st.stage].parameters())


def catch_up(plan: Plan, T: Transport, hold: Holdings, item: CatchUp, rnd: int) -> None:
    """Stale branches fetch the aggregator's last average (:class:`fplstudy.plans.program.CatchUp`): what they
    trained since their last sync is dropped, as a sampled FedAvg client starts from the global model."""
    for st in item.stages:
        avg = hold.average[st.stage] if T.is_local(plan.aggregator) else None
        _send_down(plan, T, hold, st, item.branches, avg, rnd, item.step)


def forget_optimizer_state(optimizer: torch.optim.Optimizer, params) -> None:
    """Drop the optimizer state (SGD's momentum buffers) of ``params``: their next step is the step of
    a freshly built optimizer (SGD starts a missing buffer as the gradient itself)."""
    for p in params:
        optimizer.state.pop(p, None)


def relay(plan: Plan, T: Transport, hold: Holdings, item: Relay, rnd: int) -> None:
    """Split learning's hand-over (:class:`fplstudy.plans.program.Relay`): the previous client's head goes up
    to the server and down to the next."""
    src, dst = item.src, item.dst
    for st in item.stages:
        a, b = plan.branches[src].stages[st.stage], plan.branches[dst].stages[st.stage]
        vec = _flat_state(hold.branch_parts[src][st.stage]) if T.is_local(a.node) else None
        for hop in (*st.up, *st.down):
            if hop is not None:
                vec = T.move(vec, src=hop.src, dst=hop.dst, kind=hop.kind, shape=hop.shape, dtype=torch.float32,
                             where=(rnd, item.step, dst, -1))
        if T.is_local(b.node):
            _load_flat(hold.branch_parts[dst][st.stage], vec)


# --------------------------------------------------------------------------- evaluation

EVAL_BATCH = 1024  # test samples per forward pass: bounds evaluation memory (a CPU kernel may sum in another
                   # order for another batch size, so the committed scores are pinned to this value)

def _replicas_identical(plan: Plan, hold: Holdings) -> bool:
    """Whether every branch holds exactly the same weights (e.g. just after FedAvg, no adapters)."""
    if len(plan.branches) == 1 or any(a is not None for a in hold.adapters):
        return False
    first = [_flat_state(m) for m in hold.branch_parts[0]]
    return all(torch.equal(a, _flat_state(m)) for parts in hold.branch_parts[1:] for a, m in zip(first, parts))


@torch.no_grad()
def evaluate(plan: Plan, hold: Holdings, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH,
             ) -> tuple[list[float], list[float]]:
    """Test accuracy and loss of every branch as its data owner deploys it (branch + adapter + trunk).

    For ``concat`` the branches form one model together; every entry is that model's score.
    Identical replicas (just averaged, no adapters) are scored once.
    """
    mods = hold.all_modules()
    modes = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        if plan.branch_order == "lockstep":
            logits = torch.cat([_joint_logits(plan, hold, x[i:i + batch]) for i in range(0, len(x), batch)])
            acc = float((logits.argmax(1) == y).float().mean())
            loss = float(F.cross_entropy(logits, y))
            return [acc] * len(plan.branches), [loss] * len(plan.branches)
        identical = _replicas_identical(plan, hold)
        accs, losses = [], []
        for d in range(1 if identical else len(plan.branches)):
            seq = nn.Sequential(*hold.chain_modules(plan, d))
            logits = torch.cat([seq(x[i:i + batch]) for i in range(0, len(x), batch)])
            accs.append(float((logits.argmax(1) == y).float().mean()))
            losses.append(float(F.cross_entropy(logits, y)))
        if identical:
            return accs * len(plan.branches), losses * len(plan.branches)
        return accs, losses
    finally:
        for m, mode in zip(mods, modes):
            m.train(mode)


def _joint_logits(plan: Plan, hold: Holdings, x: torch.Tensor) -> torch.Tensor:
    parts = []
    for d, b in enumerate(plan.branches):
        h = x[:, :, b.view[0]:b.view[1]]
        for mod in hold.chain_modules(plan, d):
            h = mod(h)
        parts.append(h)
    h = torch.cat(parts, dim=2)
    for mod in hold.trunk_parts:
        h = mod(h)
    return h


# --------------------------------------------------------------------------- training

@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        plan: the plan.
        rounds: one dict per completed round (round, train_loss, test_loss_mean, test_acc_mean,
            test_acc_worst, test_acc_per_branch, branches_trained, nodes_absent, wall_s).
        events: the event stream.
        status: ``completed`` or ``diverged``.
        message: why it stopped early ('' when completed).
        holdings: the trained modules.
        shard_sizes: training samples per branch.
        wall_s: wall-clock seconds of training and evaluation.
    """

    plan: Plan
    rounds: list[dict]
    events: list[Event]
    status: str
    message: str
    holdings: Holdings
    shard_sizes: list[int]
    wall_s: float


CHECKPOINT_FORMAT = 1  # version of the dict train_state() returns


def _event_tuple(ev: Event) -> tuple:
    return (type(ev).__name__, *ev.__dict__.values())


def _event_from_tuple(t: tuple) -> Event:
    kind, *fields = t
    cls = {"Transfer": Transfer, "Compute": Compute}[kind]
    return cls(*(tuple(f) if isinstance(f, list) else f for f in fields))


def rng_state() -> dict:
    """Every global random state training may draw from: torch's (dropout masks), numpy's and
    Python's (not drawn from by the engine today; kept so that a resumed process starts like the
    interrupted one). Shuffles need no state: each round's order is drawn from a generator seeded by
    ``(seed, round, branch, epoch)``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_initialized():  # a run on a GPU draws its dropout masks there
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def train_state(hold: Holdings, rows: list[dict], events: list[tuple]) -> dict:
    """The state of a run at the end of a round, from which :func:`train` continues exactly.

    Plain containers and tensors only (``torch.load(..., weights_only=True)`` reads it back, nothing
    is unpickled as code). The tensors are the live parameters and buffers: save the dict (or
    ``copy.deepcopy`` it) before training goes on.

    Args:
        hold: the modules and their optimizer.
        rows: every completed round's row.
        events: every completed round's events as tuples (``_event_tuple``).

    Returns:
        ``format``, ``rounds_completed``, ``modules`` (state dict of every module, in
        :meth:`Holdings.all_modules` order), ``optimizer`` (its state dict: momentum buffers),
        ``rng`` (:func:`rng_state`), ``rows``, ``events`` and ``average`` (the aggregator's last FedAvg by
        stage position, which a stale branch fetches: :func:`catch_up`). The position in the data order is the
        round: every round draws its own permutation of every shard.
    """
    return {"format": CHECKPOINT_FORMAT, "rounds_completed": len(rows),
            "modules": [m.state_dict() for m in hold.all_modules()],
            "optimizer": hold.optimizer.state_dict(), "rng": rng_state(), "rows": [dict(r) for r in rows],
            "events": list(events), "average": {int(k): v for k, v in hold.average.items()}}


STATE_KEYS = ("format", "rounds_completed", "modules", "optimizer", "rng", "rows", "events", "average")


def check_state(plan: Plan, state: Any) -> None:
    """Whether :func:`train` can continue ``plan`` from ``state`` (a :func:`train_state` read back from a
    file), checked on fresh modules before any file is written: the keys, the rows (one per completed
    round, numbered from 0, no more than the plan's rounds), the events, the weights' shapes, the
    optimizer and the random states. The caller's random states are left as they were.

    Raises:
        ValueError: one line saying what is wrong.
    """
    if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
        found = sorted(map(str, state))[:6] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not a training state (it holds {found}; a state holds {', '.join(STATE_KEYS)})")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state['format']!r}; this fplstudy reads format {CHECKPOINT_FORMAT}")
    rows, done = state["rows"], state["rounds_completed"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or done != len(rows):
        raise ValueError(f"its rows are not one per completed round ({done!r} rounds completed)")
    if [r.get("round") for r in rows] != list(range(len(rows))) or not 0 < len(rows) <= plan.config.rounds:
        raise ValueError(f"its rows are numbered {[r.get('round') for r in rows][:6]}, not 0 to {len(rows) - 1} "
                         f"of the plan's {plan.config.rounds} rounds")
    try:
        events = [_event_from_tuple(tuple(e)) for e in state["events"]]
        if any(ev.round >= len(rows) for ev in events):
            raise ValueError("an event of a round not completed")
        before = rng_state()
        try:
            _restore(build_holdings(plan), state)
        finally:
            set_rng_state(before)
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError) as exc:
        raise ValueError(f"it does not fit this plan ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def _restore(hold: Holdings, state: dict) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r}; this fplstudy reads format {CHECKPOINT_FORMAT}")
    mods = hold.all_modules()
    if len(mods) != len(state["modules"]):
        raise ValueError(f"checkpoint holds {len(state['modules'])} modules, the plan {len(mods)}")
    for mod, sd in zip(mods, state["modules"]):
        mod.load_state_dict(sd)
    hold.optimizer.load_state_dict(state["optimizer"])
    device = hold.optimizer.param_groups[0]["params"][0].device  # a checkpoint is read onto the CPU
    hold.average = {int(k): v.to(device, copy=True) for k, v in state.get("average", {}).items()}
    set_rng_state(state["rng"])


def _shuffled(shard: np.ndarray, cfg, rnd: int, d: int) -> np.ndarray:
    """The shard's samples in this round's order: one fresh permutation per local epoch."""
    return np.concatenate([shard[np.random.default_rng([cfg.seed, rnd, d, e]).permutation(len(shard))]
                           for e in range(cfg.local_epochs)])


def stop_reached(cfg, rows: list[dict]) -> bool:
    """True when a run of ``cfg`` stops after ``rows``: ``stop_at_acc`` is set, at least ``min_rounds`` rounds
    are done and the last one's test accuracy (mean over branches) reached it."""
    return (cfg.stop_at_acc is not None and len(rows) >= cfg.min_rounds
            and rows[-1]["test_acc_mean"] >= cfg.stop_at_acc)


def train(plan: Plan, transport: Transport | None = None, *, progress: bool = False,
          data: tuple[DatasetSplit, Partition] | None = None,
          on_round: Callable[[dict], None] | None = None, resume: dict | None = None,
          on_state: Callable[[dict], None] | None = None, device: torch.device | None = None) -> TrainResult:
    """Train a plan for ``plan.config.rounds`` rounds, or fewer when ``stop_at_acc`` stops it
    (:func:`stop_reached`).

    Args:
        plan: a resolved plan.
        transport: defaults to :class:`SimulatedTransport` (one process, every node).
        progress: show a tqdm bar over rounds.
        data: the loaded dataset and partition (loaded from the plan when None).
        on_round: called with each completed round's row (e.g. to write results as they come).
        resume: a :func:`train_state` dict of this plan: training continues after its last round,
            with its weights, optimizer and random states, rows and events, and gives the same result
            as an uninterrupted run.
        on_state: called at the end of every round, before ``on_round``, with :func:`train_state`
            (e.g. to write a checkpoint).
        device: the torch device that trains; None: the config's ``accelerator`` (:func:`training_device`).
            Every module and tensor lives there; the events, and so the ledger, are the same on any device.

    Returns:
        A :class:`TrainResult`; a NaN/infinite loss ends it early with status ``diverged``.
    """
    cfg = plan.config
    T = transport or SimulatedTransport()
    split, part = data if data is not None else load_partitioned(plan)
    device = training_device(cfg.accelerator) if device is None else device
    on_cpu = device.type == "cpu"
    if not on_cpu:
        split = split.to(device)
    shards = [np.asarray(ix) for ix in part.indices]
    samples = [len(ix) for ix in shards]
    hold = build_holdings(plan, device)
    torch.manual_seed(cfg.seed)
    rows: list[dict] = []
    done_events: list[tuple] = []  # completed rounds' events, as on_state hands them on
    t0 = time.perf_counter()
    if resume is not None:
        _restore(hold, resume)
        rows = [dict(r) for r in resume["rows"]]
        done_events = list(resume["events"])
        T.events[:0] = [_event_from_tuple(e) for e in done_events]
        t0 -= rows[-1]["wall_s"] if rows else 0.0  # wall_s keeps counting from the first start
    status, message = "completed", ""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.rounds, initial=len(rows), desc=f"{plan.strategy} rounds", unit="round")
    views = [b.view for b in plan.branches]
    batches, chains, programs = round_batches(plan, samples), plan_chains(plan), {}  # the same every round
    turnouts = plan_turnouts(plan)
    try:
        for rnd in range(len(rows), cfg.rounds):
            if stop_reached(cfg, rows):  # also when resuming a run that had reached it
                break
            order = [_shuffled(sh, cfg, rnd, 0 if plan.branch_order == "lockstep" else d)
                     for d, sh in enumerate(shards)]
            losses = []
            turnout = turnouts[rnd] if turnouts is not None else None
            for item in round_program(plan, batches, rnd, chains, programs, turnout):
                if isinstance(item, Relay):
                    relay(plan, T, hold, item, rnd)
                    continue
                if isinstance(item, CatchUp):
                    catch_up(plan, T, hold, item, rnd)
                    continue
                if isinstance(item, Sync):
                    sync_branches(plan, T, hold, samples, rnd, item.step, item)
                    continue
                batch = item.batch
                d = 0 if batch.branch < 0 else batch.branch
                idx = order[d][batch.start:batch.start + batch.size]
                if not on_cpu:
                    idx = torch.from_numpy(idx).to(device)
                x, y = split.x_train[idx], split.y_train[idx]
                if plan.branch_order == "lockstep":
                    xs = [x[:, :, v[0]:v[1]] for v in views]
                else:
                    xs = [None] * len(shards)
                    xs[batch.branch] = x
                loss = run_batch(plan, T, hold, item, xs, y, rnd)
                if loss is not None:
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"round {rnd}, step {batch.step}, branch {batch.branch}: the training loss became "
                            f"{loss}; lower lr (now {cfg.lr}) or check the data")
                    losses.append(loss)
            losses, accs, test_losses = T.score(plan, hold, losses, split.x_test, split.y_test)
            row = {
                "round": rnd,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "test_loss_mean": float(np.mean(test_losses)),
                "test_acc_mean": float(np.mean(accs)),
                "test_acc_worst": float(np.min(accs)),
                "test_acc_per_branch": " ".join(f"{a:.4f}" for a in accs),
                "branches_trained": " ".join(str(d) for d in (turnout.active if turnout else range(len(shards)))),
                "branches_late": " ".join(str(d) for d in turnout.late) if turnout else "",
                "nodes_absent": " ".join(sorted(turnout.absent)) if turnout else "",
                "wall_s": time.perf_counter() - t0,
            }
            rows.append(row)
            if on_state:
                done_events += [_event_tuple(ev) for ev in T.events[len(done_events):]]
                on_state(train_state(hold, rows, done_events))
            if on_round:
                on_round(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(acc=f"{row['test_acc_mean']:.3f}")
    except TrainingDiverged as exc:
        status, message = "diverged", str(exc)
    finally:
        if bar is not None:
            bar.close()
    return TrainResult(plan, rows, T.events, status, message, hold, samples, time.perf_counter() - t0)
