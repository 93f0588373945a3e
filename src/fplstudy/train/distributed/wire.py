"""The wire check of the distributed backend: the bytes every rank really sent and received, per round, peer and
kind, against the bytes the event stream (hence the ledger) records; the counts shared between ranks as JSON."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from fplstudy.plans.events import TRANSFER_KINDS, Transfer
from fplstudy.plans.plan import Plan
from fplstudy.train.distributed.transport import (
    MAX_WIRE_JSON_BYTES,
    WIRE_COLUMNS,
    WIRE_TAG,
    DistributedError,
    DistributedTransport,
    NodeFailure,
    WireMismatch,
)
from fplstudy.train.results import atomic_write_text, write_rows_csv

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

def _json_tensor(obj) -> torch.Tensor:
    data = json.dumps(obj).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def share_wire_rows(T: DistributedTransport, plan: Plan) -> list[dict]:
    """Every rank's wire counts, on every rank: gathered to rank 0 as JSON text, checked there field by
    field, and broadcast back (so that every rank can check the whole wire against the ledger)."""
    world = len(plan.nodes)
    gathered = T.gather_bytes(_json_tensor([list(row.values()) for row in T.wire_rows()]), [], "the wire counts",
                              WIRE_TAG, [MAX_WIRE_JSON_BYTES] * world)
    if T.rank == 0:
        rows = [row for r, (_, buf) in enumerate(gathered) for row in _wire_rows_from_json(buf, plan, r)]
        table = _json_tensor([list(row.values()) for row in rows])
        size = torch.tensor([table.numel()], dtype=torch.int64)
    else:
        size = torch.zeros(1, dtype=torch.int64)
    T.collective(lambda: dist.broadcast(size, src=0), "broadcasting the wire counts")
    if not 0 <= int(size) <= MAX_WIRE_JSON_BYTES * world:
        raise NodeFailure(f"rank 0 announced {int(size)} bytes of wire counts", None)
    if T.rank != 0:
        table = torch.empty(int(size), dtype=torch.uint8)
    T.collective(lambda: dist.broadcast(table, src=0), "broadcasting the wire counts")
    return rows if T.rank == 0 else _wire_rows_from_json(table, plan, None)


def pass_gate(folder: Path, rank: int, timeout_s: float) -> None:
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
        raise NodeFailure(f"{who} sent wire counts that are not rows of {', '.join(WIRE_COLUMNS)}", None)
    return out
