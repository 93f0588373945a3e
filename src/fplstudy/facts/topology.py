"""Topologies: which device each node is and which links join them, and the path a message takes.

A topology file (YAML) describes a site:

.. code-block:: yaml

    description: 4 sensors on Wi-Fi 4 -> an access point -> a fog gateway on Ethernet
    nodes:                        # the points that compute, in order; each with its device profile
      s0: {device: rpi4}
      s1: {device: rpi4, flops_per_s: 5.0e+9}   # a device field given here overrides the profile's
      gw: {device: jetson_orin_nano}
    sites: [ap]                   # points of the network that compute nothing (access points, switches)
    links:
      - {between: [s0, ap], profile: wifi4}     # s0 -> ap at up_bps, ap -> s0 at down_bps
      - {between: [s1, ap], profile: wifi4}
      - {between: [ap, gw], profile: ethernet}
      - {from: s0, to: s1, profile: ble, rate: up}   # one direction only, at the rate named
      - {between: [s1, gw], profile: ble, up_bps: 1.0e+6}  # a link field given here overrides the profile's

A ``between: [a, b]`` link is both directions of one link profile: ``a -> b`` at its ``up_bps`` (``a`` is
the lower end: a station's uplink to its access point), ``b -> a`` at its ``down_bps``. A ``from/to`` link
is one direction, at the profile's ``up_bps`` or ``down_bps`` (``rate``). A link field (``up_bps``,
``down_bps``, ``tx_w``, ``rx_w``, ``latency_s``) given in the entry overrides the profile's, a
device field given in a node's entry the device profile's (status ``U``, the topology as source), each in
the range :data:`fplstudy.facts.profiles.BOUNDS` allows. No two entries may give the same direction of the same
pair. ``description`` and ``source`` say what the site is and where its shape comes from.

**The path and its price** (:meth:`Topology.path`, :func:`price_path`). A message takes the path of fewest
hops (ties: the least seconds per bit, then the names in order). How long it takes is the config key
``forwarding``:

- ``packet`` (the default): the relays forward it packet by packet, as IP routers, switches and access
  points do, so its hops carry it at once and it takes ``bits / (slowest hop's rate) + Σ_hops latency_h``
  (a fluid model: the few packets' worth of time the other hops add is left out). The emulated testbed
  measures this: a bulk transfer over a 40 Mbit/s and a 20 Mbit/s hop runs at 20 Mbit/s
  (tests/integration/test_testbed.py);
- ``message``: every relay receives the whole message before it sends it on (store-and-forward, as an
  application-level relay — a broker, a gateway that stores a model and forwards it — does), so it takes
  ``Σ_hops (bits / rate_h + latency_h)``.

Either way every hop carries the whole message: each hop spends its radio's ``tx_w`` over the hop's airtime
(``bits / rate``) at its sending end and ``rx_w`` over it at its receiving end (a relay in the middle of the
path spends both). A path of
one hop is priced exactly as :func:`fplstudy.costs.pricing.price_message` prices a message on one link (same float
operations), so a topology that links every pair of nodes directly with one profile — directed the way the
shorthand keys direct it (:func:`uniform_links`) — is the uniform site of the config keys ``link`` and
``node_devices``.

**In a plan** (config keys ``topology`` and ``placement``, :func:`place`). ``topology: FILE`` (a path, or
the name of a shipped example: ``fog_wifi``, ``phones_lte``, ``wearables_ble``, ``wearables_mcu``) gives every node of the
plan its device and the links between them; ``device``, ``server_device`` and ``link`` are then not used
and ``node_devices`` is refused. ``placement: {plan node: topology node}`` says which topology node hosts
which plan node; a plan node it leaves out is placed by the default rule: the nodes on the server side
(the aggregator, and trunk stages of a plan with a head) on the topology's nodes from the last one
backwards, every other node on its nodes from the first one on, in file order, skipping nodes already
taken. A topology node hosts at most one plan node, and every placed node must reach every other.
The ledger prices each message on its path (:func:`fplstudy.costs.pricing.message_pricer`): the sender's row
gets its hop's tx joules, the receiver's its hop's rx joules, a plan node that relays the message (a
gateway on the path) the joules of both its hops and the bytes it forwards (in ``bytes_tx`` and
``bytes_rx``, count 0, no seconds); a relay that hosts no plan node (a site, an unused node) is the
network's and not in the ledger. The makespan schedules a message as one task of the path's seconds on
the network the config key ``network`` says (per-hop contention is not modelled).

Errors (:class:`TopologyError`, a :class:`~fplstudy.config.ConfigError`) name the file, the entry and the
value, before any work: an unknown device or link profile, a duplicate node or site, a link to an unknown
point, a bad or out-of-range number, a direction given twice, a pair with no path
(:meth:`Topology.check_reachable`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from fplstudy.config import ConfigError, YamlError, read_yaml_file
from fplstudy.facts.profiles import (
    BOUNDS,
    DEVICE_FIELDS,
    LINK_FIELDS,
    DeviceProfile,
    FileError,
    LinkProfile,
    Profiles,
    check_number,
    file_mtime,
    load_profiles,
)

OVERRIDABLE = tuple(k for k in DEVICE_FIELDS if k in BOUNDS["devices"])  # numeric device fields a node may override
LINK_OVERRIDABLE = tuple(LINK_FIELDS)  # link fields a link entry may override
RATES = ("up", "down")  # which rate of its profile a directed link uses
SHIPPED_DIR = Path(__file__).with_name("topologies")  # the shipped examples, by name


class TopologyError(FileError):
    """A topology file that cannot be used; the message names the file, the entry and the value."""

    WHAT, KEY, CONFIG_KEY = "topology file", "entry", "topology"


@dataclass(frozen=True)
class Hop:
    """One direction of one link: ``src -> dst`` over ``link`` at ``rate_bps`` (its up or down rate)."""

    src: str
    dst: str
    link: LinkProfile
    rate_bps: float


@dataclass(frozen=True)
class Topology:
    """A site: its nodes (device profile names, per-node overrides), sites, and every directed hop."""

    name: str
    nodes: dict[str, str]  # node -> device profile name, in the file's order
    overrides: dict[str, dict[str, float]]  # node -> device field -> value
    sites: tuple[str, ...]
    hops: dict[str, tuple[Hop, ...]]  # point -> the hops leaving it (sorted by destination)
    description: str = ""
    _paths: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(self.nodes) + self.sites

    def device(self, node: str, profiles: Profiles) -> DeviceProfile:
        """``node``'s device profile with the topology's overrides applied."""
        dev = profiles.device(self.nodes[node])
        extra = self.overrides.get(node)
        if not extra:
            return dev
        status = dict(dev.status) | {k: "U" for k in extra}
        source = dict(dev.source) | {k: f"topology {self.name}, node {node}" for k in extra}
        return replace(dev, name=self.device_name(node), status=status, source=source, **extra)

    def device_name(self, node: str) -> str:
        """The device profile name a plan node placed on ``node`` carries: the profile's, or
        ``<profile>@<node>`` where the topology overrides some of its fields (:meth:`with_devices`)."""
        return f"{self.nodes[node]}@{node}" if self.overrides.get(node) else self.nodes[node]

    def with_devices(self, profiles: Profiles) -> Profiles:
        """``profiles`` and every overridden node's device profile, under :meth:`device_name`."""
        extra = {self.device_name(n): self.device(n, profiles) for n in self.overrides}
        return Profiles(profiles.devices | extra, profiles.links) if extra else profiles

    def path(self, src: str, dst: str) -> tuple[Hop, ...] | None:
        """The hops a message from ``src`` to ``dst`` takes (fewest hops; ties: least seconds per bit, then
        the names of the points in order); ``()`` for ``src == dst``; None when there is no path."""
        key = (src, dst)
        if key not in self._paths:
            self._paths[key] = self._route(src, dst)
        return self._paths[key]

    def _route(self, src: str, dst: str) -> tuple[Hop, ...] | None:
        if src == dst:
            return ()
        # Dijkstra on (hops, seconds per bit, names): a lexicographic cost, so the first arrival at dst is it
        heap: list[tuple[int, float, tuple[str, ...]]] = [(0, 0.0, (src,))]
        done: set[str] = set()
        while heap:
            n, spb, names = heapq.heappop(heap)
            here = names[-1]
            if here == dst:
                return tuple(next(h for h in self.hops[a] if h.dst == b) for a, b in zip(names, names[1:]))
            if here in done:
                continue
            done.add(here)
            for hop in self.hops.get(here, ()):
                if hop.dst not in done:
                    heapq.heappush(heap, (n + 1, spb + 1.0 / hop.rate_bps, names + (hop.dst,)))
        return None

    def check_reachable(self, pairs, where: str = "links") -> None:
        """Refuse the topology when a message of one of ``pairs`` ``(src, dst)`` has no path."""
        for src, dst in pairs:
            if self.path(src, dst) is None:
                raise TopologyError(self.name, where, f"{src} -> {dst}",
                                    f"no path from {src} to {dst}; add a link (between: [{src}, …]) that joins them")


def price_path(hops: tuple[Hop, ...], nbytes: int, forwarding: str = "packet"
               ) -> tuple[float, dict[str, float], dict[str, float]]:
    """Seconds and radio energy of one message of ``nbytes`` payload bytes along ``hops``.

    Args:
        hops: the path (:meth:`Topology.path`).
        nbytes: payload bytes.
        forwarding: ``packet`` (bits / the slowest hop's rate + Σ latency) or ``message`` (store-and-forward:
            Σ over hops of bits / rate + latency); see the module docstring.

    Returns:
        ``(seconds, tx_j, rx_j)``: the message's seconds; per point, the joules it spends sending (``tx_w`` ×
        the airtime ``bits / rate`` of each hop it sends on) and receiving (``rx_w`` × that hop's airtime).
    """
    bits = nbytes * 8
    seconds = 0.0
    tx: dict[str, float] = {}
    rx: dict[str, float] = {}
    for hop in hops:
        if forwarding == "message":
            seconds += bits / hop.rate_bps + hop.link.latency_s
        else:
            seconds += hop.link.latency_s
        airtime = bits / hop.rate_bps
        tx[hop.src] = tx.get(hop.src, 0.0) + hop.link.tx_w * airtime
        rx[hop.dst] = rx.get(hop.dst, 0.0) + hop.link.rx_w * airtime
    if forwarding != "message" and hops:
        seconds = bits / min(hop.rate_bps for hop in hops) + seconds  # one hop: bits / rate + latency, as price_message
    return seconds, tx, rx


def _mapping(file, key: str, raw: Any, what: str) -> dict:
    if not isinstance(raw, dict):
        raise TopologyError(file, key, raw, f"must be a mapping of {what}")
    return raw


def _override(file, key: str, raw: Any, section: str = "devices") -> float:
    return check_number(file, key, raw, BOUNDS[section][key.rsplit(".", 1)[-1]], TopologyError)


def uniform_links(nodes: dict[str, str], link: str) -> list[dict]:
    """Directed link entries joining every ordered pair of ``nodes`` (``{name: side}``, side ``edge`` or
    ``server``) with profile ``link``, directed as :func:`fplstudy.costs.pricing.price_message` directs a message:
    ``down`` from the server side to an edge node, ``up`` otherwise. A topology of them is the uniform site."""
    return [{"from": a, "to": b, "profile": link, "rate": "down" if sa == "server" and nodes[b] == "edge" else "up"}
            for a, sa in nodes.items() for b in nodes if a != b]


def parse_topology(doc: Any, profiles: Profiles, file: str | Path = "<topology>") -> Topology:
    """A topology from its YAML document (see the module docstring); refuses a bad entry naming it."""
    name = str(file)
    doc = _mapping(file, "(top level)", doc, "description, nodes, sites and links")
    unknown = set(doc) - {"description", "source", "nodes", "sites", "links"}
    if unknown:
        key = sorted(unknown)[0]
        raise TopologyError(file, key, doc[key], "unknown entry; a topology has description, source, nodes, sites, links")
    raw_nodes = _mapping(file, "nodes", doc.get("nodes"), "node names to {device: <profile>, …}")
    if not raw_nodes:
        raise TopologyError(file, "nodes", raw_nodes, "give at least one node")
    nodes: dict[str, str] = {}
    overrides: dict[str, dict[str, float]] = {}
    for node, entry in raw_nodes.items():
        where = f"nodes.{node}"
        entry = _mapping(file, where, entry, "device: <profile> and optional device fields")
        if "device" not in entry:
            raise TopologyError(file, f"{where}.device", None, "missing; name the node's device profile")
        device = str(entry["device"])
        if device not in profiles.devices:
            raise TopologyError(file, f"{where}.device", device,
                                f"unknown device profile; known: {', '.join(sorted(profiles.devices))}")
        for key in entry:
            if key != "device" and key not in OVERRIDABLE:
                raise TopologyError(file, f"{where}.{key}", entry[key],
                                    f"unknown field; a node has device and may override {', '.join(OVERRIDABLE)}")
        nodes[str(node)] = device
        extra = {k: _override(file, f"{where}.{k}", v) for k, v in entry.items() if k != "device"}
        if extra:
            overrides[str(node)] = extra
    sites_raw = doc.get("sites") or []
    if not isinstance(sites_raw, list):
        raise TopologyError(file, "sites", sites_raw, "must be a list of site names")
    sites: list[str] = []
    for i, site in enumerate(sites_raw):
        site = str(site)
        if site in nodes or site in sites:
            raise TopologyError(file, f"sites[{i}]", site, "duplicate name; every node and site needs its own")
        sites.append(site)
    points = set(nodes) | set(sites)
    links_raw = doc.get("links") or []
    if not isinstance(links_raw, list):
        raise TopologyError(file, "links", links_raw, "must be a list of {between: [a, b], profile: …} entries")
    directed: dict[tuple[str, str], Hop] = {}
    for i, entry in enumerate(links_raw):
        where = f"links[{i}]"
        entry = _mapping(file, where, entry, "between: [a, b] (or from:, to:, rate:) and profile:")
        shape = {"between", "profile"} if "between" in entry else {"from", "to", "profile", "rate"}
        if not shape <= set(entry) or set(entry) - shape - set(LINK_OVERRIDABLE):
            raise TopologyError(file, where, entry, "give between: [a, b] and profile:, or from:, to:, profile: "
                                                    f"and rate: up|down; optional overrides: {', '.join(LINK_OVERRIDABLE)}")
        profile = str(entry["profile"])
        if profile not in profiles.links:
            raise TopologyError(file, f"{where}.profile", profile,
                                f"unknown link profile; known: {', '.join(sorted(profiles.links))}")
        link = profiles.links[profile]
        extra = {k: _override(file, f"{where}.{k}", entry[k], "links") for k in LINK_OVERRIDABLE if k in entry}
        if extra:
            link = replace(link, name=f"{profile}@{where}", status=dict(link.status) | {k: "U" for k in extra},
                           source=dict(link.source) | {k: f"topology {name}, {where}" for k in extra}, **extra)
        if "between" in entry:
            ends = entry["between"]
            if not (isinstance(ends, list) and len(ends) == 2 and ends[0] != ends[1]):
                raise TopologyError(file, f"{where}.between", ends, "give two different points: [lower, upper]")
            a, b = map(str, ends)
            pairs = [(a, b, link.up_bps), (b, a, link.down_bps)]
        else:
            if entry["rate"] not in RATES:
                raise TopologyError(file, f"{where}.rate", entry["rate"], "must be up or down")
            a, b = str(entry["from"]), str(entry["to"])
            if a == b:
                raise TopologyError(file, f"{where}.to", b, "a link joins two different points")
            pairs = [(a, b, link.up_bps if entry["rate"] == "up" else link.down_bps)]
        for end in (a, b):
            if end not in points:
                raise TopologyError(file, where, end, f"unknown point; nodes and sites: {', '.join(sorted(points))}")
        for src, dst, rate in pairs:
            if (src, dst) in directed:
                raise TopologyError(file, where, f"{src} -> {dst}", "this direction is already linked; give each "
                                                                    "direction of a pair once")
            directed[(src, dst)] = Hop(src, dst, link, rate)
    hops: dict[str, list[Hop]] = {}
    for (src, _dst), hop in sorted(directed.items()):
        hops.setdefault(src, []).append(hop)
    return Topology(name=name, nodes=nodes, overrides=overrides, sites=tuple(sites),
                    hops={p: tuple(h) for p, h in hops.items()}, description=str(doc.get("description", "")))


def topology_path(name: str) -> Path:
    """The file of the config value ``topology``: a path, or the name of a shipped example."""
    path = Path(name)
    if file_mtime(path) is not None:
        return path
    shipped = SHIPPED_DIR / f"{name}.yaml"
    if path.parent == Path(".") and file_mtime(shipped) is not None:
        return shipped
    known = ", ".join(sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml")))
    raise ConfigError("topology", name, f"no such file; give a topology file's path or a shipped one: {known}")


@lru_cache(maxsize=32)
def _site_cached(file: str, mtime: float | None, profiles_file: str | None, profiles_mtime: float | None) -> Topology:
    return load_topology(file, load_profiles(profiles_file))


def site_of(cfg) -> Topology | None:
    """The topology of a config (key ``topology``, read once per file version), or None without one."""
    if cfg.topology is None:
        return None
    path = topology_path(cfg.topology)
    extra_mtime = file_mtime(Path(cfg.profiles_file)) if cfg.profiles_file else None
    return _site_cached(str(path), file_mtime(path), cfg.profiles_file, extra_mtime)


def place(site: Topology, nodes, server_side: set[str], placement: dict[str, str] | None) -> dict[str, str]:
    """Which topology node hosts each plan node (the module docstring's rule).

    Args:
        site: the topology.
        nodes: the plan's nodes (``.name``), in plan order.
        server_side: names of the nodes placed from the topology's last node backwards.
        placement: the config key ``placement`` (plan node -> topology node), or None.

    Raises:
        ConfigError: ``placement`` naming an unknown plan or topology node, two plan nodes on one topology
            node, or a plan with more nodes than the topology; ``topology`` when two placed nodes have no path.
    """
    placement = dict(placement or {})
    names = [n.name for n in nodes]
    for plan_node, point in placement.items():
        if plan_node not in names:
            raise ConfigError("placement", {plan_node: point},
                              f"no node named {plan_node!r} in this plan; nodes are {', '.join(names)}")
        if point not in site.nodes:
            raise ConfigError(f"placement.{plan_node}", point,
                              f"not a node of topology {site.name}; its nodes: {', '.join(site.nodes)}")
    taken: dict[str, str] = {}
    for plan_node, point in placement.items():
        if point in taken:
            raise ConfigError(f"placement.{plan_node}", point, f"already hosts {taken[point]}; a topology node "
                                                               "hosts one plan node")
        taken[point] = plan_node
    if len(names) > len(site.nodes):
        raise ConfigError("topology", site.name, f"has {len(site.nodes)} nodes and the plan {len(names)}; use a "
                                                 "topology with as many nodes or a plan with fewer")
    free_front = [p for p in site.nodes if p not in taken]
    where = dict(placement)
    for name in names:
        if name not in where and name in server_side:
            where[name] = free_front.pop()
    for name in names:
        if name not in where:
            where[name] = free_front.pop(0)
    points = [where[n] for n in names]
    site.check_reachable([(a, b) for a in points for b in points if a != b], where="topology")
    return where


def load_topology(path: str | Path, profiles: Profiles) -> Topology:
    """Read and check a topology file (see the module docstring). Which pairs must reach each other depends
    on the plan: its user calls :meth:`Topology.check_reachable` with the pairs its messages join."""
    try:
        doc = read_yaml_file(path)
    except YamlError as exc:
        raise TopologyError(path, exc.key or "(file)", exc.value if exc.key else str(path), exc.reason) from None
    return parse_topology(doc, profiles, path)
