"""Helpers of the teaching notebook (``notebooks/teach.ipynb``): the walk from centralized training to
FPL, per-node cost tables, the slider panel and its callback, the front plot and the lessons text.

Everything here prices plans with the dry run (no training), so a slider move costs one dry run of one
round: tens of milliseconds for the default cnn on digits. Costs are shown **per round**.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fplstudy.config import ConfigError, make_config
from fplstudy.dryrun import DryRun, dry_run
from fplstudy.plan import resolve

# The walk: strategy, how ``nodes`` is read, and what a newcomer should look at.
WALK = (
    ("centralized", "one node holds the whole model and all the data: no messages at all, "
                    "but one device does all the work and must hold everything"),
    ("fl", "every node trains the whole model on its own shard; an aggregator averages the copies "
           "(FedAvg): the only messages are parameters, once per round"),
    ("mp", "the layers are split across the nodes (model parallelism, the paper's distributed SGD): "
           "each node holds a slice, but activations and gradients cross every cut for every batch"),
    ("sl", "split learning: each client holds the first layers (the head) on its own data, a server holds "
           "the rest; clients take turns and pass the head's weights along"),
    ("sfl", "split-federated: like SL, but the clients train in parallel and their heads are averaged "
            "every round"),
    ("fpl", "flexible parallel learning: D branches (data parallel) meet a trunk split over nodes "
            "(model parallel) at a junction layer; the junction and the cuts are the knobs"),
)


def walk_configs(base: dict[str, Any], nodes: int) -> list[dict[str, Any]]:
    """The config of each step of :data:`WALK` (``centralized`` on 1 node, the others on ``nodes``)."""
    return [{**base, "strategy": s, "nodes": 1 if s == "centralized" else nodes} for s, _ in WALK]


def node_costs(dry: DryRun) -> pd.DataFrame:
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


def summary_row(dry: DryRun, label: str | None = None) -> dict[str, Any]:
    """One line of the walk's comparison table: per-round totals of a dry run."""
    rounds = dry.plan.config.rounds
    t = dry.totals
    return {"plan": label or dry.plan.strategy, "nodes_used": len(dry.plan.nodes),
            "bytes_per_round": t["bytes_total"] / rounds, "energy_j_per_round": t["energy_j"] / rounds,
            "energy_j_max_node_per_round": t["energy_j_max_node"] / rounds,
            "makespan_s_per_round": t["makespan_s"] / rounds, "memory_bytes_max_node": t["memory_bytes_max_node"],
            "model_params_ratio": t["model_params_ratio"]}


def walk(base: dict[str, Any], nodes: int) -> tuple[list[DryRun], pd.DataFrame]:
    """Dry-run every step of :data:`WALK`.

    Returns:
        ``(dry_runs, table)``: the dry runs, and one :func:`summary_row` per step.
    """
    from fplstudy.explore import _shards

    runs = []
    for values in walk_configs(base, nodes):
        plan = resolve(make_config(values))
        runs.append(dry_run(plan, shards=_shards(plan)))
    return runs, pd.DataFrame([summary_row(d) for d in runs])


def slider_values(base: dict[str, Any], nodes: int, branches: int, junction_at: int, junction: str,
                  device: str, link: str) -> dict[str, Any]:
    """The fpl config of one slider position (trunk stages = the nodes the branches leave over)."""
    values = {**base, "strategy": "fpl", "nodes": nodes, "branches": branches, "junction_at": junction_at,
              "junction": junction, "device": device, "link": link}
    if junction == "concat":
        values["partition"] = "features"
    return values


def price_choice(values: dict[str, Any]) -> DryRun:
    """Dry-run one slider position (raises ConfigError for an impossible combination)."""
    from fplstudy.explore import _shards

    plan = resolve(make_config(values))
    return dry_run(plan, shards=_shards(plan))


def draw_choice(dry: DryRun, reference: pd.DataFrame):
    """The slider's figure: the plan picture, its per-node energy by kind, and where it sits among the
    reference plans (the walk) on bytes vs energy per round.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from fplstudy.planfig import draw_plan

    fig = plt.figure(figsize=(15, 9))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.25, 1])
    draw_plan(dry.plan, ax=fig.add_subplot(grid[0, :]), ledger=dry)
    costs = node_costs(dry).set_index("node")
    ax = fig.add_subplot(grid[1, 0])
    costs[["compute_j", "radio_j", "idle_j"]].plot.bar(stacked=True, ax=ax, color=["tab:orange", "tab:purple", "0.7"])
    ax.set_ylabel("energy per round (J)")
    ax.set_title("per-node energy per round")
    ax = fig.add_subplot(grid[1, 1])
    ax.scatter(reference["bytes_per_round"] / 1e6, reference["energy_j_per_round"], color="0.5")
    for _, r in reference.iterrows():
        ax.annotate(r["plan"], (r["bytes_per_round"] / 1e6, r["energy_j_per_round"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    me = summary_row(dry, "this plan")
    ax.scatter([me["bytes_per_round"] / 1e6], [me["energy_j_per_round"]], color="tab:red", s=90, marker="*",
               zorder=3, label="slider plan")
    ax.set_xlabel("MB moved per round")
    ax.set_ylabel("energy per round, all nodes (J)")
    ax.set_title("trade-off: communication vs energy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_choice(base: dict[str, Any], reference: pd.DataFrame, **slider: Any) -> pd.DataFrame | None:
    """Slider callback: price the position, draw :func:`draw_choice`, show per-node costs; an impossible
    combination prints the config error instead.

    Returns:
        The per-node cost table (None when the combination is refused).
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    try:
        dry = price_choice(slider_values(base, **slider))
    except ConfigError as exc:
        print(f"not a valid plan: {exc}")
        return None
    fig = draw_choice(dry, reference)
    display(fig)
    plt.close(fig)
    costs = node_costs(dry)
    display(costs.round(3))
    return costs


def slider_panel(base: dict[str, Any], reference: pd.DataFrame, n_blocks: int, devices: list[str],
                 links: list[str], nodes: int = 4, branches: int = 2, junction_at: int = 2,
                 junction: str = "adapter", device: str = "rpi4", link: str = "wifi5"):
    """ipywidgets sliders bound to :func:`show_choice` (live in JupyterLab; a static widget description
    under papermill, where the notebook renders :func:`show_choice` once itself).

    Returns:
        The widget (display it).
    """
    import ipywidgets as w

    controls = {
        "nodes": w.IntSlider(value=nodes, min=2, max=12, description="nodes"),
        "branches": w.IntSlider(value=branches, min=1, max=11, description="branches D"),
        "junction_at": w.IntSlider(value=junction_at, min=1, max=n_blocks - 1, description="cut point"),
        "junction": w.Dropdown(options=["shared", "adapter", "concat"], value=junction, description="junction"),
        "device": w.Dropdown(options=devices, value=device, description="device"),
        "link": w.Dropdown(options=links, value=link, description="link"),
    }
    out = w.interactive_output(lambda **kw: show_choice(base, reference, **kw), controls)
    return w.VBox([w.HBox(list(controls.values())[:3]), w.HBox(list(controls.values())[3:]), out])


def plot_front(res, x: str = "bytes_per_round", y: str = "energy_j", ax=None):
    """All priced plans (grey) and the Pareto front (coloured by strategy) on two cost columns.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 5.5))
    plans = res.plans
    ax.scatter(plans[x], plans[y], s=10, color="0.8", label="every valid plan")
    sns.scatterplot(data=res.front, x=x, y=y, hue="strategy", style="junction", s=70, ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"{len(plans)} plans, {len(res.front)} on the front of {', '.join(res.objectives)}")
    return ax.figure


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
        best = {o: res.front.loc[res.front[o].idxmin(), "name"] for o in res.objectives}
        lines.append(f"- The search priced {len(res.plans)} valid plans in {res.seconds:.1f} s; "
                     f"{len(res.front)} are Pareto-optimal, by strategy: "
                     + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
        lines.append("- Cheapest plan per objective: " + "; ".join(f"{o}: `{n}`" for o, n in best.items()) + ".")
    return "\n".join(lines)
