"""Helpers of the teaching notebook (``notebooks/teach.ipynb``): the walk from centralized training to
FPL, per-node cost tables, the slider panel, the front plot and the lessons text.

Everything here prices plans with the dry run (no training), so a slider move costs one dry run of one
round: tens of milliseconds for the default cnn on digits, plus drawing. Costs are shown **per round**.

The sliders (:class:`SliderSpace`, :class:`SliderPanel`) set an FPL plan's nodes, branches, cut point
and junction. Not every combination is a plan (the trunk gets the nodes the branches leave over and
needs a layer for each; ``concat`` splits the image rows evenly), so the sliders constrain each other
in that order: each offers only values that, with the sliders before it, still complete to a valid
plan, and a move re-settles the sliders after it. Validity is decided by the same
:func:`fplstudy.plans.plan.resolve` that prices the plan; tests/unit/views/test_teach.py walks every reachable position.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from ipywidgets import VBox

from fplstudy.config import JUNCTIONS, ConfigError, make_config
from fplstudy.costs.dryrun import DryRun, cached_shard_sizes, dry_run
from fplstudy.plans.events import KINDS
from fplstudy.plans.plan import resolve
from fplstudy.plans.strategies import REGISTRY, strategy
from fplstudy.views.looks import LOOKS
from fplstudy.views.style import KIND_PALETTE, MARKERS, PALETTE, STRATEGY_ORDER

# The walk: strategy and what a newcomer should look at (each strategy's teaching text, registry order).
WALK = tuple((s, LOOKS[s].teaching) for s in REGISTRY)
OBJECTIVE_WORDS = {"energy_j": "energy", "energy_j_site": "energy of the nodes and the network",
                   "bytes_total": "data moved", "makespan_s": "time", "memory_bytes_max_node": "memory of the busiest node"}
OBJECTIVE_UNITS = {"energy_j": "J", "energy_j_site": "J", "bytes_total": "B", "makespan_s": "s",
                   "memory_bytes_max_node": "B"}
STRATEGY_NAMES = {s: LOOKS[s].short for s in REGISTRY}  # strategy -> its name in tables and labels
PANEL_FIGSIZE = (12.2, 6.8)  # inches at 100 dpi: 1220 × 680 px, under the sliders within a 1500 × 950 screen
PANEL_DPI = 100
PANEL_MAX_ROWS = 3  # branch rows the panel's plan picture draws (the others stand in one short row)
PANEL_MAX_COLUMNS = 3  # trunk stages the panel's plan picture draws (the others stand in one narrow column)
PANEL_SHAPES = ((PANEL_MAX_ROWS, PANEL_MAX_COLUMNS), (PANEL_MAX_ROWS, 2), (2, 2))  # fewer, while text is small
PANEL_MAX_HEIGHT = 8.2  # inches: the panel's figure grows to this for a plan picture that needs it
STEP_MAX_ROWS, STEP_MAX_COLUMNS = 4, 4  # the same for the walk's pictures, which keep their text at full size
MIN_FONT = 8.0  # points: the smallest text of the panel's figure at its display size
SI_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"))


def si(value: float | None, unit: str, digits: int = 3) -> str:
    """``value`` with an SI prefix and ``digits`` significant figures: ``si(2595704832, "FLOP")`` →
    ``2.60 GFLOP``, ``si(0.0123, "J")`` → ``12.3 mJ``, ``si(0, "B")`` → ``0 B``; None → an empty string."""
    if value is None or value != value:  # None or NaN
        return ""
    if value == 0:
        return f"0 {unit}"
    for factor, prefix in SI_PREFIXES:
        scaled = value / factor
        text = f"{scaled:#.{digits}g}".rstrip(".")
        if abs(float(text)) >= 1 or factor == SI_PREFIXES[-1][0]:
            if abs(float(text)) >= 1000 and factor != SI_PREFIXES[0][0]:
                continue  # rounding reached the next prefix (999.7 k → 1.00 M), taken by the larger factor
            return f"{text} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"

def walk_configs(base: dict[str, Any], nodes: int) -> list[dict[str, Any]]:
    """The config of each step of :data:`WALK` (``centralized`` on its 1 node, the others on ``nodes``)."""
    return [{**base, "strategy": s, "nodes": REGISTRY[s].fixed_nodes or nodes} for s, _ in WALK]


def node_cost_table(dry: DryRun) -> pd.DataFrame:
    """Per-node costs per round of a dry run: role, device, FLOPs, compute/radio/idle joules, bytes
    sent and received, peak memory.

    Returns:
        One row per node, in plan order.
    """
    led = dry.ledger
    rounds = max(1, led["round"].nunique())
    compute = led["kind"].isin(["forward", "backward"])
    idle = led["kind"] == "idle"
    radio = ~compute & ~idle
    rows = []
    mem = dry.memory.set_index("node")["total_bytes"] if "node" in dry.memory.columns else None
    for n in dry.plan.nodes:
        mine = led["node"] == n.name
        rows.append({
            "node": n.name, "role": n.role, "device": n.device,
            "flops": int(led.loc[mine, "flops"].sum() / rounds),
            "compute_j": float(led.loc[mine & compute, "energy_j"].sum() / rounds),
            "radio_j": float(led.loc[mine & radio, "energy_j"].sum() / rounds),
            "idle_j": float(led.loc[mine & idle, "energy_j"].sum() / rounds),
            "bytes_tx": int(led.loc[mine, "bytes_tx"].sum() / rounds),
            "bytes_rx": int(led.loc[mine, "bytes_rx"].sum() / rounds),
            "memory_bytes": int(mem[n.name]) if mem is not None and n.name in mem.index else None,
        })
    out = pd.DataFrame(rows)
    out["energy_j"] = out["compute_j"] + out["radio_j"] + out["idle_j"]
    return out


COST_COLUMNS = {  # column of node_cost_table / summary_row / the search -> (heading, unit of its values)
    "flops": ("work per round", "FLOP"), "compute_j": ("compute energy", "J"), "radio_j": ("radio energy", "J"),
    "idle_j": ("idle energy", "J"), "energy_j": ("energy per round", "J"), "bytes_tx": ("sent per round", "B"),
    "bytes_rx": ("received per round", "B"), "memory_bytes": ("peak memory", "B"),
    "bytes_per_round": ("data moved per round", "B"), "energy_j_per_round": ("energy per round, all nodes", "J"),
    "energy_j_max_node_per_round": ("energy per round, busiest node", "J"),
    "makespan_s_per_round": ("time per round", "s"), "memory_bytes_max_node": ("memory of the busiest node", "B"),
    "model_params_ratio": ("parameters deployed / model's", ""), "nodes_used": ("nodes used", ""),
    "energy_j_site": ("energy, nodes and network", "J"), "makespan_s": ("time", "s"),
}


def readable_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` for reading: each cost column (:data:`COST_COLUMNS`) under its heading, its values as
    text with units and SI prefixes (``2.60 GFLOP``, ``5.89 MB``); other columns as they are."""
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        heading, unit = COST_COLUMNS.get(column, (column, None))
        if unit is None or column == "nodes_used":
            out[heading] = table[column]
        elif unit:
            out[heading] = [si(v, unit) for v in table[column]]
        else:
            out[heading] = [f"{v:.3g}" for v in table[column]]
    return out


def html_table(table: pd.DataFrame) -> str:
    """HTML of ``table`` without an index, every cell in full (no truncated text), long text wrapping
    between words within its column."""
    with pd.option_context("display.max_colwidth", None):
        body = table.to_html(index=False, escape=True, border=0)
    return ('<div style="overflow-x:auto"><style>.fpl-table td{white-space:normal;word-break:normal;'
            'text-align:left;max-width:38em;vertical-align:top}</style>'
            + body.replace('class="dataframe"', 'class="dataframe fpl-table"', 1) + "</div>")


def front_table(res, placement: bool = False, rows: int = 15) -> pd.DataFrame:
    """The first ``rows`` plans of a search's Pareto front for reading: the plan in words (in full), its
    placement on a topology (``placement``), the nodes it uses and its costs with units."""
    front = res.front.head(rows)
    columns = [*(["placement"] if placement else []), "nodes_used", "bytes_per_round", "energy_j_site",
               "makespan_s", "memory_bytes_max_node"]
    out = readable_table(front[columns])
    out.insert(0, "plan", [readable_name(row) for _, row in front.iterrows()])
    return out.reset_index(drop=True)


def energy_by_kind(dry: DryRun) -> pd.DataFrame:
    """Joules per round of every node (rows, plan order) and kind of work (columns, :data:`KINDS`)."""
    led = dry.ledger
    rounds = max(1, led["round"].nunique())
    table = led.pivot_table(index="node", columns="kind", values="energy_j", aggfunc="sum", fill_value=0.0) / rounds
    return table.reindex(index=[n.name for n in dry.plan.nodes],
                         columns=[k for k in KINDS if k in table.columns], fill_value=0.0)


def summary_row(dry: DryRun, label: str | None = None) -> dict[str, Any]:
    """One line of the walk's comparison table: per-round totals of a dry run."""
    rounds = dry.plan.config.rounds
    t = dry.totals
    return {"plan": label or dry.plan.strategy, "strategy": dry.plan.strategy, "nodes": dry.plan.config.nodes,
            "nodes_used": len(dry.plan.nodes),
            "bytes_per_round": t["bytes_total"] / rounds, "energy_j_per_round": t["energy_j"] / rounds,
            "energy_j_max_node_per_round": t["energy_j_max_node"] / rounds,
            "makespan_s_per_round": t["makespan_s"] / rounds, "memory_bytes_max_node": t["memory_bytes_max_node"],
            "model_params_ratio": t["model_params_ratio"]}


def dry_run_of(values: dict[str, Any]) -> DryRun:
    """Resolve and dry-run one config (raises ConfigError for an impossible one)."""
    plan = resolve(make_config(values))
    return dry_run(plan, shards=cached_shard_sizes(plan))


def walk(base: dict[str, Any], nodes: int) -> tuple[list[DryRun], pd.DataFrame]:
    """Dry-run every step of :data:`WALK`.

    Returns:
        ``(dry_runs, table)``: the dry runs, and one :func:`summary_row` per step.
    """
    runs = [dry_run_of(values) for values in walk_configs(base, nodes)]
    return runs, pd.DataFrame([summary_row(d) for d in runs])


def show_step(dry: DryRun) -> pd.DataFrame:
    """One step of the walk in the notebook: what to look at (as text), the plan picture (at most
    :data:`STEP_MAX_ROWS` branch rows and :data:`STEP_MAX_COLUMNS` trunk stages, so its text keeps its
    size on a notebook's width) and its per-node costs with units.

    Returns:
        The per-node cost table (numbers; displayed with units).
    """
    import matplotlib.pyplot as plt
    from IPython.display import HTML, Markdown, display

    from fplstudy.views.planfig import draw_plan

    display(Markdown(dict(WALK)[dry.plan.strategy]))
    draw_plan(dry.plan, ledger=dry, max_rows=STEP_MAX_ROWS, max_columns=STEP_MAX_COLUMNS)
    plt.show()
    costs = node_cost_table(dry)
    display(HTML(html_table(readable_table(costs))))
    return costs


WALK_COLUMNS = {  # table column -> (title with unit, divisor)
    "bytes_per_round": ("data moved per round (MB)", 1e6),
    "energy_j_per_round": ("energy per round, all nodes (J)", 1.0),
    "makespan_s_per_round": ("time per round (s)", 1.0),
    "memory_bytes_max_node": ("memory of the busiest node (MB)", 1e6),
}


def plot_walk(table: pd.DataFrame):
    """The walk side by side: one bar chart per cost (:data:`WALK_COLUMNS`), one bar per strategy.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(WALK_COLUMNS), figsize=(15, 3.6))
    labels = [f"{STRATEGY_NAMES.get(s, s)}\n{n} node{'s' if n > 1 else ''}"
              for s, n in zip(table["strategy"], table["nodes_used"])]
    for ax, (column, (title, unit)) in zip(axes, WALK_COLUMNS.items()):
        ax.bar(labels, table[column] / unit, color=[PALETTE[s] for s in table["strategy"]], edgecolor="black",
               linewidth=0.5)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- sliders

SHAPE_SLIDERS = ("nodes", "branches", "junction_at", "junction")  # in the order they constrain each other
SLIDER_LABELS = {"nodes": "nodes", "branches": "branches", "junction_at": "cut point", "junction": "junction"}


def slider_values(base: dict[str, Any], nodes: int, branches: int, junction_at: int, junction: str,
                  device: str, link: str) -> dict[str, Any]:
    """The fpl config of one slider position (trunk stages = the nodes the branches leave over)."""
    values = {**base, "strategy": "fpl", "nodes": nodes, "branches": branches, "junction_at": junction_at,
              "junction": junction, "device": device, "link": link}
    if junction == "concat":
        values["partition"] = "features"
    return values


_PRICED: dict[str, DryRun] = {}  # slider position's config (as JSON) -> its dry run
_REFERENCES: dict[str, pd.DataFrame] = {}  # (base, nodes, device, link) as JSON -> the walk's table there
CACHE_SIZE = 256  # positions kept by price_choice; the oldest go first


def _key(*parts: Any) -> str:
    import json

    return json.dumps(parts, sort_keys=True, default=str)


def price_choice(values: dict[str, Any]) -> DryRun:
    """Dry-run one slider position (raises ConfigError for an impossible combination); a position
    priced before is not priced again (the dry run depends on the config alone)."""
    key = _key(values)
    if key not in _PRICED:
        if len(_PRICED) >= CACHE_SIZE:
            del _PRICED[next(iter(_PRICED))]
        _PRICED[key] = dry_run_of(values)
    return _PRICED[key]


def reference_walk(base: dict[str, Any], nodes: int, device: str, link: str) -> pd.DataFrame:
    """The walk's table (:func:`walk`) priced with ``device`` and ``link``, the keys a slider position
    sets (:func:`slider_values`), so the reference plans and the slider's plan share devices and links;
    kept per ``(base, nodes, device, link)``, so coming back to a device or link costs nothing."""
    key = _key(base, nodes, device, link)
    if key not in _REFERENCES:
        _REFERENCES[key] = walk({**base, "device": device, "link": link}, nodes)[1]
    return _REFERENCES[key]


@dataclass
class SliderSpace:
    """Which slider positions are plans, and what each shape slider offers given the ones before it.

    Attributes:
        base: the fixed part of every plan (dataset, model, rounds …).
        nodes: the node counts the panel offers (those with at least one plan are kept).
        block_names: the model's layers (the cut point goes from 1 to ``n_blocks - 1``).
        valid: every shape ``(nodes, branches, junction_at, junction)`` that resolves to a plan.
    """

    base: dict[str, Any]
    nodes: tuple[int, ...] = tuple(range(2, 13))
    block_names: tuple[str, ...] = field(init=False)
    valid: frozenset = field(init=False)

    @property
    def n_blocks(self) -> int:
        return len(self.block_names)

    def __post_init__(self):
        self.block_names = resolve(make_config({**self.base, "strategy": "centralized", "nodes": 1})).block_names
        valid = set()
        for shape in self.candidates():
            try:
                resolve(make_config(slider_values(self.base, *shape, device="rpi4", link="wifi5")))
            except ConfigError:
                continue
            valid.add(shape)
        self.valid = frozenset(valid)
        self.nodes = tuple(n for n in self.nodes if any(s[0] == n for s in valid))

    def candidates(self):
        """Every combination of the four shape sliders' full ranges."""
        for n in self.nodes:
            for d in range(1, n):
                for j in range(1, self.n_blocks):
                    for junction in JUNCTIONS:
                        yield (n, d, j, junction)

    def options(self, name: str, position: dict[str, Any]) -> list:
        """The values slider ``name`` offers: those that, with the sliders before it at ``position``,
        still complete to a valid plan."""
        k = SHAPE_SLIDERS.index(name)
        fixed = tuple(position[s] for s in SHAPE_SLIDERS[:k])
        values = {shape[k] for shape in self.valid if shape[:k] == fixed}
        return [v for v in JUNCTIONS if v in values] if name == "junction" else sorted(values)

    def settle(self, position: dict[str, Any], after: str | None = None) -> tuple[dict[str, Any], list[str]]:
        """Move every shape slider after ``after`` (all, when None) to the offered value nearest its
        own, in order.

        Returns:
            ``(position, moves)``: the settled position and one line per slider that had to move.
        """
        out = dict(position)
        moves = []
        start = 0 if after is None else SHAPE_SLIDERS.index(after) + 1
        for name in SHAPE_SLIDERS[start:]:
            offered = self.options(name, out)
            if not offered:
                raise ValueError(f"no valid plan with {self.describe(out, SHAPE_SLIDERS.index(name))}")
            if out[name] not in offered:
                if name == "junction":
                    new = offered[0] if "adapter" not in offered else "adapter"
                else:
                    new = min(offered, key=lambda v: (abs(v - out[name]), v))
                moves.append(f"{SLIDER_LABELS[name]} {out[name]} → {new}: {self.why(name, out)}")
                out[name] = new
        return out, moves

    def move(self, position: dict[str, Any], name: str, value: Any) -> tuple[dict[str, Any], list[str]]:
        """Set slider ``name`` to ``value`` (one of its :meth:`options`) and settle the sliders after it."""
        if name in SHAPE_SLIDERS and value not in self.options(name, position):
            raise ValueError(f"{SLIDER_LABELS[name]} does not offer {value!r} at {position}")
        return self.settle({**position, name: value}, name if name in SHAPE_SLIDERS else SHAPE_SLIDERS[-1])

    def describe(self, position: dict[str, Any], upto: int) -> str:
        """The first ``upto`` shape sliders' values in words: ``12 nodes, 5 branches and cut point 1``."""
        words = {"nodes": lambda v: _count(v, "node"), "branches": lambda v: _count(v, "branch", "branches"),
                 "junction_at": lambda v: f"cut point {v}", "junction": lambda v: f"junction {v}"}
        items = [words[s](position[s]) for s in SHAPE_SLIDERS[:upto]]
        return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else ""

    def why(self, name: str, position: dict[str, Any]) -> str:
        """Which values slider ``name`` offers at ``position`` and what limits them, in the sliders' own
        words (no config keys)."""
        k = SHAPE_SLIDERS.index(name)
        offered = self.options(name, position)
        where = self.describe(position, k)
        if name == "branches":
            n = position["nodes"]
            return (f"with {n} nodes, branches go from {offered[0]} to {offered[-1]}: each branch is one node and "
                    f"the trunk gets the nodes left over, at least one and at most {self.n_blocks - 1} "
                    f"(one layer each above the cut)")
        if name == "junction_at":
            trunk = position["nodes"] - position["branches"]
            return (f"with {where} the trunk has {_count(trunk, 'node')}, each needing a layer of its own above "
                    f"the cut: cut point {_ranges(offered)}")
        if name == "junction":
            return f"with {where}: junction {' or '.join(offered)}{self._concat_note(position)}"
        return f"{where}: {_ranges(offered)}"

    def _concat_note(self, position: dict[str, Any]) -> str:
        if "concat" in self.options("junction", position):
            return ""
        ok = sorted({s[1] for s in self.valid if s[0] == position["nodes"] and s[3] == "concat"})
        return (f" (concat splits the image rows evenly among the branches and needs a head that runs on a "
                f"strip: with {position['nodes']} nodes, branches {_ranges(ok)})" if ok else "")

    def hints(self, position: dict[str, Any]) -> list[str]:
        """One line per shape slider that offers less than its full range at ``position``."""
        out = []
        full = {"branches": range(1, position["nodes"]), "junction_at": range(1, self.n_blocks)}
        for name in ("branches", "junction_at", "junction"):
            offered = self.options(name, position)
            whole = JUNCTIONS if name == "junction" else full[name]
            if len(offered) < len(whole):
                out.append(self.why(name, position))
        return out


def _ranges(values: list) -> str:
    """``[1, 2, 3, 5]`` → ``1–3, 5``."""
    if values and not isinstance(values[0], int):
        return ", ".join(map(str, values))
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i == len(values) - 1 or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}–{v}")
            start = None
    return ", ".join(parts)


def draw_choice(dry: DryRun, reference: pd.DataFrame, where: str = ""):
    """The slider's figure: the plan picture, its per-node energy by kind, and where it sits among the
    reference plans (the walk, priced on the same devices and links: ``where`` names them in the title)
    on bytes vs energy per round. The plan picture goes above the two charts or, for plans with many
    branch rows, left of them: whichever draws it larger. Text is at least :data:`MIN_FONT` points at the
    figure's size, legends sit beside the data, and the reference plans' labels are placed clear of each
    other and of every point (:func:`place_labels`).

    Returns:
        The matplotlib Figure (not registered with pyplot, with an Agg canvas: display it, or save it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fplstudy.views.planfig import FONT_ARROW, LINE_H, draw_plan, human_bytes, plan_graph, wrap_text

    W, H = PANEL_FIGSIZE
    font, charts_h, side_w = 9.5, 0.4 * H, 0.58 * W  # the charts' band (top layout), the plan's column (side)
    legend_w = 1.3  # inches right of the energy chart for its legend

    def title_h(title: str, width: float) -> tuple[str, float]:
        text = wrap_text(title, width, font)
        return text, (text.count("\n") + 1) * font * LINE_H + 0.15

    # fewer rows and trunk stages drawn until the picture's smallest text (FONT_ARROW) reaches MIN_FONT;
    # a picture still too tall for that makes the figure taller (up to PANEL_MAX_HEIGHT)
    least = MIN_FONT / FONT_ARROW
    for rows, columns in PANEL_SHAPES:
        shape = dict(max_rows=rows, max_columns=columns)
        g = plan_graph(dry.plan, dry, costs=False, **shape)
        title = (g.title + f"\nPer round: {human_bytes(g.totals['bytes_per_round'])} moved, "
                 f"{si(g.totals['energy_j_per_round'], 'J')}, {si(g.totals['makespan_s_per_round'], 's')}")
        top_text, top_th = title_h(title, W - 0.2)
        side_text, side_th = title_h(title, side_w - 0.2)
        if (W - 0.2) / g.width >= least:
            H = max(H, min(PANEL_MAX_HEIGHT, top_th + charts_h + 0.1 + g.height * least))
        top_plan = (0.1, charts_h + 0.05, W - 0.2, H - top_th - charts_h - 0.05)  # inches: x, y, w, h
        side_plan = (0.1, 0.1, side_w - 0.2, H - side_th - 0.15)
        scale = {k: min(r[2] / g.width, r[3] / g.height) for k, r in (("top", top_plan), ("side", side_plan))}
        if max(scale.values()) >= least:
            break
    fig = Figure(figsize=(W, H), dpi=PANEL_DPI)
    FigureCanvasAgg(fig)
    inches = lambda x, y, w, h: (x / W, y / H, w / W, h / H)  # noqa: E731
    if scale["top"] >= scale["side"]:
        fig.text(0.5, 1 - 0.08 / H, top_text, ha="center", va="top", fontsize=font)
        plan_ax = fig.add_axes(inches(*top_plan))
        energy_ax = fig.add_axes(inches(0.8, 0.5, W / 2 - 0.8 - legend_w, charts_h - 0.95))
        trade_ax = fig.add_axes(inches(W / 2 + 0.8, 0.5, W / 2 - 0.95, charts_h - 0.95))
    else:
        fig.text(side_w / 2 / W, 1 - 0.08 / H, side_text, ha="center", va="top", fontsize=font)
        plan_ax = fig.add_axes(inches(*side_plan))
        x = side_w + 0.75
        energy_ax = fig.add_axes(inches(x, H / 2 + 0.45, W - x - 0.1 - legend_w, H / 2 - 0.8))
        trade_ax = fig.add_axes(inches(x, 0.5, W - x - 0.15, H / 2 - 1.15))
    draw_plan(dry.plan, ax=plan_ax, ledger=dry, costs=False, title=False, **shape)
    _energy_chart(energy_ax, energy_by_kind(dry))
    _trade_chart(trade_ax, dry, reference, where)
    return fig


def prefix_of(value: float) -> tuple[float, str]:
    """The SI factor and prefix that write ``value`` (and smaller values of an axis) with 1 to 3 digits
    before the point: ``(1e3, "k")`` for 516,000."""
    for factor, prefix in SI_PREFIXES:
        if abs(value) >= factor:
            return factor, prefix
    return SI_PREFIXES[-1]


def _energy_chart(ax, energy: pd.DataFrame) -> None:
    """Stacked bars of each node's energy per round by kind of work, the legend right of the axes."""
    total = energy.sum(axis=1)
    factor, prefix = prefix_of(float(total.max()) if len(total) else 1.0)
    bottom = None
    for kind in energy.columns:
        ax.bar(energy.index, energy[kind] / factor, bottom=bottom, color=KIND_PALETTE[kind],
               label=kind.replace("_", " "), edgecolor="black", linewidth=0.3)
        bottom = energy[kind] / factor if bottom is None else bottom + energy[kind] / factor
    ax.set_ylabel(f"{prefix}J per round", fontsize=9)
    ax.set_title("Energy of each node per round, by kind of work", fontsize=9.5)
    ax.tick_params(labelsize=MIN_FONT)
    ax.legend(fontsize=MIN_FONT, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, borderaxespad=0,
              handlelength=1.2)
    ax.set_ylim(0, float(bottom.max()) * 1.08 if bottom is not None else 1)
    ax.grid(axis="y", alpha=0.3)


def _trade_chart(ax, dry: DryRun, ref: pd.DataFrame, where: str) -> None:
    """The reference plans and this plan (a star) on data moved vs energy per round, each labelled."""
    from fplstudy.views.planfig import wrap_text

    me = summary_row(dry)
    xs = [*ref["bytes_per_round"], me["bytes_per_round"]]
    ys = [*ref["energy_j_per_round"], me["energy_j_per_round"]]
    (fx, px), (fy, py) = prefix_of(max(xs)), prefix_of(max(ys))
    xs, ys = [x / fx for x in xs], [y / fy for y in ys]
    for s in STRATEGY_ORDER:
        mine = [i for i, strat in enumerate(ref["strategy"]) if strat == s]
        if mine:
            ax.scatter([xs[i] for i in mine], [ys[i] for i in mine], color=PALETTE[s], marker=MARKERS[s], s=60,
                       edgecolor="black", linewidth=0.5, zorder=3)
    ax.scatter(xs[-1:], ys[-1:], color=PALETTE["fpl"], s=220, marker="*", edgecolor="black", linewidth=0.8,
               zorder=4)
    fixed = {s.name: s.fixed_nodes for s in REGISTRY.values() if s.fixed_nodes is not None}  # centralized: 1
    walk_nodes = sorted(set(ref.loc[~ref["strategy"].isin(list(fixed)), "nodes"]))
    ax.set_xlabel(f"data moved per round ({px}B)", fontsize=9)
    ax.set_ylabel(f"energy per round, all nodes ({py}J)", fontsize=9)
    on = f" on {where}" if where else ""
    title = (f"Where this plan sits: the walk's plans priced at {', '.join(map(str, walk_nodes))} nodes{on}\n"
             f"({''.join(f'{name} at {n}; ' for name, n in fixed.items())}nodes used in brackets)")
    ax.set_title(wrap_text(title, ax.get_position().width * ax.figure.get_figwidth(), 9), fontsize=9)
    ax.tick_params(labelsize=MIN_FONT)
    ax.grid(alpha=0.3)
    labels = [f"{STRATEGY_NAMES[s]} ({n})" for s, n in zip(ref["strategy"], ref["nodes_used"])]
    place_labels(ax, xs, ys, [*labels, f"this plan ({me['nodes_used']})"], sizes=[60] * len(labels) + [220])


LABEL_OFFSETS = [(dx * r, dy * r) for r in (1.0, 2.2, 3.6) for dx, dy in
                 ((7, 2), (7, -2), (-7, 2), (-7, -2), (0, 8), (0, -8))]  # points from the labelled point


def _align(dx: float, dy: float) -> dict[str, str]:
    """A label's alignment at offset ``(dx, dy)`` from its point: its near corner or edge on the point."""
    return {"ha": "left" if dx > 0 else "right" if dx < 0 else "center", "va": "bottom" if dy > 0 else "top"}


def place_labels(ax, xs, ys, labels, sizes, fontsize: float = MIN_FONT, margin: float = 0.12) -> list:
    """Label scatter points where the label overlaps no other label, no point and stays inside the axes:
    the first of :data:`LABEL_OFFSETS` that does (the least overlapping, when none does), with a thin line
    back to its point when it sits further out. Sets the axes' limits (``margin`` of the data's span on
    each side) first, since where a label lands on screen depends on them.

    Args:
        sizes: each point's marker area (points², as ``scatter``'s ``s``).

    Returns:
        The annotations, in the order of ``labels``.
    """
    import numpy as np
    from matplotlib.transforms import Bbox

    for values, setter in ((xs, ax.set_xlim), (ys, ax.set_ylim)):
        lo, hi = min(values), max(values)
        pad = (hi - lo) * margin or abs(hi) * margin or 1.0
        setter(lo - pad, hi + pad)
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    taken = [Bbox.from_extents(cx - r, cy - r, cx + r, cy + r)
             for (cx, cy), r in zip(centres, (np.sqrt(sizes) / 2 * px))]  # every marker
    frame = ax.get_window_extent(renderer)

    def cost(box) -> float:
        def area(other) -> float:
            w = min(box.x1, other.x1) - max(box.x0, other.x0)
            h = min(box.y1, other.y1) - max(box.y0, other.y0)
            return max(w, 0.0) * max(h, 0.0)
        return sum(area(other) for other in taken) + box.width * box.height - area(frame)

    out = []
    for x, y, text in zip(xs, ys, labels):
        ann = ax.annotate(text, (x, y), xytext=LABEL_OFFSETS[0], textcoords="offset points", fontsize=fontsize,
                          zorder=5)
        best = None
        for dx, dy in LABEL_OFFSETS:
            ann.set_position((dx, dy))
            ann.update(_align(dx, dy))
            c = cost(ann.get_window_extent(renderer))
            if best is None or c < best[0]:
                best = (c, dx, dy)
            if c <= 0:
                break
        _, dx, dy = best
        ann.remove()
        far = abs(dx) > 7 or abs(dy) > 8  # a line back to the point
        ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, zorder=5,
                          **_align(dx, dy), arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6, shrinkA=0, shrinkB=4) if far else None)
        taken.append(ann.get_window_extent(renderer))
        out.append(ann)
    return out


def figure_png(fig) -> bytes:
    """PNG bytes of a figure at its own dpi."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


class SliderPanel(VBox):
    """The slider panel: sliders for nodes, branches, cut point, junction, device and link above the
    figure of :func:`draw_choice` and the per-node cost table. With ``topology`` in ``base`` every node's
    device and every message's path come from it: the device and link menus are disabled and a line says
    which topology node hosts each plan node.

    The shape sliders offer only what :class:`SliderSpace` allows, so every reachable position is a
    plan; a line under the sliders says what limits them. Should a position still be refused (a
    position set by code), the figure of the last valid plan stays on screen with the reason above it.
    Displayed outside a live kernel (papermill, nbconvert), the panel also carries a PNG of its figure.
    """

    def __init__(self, base: dict[str, Any], reference: pd.DataFrame, devices: list[str], links: list[str],
                 space: SliderSpace, nodes: int = 6, branches: int = 2, junction_at: int = 2,
                 junction: str = "adapter", device: str = "rpi4", link: str = "wifi5"):
        import ipywidgets as w

        self.base, self.reference, self.space = base, reference, space
        fixed = [s for s, st in REGISTRY.items() if st.fixed_nodes is not None]
        walk_nodes = reference.loc[~reference["strategy"].isin(fixed), "nodes"]
        self.walk_nodes = int(walk_nodes.iloc[0]) if len(walk_nodes) else nodes  # the reference plans' nodes
        self.dry: DryRun | None = None
        self.png: bytes = b""
        self._pngs: dict[str, bytes] = {}  # position (as JSON) -> its figure's PNG
        self._busy = False
        start, _ = space.settle({"nodes": min(space.nodes, key=lambda n: abs(n - nodes)), "branches": branches,
                                 "junction_at": junction_at, "junction": junction})
        style = {"description_width": "80px"}
        slider = dict(layout=w.Layout(width="360px"), style=style, continuous_update=False)
        self.controls = {
            "nodes": w.SelectionSlider(options=list(space.nodes), value=start["nodes"], description="nodes",
                                       **slider),
            "branches": w.SelectionSlider(options=space.options("branches", start), value=start["branches"],
                                          description="branches", **slider),
            "junction_at": w.SelectionSlider(options=self._cut_options(start), value=start["junction_at"],
                                             description="cut point", **slider),
            "junction": w.ToggleButtons(options=space.options("junction", start), value=start["junction"],
                                        description="junction", style={"description_width": "80px",
                                                                       "button_width": "80px"}),
            "device": w.Dropdown(options=devices, value=device, description="device",
                                 layout=w.Layout(width="220px"), style=style),
            "link": w.Dropdown(options=links, value=link, description="link", layout=w.Layout(width="220px"),
                               style=style),
        }
        self.site = base.get("topology")
        if self.site:  # the topology gives every node its device and every pair its path: these two do nothing
            for name in ("device", "link"):
                self.controls[name].disabled = True
                self.controls[name].tooltip = f"set by topology {self.site}"
        self.status = w.HTML(layout=w.Layout(min_height="36px"))
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width=f"{PANEL_FIGSIZE[0] * PANEL_DPI:.0f}px"))
        self.table = w.HTML()
        for name, control in self.controls.items():
            control.observe(self._on_change(name), names="value")
        c = self.controls
        super().__init__([w.HBox([c["nodes"], c["branches"], c["junction_at"]]),
                          w.HBox([c["junction"], c["device"], c["link"]]), self.status, self.image, self.table])
        self.show(self.position())

    def references(self, device: str, link: str) -> pd.DataFrame:
        """The reference plans the figure compares against: the walk at :attr:`walk_nodes` priced with
        ``device`` and ``link`` (:func:`reference_walk`); on a topology, which sets both, the table given."""
        if self.site:
            return self.reference
        return reference_walk(self.base, self.walk_nodes, device, link)

    def _cut_options(self, position: dict[str, Any]) -> list[tuple[str, int]]:
        """The cut point's options, labelled with the layer the cut follows."""
        names = self.space.block_names
        return [(f"{j} ({names[j - 1]})", j) for j in self.space.options("junction_at", position)]

    def position(self) -> dict[str, Any]:
        """The sliders' current values."""
        return {name: control.value for name, control in self.controls.items()}

    def _on_change(self, name: str):
        def handler(change):
            if self._busy:
                return
            self.set(name, change["new"])
        return handler

    def set(self, name: str, value: Any) -> None:
        """Move one slider (as a person would) and redraw: the sliders after it re-settle to values
        their new options allow (:meth:`SliderSpace.move`)."""
        position = {**self.position(), name: value}
        shape, moves = self.space.settle({s: position[s] for s in SHAPE_SLIDERS},
                                         name if name in SHAPE_SLIDERS else SHAPE_SLIDERS[-1])
        position.update(shape)
        self._busy = True
        try:
            for s in SHAPE_SLIDERS[SHAPE_SLIDERS.index(name) + 1 if name in SHAPE_SLIDERS else len(SHAPE_SLIDERS):]:
                control = self.controls[s]
                options = self._cut_options(position) if s == "junction_at" else self.space.options(s, position)
                control.options = options
                control.value = position[s]
        finally:
            self._busy = False
        self.show(self.position(), moves)

    def show(self, position: dict[str, Any], moves: list[str] | None = None) -> bool:
        """Price and draw ``position``; an impossible one keeps the last figure and says why.

        Returns:
            Whether the position was a plan.
        """
        try:
            dry = price_choice(slider_values(self.base, **position))
        except ConfigError as exc:
            shape = {s: position[s] for s in SHAPE_SLIDERS}
            hints = self.space.hints(shape) if position["nodes"] in self.space.nodes else []
            self.status.value = (f"<b>not a plan</b>: {'; '.join(hints) or exc}. The figure still shows the last "
                                 f"plan.")
            return False
        key = _key(position)
        if key not in self._pngs:  # the figure depends on the position alone: drawn once per position
            if len(self._pngs) >= CACHE_SIZE:
                del self._pngs[next(iter(self._pngs))]
            where = f"topology {self.site}" if self.site else f"{position['device']}, {position['link']}"
            self._pngs[key] = figure_png(draw_choice(dry, self.references(position["device"], position["link"]),
                                                     where))
        self.dry, self.png = dry, self._pngs[key]
        self.image.value = self.png
        d = position
        lines = [f"<b>{d['nodes']} nodes</b> = {_count(d['branches'], 'branch', 'branches')} of one node + a trunk "
                 f"of {_count(d['nodes'] - d['branches'], 'node')}"
                 + (f"; moved {', '.join(m.split(':')[0] for m in moves)} to stay a plan" if moves else "") + "."]
        lines += [f"<span style='color:#555'>{h[0].upper() + h[1:]}.</span>"
                  for h in self.space.hints({s: d[s] for s in SHAPE_SLIDERS})]
        if self.site:
            where = ", ".join(f"{n.name} on {n.point}" for n in dry.plan.nodes)
            lines.append(f"<span style='color:#555'>Devices and links: topology {self.site} ({where}), so the "
                         f"device and link menus are off.</span>")
        self.status.value = "<br>".join(lines)
        self.table.value = html_table(readable_table(node_cost_table(dry)))
        return True

    def _repr_mimebundle_(self, **kwargs):
        import base64

        bundle = super()._repr_mimebundle_(**kwargs)
        if self.png:
            bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        return bundle


def slider_panel(base: dict[str, Any], reference: pd.DataFrame, devices: list[str], links: list[str],
                 nodes: int = 6, branches: int = 2, junction_at: int = 2, junction: str = "adapter",
                 device: str = "rpi4", link: str = "wifi5", max_nodes: int = 12) -> SliderPanel:
    """The teaching notebook's :class:`SliderPanel` for FPL plans of 2 to ``max_nodes`` nodes.

    Returns:
        The panel (display it).
    """
    space = SliderSpace(base, tuple(range(2, max_nodes + 1)))
    return SliderPanel(base, reference, devices, links, space, nodes, branches, junction_at, junction, device, link)


def plot_front(res, x: str = "bytes_per_round", y: str = "energy_j", ax=None):
    """All priced plans (grey) and the Pareto front (coloured and shaped by strategy) on two cost columns.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    labels = {"bytes_per_round": ("data moved per round (MB)", 1e6), "bytes_total": ("data moved (MB)", 1e6),
              "energy_j": ("energy of all rounds, all nodes (J)", 1.0), "makespan_s": ("time of all rounds (s)", 1.0),
              "memory_bytes_max_node": ("memory of the busiest node (MB)", 1e6)}
    (x_label, x_unit), (y_label, y_unit) = labels.get(x, (x, 1.0)), labels.get(y, (y, 1.0))
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 5.5))
    plans, front = res.plans, res.front
    ax.scatter(plans[x] / x_unit, plans[y] / y_unit, s=10, color="0.8", label="every valid plan")
    for s in STRATEGY_ORDER:
        part = front[front["strategy"] == s]
        if len(part):
            ax.scatter(part[x] / x_unit, part[y] / y_unit, s=60, color=PALETTE[s], marker=MARKERS[s],
                       edgecolor="black", linewidth=0.5, label=f"{STRATEGY_NAMES[s]} on the front")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    nodes = sorted(set(plans["nodes"]))
    ax.set_title(f"{len(plans)} plans for {', '.join(map(str, nodes))} nodes; {len(front)} on the Pareto front\n"
                 f"(least {', '.join(OBJECTIVE_WORDS.get(o, o.replace('_', ' ')) for o in res.objectives)})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax.figure


def readable_name(row: dict[str, Any] | pd.Series) -> str:
    """A plan of the search (a row of :attr:`fplstudy.costs.search.Exploration.plans`) in words, e.g.
    ``FPL: 5 branches + a trunk of 1 node, cut after layer 7, shared junction, no averaging`` (each
    strategy's :attr:`fplstudy.plans.strategies.Strategy.describe`)."""
    return strategy(row["strategy"]).describe(row)


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def lessons(table: pd.DataFrame, res) -> str:
    """A short "what did we learn", written from the walk's table and the search's front (markdown)."""
    t = table.set_index("plan")
    mb = t["bytes_per_round"] / 1e6
    lines = [
        f"- **Centralized** moves nothing but needs {t.loc['centralized', 'memory_bytes_max_node'] / 1e6:.2f} MB "
        f"on one node and {t.loc['centralized', 'makespan_s_per_round']:.3g} s per round.",
        f"- **FL** moves {mb['fl']:.3g} MB per round (whole-model parameters up and down) and keeps the "
        f"round at {t.loc['fl', 'makespan_s_per_round']:.3g} s, but every client holds the whole model "
        f"({t.loc['fl', 'memory_bytes_max_node'] / 1e6:.2f} MB peak).",
        f"- **MP**'s most loaded node needs {t.loc['mp', 'memory_bytes_max_node'] / 1e6:.2f} MB "
        f"(centralized: {t.loc['centralized', 'memory_bytes_max_node'] / 1e6:.2f} MB), and it moves "
        f"{mb['mp']:.3g} MB per round ({mb['mp'] / max(mb['fl'], 1e-12):.3g}× FL): activations and gradients "
        f"cross every cut for every batch.",
        f"- **SL/SFL** move {mb['sl']:.3g} / {mb['sfl']:.3g} MB per round; SL's clients take turns "
        f"({t.loc['sl', 'makespan_s_per_round']:.3g} s per round) where SFL's run in parallel "
        f"({t.loc['sfl', 'makespan_s_per_round']:.3g} s).",
        f"- **FPL** (default shape) moves {mb['fpl']:.3g} MB, spends {t.loc['fpl', 'energy_j_per_round']:.3g} J "
        f"per round, and deploys {t.loc['fpl', 'model_params_ratio']:.3g}× the original parameters (its "
        f"junction adapters).",
    ]
    if len(res.front):
        counts = res.front["strategy"].value_counts()
        best = {o: res.front.loc[res.front[o].idxmin()] for o in res.objectives}
        lines.append(f"- The search priced {len(res.plans)} valid plans in {res.seconds:.1f} s; "
                     f"{len(res.front)} are Pareto-optimal, by strategy: "
                     + ", ".join(f"{STRATEGY_NAMES.get(k, k)} {v}" for k, v in counts.items()) + ".")
        lines.append("- Cheapest plan per objective: "
                     + "; ".join(f"least {OBJECTIVE_WORDS.get(o, o.replace('_', ' '))}: *{readable_name(row)}* "
                                 f"({si(row[o], OBJECTIVE_UNITS[o]) if o in OBJECTIVE_UNITS else f'{row[o]:.3g}'})"
                                 for o, row in best.items()) + ".")
    return "\n".join(lines)
