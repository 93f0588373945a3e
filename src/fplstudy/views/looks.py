"""How each strategy is drawn and taught: title, short name, teaching text, colour and marker per strategy
(and per legend label where fpl is split by junction). Kept apart from :mod:`fplstudy.plans.strategies`, the
training code, so a colour or a sentence never changes the code hash of a run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Look:
    """How one strategy appears.

    Attributes:
        title: the strategy in words, as the plan picture's heading says it.
        short: the short name of tables and teaching labels (``FL``).
        teaching: what a newcomer should look at in this step of the teaching walk.
        colour: hex colour in every figure (from seaborn's ``colorblind`` palette).
        marker: matplotlib marker in every figure.
        junctions: junction → ``(colour, marker)`` for a strategy whose plans are labelled per junction
            (:attr:`fplstudy.plans.strategies.Strategy.label_junctions`).
    """

    title: str
    short: str
    teaching: str
    colour: str
    marker: str
    junctions: dict[str, tuple[str, str]] | None = None


LOOKS: dict[str, Look] = {
    "centralized": Look(
        title="Centralized training", short="centralized",
        teaching="one node holds the whole model and all the data: no messages at all, "
                 "but one device does all the work and must hold everything",
        colour="#0173B2", marker="*"),
    "fl": Look(
        title="Federated learning (FL)", short="FL",
        teaching="every node trains the whole model on its own shard; an aggregator averages the copies "
                 "(FedAvg): the only messages are parameters, once per round",
        colour="#029E73", marker="o"),
    "mp": Look(
        title="Model parallelism (MP)", short="MP",
        teaching="the layers are split across the nodes (model parallelism, the paper's distributed SGD): "
                 "each node holds a slice, but activations and gradients cross every cut for every batch",
        colour="#DE8F05", marker="s"),
    "sl": Look(
        title="Split learning (SL)", short="SL",
        teaching="split learning: each client holds the first layers (the head) on its own data, a server holds "
                 "the rest; clients take turns and pass the head's weights along",
        colour="#D55E00", marker="^"),
    "sfl": Look(
        title="Split-federated learning (SFL)", short="SFL",
        teaching="split-federated: like SL, but the clients train in parallel and their heads are averaged "
                 "every round",
        colour="#CC78BC", marker="v"),
    "fpl": Look(
        title="Flexible parallel learning (FPL)", short="FPL",
        teaching="flexible parallel learning: D branches (data parallel) meet a trunk split over nodes "
                 "(model parallel) at a junction layer; the junction and the cuts are the knobs",
        colour="#CA9161", marker="D",
        junctions={"shared": ("#CA9161", "D"), "adapter": ("#FBAFE4", "P"), "concat": ("#949494", "X")}),
}
