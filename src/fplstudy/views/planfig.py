"""A picture of a plan: nodes as boxes grouped into branches and trunk, the layers each holds, the
junction, the data shards, and the messages of one round between the nodes, labelled with their
payload bytes per round. On a topology each box names the topology node that hosts it, and the words
above the picture give every communicating pair's path with each hop's link profile (:func:`link_words`).

:func:`plan_graph` computes the drawing data from the plan and the events of its dry run (boxes,
arrows, shards, and where each goes); :func:`arrow_routes` routes the arrows; :func:`draw_plan`
draws both with matplotlib. ``fplstudy plan … --figure plan.png`` calls :func:`draw_plan`.

Layout, in inches at scale 1 (``draw_plan`` scales it to the axes it draws on, text included):

- branch d on row ``d`` (top to bottom), its stages left to right; its data shard left of its data
  node; trunk stages and a dedicated aggregator (``fl``) to the right, as boxes as tall as all the
  branch rows together, so that every branch meets them straight on its own row;
- a dashed vertical line marks the junction, its words below it;
- messages between neighbouring boxes run straight along the row, one lane per family (activations
  and gradients; labels; parameters up and down), the two directions of a family side by side, with
  one label per lane;
- messages between boxes that are not neighbours (a branch's labels to the loss node, parameters
  from a branch stage that does not touch the aggregator) leave the box by its top edge, run in the
  gap above their row to a lane left of everything, over the top of the picture and down into their
  receiver, so they cross no box and no other kind of message (tests/unit/views/test_planfig.py checks
  both for the plans the walk and the sliders draw).

Colours of message kinds come from :data:`fplstudy.views.style.KIND_PALETTE`, as in every other figure.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fplstudy.plans.events import TRANSFER_KINDS, Transfer
from fplstudy.plans.plan import Plan
from fplstudy.plans.strategies import strategy
from fplstudy.views.looks import LOOKS
from fplstudy.views.style import KIND_PALETTE, save_figure

LINE_STYLE = {"activations": "-", "gradients": (0, (4, 2)), "labels": (0, (1.2, 1.6)), "params_up": "-",
              "params_down": (0, (4, 2))}
FAMILY = {"activations": "activations", "gradients": "activations", "labels": "labels",
          "params_up": "params", "params_down": "params"}
FAMILIES = ("activations", "labels", "params")

# Layout, inches at scale 1 (fonts in points at scale 1)
FONT_BOX, FONT_ARROW, FONT_TAG, FONT_NOTE, FONT_TITLE = 9.5, 8.0, 8.5, 8.5, 10.5
EM = 0.56  # average glyph width of the default sans font, in em (to size boxes and gaps to their text)
LINE_H = 1.3 / 72  # line height per point of font size
BOX_PAD = 0.13  # inches of margin around a box's text
ROW_GAP = 0.5  # between two branch rows (room for the lanes that leave a row by its top)
STAGE_GAP_MIN, JUNCTION_GAP_MIN = 0.8, 1.5
SHARD_GAP = 0.35  # shard tag to its data node
LANE = 0.23  # between two lanes of a row
PAIR = 0.045  # each direction of a lane off its centre
BUS_STEP = 0.16  # between two parallel routed lanes
MARGIN = 0.32  # left of everything / above everything to the first routed lane
LEGEND_H = 0.42
JUNCTION_NOTE_H = 0.3


@dataclass(frozen=True)
class Box:
    """One node as drawn.

    Attributes:
        node: node name; role: its role in the plan; device: its device profile.
        group: ``branch <d>``, ``trunk`` or ``aggregator``.
        layers: the blocks it holds (``adapter`` appended when it holds a junction adapter).
        aggregator: whether it also aggregates (FedAvg / relay).
        x, y: centre; w, h: size (inches at scale 1).
        energy_j_per_round: its energy per round from the ledger (None without a ledger).
        bytes_per_round: payload bytes it sends + receives per round (None without a ledger).
        row: its branch row, or None for a box as tall as every row (trunk, aggregator).
        column: its column, left to right.
        duty: what it does besides its layers (``+ averages``, ``+ relays``), or empty.
        hidden: whether it stands in a branch row left out of the drawing (``max_rows``).
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
    w: float = 0.0
    h: float = 0.0
    row: int | None = None
    column: int = 0
    duty: str = ""
    hidden: bool = False

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def top(self) -> float:
        return self.y + self.h / 2

    @property
    def bottom(self) -> float:
        return self.y - self.h / 2

    def lines(self, costs: bool = True) -> list[str]:
        """The text written in the box, line by line (``costs``: with its energy and bytes per round)."""
        out = [f"{self.node} · {self.device}"]
        blocks = [layer for layer in self.layers if layer != "adapter"]
        if blocks:
            out.extend(layers_label(blocks).split("\n"))
        if "adapter" in self.layers:
            out.append("+ adapter")
        if self.duty:
            out.append(self.duty)
        if costs and self.energy_j_per_round is not None:
            out.append(f"{self.energy_j_per_round:.3g} J · {human_bytes(self.bytes_per_round)}")
        return out


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
    """The data a branch trains on: where it lives, how many samples, which view (``concat``); its tag's
    centre and size, and whether its row is left out of the drawing."""

    branch: int
    node: str
    samples: int
    view: tuple[int, int] | None
    x: float
    y: float
    w: float = 0.0
    h: float = 0.0
    hidden: bool = False

    def text(self) -> str:
        rows = f"\nimage rows {self.view[0]}–{self.view[1] - 1}" if self.view else ""
        return f"data shard {self.branch}\n{self.samples} samples{rows}"


@dataclass
class PlanGraph:
    """Everything :func:`draw_plan` draws (see module docstring).

    Attributes:
        title: the plan in plain words (one sentence, no symbols).
        boxes: one per node, in plan order.
        arrows: one per (src, dst, kind) that carried bytes, in order of first message.
        shards: one per branch.
        groups: group name → its nodes.
        junction_at: blocks below the junction; junction: its mode.
        junction_x: x of the junction line (None when the plan has no branch/trunk boundary).
        rounds: rounds the per-round figures average over.
        totals: per-round bytes, energy and makespan (empty without a ledger).
        junction_note: the words under the junction line.
        x0, y0, width, height: the picture's extent (inches at scale 1).
        costs: whether the boxes show their energy and bytes per round.
        ellipsis: ``(x, y, text)`` standing for the branch rows left out (``max_rows``), or None.
        trunk_ellipsis: ``(x, y, text)`` standing for the trunk stages left out (``max_columns``), between
            the ends of the trunk boxes either side of it, or None.
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
    junction_note: str = ""
    x0: float = 0.0
    y0: float = 0.0
    width: float = 0.0
    height: float = 0.0
    costs: bool = True
    ellipsis: tuple[float, float, str] | None = None
    trunk_ellipsis: tuple[float, float, str] | None = None

    def box(self, node: str) -> Box:
        for b in self.boxes:
            if b.node == node:
                return b
        raise KeyError(node)


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 kB`` (decimal prefixes, as link rates are quoted)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def layers_label(blocks: list[str] | tuple[str, ...]) -> str:
    """``conv1, conv2`` for up to two blocks, else ``conv3…fc3`` and ``(6 layers)`` on a second line."""
    if len(blocks) <= 2:
        return ", ".join(blocks)
    return f"{blocks[0]}…{blocks[-1]}\n({len(blocks)} layers)"


def text_width(text: str, points: float) -> float:
    """Approximate width in inches of the widest line of ``text`` at ``points`` (see :data:`EM`)."""
    return max((len(line) for line in text.split("\n")), default=0) * EM * points / 72


JUNCTION_WORDS = {"shared": "branch outputs go straight into the trunk",
                  "adapter": "each branch ends in its own adapter",
                  "concat": "branch outputs joined along the image height"}


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def plan_words(plan: Plan) -> str:
    """The plan in plain words, e.g. ``Flexible parallel learning (FPL) on 6 nodes: 2 branches of 1 node
    each hold layers 1–2 (conv1, conv2) plus an adapter; a trunk of 4 nodes holds the other 6 layers;
    the branches are averaged every round.``"""
    D, n = len(plan.branches), plan.n_blocks
    sb = len(plan.branches[0].stages) if D else 0
    st, j = len(plan.trunk), plan.junction_at
    head = f"{LOOKS[plan.strategy].title} on {_plural(len(plan.nodes), 'node')}: "
    split = strategy(plan.strategy).client_server
    if not plan.trunk:  # centralized, fl
        body = ("one node holds all " if D == 1 else f"{D} nodes each hold a copy of all ") + f"{n} layers"
        if plan.aggregator:
            body += f"; {plan.aggregator} aggregates"
    elif not sb:  # mp
        body = f"the {n} layers are split over a chain of {_plural(st, 'node')}; the first holds the data"
    else:
        names = ", ".join(plan.block_names[:j]) if j <= 3 else f"{plan.block_names[0]}…{plan.block_names[j - 1]}"
        layers = f"layer 1 ({names})" if j == 1 else f"layers 1–{j} ({names})"
        if split:
            branch = f"{_plural(D, 'client')} each hold {layers}"
        else:
            branch = (f"{_plural(D, 'branch', 'branches')} of {_plural(sb, 'node')}"
                      + (f" each hold {layers}" if D > 1 else f" holds {layers}"))
        if plan.junction == "concat":
            branch += ", each seeing a strip of every image"
        elif plan.junction == "adapter":
            branch += " plus an adapter"
        rest = _plural(n - j, "layer")
        body = f"{branch}; " + (f"server {plan.trunk[0].node} holds the other {rest}" if split and st == 1
                                else f"a trunk of {_plural(st, 'node')} holds the other {rest}")
    every = "every round" if plan.sync_every == 1 else f"every {plan.sync_every} rounds"
    who = "clients" if split else "branches"
    if plan.sync == "fedavg":
        whose = f"the {who}' layers" if D > 1 else f"the {who[:-2] if who == 'branches' else who[:-1]}'s layers"
        sync = f"; the copies are averaged {every}" if not plan.trunk else f"; {whose} are averaged {every}"
    elif plan.sync == "relay":
        sync = f"; the {who} take turns, each handing its layers on through {plan.aggregator}"
    else:
        sync = ""
    return head + body + sync + "."


def shown_rows(branches: int, max_rows: int | None) -> list[int]:
    """The branch rows drawn: all of them, or the first ``max_rows - 1`` and the last (when that leaves
    out at least two rows: a note in place of one row would save nothing)."""
    if max_rows is None or branches <= max_rows + 1:
        return list(range(branches))
    return [*range(max(1, max_rows - 1)), branches - 1]


def trunk_gap_text(plan: Plan, shown: list[int]) -> str:
    """The words standing for the trunk stages left out of the drawing (``shown``: the stages drawn)."""
    left_out = [st for t, st in enumerate(plan.trunk) if t not in shown]
    if not left_out:
        return ""
    blocks = [b for st in left_out for b in st.blocks]
    return f"⋯ {left_out[0].node}–{left_out[-1].node} ⋯\n{layers_label(blocks).replace(chr(10), ' ')}"


def _layout(plan: Plan, boxes_text: dict[str, list[str]], shard_text: list[str],
            lane_labels: dict[tuple[int, int], int], rows: list[int], trunk_shown: list[int] | None = None):
    """Columns, rows and sizes (see module docstring).

    Args:
        boxes_text: node → its lines of text.
        shard_text: per branch, its tag text.
        lane_labels: (left column, right column) → characters of the longest label in that gap.
        rows: the branch rows drawn (:func:`shown_rows`); the others share one short row of their own.
        trunk_shown: the trunk stages drawn (:func:`shown_rows` of the trunk); the others share one
            narrow column of their own, where they are placed (None: all drawn).

    Returns:
        ``(geometry, shard_geometry, junction_x, (x_end, top, bottom, ellipsis_y))``: node → (x, y, w, h,
        row, column); per branch the tag's (x, y, w, h); the junction line's x (None without a
        branch/trunk boundary); the right edge, the top and bottom of the boxes and the y of the row
        that stands for the rows left out (None when all are drawn).
    """
    D = len(plan.branches)
    sb = max((len(b.stages) for b in plan.branches), default=0)
    line = FONT_BOX * LINE_H
    row_nodes = {st.node for b in plan.branches for st in b.stages}
    bw = max(1.0, max(text_width("\n".join(t), FONT_BOX) for t in boxes_text.values()) + 2 * BOX_PAD)
    bh = max(len(t) for n, t in boxes_text.items() if n in row_nodes or D == 1) * line + 2 * BOX_PAD
    bh = max(bh, 3 * LANE)
    tag_w = max(text_width(t, FONT_TAG) for t in shard_text) + 0.2
    tag_h = max(t.count("\n") + 1 for t in shard_text) * FONT_TAG * LINE_H + 0.14
    ys: dict[int, float] = {}
    y, ellipsis_y = 0.0, None
    for i, d in enumerate(rows):
        if i and d != rows[i - 1] + 1:  # rows left out: one short band (0.3 in and a row gap) stands for them
            ellipsis_y = y + bh / 2 - 0.15
            y -= 0.3 + ROW_GAP
        ys[d] = y
        y -= bh + ROW_GAP
    for d in range(max(D, 1)):
        ys.setdefault(d, ellipsis_y if ellipsis_y is not None else 0.0)
    top, bottom = ys[rows[0] if rows else 0] + bh / 2, ys[rows[-1] if rows else 0] - bh / 2
    tall_h, mid = top - bottom, (top + bottom) / 2

    def gap(left_col: int, minimum: float) -> float:
        """Room for the widest lane label in this gap: centred in a stage gap, at 38 % of the junction
        gap (left of the junction line at 78 %), clear of the arrow heads at either end."""
        label = text_width("x" * lane_labels.get((left_col, left_col + 1), 0), FONT_ARROW) + 0.1
        if minimum == JUNCTION_GAP_MIN:
            return max(minimum, (label / 2 + 0.15) / 0.38)
        return max(minimum, label + 0.3)

    geom: dict[str, tuple[float, float, float, float, int | None, int]] = {}
    x = tag_w + SHARD_GAP
    col = 0
    for s in range(sb):
        for b in plan.branches:
            if s < len(b.stages):
                geom[b.stages[s].node] = (x + bw / 2, ys[b.index], bw, bh, b.index, col)
        x += bw + (gap(col, STAGE_GAP_MIN) if s < sb - 1 else 0)
        col += 1
    junction_x = None
    if sb and plan.trunk:
        jg = gap(col - 1, JUNCTION_GAP_MIN)
        junction_x = x + 0.78 * jg
        x += jg
    gap_text = trunk_gap_text(plan, trunk_shown if trunk_shown is not None else list(range(len(plan.trunk))))
    gap_x = None
    for t, st in enumerate(plan.trunk):
        tall = D > 1
        y_t, h_t, row_t = (mid, tall_h, None) if tall else (ys[0], bh, 0)
        if trunk_shown is not None and t not in trunk_shown:  # left out: all share one narrow column
            if gap_x is None:
                gw = text_width(gap_text, FONT_NOTE) + 0.2
                gap_x, gap_col = x + gw / 2, col
                x += gw + STAGE_GAP_MIN
                col += 1
            geom[st.node] = (gap_x, y_t, bw, h_t, row_t, gap_col)
            continue
        geom[st.node] = (x + bw / 2, y_t, bw, h_t, row_t, col)
        x += bw + (gap(col, STAGE_GAP_MIN) if t < len(plan.trunk) - 1 else 0)
        col += 1
    if plan.aggregator and plan.aggregator not in geom:
        x += gap(col - 1, STAGE_GAP_MIN)
        geom[plan.aggregator] = (x + bw / 2, mid, bw, tall_h, None, col)
        x += bw
    shards = []
    for b in plan.branches:
        nx, ny, nw, _, _, _ = geom[b.data_node]
        shards.append((nx - nw / 2 - SHARD_GAP - tag_w / 2, ny if b.stages else ys[0], tag_w, tag_h))
    return geom, shards, junction_x, (x, top, bottom, ellipsis_y)


def link_words(plan: Plan, arrows: list[Arrow]) -> str:
    """On a topology: the path of every pair of nodes that exchange messages, hop by hop with each hop's link
    profile (``n0–n2: d0 –wifi4→ gw0 –ethernet→ server``), as a sentence; empty without a topology."""
    if plan.site is None:
        return ""
    order = {n.name: i for i, n in enumerate(plan.nodes)}
    point = {n.name: n.point for n in plan.nodes}
    pairs = sorted({tuple(sorted((a.src, a.dst), key=order.get)) for a in arrows},
                   key=lambda p: (order[p[0]], order[p[1]]))
    paths = [f"{a}–{b}: {point[a]}" + "".join(f" –{h.link.name}→ {h.dst}" for h in plan.site.path(point[a], point[b]))
             for a, b in pairs]
    return f" On topology {Path(plan.site.name).stem}: " + "; ".join(paths) + "." if paths else ""


def plan_graph(plan: Plan, ledger: Any = None, events: list | None = None, *, costs: bool = True,
               max_rows: int | None = None, max_columns: int | None = None) -> PlanGraph:
    """The drawing data of a plan.

    Args:
        plan: the plan.
        ledger: its priced ledger (per-node energy and bytes on the boxes), or a
            :class:`fplstudy.costs.dryrun.DryRun` (its ledger and events); None = dry-run the plan.
        events: its event stream (the arrows); None = from ``ledger`` when it is a DryRun, else a dry run.
        costs: write each node's energy and bytes per round in its box.
        max_rows: draw at most this many branch rows (the first ones and the last; one short row
            stands for the others, whose boxes, shards and arrows are marked ``hidden``); None = all.
        max_columns: draw at most this many trunk stages (the first ones and the last; one narrow
            column of words stands for the others, marked ``hidden``); None = all.

    Returns:
        A :class:`PlanGraph`.
    """
    from fplstudy.costs.dryrun import DryRun, cached_shard_sizes, dry_run

    shard_sizes = None
    if isinstance(ledger, DryRun):
        events = ledger.events if events is None else events
        shard_sizes = ledger.shard_sizes
        ledger = ledger.ledger
    if events is None or ledger is None:
        dry = dry_run(plan, shards=cached_shard_sizes(plan))
        events = dry.events if events is None else events
        ledger = dry.ledger if ledger is None else ledger
        shard_sizes = dry.shard_sizes
    if shard_sizes is None:
        shard_sizes = cached_shard_sizes(plan)
    rounds = max(1, len({ev.round for ev in events}))

    per_node = None
    if ledger is not None and len(ledger):
        lr = max(1, ledger["round"].nunique())
        per_node = ledger.groupby("node")[["energy_j", "bytes_tx", "bytes_rx"]].sum() / lr
    holds: dict[str, list[str]] = defaultdict(list)
    group: dict[str, str] = {}
    for b in plan.branches:
        for st in b.stages:
            holds[st.node].extend(st.blocks)
            group[st.node] = f"branch {b.index}"
        if b.adapter_node:
            holds[b.adapter_node].append("adapter")
    for st in plan.trunk:
        holds[st.node].extend(st.blocks)
        group[st.node] = "trunk"
    if plan.aggregator and plan.aggregator not in group:
        group[plan.aggregator] = "aggregator"
    duty = {"fedavg": "+ averages" if plan.trunk else "averages the copies", "relay": "+ relays",
            "none": ""}.get(plan.sync, "")
    draft = []
    for n in plan.nodes:
        e = bts = None
        if per_node is not None and n.name in per_node.index:
            e = float(per_node.loc[n.name, "energy_j"])
            bts = float(per_node.loc[n.name, "bytes_tx"] + per_node.loc[n.name, "bytes_rx"])
        device = n.device if n.point is None else f"{n.device.split('@')[0]} on {n.point}"
        draft.append(Box(n.name, n.role, device, group[n.name], tuple(holds.get(n.name, ())),
                         n.name == plan.aggregator, 0.0, 0.0, e, bts,
                         duty=duty if n.name == plan.aggregator else ""))

    acc: dict[tuple[str, str, str], list[float]] = {}
    for ev in events:
        if isinstance(ev, Transfer):
            row = acc.setdefault((ev.src, ev.dst, ev.kind), [0.0, 0.0])
            row[0] += ev.nbytes
            row[1] += 1
    arrows = [Arrow(s, d, k, b / rounds, m / rounds) for (s, d, k), (b, m) in acc.items()]

    rows = shown_rows(len(plan.branches), max_rows)
    trunk_shown = shown_rows(len(plan.trunk), max_columns)
    hidden_trunk = {st.node for t, st in enumerate(plan.trunk) if t not in trunk_shown}
    shard_list = [Shard(b.index, b.data_node, int(shard_sizes[b.index]) if b.index < len(shard_sizes) else 0,
                        b.view, 0.0, 0.0, hidden=b.index not in rows) for b in plan.branches]
    texts = {b.node: b.lines(costs) for b in draft}
    tags = [s.text() for s in shard_list]
    # first pass places the columns; the second sizes each gap to the longest label of its lanes
    geom, _, _, _ = _layout(plan, texts, tags, {}, rows, trunk_shown)
    lane_labels: dict[tuple[int, int], int] = defaultdict(int)
    for (left, right), label in _lane_label_texts(arrows, {n: g[5] for n, g in geom.items()},
                                                  {n: g[4] for n, g in geom.items()}).items():
        lane_labels[(left, right)] = max(lane_labels[(left, right)], len(label))
    geom, shard_geom, junction_x, (x_end, top, bottom, ellipsis_y) = _layout(plan, texts, tags, lane_labels, rows,
                                                                             trunk_shown)
    boxes = [Box(b.node, b.role, b.device, b.group, b.layers, b.aggregator, geom[b.node][0], geom[b.node][1],
                 b.energy_j_per_round, b.bytes_per_round, geom[b.node][2], geom[b.node][3], geom[b.node][4],
                 geom[b.node][5], b.duty,
                 b.node in hidden_trunk or geom[b.node][4] is not None and geom[b.node][4] not in rows)
             for b in draft]
    shards = [Shard(s.branch, s.node, s.samples, s.view, *shard_geom[i], hidden=s.hidden)
              for i, s in enumerate(shard_list)]
    groups: dict[str, list[str]] = defaultdict(list)
    for b in boxes:
        groups[b.group].append(b.node)
    tot = {}
    if ledger is not None and len(ledger):
        lr = max(1, ledger["round"].nunique())
        sent = ledger.loc[ledger["kind"] != "relay", "bytes_tx"]  # every message once
        tot = {"bytes_per_round": float(sent.sum()) / lr,
               "energy_j_per_round": float(ledger["energy_j"].sum()) / lr,
               "makespan_s_per_round": float(ledger.groupby("round")["round_makespan_s"].first().mean())}
    note = ""
    if junction_x is not None:
        j = plan.junction_at
        note = f"junction after layer {j} ({plan.block_names[j - 1]}): {JUNCTION_WORDS[plan.junction]}"
    g = PlanGraph(plan_words(plan) + link_words(plan, arrows), boxes, arrows, shards, dict(groups),
                  plan.junction_at, plan.junction,
                  junction_x, rounds, tot, note, costs=costs)
    if ellipsis_y is not None:
        left_out = [b for b in boxes if b.hidden]
        first = min(d for d in range(len(plan.branches)) if d not in rows)
        g.ellipsis = (min(s.x - s.w / 2 for s in shards), ellipsis_y,
                      f"⋮  {rows[-1] - first} more branches ({left_out[0].node}–{left_out[-1].node}), "
                      f"like the ones drawn")
    if hidden_trunk:
        g.trunk_ellipsis = (*geom[next(iter(hidden_trunk))][:2], trunk_gap_text(plan, trunk_shown))
    # extent: routed lanes above and left, junction note and legend below
    visible = [a for a in arrows if not (g.box(a.src).hidden or g.box(a.dst).hidden)]
    n_routed = len({a.kind for a in visible if not _neighbours(g.box(a.src), g.box(a.dst))})
    g.x0 = -(MARGIN + BUS_STEP * max(0, n_routed - 1) + 0.15) if n_routed else -0.1
    g.width = x_end + 0.15 - g.x0
    y_top = top + (_bus_base(n_routed) + BUS_STEP * max(0, n_routed - 1) + 0.15 if n_routed else 0.15)
    y_bottom = bottom - (JUNCTION_NOTE_H if note else 0.1) - (LEGEND_H if arrows else 0.0)
    g.y0, g.height = y_bottom, y_top - y_bottom
    return g


def _bus_base(kinds: int) -> float:
    """Height of the lowest lane over the picture above the boxes' tops: clear of the row-gap lanes
    above the first row (``kinds`` routed kinds of message)."""
    return MARGIN + (ROW_GAP - 0.24 if kinds > 1 else 0.0)


def _neighbours(a: Box, b: Box) -> bool:
    """Whether a message between ``a`` and ``b`` runs straight along a row: adjacent columns, and a
    row both boxes span."""
    if abs(a.column - b.column) != 1:
        return False
    return a.row is None or b.row is None or a.row == b.row


def _family_label(forward: Arrow | None, backward: Arrow | None) -> str:
    if forward and backward:
        if human_bytes(forward.bytes_per_round) == human_bytes(backward.bytes_per_round):
            return human_bytes(forward.bytes_per_round)
        return f"{human_bytes(forward.bytes_per_round)} → · ← {human_bytes(backward.bytes_per_round)}"
    one = forward or backward
    return human_bytes(one.bytes_per_round)


def _lane_label_texts(arrows: list[Arrow], column: dict[str, int], row: dict[str, int | None]
                      ) -> dict[tuple[int, int], str]:
    """Label text of every straight lane, keyed by the gap (left column, right column) it crosses;
    only the longest per gap matters to the layout, so one per gap is kept."""
    out: dict[tuple[int, int], str] = {}
    lanes: dict[tuple, dict[str, Arrow]] = defaultdict(dict)
    for a in arrows:
        ca, cb = column[a.src], column[a.dst]
        if abs(ca - cb) != 1 or (row[a.src] is not None and row[a.dst] is not None and row[a.src] != row[a.dst]):
            continue
        left, right = (a.src, a.dst) if ca < cb else (a.dst, a.src)
        lanes[(left, right, FAMILY[a.kind])]["fwd" if ca < cb else "bwd"] = a
    for (left, right, _), pair in lanes.items():
        text = _family_label(pair.get("fwd"), pair.get("bwd"))
        key = (column[left], column[right])
        if len(text) > len(out.get(key, "")):
            out[key] = text
    return out


@dataclass(frozen=True)
class Route:
    """How one arrow is drawn: its path (inches at scale 1), ending at the receiver, and where its
    label goes (None when the lane's other direction carries the label)."""

    arrow: Arrow
    path: tuple[tuple[float, float], ...]
    label: str | None
    label_xy: tuple[float, float] | None


def arrow_routes(g: PlanGraph) -> list[Route]:
    """Route every drawn arrow of a plan graph (see module docstring): straight lanes between
    neighbours; lanes above the row, left of and over the picture between the others.

    Returns:
        One :class:`Route` per arrow whose ends are both drawn, in the order of ``g.arrows``.
    """
    routes: dict[Arrow, Route] = {}
    lanes: dict[tuple[str, str], dict[str, dict[str, Arrow]]] = defaultdict(lambda: defaultdict(dict))
    routed: list[Arrow] = []
    drawn = [a for a in g.arrows if not (g.box(a.src).hidden or g.box(a.dst).hidden)]
    for a in drawn:
        src, dst = g.box(a.src), g.box(a.dst)
        if _neighbours(src, dst):
            left, right = (src, dst) if src.column < dst.column else (dst, src)
            lanes[(left.node, right.node)][FAMILY[a.kind]]["fwd" if left is src else "bwd"] = a
        else:
            routed.append(a)
    junction_gap = {(b.column, b.column + 1) for b in g.boxes if g.junction_x is not None
                    and b.right < g.junction_x and b.group.startswith("branch")}
    for (ln, rn), families in lanes.items():
        left, right = g.box(ln), g.box(rn)
        y0 = left.y if left.row is not None else right.y if right.row is not None else \
            (max(left.bottom, right.bottom) + min(left.top, right.top)) / 2
        present = [f for f in FAMILIES if f in families]
        frac = 0.38 if (left.column, right.column) in junction_gap else 0.5
        for i, fam in enumerate(present):
            y = y0 + ((len(present) - 1) / 2 - i) * LANE
            pair = families[fam]
            fwd, bwd = pair.get("fwd"), pair.get("bwd")
            text = _family_label(fwd, bwd)
            xy = (left.right + frac * (right.left - left.right), y)
            if fwd is not None:
                dy = PAIR if bwd is not None else 0.0
                routes[fwd] = Route(fwd, ((left.right, y + dy), (right.left, y + dy)), text, xy)
            if bwd is not None:
                dy = -PAIR if fwd is not None else 0.0
                routes[bwd] = Route(bwd, ((right.left, y + dy), (left.right, y + dy)),
                                    None if fwd is not None else text, None if fwd is not None else xy)

    # Routed lanes. Kind k (of K) takes the k-th lane up in the gap above its row, the k-th lane from
    # the right in the left margin and the k-th from the top over the picture, and enters a box
    # further right the higher its lane: so two kinds nest and never cross.
    kinds = [k for k in TRANSFER_KINDS if any(a.kind == k for a in routed)]
    K = len(kinds)
    top = max(b.top for b in g.boxes if not b.hidden)
    left_edge = min([b.left for b in g.boxes if not b.hidden] + [s.x - s.w / 2 for s in g.shards if not s.hidden])
    for a in routed:
        k = kinds.index(a.kind)
        step = (ROW_GAP - 0.24) / (K - 1) if K > 1 else 0.0
        margin_x = left_edge - MARGIN - (K - 1 - k) * BUS_STEP
        bus_y = top + _bus_base(K) + (K - 1 - k) * BUS_STEP

        def port(b: Box) -> list[tuple[float, float]]:
            """From the box's top edge to the lane over the picture, as a list of points."""
            if b.row is None or b.row == 0 and not b.group.startswith("branch"):  # nothing above it
                x = b.x + ((K - 1) / 2 - k) * 0.2
                return [(x, b.top), (x, bus_y)]
            x, gap_y = b.left + 0.15 + k * 0.14, b.top + 0.12 + k * step
            return [(x, b.top), (x, gap_y), (margin_x, gap_y), (margin_x, bus_y)]

        out_pts = port(g.box(a.src))
        in_pts = list(reversed(port(g.box(a.dst))))
        text = human_bytes(a.bytes_per_round)
        if len(out_pts) == 4 or len(in_pts) == 4:  # label on the row-gap stretch, which is this arrow's own
            x_box, x_margin, y = (out_pts[1][0], out_pts[2][0], out_pts[1][1]) if len(out_pts) == 4 else \
                (in_pts[2][0], in_pts[1][0], in_pts[2][1])
            width = text_width(text, FONT_ARROW) + 0.15  # several kinds: side by side, right of every margin lane
            xy = (left_edge - MARGIN + 0.1 + width / 2 + k * (width + 0.05), y) if K > 1 else \
                ((x_box + x_margin) / 2, y)
        else:
            xy = ((out_pts[-1][0] + in_pts[0][0]) / 2, bus_y)
        routes[a] = Route(a, tuple(out_pts + in_pts), text, xy)
    return [routes[a] for a in drawn]


def draw_plan(plan: Plan, path: str | Path | None = None, ax=None, ledger: Any = None, *, costs: bool = True,
              max_rows: int | None = None, max_columns: int | None = None, title: bool = True,
              max_scale: float = 1.2):
    """Draw a plan (see module docstring); save it when ``path`` is given.

    Args:
        plan: the plan.
        path: PNG (or any matplotlib format) to write; None = do not save.
        ax: matplotlib axes to draw on; the picture, its text included, is scaled to fit them.
            None = a new figure sized to the plan (scale 1, at most 20 × 16 inches).
        ledger: passed to :func:`plan_graph` (a DryRun, a ledger, or None for a fresh dry run).
        costs, max_rows, max_columns: passed to :func:`plan_graph`.
        title: write the plan in words (and its totals per round) above the picture.
        max_scale: the largest scale a small plan is drawn at on ``ax`` (text stays in proportion).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    g = plan_graph(plan, ledger, costs=costs, max_rows=max_rows, max_columns=max_columns)
    words = g.title
    if g.totals:
        words += (f"\nPer round: {human_bytes(g.totals['bytes_per_round'])} moved, "
                  f"{g.totals['energy_j_per_round']:.3g} J, {g.totals['makespan_s_per_round']:.3g} s")
    if ax is None:
        scale = min(1.0, 20 / g.width, 16 / g.height)
        width = max(g.width * scale, 7.0)
        title_h = 0.2 + FONT_TITLE * LINE_H * len(wrap_text(words, width, FONT_TITLE).split("\n")) if title else 0.1
        fig = plt.figure(figsize=(width, g.height * scale + title_h))
        ax = fig.add_axes((0, 0, 1, g.height * scale / (g.height * scale + title_h)))
    else:
        fig = ax.figure
        pos = ax.get_position()
        scale = min(max_scale, pos.width * fig.get_figwidth() / g.width, pos.height * fig.get_figheight() / g.height)
    pt = lambda size: size * scale  # noqa: E731  (font size and line width at this scale)
    if title:
        font_title = max(pt(FONT_TITLE), 9.0)
        ax.set_title(wrap_text(words, ax.get_position().width * fig.get_figwidth(), font_title), fontsize=font_title)

    fills = {"trunk": "#fdebd0", "aggregator": "#e8e0f0"}
    for b in g.boxes:
        if b.hidden:
            continue
        ax.add_patch(FancyBboxPatch((b.left, b.bottom), b.w, b.h, boxstyle="round,pad=0,rounding_size=0.08",
                                    fc=fills.get(b.group, "#dceaf7"), ec="0.25", lw=pt(1.1), zorder=2))
        ax.text(b.x, b.y, "\n".join(b.lines(g.costs)), ha="center", va="center", fontsize=pt(FONT_BOX),
                linespacing=1.25, zorder=3)
        if b.group in ("trunk", "aggregator") and b.row is None:
            word = "server" if strategy(plan.strategy).client_server and b.group == "trunk" else b.group
            ax.text(b.x, b.bottom + 0.08, word, ha="center", va="bottom", fontsize=pt(FONT_NOTE),
                    color="0.35", zorder=3)
    for s in g.shards:
        if s.hidden:
            continue
        ax.add_patch(FancyBboxPatch((s.x - s.w / 2, s.y - s.h / 2), s.w, s.h,
                                    boxstyle="round,pad=0,rounding_size=0.05", fc="#f3f3f3", ec="0.45",
                                    lw=pt(0.8), zorder=2))
        ax.text(s.x, s.y, s.text(), ha="center", va="center", fontsize=pt(FONT_TAG), zorder=3, linespacing=1.2)
        ax.plot([s.x + s.w / 2, g.box(s.node).left], [s.y, s.y], color="0.45", lw=pt(0.9), zorder=1)
    if g.ellipsis is not None:
        x, y, text = g.ellipsis
        ax.text(x, y, text, ha="left", va="center", fontsize=pt(FONT_NOTE), color="0.25", zorder=3)
    if g.trunk_ellipsis is not None:
        x, y, text = g.trunk_ellipsis
        ax.text(x, y, text, ha="center", va="center", fontsize=pt(FONT_NOTE), color="0.25", zorder=3,
                linespacing=1.3)

    if g.junction_x is not None:
        drawn = [b for b in g.boxes if not b.hidden]
        top, bottom = max(b.top for b in drawn), min(b.bottom for b in drawn)
        ax.plot([g.junction_x, g.junction_x], [top + 0.08, bottom - 0.05], color="0.35", ls=(0, (4, 3)),
                lw=pt(1.0), zorder=1)
        ax.text(g.junction_x, bottom - 0.1, g.junction_note, ha="center", va="top", fontsize=pt(FONT_NOTE),
                color="0.25", zorder=3)

    for r in arrow_routes(g):
        color = KIND_PALETTE[r.arrow.kind]
        xs, ys = zip(*r.path)
        ax.plot(xs, ys, color=color, ls=LINE_STYLE[r.arrow.kind], lw=pt(1.6), zorder=4,
                solid_joinstyle="miter", dash_joinstyle="miter")
        (x1, y1), (x2, y2) = r.path[-2], r.path[-1]
        length = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5 or 1.0
        head = min(0.1, length)
        ax.add_patch(FancyArrowPatch((x2 - head * (x2 - x1) / length, y2 - head * (y2 - y1) / length), (x2, y2),
                                     arrowstyle="-|>", mutation_scale=pt(11), color=color, lw=pt(1.2),
                                     shrinkA=0, shrinkB=0, zorder=4))
        if r.label is not None:
            ax.text(*r.label_xy, r.label, fontsize=pt(FONT_ARROW), color="0.1", ha="center", va="center",
                    zorder=5, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=color, lw=pt(0.8)))
    kinds = [k for k in TRANSFER_KINDS if any(a.kind == k for a in g.arrows)]
    if kinds:
        handles = [Line2D([], [], color=KIND_PALETTE[k], ls=LINE_STYLE[k], lw=pt(1.8), label=k.replace("_", " "))
                   for k in kinds]
        ax.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=pt(FONT_NOTE), frameon=False,
                  title="messages; each label: payload bytes per round (on a pair of opposite arrows: each way)",
                  title_fontsize=pt(FONT_NOTE), borderaxespad=0, borderpad=0.1, handlelength=3,
                  bbox_to_anchor=(g.x0 + g.width / 2, g.y0), bbox_transform=ax.transData)
    pos = ax.get_position()
    w_in, h_in = pos.width * fig.get_figwidth(), pos.height * fig.get_figheight()
    width, height = max(g.width, g.height * w_in / h_in), max(g.height, g.width * h_in / w_in)  # equal aspect
    ax.set_xlim(g.x0 - (width - g.width) / 2, g.x0 + (width + g.width) / 2)
    ax.set_ylim(g.y0 - (height - g.height) / 2, g.y0 + (height + g.height) / 2)
    ax.axis("off")
    if path is not None:
        save_figure(fig, path, tight=True)
    return fig


def wrap_text(text: str, width_in: float, points: float) -> str:
    """``text`` wrapped to ``width_in`` inches at ``points`` (see :data:`EM`), keeping its line breaks."""
    chars = max(30, int(width_in * 72 / (EM * points)))
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))
