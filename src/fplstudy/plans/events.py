"""The event stream: what training did, in a form the cost ledger can price without re-training.

Every run of a plan (simulated or distributed backend) emits, in execution order:

``Transfer`` — one hand-off of a tensor from one node to another.

=========  ======  ===============================================================================
field      type    meaning
=========  ======  ===============================================================================
round      int     communication round, 0-based
step       int     step within the round (a batch of one branch = one step; sync uses the step
                   after the last batch of the round)
branch     int     branch whose batch it belongs to (-1 for none)
micro      int     micro-batch index within the batch (0 when not pipelined; -1 for sync messages)
src, dst   str     node names (``n0``, ``n1``, …)
kind       str     ``activations`` (forward, across a stage boundary or the junction),
                   ``gradients`` (backward, the gradient of those activations),
                   ``labels`` (data owner → node computing the loss),
                   ``params_up`` (replica → aggregator), ``params_down`` (aggregator → replica)
shape      tuple   full tensor shape, batch dimension included
dtype      str     torch dtype name without ``torch.`` (``float32``, ``int64``)
nbytes     int     payload bytes = numel × element size (no framing, no headers)
=========  ======  ===============================================================================

``Compute`` — one module call (forward) or its backward, on one node.

=========  ======  ===============================================================================
field      type    meaning
=========  ======  ===============================================================================
round,     int     as above
step,
branch,
micro
node       str     node that computes
blocks     tuple   block names run, in order (an adapter is the block ``adapter``)
in_shape   tuple   per-sample input shape of the first block (the FLOPs depend on it)
samples    int     samples in the chunk
phase      str     ``forward`` or ``backward``
input_grad bool    backward only: whether the gradient w.r.t. the chunk's input was computed
                   (False for the chunk that reads the raw data); forward: always False
=========  ======  ===============================================================================

Evaluation on the test set is a measurement, not training, and emits no events. Neither do the loss,
the optimizer step or the averaging arithmetic (FlopCounterMode counts none of them either).
"""

from __future__ import annotations

from dataclasses import dataclass

# The kinds of message (a Transfer's kind) and of a ledger row: compute, the messages, forwarding, waiting.
TRANSFER_KINDS = ("activations", "gradients", "labels", "params_up", "params_down")
KINDS = ("forward", "backward", *TRANSFER_KINDS, "relay", "idle")


@dataclass(frozen=True)
class Transfer:
    """One tensor handed from ``src`` to ``dst`` (see module docstring)."""

    round: int
    step: int
    branch: int
    micro: int
    src: str
    dst: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class Compute:
    """One forward or backward of a run of blocks on one node (see module docstring)."""

    round: int
    step: int
    branch: int
    micro: int
    node: str
    blocks: tuple[str, ...]
    in_shape: tuple[int, ...]
    samples: int
    phase: str
    input_grad: bool


Event = Transfer | Compute
