"""Who takes part in each round: participation, dropout and what a missing node costs a plan.

This module is the participation model, computed from the plan alone (no tensors, no
prices), round by round, as :class:`Turnout` s (:func:`plan_turnouts` reads the config keys
``fraction_fit``, ``dropout``, ``dropout_trace``, ``straggler_prob``, ``straggler_slowdown`` and
``round_deadline_s``; only the deadline needs prices: :func:`fplstudy.costs.dryrun.settle_deadline` decides which
branches are late and hands :func:`turnouts` its decisions). :func:`fplstudy.plans.program.round_program` builds each
round from its turnout, so the engine (both backends), the dry run and the ledger follow the same rule.

The model (every rule is in :func:`turnouts`):

- **Absent nodes.** A node is absent for a whole round or present for all of it (a drop-out at the start
  of a round: no work of an absent node is started, so none is wasted). Either a fixed ``trace``
  (``{round: absent node names}``) or a per-round, per-node probability ``dropout``, drawn with
  ``numpy.random.default_rng([seed, round, DROPOUT_STREAM])`` once per plan node in node order; the
  probability applies to the edge side only (``not Node.on_server``: an edge server on mains power and a
  wire is taken to stay up; a trace may name any node).
- **Available branches.** A branch can train when every node of its chain is present: its stages and
  adapter, and the trunk's stages (a branch of a ``concat`` plan trains with all the others or not at all).
  A plan that syncs or relays needs its aggregator: without it nothing trains (it coordinates the round).
- **Participation** (Flower's ``fraction_fit``): of the available branches, ``max(1, floor(fraction_fit
  × available))`` take part, drawn without replacement with ``default_rng([seed, round,
  PARTICIPATION_STREAM])``. The others rest.
- **A lost round**: no branch takes part (a trunk stage or the aggregator absent, or every branch out). It
  trains nothing and sends nothing.
- **FedAvg** averages the branches that took part, weighted by their samples; the average goes down to
  them only. A branch that missed the last effective sync is stale: when it next takes part it first
  fetches the aggregator's average (``catch_up``), so every branch trains from the latest global model,
  as a sampled FedAvg client does; the work it did since its last sync and did not deliver is lost. Its
  optimizer state stays as it was (reset on the catch-up when ``client_optimizer`` is ``reset``, as on a
  sync).
- **Split learning's relay** passes the head from the client that trained last (``holder``, possibly in
  an earlier round) to the next one that takes part. If the holder is absent the head is out of reach:
  the next client goes on with its own last copy.
- **Stragglers.** With ``straggler_prob`` p and ``straggler_slowdown`` f, each edge-side node is a straggler
  for a round with probability p (``default_rng([seed, round, STRAGGLER_STREAM])``, one draw per plan node
  in node order, whatever its presence): its computes in that round take f times as long, at its active
  power, so f times the joules (the device is slower, not idle: throttled, or shared with other work whose
  joules it pays). A straggler that is not late changes only time and energy (:attr:`Turnout.slow`).
- **Round deadline** (``round_deadline_s``, plans that sync with FedAvg in interleaved batches: fl, sfl,
  fpl). In a round that ends with a FedAvg, a branch whose update would reach the aggregator later than
  the deadline (seconds from the round's start, by the cost model with the round's stragglers,
  :func:`fplstudy.costs.dryrun.settle_deadline`) is *late*: told the round is closed, it stops at its first
  batch boundary after the deadline (a client checks its time budget between batches), so it runs the
  batches it started before the deadline, the one in flight included (done, priced, and wasted), sends no
  update, and is stale (it catches up when it next takes part). The aggregator waits until the deadline,
  then averages the branches that were on time (none: no average that round) and sends it down to them:
  such a round lasts at least the deadline, and until the late branch's last batch ends. Rounds without a
  FedAvg have no deadline.
- **Idle time** is priced only for the nodes with a part in the round (``engaged``): the present nodes
  of the branches that take part, the trunk and the aggregator. A resting or absent node waits for
  nothing and is priced no idle energy.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fplstudy.config import ConfigError, short_key, short_repr
from fplstudy.facts.profiles import FileError
from fplstudy.plans.program import branch_chain, sync_due

DROPOUT_STREAM = 0x64726F70  # 'drop': the random stream of absences, apart from every other draw of the seed
PARTICIPATION_STREAM = 0x66697421  # 'fit!': the random stream of participation
STRAGGLER_STREAM = 0x736C6F77  # 'slow': the random stream of stragglers


@dataclass(frozen=True)
class Turnout:
    """What a round's dynamics leave of the plan.

    Attributes:
        absent: the plan nodes absent for the round.
        active: the branches that train in the round, in branch order (empty: the round is lost).
        syncs: the round ends with a FedAvg of ``active`` (the plan syncs this round and someone trained).
        catch_up: the branches of ``active`` that first fetch the aggregator's last average.
        holder: split learning (``turns``): the branch whose head is the latest at the round's start (None:
            no client has trained yet, or the holder is absent and its head out of reach); None otherwise.
        engaged: the nodes with a part in the round (idle time is priced for them only).
        slow: ``((node, slowdown), ...)`` of the round's stragglers, in node order (their computes take
            ``slowdown`` times as long and cost as much more energy).
        late: the branches of ``active`` that miss the round's deadline (they are left out of the FedAvg).
        kept: ``((branch, batches), ...)``: each late branch runs only its first ``batches`` batches (those
            it started before the deadline).
        wait_s: the round's deadline when a branch is late (the aggregator waits until then before it
            averages; the round lasts at least that long), else 0.
    """

    absent: frozenset[str]
    active: tuple[int, ...]
    syncs: bool
    catch_up: tuple[int, ...]
    holder: int | None
    engaged: frozenset[str]
    slow: tuple[tuple[str, float], ...] = ()
    late: tuple[int, ...] = ()
    kept: tuple[tuple[int, int], ...] = ()
    wait_s: float = 0.0

    @property
    def lost(self) -> bool:
        return not self.active


def branch_nodes(plan, d: int) -> frozenset[str]:
    """The nodes a batch of branch ``d`` runs through: its stages, its adapter and the trunk's stages."""
    return frozenset(c.node for c in branch_chain(plan, d)) | {s.node for s in plan.trunk}  # concat's chain stops at the join


def check_trace(plan, trace: dict[int, list[str]], key: str = "dropout_trace") -> dict[int, frozenset[str]]:
    """``trace`` as ``{round: frozenset of absent nodes}``, refusing a round outside the run or an unknown
    node with one line naming the entry (:class:`fplstudy.config.ConfigError`)."""
    names = [n.name for n in plan.nodes]
    out: dict[int, frozenset[str]] = {}
    for rnd, absent in trace.items():
        if not isinstance(rnd, int) or isinstance(rnd, bool) or not 0 <= rnd < plan.config.rounds:
            raise ConfigError(f"{key}.{rnd}", absent, f"a trace names rounds 0..{plan.config.rounds - 1} of this run")
        for name in absent:
            if name not in names:
                raise ConfigError(f"{key}.{rnd}", name, f"unknown node; this plan's nodes are {short_list(names)}")
        out[rnd] = frozenset(absent)
    return out


def turnouts(plan, fraction_fit: float = 1.0, dropout: float = 0.0,
             trace: dict[int, list[str]] | None = None, straggler_prob: float = 0.0,
             straggler_slowdown: float = 1.0, late: dict[int, dict[int, int]] | None = None,
             deadline_s: float = 0.0) -> list[Turnout]:
    """Every round's :class:`Turnout` (module docstring), rounds ``0 .. plan.config.rounds - 1``.

    Args:
        plan: the plan.
        fraction_fit: the share of available branches that take part in a round, in (0, 1].
        dropout: the probability that an edge-side node is absent for a round, in [0, 1].
        trace: ``{round: absent node names}`` instead of ``dropout`` (rounds left out: everyone present).
        straggler_prob: the probability that an edge-side node is a straggler for a round, in [0, 1].
        straggler_slowdown: a straggler's computes take this many times as long (>= 1).
        late: ``{round: {late branch: batches it finished by the deadline}}``, the deadline's decisions
            (:func:`fplstudy.costs.dryrun.settle_deadline`); a late branch of a round must take part in it.
        deadline_s: the round deadline (``wait_s`` of a round with a late branch).

    Returns:
        One turnout per round. With ``fraction_fit`` 1, ``dropout`` 0 and no trace every round has every
        branch and every node, as a plan without dynamics does.
    """
    if not 0 < fraction_fit <= 1:
        raise ConfigError("fraction_fit", fraction_fit, "the share of branches that take part must lie in (0, 1]")
    if not 0 <= dropout <= 1:
        raise ConfigError("dropout", dropout, "a probability must lie in [0, 1]")
    if trace is not None and dropout > 0:
        raise ConfigError("dropout", dropout, "give dropout or dropout_trace, not both")
    if not 0 <= straggler_prob <= 1:
        raise ConfigError("straggler_prob", straggler_prob, "a probability must lie in [0, 1]")
    absences = check_trace(plan, trace) if trace is not None else {}
    late = late or {}
    cfg, D = plan.config, len(plan.branches)
    chains = [branch_nodes(plan, d) for d in range(D)]
    edge = [not n.on_server(plan.junction_at) for n in plan.nodes]
    coordinated = plan.sync in ("fedavg", "relay")
    current = [True] * D  # the branch holds the latest average (or the common initial model)
    holder: int | None = None
    out: list[Turnout] = []
    for rnd in range(cfg.rounds):
        if trace is not None:
            absent = absences.get(rnd, frozenset())
        elif dropout > 0:
            draws = np.random.default_rng([cfg.seed, rnd, DROPOUT_STREAM]).random(len(plan.nodes))
            absent = frozenset(n.name for n, u, e in zip(plan.nodes, draws, edge) if e and u < dropout)
        else:
            absent = frozenset()
        available = [d for d in range(D) if not chains[d] & absent]
        if coordinated and plan.aggregator in absent:
            available = []
        if plan.branch_order == "lockstep" and len(available) < D:
            available = []
        if available and fraction_fit < 1:
            k = max(1, math.floor(fraction_fit * len(available) + 1e-9))
            if k < len(available):
                rng = np.random.default_rng([cfg.seed, rnd, PARTICIPATION_STREAM])
                available = sorted(int(d) for d in rng.choice(available, size=k, replace=False))
        active = tuple(available)
        dropped = tuple(sorted(late.get(rnd, {})))
        if not set(dropped) <= set(active):
            raise ValueError(f"round {rnd}: late branches {dropped} must take part (active {active})")
        on_time = tuple(d for d in active if d not in dropped)
        syncs = bool(on_time) and sync_due(plan, rnd)
        catch_up = tuple(d for d in active if not current[d]) if plan.sync == "fedavg" else ()
        for d in catch_up:
            current[d] = True
        if syncs:
            current = [d in on_time for d in range(D)]
        for d in dropped:  # its update is dropped: it is stale until it fetches the average
            current[d] = False
        slow: tuple = ()
        if straggler_prob > 0 and straggler_slowdown != 1:
            draws = np.random.default_rng([cfg.seed, rnd, STRAGGLER_STREAM]).random(len(plan.nodes))
            slow = tuple((n.name, float(straggler_slowdown)) for n, u, e in zip(plan.nodes, draws, edge)
                         if e and u < straggler_prob and n.name not in absent)
        start = holder if plan.branch_order == "turns" and holder is not None and not chains[holder] & absent else None
        engaged = frozenset().union(*(chains[d] for d in active)) if active else frozenset()
        if active and plan.aggregator is not None:
            engaged |= {plan.aggregator}
        kept = tuple(sorted(late.get(rnd, {}).items()))
        out.append(Turnout(absent, active, syncs, catch_up, start, engaged, slow, dropped, kept,
                           float(deadline_s) if dropped else 0.0))
        if active and plan.branch_order == "turns":
            holder = active[-1]
    return out


class TraceError(FileError):
    """A dropout trace file that cannot be used; the message names the file, the line and the value."""

    WHAT, KEY, CONFIG_KEY = "dropout_trace file", "line", "dropout_trace"
    WHOLE = "(file)"  # the key of a problem of the whole file (its size, its encoding): no line is named

    def __init__(self, file: str | Path, key: str, value: Any, allowed: str):
        super().__init__(file, key, value, allowed)
        if key == self.WHOLE:
            ValueError.__init__(self, f"{self.WHAT} '{short_key(str(file))}': got {short_repr(value)}; {allowed}")


MAX_TRACE_BYTES = 64 * 2**20  # a trace holds a line per absence: 100000 rounds x 64 nodes is about 1 MB
_ROUND = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also accepts '²' and '٣', int() not all


def read_trace(path: str | Path, key: str = "dropout_trace", rounds: int | None = None,
               nodes: list[str] | None = None) -> dict[int, list[str]]:
    """A trace file: CSV with the header ``round,node`` and one row per absence (``3,n1``: node n1 is
    absent in round 3), as ``{round: [nodes]}``.

    The file is read defensively: at most :data:`MAX_TRACE_BYTES`, UTF-8 text without NUL bytes, the header
    first, then rows of two cells, a round in ASCII digits and a node name. With ``rounds`` (``nodes``), a round
    outside ``0 .. rounds - 1`` (a node not in ``nodes``) is refused too, naming its line.

    Raises:
        ConfigError: the file is missing or not a file (key ``key``).
        TraceError: any other problem, in one line naming the file, the line and the fix.
    """
    path = Path(path)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL in the name
        raise ConfigError(key, str(path), f"cannot be read as a path ({exc}); give a CSV file with the header "
                                          "round,node") from None
    if not is_file:
        raise ConfigError(key, str(path), ("is a folder" if is_dir else "no such file")
                          + "; give a CSV with the header round,node")
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise TraceError(path, TraceError.WHOLE, f"{size:,} bytes", f"a trace is at most {MAX_TRACE_BYTES // 2**20} MiB "
                                                                "(one line per absence); give a shorter trace")
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(path, TraceError.WHOLE, str(path), f"cannot be read ({exc.strerror}); give a readable CSV "
                                                    "file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise TraceError(path, str(line), f"byte 0x{raw[exc.start]:02x} at offset {exc.start}",
                         "not UTF-8 text; give a CSV text file (round,node) saved as UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise TraceError(path, str(line), "a NUL byte", "binary data; give a CSV text file (round,node)")
    reader, rows = csv.reader(io.StringIO(text, newline="")), []
    try:
        rows.extend(reader)
    except csv.Error as exc:  # a field longer than csv's limit, a quote left open
        raise TraceError(path, str(reader.line_num), str(exc), "not a CSV row; give rows round,node") from None
    if not rows or [c.strip() for c in rows[0]] != ["round", "node"]:
        raise TraceError(path, "1", ",".join(rows[0]) if rows else "an empty file",
                         "the first line must be the header round,node")
    known = set(nodes) if nodes is not None else None
    out: dict[int, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        cells = [c.strip() for c in row]
        if len(cells) != 2 or not cells[1]:
            raise TraceError(path, str(line), ",".join(row), "each row is round,node (an integer and a node name)")
        if cells[0].startswith("-") and _ROUND.fullmatch(cells[0][1:]):
            raise TraceError(path, str(line), ",".join(row), "rounds count from 0; give a round >= 0")
        if not _ROUND.fullmatch(cells[0]):
            raise TraceError(path, str(line), ",".join(row), "each row is round,node: the round in the digits "
                                                             "0-9 (e.g. 3,n1)")
        rnd = int(cells[0])
        if rounds is not None and rnd >= rounds:
            raise TraceError(path, str(line), ",".join(row), f"a trace names rounds 0..{rounds - 1} of this run "
                                                             f"(rounds={rounds}); drop the row or raise rounds")
        if known is not None and cells[1] not in known:
            raise TraceError(path, str(line), ",".join(row), f"unknown node {cells[1]!r}; this plan's nodes are "
                                                             + short_list(nodes))
        out.setdefault(rnd, []).append(cells[1])
    return out


def short_list(names: list[str], most: int = 12) -> str:
    """``names`` joined by commas, the middle left out beyond ``most`` (a message stays one short line)."""
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[:most - 2]) + f", ... ({len(names) - most + 1} more), " + names[-1]


def has_dynamics(cfg) -> bool:
    """Whether a config asks for any dynamics (else every round is everyone's: :func:`plan_turnouts` is None)."""
    return (cfg.fraction_fit < 1 or cfg.dropout > 0 or cfg.dropout_trace is not None
            or (cfg.straggler_prob > 0 and cfg.straggler_slowdown != 1) or cfg.round_deadline_s is not None)


def check_deadline(plan) -> None:
    """Refuse ``round_deadline_s`` on a plan it does not apply to, in one line (:class:`ConfigError`)."""
    cfg = plan.config
    if cfg.round_deadline_s is not None and (plan.sync != "fedavg" or plan.branch_order != "interleaved"):
        raise ConfigError("round_deadline_s", cfg.round_deadline_s,
                          f"a deadline drops late updates from a FedAvg; strategy {plan.strategy} (sync "
                          f"{plan.sync}, {plan.branch_order} batches) has none to drop: leave it out")


def turnout_rule(plan):
    """``plan``'s turnouts as a function of the deadline's decisions (``late`` of :func:`turnouts`; None: no
    branch late), its trace file read once; None for a plan without dynamics. Bad values and bad trace files
    are refused with one line (:class:`fplstudy.config.ConfigError`), a deadline where it does not apply at
    once, the rest at the first call."""
    cfg = plan.config
    if not has_dynamics(cfg):
        return None
    check_deadline(plan)
    trace = (read_trace(cfg.dropout_trace, rounds=cfg.rounds, nodes=[n.name for n in plan.nodes])
             if cfg.dropout_trace is not None else None)
    return lambda late=None: turnouts(plan, cfg.fraction_fit, cfg.dropout, trace, cfg.straggler_prob,
                                      cfg.straggler_slowdown, late, cfg.round_deadline_s or 0.0)


def planned_turnouts(plan) -> list[Turnout] | None:
    """The turnouts of ``plan`` from its config keys, no branch late (:func:`turnout_rule`), or None for a
    plan without dynamics."""
    rule = turnout_rule(plan)
    return rule() if rule is not None else None


def plan_turnouts(plan) -> list[Turnout] | None:
    """The turnouts of ``plan`` (:func:`planned_turnouts`), or None for a plan without dynamics
    (:func:`fplstudy.plans.program.everyone` in every round). A plan with a ``round_deadline_s`` must have been
    settled first (:func:`fplstudy.costs.dryrun.settle_deadline`, which :func:`fplstudy.train.runner.prepare` and
    :func:`fplstudy.costs.dryrun.dry_run` call): its turnouts are then :attr:`fplstudy.plans.plan.Plan.turnouts`."""
    if plan.turnouts is not None:
        return list(plan.turnouts)
    if plan.config.round_deadline_s is not None:
        check_deadline(plan)
        raise RuntimeError("a plan with round_deadline_s is priced and run only once settled: "
                           "plan = fplstudy.costs.dryrun.settle_deadline(plan, shard_sizes, profiles)")
    return planned_turnouts(plan)
