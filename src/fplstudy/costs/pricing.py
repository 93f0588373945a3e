"""The pricing rules: one price for a compute call (:func:`price_compute`, per-block rates and fixed seconds,
cold calls, the batch's own work, stragglers) and one for a message (:func:`price_message` on one link,
:func:`message_pricer` on a topology's path), used by the event-by-event, reference and fast pricers of
:mod:`fplstudy.costs.ledger` alike.

Link direction: a message uses the link profile's ``down_bps`` when it goes from the server side (a
trunk stage or the aggregator) to an edge node (a branch stage holder; :attr:`fplstudy.plans.plan.Node.side`),
``up_bps`` otherwise. A call starts cold when its node has received a message since its previous call of
the same phase in the round, or when it is the node's first call of that phase in the round
(:func:`cold_calls`)."""

from __future__ import annotations

from collections import defaultdict

from fplstudy.facts.profiles import DeviceProfile, LinkProfile, Profiles
from fplstudy.facts.topology import price_path
from fplstudy.plans.events import Compute, Event
from fplstudy.plans.plan import Node
from fplstudy.plans.program import chunk_profiles, default_adapter_shape


def chunk_block_flops(plan, blocks: tuple[str, ...], in_shape: tuple[int, ...], phase: str,
                      input_grad: bool) -> tuple[tuple[str | None, int], ...]:
    """FLOPs per sample of each block of one forward or backward of a run of blocks: ``(name, FLOPs)`` per
    block, in order. The name is None where no block rate may price the block (a device's
    ``block_flops_per_s`` is measured on the model's own blocks at their own shapes, and on the junction adapter,
    ``adapter``, at the model's default junction: ``fplstudy calibrate``): blocks fed another shape than in the
    whole model (the views of a ``concat`` junction), and an adapter at another junction.

    Backward: a block computes its input's gradient when that input requires grad — the chunk's input
    when ``input_grad``, and any block's input once an earlier block of the chunk has parameters.
    """
    profs = chunk_profiles(plan, blocks, in_shape)
    if tuple(blocks) == ("adapter",):
        own = default_adapter_shape(plan.model, plan.profile) == tuple(in_shape)
    else:
        own = plan.profile[plan.block_names.index(blocks[0])].in_shape == tuple(in_shape)
    if phase == "forward":
        return tuple((p.name if own else None, p.flops_fwd) for p in profs)
    out, requires = [], input_grad
    for p in profs:
        out.append((p.name if own else None, p.flops_bwd if requires else p.flops_bwd_no_input_grad))
        requires = requires or p.params > 0
    return tuple(out)


def chunk_flops(plan, blocks: tuple[str, ...], in_shape: tuple[int, ...], phase: str, input_grad: bool) -> int:
    """FLOPs per sample of one forward or backward of a run of blocks (the sum of :func:`chunk_block_flops`)."""
    return sum(f for _, f in chunk_block_flops(plan, blocks, in_shape, phase, input_grad))


def price_compute(device: DeviceProfile, flops: int, model: str | None = None,
                  blocks: tuple[tuple[str | None, int], ...] = (), cold: bool = False,
                  opens: bool = False) -> tuple[float, float]:
    """Seconds and energy of one compute call on ``device``. Every pricing path (:func:`event_costs`,
    :func:`price`, :class:`Pricer`) calls it.

    Without block rates or fixed seconds (``device.block_flops_per_s`` and ``device.block_call_s`` have none
    for ``model``, or no ``blocks`` given): ``flops / flops_per_s + call_overhead_s``, exactly as always. With
    them: ``Σ over blocks of (block FLOPs / block rate + block fixed seconds) + call_overhead_s``, a block the
    rates do not name (or named None) at ``flops_per_s``, one the fixed seconds do not name with none. The
    fixed seconds make a call of few samples run below the block's rate, as a small batch does (fitted from
    two batch sizes by ``fplstudy calibrate --fit-batch``). A call that starts cold (:func:`cold_calls`:
    its node received a message since its previous call of the same phase, or it is the node's first of that
    phase in the round) takes ``1 + cold_factor`` times those seconds plus ``cold_s`` (defaults 0: the same
    floats as a warm call). The call that opens a batch on the node that feeds it in (:func:`opens_batch`) adds
    the device's ``batch_s`` first: the batch's work outside the blocks (gathering
    its samples, the optimizer step, zeroing the gradients; default 0, the same floats). Energy:
    ``active_w × seconds``.

    Args:
        device: the node's device profile.
        flops: FLOPs of the call (all its samples).
        model: the plan's model (whose block rates apply).
        blocks: the call's FLOPs per block, ``((name, FLOPs), ...)`` summing to ``flops``
            (:func:`chunk_block_flops` times the samples).
        cold: whether the call starts cold (:func:`cold_calls`).
        opens: whether the call opens a batch on its node (:func:`opens_batch`).

    Returns:
        ``(seconds, energy_j)``.
    """
    rates = device.block_flops_per_s.get(model) if blocks else None
    fixed = device.block_call_s.get(model) if blocks else None
    if not rates and not fixed:
        seconds = flops / device.flops_per_s + device.call_overhead_s
    else:
        rates, fixed = rates or {}, fixed or {}
        seconds = sum(f / rates.get(name, device.flops_per_s) + fixed.get(name, 0.0) for name, f in blocks) \
            + device.call_overhead_s
    if opens and device.batch_s:
        seconds += device.batch_s
    if cold and device.cold_factor:
        seconds *= 1.0 + device.cold_factor
    if cold and device.cold_s:
        seconds += device.cold_s
    return seconds, device.active_w * seconds


def price_call(model: str, device: DeviceProfile, chunk: tuple[int, tuple], samples: int,
                cold: bool = False, opens: bool = False) -> tuple[int, float, float]:
    """FLOPs, seconds and energy of a compute call of ``samples`` samples of a chunk ``(FLOPs per sample, its
    per-block split)``, ``cold``: whether it starts cold (:func:`cold_calls`), ``opens``: whether it opens a
    batch (:func:`opens_batch`): what every pricing path prices a :class:`~fplstudy.plans.events.Compute` with."""
    per_sample, split = chunk
    f = per_sample * samples
    if model in device.block_flops_per_s or model in device.block_call_s:
        s, e = price_compute(device, f, model, tuple((name, b * samples) for name, b in split), cold, opens)
    else:
        s, e = price_compute(device, f, cold=cold, opens=opens)
    return f, s, e


def opens_batch(ev: Compute, first_block: str) -> bool:
    """Whether compute event ``ev`` opens a batch on its node: the forward of the batch's first micro-batch
    through the model's first block (``first_block``), on the node that feeds the batch in. Before it, the node
    has gathered the batch's samples, and since its last call it has stepped the optimizer and zeroed the
    gradients (:func:`fplstudy.train.engine.run_batch`): the work a device's ``batch_s`` prices."""
    return ev.phase == "forward" and ev.micro == 0 and ev.blocks[0] == first_block


PHASES = ("forward", "backward")


def cold_keys(nodes) -> frozenset[tuple[str, str]]:
    """Every ``(node, phase)`` of ``nodes``: what :func:`cold_flow` keeps track of, all cold at a round's start."""
    return frozenset((n, p) for n in nodes for p in PHASES)


def cold_flow(events: list[Event], entry: frozenset[tuple[str, str]]
              ) -> tuple[list[bool], frozenset[tuple[str, str]], dict[tuple[str, str], bool]]:
    """Which compute calls of a run of ``events`` (a round's, or a part of one, in order) start cold.

    A call starts cold when its node has received a message since its previous call of the same phase (forward,
    backward) in the round, or when it is the node's first call of that phase in the round (the node comes back
    from a pause: the previous round's synchronisation, an evaluation). A wait for a message leaves what both
    phases work on cold, and a call of one phase warms only its own (measured on the testbed: in ``mp`` on 2
    nodes a stage's backward that follows its cold forward, and the data owner's forward that follows its cold
    backward, ran 1.4-1.5x their warm price, not their warm one). A ``labels`` message does not count: it
    leaves right behind the activations, so the receiver has it by the time it has computed on them. A
    ``(node, phase)``'s first call in the run looks at ``entry``: the ``(node, phase)`` s that are cold before the
    run (a round's first run: every one, :func:`cold_keys`).

    Returns:
        ``(flags, lead, ends)``: per event whether it is such a call (False for every message); the
        ``(node, phase)`` s whose first call in the run comes before any receive of their node in it (the only
        ones ``entry`` can change); per ``(node, phase)`` the run touches, whether it is cold after the run.
    """
    ends: dict[tuple[str, str], bool] = {}
    lead: set[tuple[str, str]] = set()
    flags = []
    for ev in events:
        if isinstance(ev, Compute):
            key = (ev.node, ev.phase)
            before = ends.get(key)
            if before is None:
                lead.add(key)
                before = key in entry
            flags.append(before)
            ends[key] = False
        else:
            flags.append(False)
            if ev.kind != "labels":  # they follow the activations the receiver has just computed on
                for phase in PHASES:
                    ends[(ev.dst, phase)] = True
    return flags, frozenset(lead), ends


def cold_calls(events: list[Event], nodes: frozenset[str]) -> list[bool]:
    """Per event of a run's stream (any rounds, in emission order), whether it is a compute call that starts
    cold (:func:`cold_flow`, each round on its own; ``nodes``: the plan's node names)."""
    by_round: dict[int, list[int]] = defaultdict(list)
    for i, ev in enumerate(events):
        by_round[ev.round].append(i)
    flags = [False] * len(events)
    every = cold_keys(nodes)
    for ids in by_round.values():
        for i, flag in zip(ids, cold_flow([events[i] for i in ids], every)[0]):
            flags[i] = flag
    return flags


def cold_entries(flows: list[tuple[frozenset, dict]], nodes: frozenset[str]) -> list[frozenset[tuple[str, str]]]:
    """The ``entry`` of each of a round's runs (in order) from the ``(lead, ends)`` of every run
    (:func:`cold_flow`), ``nodes``: the plan's node names (every ``(node, phase)`` cold at the round's start);
    each entry holds only the ``(node, phase)`` s it can matter to (the run's ``lead``)."""
    state = set(cold_keys(nodes))
    out = []
    for lead, ends in flows:
        out.append(frozenset(state & lead))
        for key, cold in ends.items():
            if cold:
                state.add(key)
            else:
                state.discard(key)
    return out


def prices_cold(devices) -> bool:
    """Whether any of ``devices`` prices a call that starts cold (``cold_factor`` or ``cold_s`` > 0): where none does, the
    pricing paths skip :func:`cold_calls` (nothing would change)."""
    return any(d.cold_factor > 0 or d.cold_s > 0 for d in devices)


def chunk(plan, ev: Compute) -> tuple[int, tuple]:
    split = chunk_block_flops(plan, ev.blocks, ev.in_shape, ev.phase, ev.input_grad)
    return sum(f for _, f in split), split


def price_message(link: LinkProfile, nbytes: int, src: Node, dst: Node) -> tuple[float, float, float]:
    """Seconds and radio energy of one message of ``nbytes`` payload bytes from ``src`` to ``dst``.

    Direction: ``down_bps`` when the message goes from the server side to an edge node (:attr:`Node.side`),
    ``up_bps`` otherwise. Every pricing path (:func:`event_costs`, :func:`price`, :class:`Pricer`) calls it.
    The radio's energy is its power times the message's airtime, ``bits / rate``, at each end (the latency is
    propagation: no radio works through it). The node's board is priced apart, at its ``idle_w`` for every
    second it does not compute (the ledger's ``idle`` row), so the radio's power is what sending or receiving
    adds to it.

    Returns:
        ``(seconds, tx_j, rx_j)``: bits / rate + latency (the sender and the receiver are both busy that
        long), ``tx_w`` × airtime at the sender, ``rx_w`` × airtime at the receiver.
    """
    bits = nbytes * 8
    rate = link.down_bps if src.side == "server" and dst.side == "edge" else link.up_bps
    airtime = bits / rate
    return airtime + link.latency_s, link.tx_w * airtime, link.rx_w * airtime


def message_pricer(plan, profiles: Profiles):
    """The price of one message of ``plan`` as a function ``(nbytes, src Node, dst Node) -> (seconds, tx_j,
    rx_j, relays)``; ``relays``: ``((plan node, joules), ...)`` of the plan nodes the message passes through.

    Without a topology: :func:`price_message` on the link profile ``config.link``, no relays. On a topology
    (config key ``topology``): :func:`fplstudy.facts.topology.price_path` on the path between the nodes' topology
    nodes, forwarded as the config key ``forwarding`` says (packet by packet, or store-and-forward); the sender
    pays its hop's tx joules, the receiver its hop's rx joules, a plan node on the path the tx and rx joules of
    its two hops; points that host no plan node are not charged.
    """
    site = plan.site
    if site is None:
        link = profiles.link(plan.config.link)
        return lambda nbytes, src, dst: (*price_message(link, nbytes, src, dst), ())
    hosted = {n.point: n.name for n in plan.nodes}
    forwarding = plan.config.forwarding

    def priced(nbytes: int, src: Node, dst: Node) -> tuple[float, float, float, tuple]:
        hops = site.path(src.point, dst.point)
        seconds, tx, rx = price_path(hops, nbytes, forwarding)
        relays = tuple((hosted[h.dst], tx[h.dst] + rx[h.dst]) for h in hops[:-1] if h.dst in hosted)
        return seconds, tx.get(src.point, 0.0), rx.get(dst.point, 0.0), relays
    return priced


def slowdowns(turnouts) -> dict[int, dict[str, float]]:
    """``{round: {node: slowdown}}`` of the stragglers of ``turnouts`` (:func:`fplstudy.plans.dynamics.plan_turnouts`,
    None: none; :attr:`fplstudy.plans.dynamics.Turnout.slow`)."""
    return {rnd: dict(t.slow) for rnd, t in enumerate(turnouts) if t.slow} if turnouts else {}
