"""A picture of a plan: nodes as boxes grouped into branches and trunk, the layers each holds, the
junction, the data shards, and one arrow per (sender, receiver, kind of message) labelled with its
payload bytes per round.

:func:`plan_graph` computes the drawing data from the plan and the events of its dry run (tests check
this data); :func:`draw_plan` draws it with matplotlib. ``fplstudy plan … --figure plan.png`` calls
:func:`draw_plan` (re-exported from :mod:`fplstudy.plots`).

Layout (data units): branch d on row ``y = -d``, its stages left to right from ``x = 0``; the data
shard of a branch sits left of its data node; the junction is a dashed vertical line after the
branch stages (and their adapters); the trunk stages continue to the right on the middle row; a
dedicated aggregator (``fl``) sits right of the branches.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fplstudy.events import Transfer
from fplstudy.plan import Plan

MESSAGE_KINDS = ("activations", "gradients", "labels", "params_up", "params_down")
# colour, line style, arc (matplotlib arc3 rad): the two directions of a pair bend to opposite sides
ARROW_STYLE = {
    "activations": ("tab:blue", "-", 0.12),
    "gradients": ("tab:red", "--", 0.12),
    "labels": ("tab:green", ":", 0.32),
    "params_up": ("tab:purple", "-", -0.28),
    "params_down": ("tab:purple", "--", -0.28),
}
DX, DY = 3.8, 2.0  # distance between box centres (x: stages, y: branches)
BOX_W, BOX_H = 2.6, 1.35


@dataclass(frozen=True)
class Box:
    """One node as drawn.

    Attributes:
        node: node name; role: its role in the plan; device: its device profile.
        group: ``branch <d>``, ``trunk`` or ``aggregator``.
        layers: the blocks it holds (``adapter`` appended when it holds a junction adapter).
        aggregator: whether it also aggregates (FedAvg / relay).
        x, y: centre in data units.
        energy_j_per_round: its energy per round from the ledger (None without a ledger).
        bytes_per_round: payload bytes it sends + receives per round (None without a ledger).
    """

    node: str
    role: str
    device: str
    group: str
    layers: tuple[str, ...]
    aggregator: bool
    x: float
    y: float
    energy_j_per_round: float | None = None
    bytes_per_round: float | None = None


@dataclass(frozen=True)
class Arrow:
    """All messages of one kind from ``src`` to ``dst``: payload bytes and messages per round."""

    src: str
    dst: str
    kind: str
    bytes_per_round: float
    messages_per_round: float


@dataclass(frozen=True)
class Shard:
    """The data a branch trains on: where it lives, how many samples, which view (``concat``)."""

    branch: int
    node: str
    samples: int
    view: tuple[int, int] | None
    x: float
    y: float


@dataclass
class PlanGraph:
    """Everything :func:`draw_plan` draws (see module docstring).

    Attributes:
        title: one line naming the plan.
        boxes: one per node, in plan order.
        arrows: one per (src, dst, kind) that carried bytes, in order of first message.
        shards: one per branch.
        groups: group name → its nodes.
        junction_at: blocks below the junction; junction: its mode.
        junction_x: x of the junction line (None when the plan has no branch/trunk boundary).
        rounds: rounds the per-round figures average over.
    """

    title: str
    boxes: list[Box]
    arrows: list[Arrow]
    shards: list[Shard]
    groups: dict[str, list[str]]
    junction_at: int
    junction: str
    junction_x: float | None
    rounds: int
    totals: dict[str, Any] = field(default_factory=dict)

    def box(self, node: str) -> Box:
        for b in self.boxes:
            if b.node == node:
                return b
        raise KeyError(node)


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 kB`` (decimal prefixes, as link rates are quoted)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"  # pragma: no cover


def _layers_label(layers: tuple[str, ...]) -> str:
    if len(layers) <= 3:
        return ",".join(layers)
    return f"{layers[0]}…{layers[-1]} ({len(layers)})"


def _positions(plan: Plan) -> tuple[dict[str, tuple[float, float]], float | None, dict[str, str]]:
    """Box centres, the junction line's x and each node's group."""
    pos: dict[str, tuple[float, float]] = {}
    group: dict[str, str] = {}
    D = len(plan.branches)
    sb = max((len(b.stages) for b in plan.branches), default=0)
    mid = -(D - 1) / 2 * DY
    for b in plan.branches:
        for s, st in enumerate(b.stages):
            pos[st.node] = (s * DX, -b.index * DY)
            group[st.node] = f"branch {b.index}"
    has_trunk = bool(plan.trunk)
    junction_x = (sb - 0.5) * DX + 0.17 * DX if sb and has_trunk else None
    x0 = sb * DX + (0.35 * DX if sb else 0.0)
    for t, st in enumerate(plan.trunk):
        pos[st.node] = (x0 + t * DX, mid)
        group[st.node] = "trunk"
    if plan.aggregator and plan.aggregator not in pos:
        pos[plan.aggregator] = (x0 + 0.5 * DX, mid)
        group[plan.aggregator] = "aggregator"
    return pos, junction_x, group


def plan_graph(plan: Plan, ledger: Any = None, events: list | None = None) -> PlanGraph:
    """The drawing data of a plan.

    Args:
        plan: the plan.
        ledger: its priced ledger (per-node energy and bytes on the boxes), or a
            :class:`fplstudy.dryrun.DryRun` (its ledger and events); None = dry-run the plan.
        events: its event stream (the arrows); None = from ``ledger`` when it is a DryRun, else a dry run.

    Returns:
        A :class:`PlanGraph`.
    """
    from fplstudy.dryrun import DryRun, dry_run

    shard_sizes = None
    if isinstance(ledger, DryRun):
        events = ledger.events if events is None else events
        shard_sizes = ledger.shard_sizes
        ledger = ledger.ledger
    if events is None or ledger is None:
        from fplstudy.explore import _shards

        dry = dry_run(plan, shards=_shards(plan))
        events = dry.events if events is None else events
        ledger = dry.ledger if ledger is None else ledger
        shard_sizes = dry.shard_sizes
    if shard_sizes is None:
        from fplstudy.explore import _shards

        shard_sizes = _shards(plan)
    rounds = max(1, len({ev.round for ev in events}))

    pos, junction_x, group = _positions(plan)
    per_node = None
    if ledger is not None and len(ledger):
        lr = max(1, ledger["round"].nunique())
        per_node = ledger.groupby("node")[["energy_j", "bytes_tx", "bytes_rx"]].sum() / lr
    holds: dict[str, list[str]] = defaultdict(list)
    for b in plan.branches:
        for st in b.stages:
            holds[st.node].extend(st.blocks)
        if b.adapter_node:
            holds[b.adapter_node].append("adapter")
    for st in plan.trunk:
        holds[st.node].extend(st.blocks)
    boxes = []
    for n in plan.nodes:
        x, y = pos[n.name]
        e = bts = None
        if per_node is not None and n.name in per_node.index:
            e = float(per_node.loc[n.name, "energy_j"])
            bts = float(per_node.loc[n.name, "bytes_tx"] + per_node.loc[n.name, "bytes_rx"])
        boxes.append(Box(n.name, n.role, n.device, group[n.name], tuple(holds.get(n.name, ())),
                         n.name == plan.aggregator, x, y, e, bts))

    acc: dict[tuple[str, str, str], list[float]] = {}
    for ev in events:
        if isinstance(ev, Transfer):
            row = acc.setdefault((ev.src, ev.dst, ev.kind), [0.0, 0.0])
            row[0] += ev.nbytes
            row[1] += 1
    arrows = [Arrow(s, d, k, b / rounds, m / rounds) for (s, d, k), (b, m) in acc.items()]

    shards = []
    for b in plan.branches:
        x, y = pos[b.data_node]
        samples = int(shard_sizes[b.index]) if b.index < len(shard_sizes) else 0
        shards.append(Shard(b.index, b.data_node, samples, b.view, x - 0.62 * DX, y if b.stages else y))
    groups: dict[str, list[str]] = defaultdict(list)
    for b in boxes:
        groups[b.group].append(b.node)
    sync = plan.sync + (f"/{plan.sync_every}" if plan.sync == "fedavg" else "")
    title = (f"{plan.strategy}: {len(plan.nodes)} nodes, D={len(plan.branches)} branch(es), "
             f"junction {plan.junction}@{plan.junction_at}, sync {sync} — {plan.model} on {plan.config.dataset}")
    tot = {}
    if ledger is not None and len(ledger):
        lr = max(1, ledger["round"].nunique())
        tot = {"bytes_per_round": float(ledger["bytes_tx"].sum()) / lr,
               "energy_j_per_round": float(ledger["energy_j"].sum()) / lr,
               "makespan_s_per_round": float(ledger.groupby("round")["round_makespan_s"].first().mean())}
    return PlanGraph(title, boxes, arrows, shards, dict(groups), plan.junction_at, plan.junction, junction_x,
                     rounds, tot)


def _curve_point(p1: tuple[float, float], p2: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """Point at parameter ``t`` of matplotlib's arc3 curve from p1 to p2 (a quadratic Bézier whose
    control point is the chord's midpoint offset by ``rad`` × the chord's perpendicular)."""
    (x1, y1), (x2, y2) = p1, p2
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t ** 2
    return a * x1 + b * cx + c * x2, a * y1 + b * cy + c * y2


def _arc(rad: float, p1: tuple[float, float], p2: tuple[float, float], max_bulge: float = 1.5) -> float:
    """``rad`` reduced so that a long arrow bulges at most ``max_bulge`` data units off its chord."""
    chord = ((p2[0] - p1[0]) ** 2 + (p2[1] - p1[1]) ** 2) ** 0.5
    if chord == 0 or 0.5 * abs(rad) * chord <= max_bulge:
        return rad
    return (1 if rad > 0 else -1) * 2 * max_bulge / chord


LABEL_AT = {"activations": 0.42, "gradients": 0.42, "labels": 0.3, "params_up": 0.68, "params_down": 0.6}


def draw_plan(plan: Plan, path: str | Path | None = None, ax=None, ledger: Any = None):
    """Draw a plan (see module docstring); save it when ``path`` is given.

    Args:
        plan: the plan.
        path: PNG (or any matplotlib format) to write; None = do not save.
        ax: matplotlib axes to draw on; None = a new figure sized to the plan.
        ledger: passed to :func:`plan_graph` (a DryRun, a ledger, or None for a fresh dry run).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib

    if ax is None and path is not None and matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    g = plan_graph(plan, ledger)
    xs = [b.x for b in g.boxes] + [s.x for s in g.shards]
    ys = [b.y for b in g.boxes]
    rads = {}
    for a in g.arrows:
        src, dst = g.box(a.src), g.box(a.dst)
        rads[a] = rad = _arc(ARROW_STYLE[a.kind][2], (src.x, src.y), (dst.x, dst.y))
        for t in (0.25, 0.5, 0.75):
            x, y = _curve_point((src.x, src.y), (dst.x, dst.y), rad, t)
            xs.append(x)
            ys.extend((y - 0.3, y + 0.3))
    x_lo, x_hi = min(xs) - 1.0, max(xs) + BOX_W / 2 + 0.6
    y_lo, y_hi = min(ys) - BOX_H / 2 - 1.2, max(ys) + BOX_H / 2 + 1.2
    if ax is None:
        width = min(22.0, max(7.5, (x_hi - x_lo) * 1.05))
        height = min(18.0, max(4.2, (y_hi - y_lo) * 1.05 + 1.4))
        fig, ax = plt.subplots(figsize=(width, height))
    else:
        fig = ax.figure
    bmax = max((a.bytes_per_round for a in g.arrows), default=1.0) or 1.0
    fills = {"trunk": "#fde9c9", "aggregator": "#e6dcf3"}

    patches = {}
    for b in g.boxes:
        fill = fills.get(b.group, "#d7e8f7")
        patches[b.node] = ax.add_patch(FancyBboxPatch(
            (b.x - BOX_W / 2, b.y - BOX_H / 2), BOX_W, BOX_H, boxstyle="round,pad=0.05,rounding_size=0.15",
            fc=fill, ec="0.25", lw=1.2, zorder=2))
        head = f"{b.node} [{b.device}]" + ("  ⟳agg" if b.aggregator and b.group != "aggregator" else "")
        lines = [head, b.group if b.group != "aggregator" else "aggregator (FedAvg)"]
        if b.layers:
            lines.append(_layers_label(b.layers))
        if b.energy_j_per_round is not None:
            lines.append(f"{b.energy_j_per_round:.3g} J, {human_bytes(b.bytes_per_round)} /round")
        ax.text(b.x, b.y, "\n".join(lines), ha="center", va="center", fontsize=7.5, zorder=3)

    for s in g.shards:
        label = f"shard {s.branch}\n{s.samples} samples" + (f"\nrows {s.view[0]}:{s.view[1]}" if s.view else "")
        ax.text(s.x, s.y, label, ha="center", va="center", fontsize=7, zorder=3,
                bbox=dict(boxstyle="round,pad=0.3", fc="#eaf5e4", ec="tab:green", lw=0.8))
        node = g.box(s.node)
        ax.annotate("", xy=(node.x - BOX_W / 2, node.y), xytext=(s.x + 0.55, s.y),
                    arrowprops=dict(arrowstyle="-", color="tab:green", lw=0.8), zorder=1)

    if g.junction_x is not None:
        ax.axvline(g.junction_x, color="0.4", ls=(0, (4, 3)), lw=1.0, zorder=1)
        ax.text(g.junction_x, y_hi - 0.35, f"junction ({g.junction}) after block {g.junction_at} "
                f"({plan.block_names[g.junction_at - 1]})",
                ha="center", va="top", fontsize=8, color="0.3")

    kinds_seen = []
    for a in g.arrows:
        color, ls, _ = ARROW_STYLE[a.kind]
        src, dst, rad = g.box(a.src), g.box(a.dst), rads[a]
        lw = 0.6 + 3.0 * (a.bytes_per_round / bmax) ** 0.5
        ax.add_patch(FancyArrowPatch((src.x, src.y), (dst.x, dst.y), connectionstyle=f"arc3,rad={rad}",
                                     arrowstyle="-|>", mutation_scale=11, color=color, ls=ls, lw=lw,
                                     patchA=patches[a.src], patchB=patches[a.dst], shrinkA=1, shrinkB=1,
                                     zorder=4, alpha=0.85))
        mx, my = _curve_point((src.x, src.y), (dst.x, dst.y), rad, LABEL_AT[a.kind])
        ax.text(mx, my, human_bytes(a.bytes_per_round), fontsize=6.5, color=color, ha="center", va="center",
                zorder=5, bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="none", alpha=0.8))
        if a.kind not in kinds_seen:
            kinds_seen.append(a.kind)
    handles = [Line2D([], [], color=ARROW_STYLE[k][0], ls=ARROW_STYLE[k][1], lw=1.6, label=k.replace("_", " "))
               for k in MESSAGE_KINDS if k in kinds_seen]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=True,
                  title="bytes / round (width ∝ √bytes)", title_fontsize=7)
    sub = ""
    if g.totals:
        sub = (f"\nper round: {human_bytes(g.totals['bytes_per_round'])} moved, "
               f"{g.totals['energy_j_per_round']:.3g} J, makespan {g.totals['makespan_s_per_round']:.3g} s")
    ax.set_title(g.title + sub, fontsize=9)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_aspect("equal")
    ax.axis("off")
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def graph_table(g: PlanGraph) -> pd.DataFrame:
    """The arrows of a :class:`PlanGraph` as a table (src, dst, kind, bytes and messages per round)."""
    return pd.DataFrame([a.__dict__ for a in g.arrows], columns=["src", "dst", "kind", "bytes_per_round",
                                                                 "messages_per_round"])
