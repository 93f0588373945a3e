"""The ``distributed`` backend: one process per node, real ``send``/``recv`` over ``torch.distributed``.

The package, by job: :mod:`.transport` (a node's messages), :mod:`.wire` (the bytes really sent, checked
against the ledger), :mod:`.rendezvous` (the store and gloo's interface), :mod:`.launch` (the processes).

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

from fplstudy.train.distributed.launch import launch_env, train_distributed
from fplstudy.train.distributed.rendezvous import rendezvous, store_server
from fplstudy.train.distributed.transport import (
    DEFAULT_TIMEOUT_S,
    DILATE_ENV,
    FAULT_ENV,
    FAULT_EXIT_CODE,
    GATE_ENV,
    TIMEOUT_KEY,
    TRACE_COLUMNS,
    TRACE_ENV,
    WIRE_COLUMNS,
    DistributedError,
    DistributedResult,
    DistributedTransport,
    LaunchError,
    NodeFailure,
    WireMismatch,
)
from fplstudy.train.distributed.wire import (
    check_wire,
    events_bytes,
    wire_table,
    write_wire_csv,
)

__all__ = ["DEFAULT_TIMEOUT_S", "DILATE_ENV", "FAULT_ENV", "FAULT_EXIT_CODE", "GATE_ENV", "TIMEOUT_KEY", "TRACE_COLUMNS",
           "TRACE_ENV", "WIRE_COLUMNS", "DistributedError", "DistributedResult", "DistributedTransport", "LaunchError",
           "NodeFailure", "WireMismatch", "check_wire", "events_bytes", "launch_env", "rendezvous", "store_server",
           "train_distributed", "wire_table", "write_wire_csv"]
