"""The emulated edge testbed (``--backend emulated``): the plan on its own network, measured against the model.

Every node of the plan becomes a Mininet host (its own network namespace and address, ``10.0.0.<i+1>``)
joined to one Linux bridge by a link shaped to the link profile's rate (on a topology: the topology's own
links and relays, below), and gets a CPU share that makes
it as fast as its device profile relative to this machine's calibrated speed. The plan then runs on the
``distributed`` backend, one rank per host, rendezvous at the first host (the multi-host path: the store
binds to ``10.0.0.1``, gloo to each host's interface). Each rank traces its own work; afterwards the
traces are set beside the ledger's prediction for the same plan priced with the emulated profiles.

The arithmetic (:func:`emulation`):

- ``C`` is the calibrated training FLOP/s of one core of this machine for the plan's model and batch size
  (a device profile ``calibrated_<model>_b<batch>``, written by ``fplstudy calibrate`` and loaded with
  ``profiles_file``);
- a node of device FLOP/s ``F`` needs ``F / C`` cores to be as fast as its device. With the time scale
  ``s`` it gets ``F / (C s)`` cores, and the emulation runs ``s`` times slower than the real devices
  would; links are slowed by the same ``s``, so every predicted figure is scaled by ``s`` alike;
- ``s`` is the smallest value >= 1 (or the config key ``testbed_time_scale``, if larger) such that no node
  needs more than :data:`CORE_CAP` of a core, all nodes together no more than :data:`MACHINE_CAP` of
  the machine's cores, and no link more than Mininet's 1000 Mbit/s;
- a link of rate ``R`` (the profile's rate is TCP goodput, as iperf3 reports it) is shaped to
  ``R / s / TCP_GOODPUT_SHARE`` on the wire, since ``tc`` counts whole Ethernet frames: the goodput is then
  ``R / s``. Per host, its egress takes the rate the ledger gives its outgoing messages and its ingress
  the rate of its incoming ones: an edge node sends at ``up_bps`` and receives at ``down_bps``, a
  server-side node (trunk stage, aggregator) the other way round;
- the CFS period of a host is the shortest that allows the kernel's minimum quota of 1 ms
  (``1 ms / share``), so that a throttled node is slowed evenly rather than in long bursts.

**On a topology** (config key ``topology``; :func:`wiring`, :func:`network_spec`). The testbed builds the
topology itself, as far as the plan's paths reach: every plan node is a host, every relay on a path
between two plan nodes that hosts none (a site, an unused node) a router, every link that a path uses a
Mininet link between its two ends with each direction shaped on its sender's side to that direction's
rate (``rate / s / TCP_GOODPUT_SHARE``; a direction the topology does not have is left unshaped and
unused), and every host and router forwards IPv4 along static routes that are the model's paths
(:meth:`fplstudy.facts.topology.Topology.path`). IP routes by destination, so a topology whose relay would have
to send one destination's messages two ways is refused (a tie broken differently from two starting
points). Link ``l`` is the subnet ``10.<1 + l // 256>.<l % 256>.0/24``; host ``i`` keeps its address
``10.0.0.<i+1>`` on an interface of its own (``<host>-id``), the same on every path, which gloo binds to
and the routes name as the source. The prediction prices the plan on the topology with every rate divided
by ``s`` and no latency, on the ``inbox`` network (:mod:`fplstudy.costs.makespan`): each pair's path its own, as
each host has a link per neighbour, and a message moves once its receiver has posted the receive, as the
distributed backend runs. The model's ``forwarding`` (packet by packet by default) is what the routers
do; two paths that share a hop share its rate on the testbed but not in the model.

How a node's CPU is slowed is the config key ``testbed_cpu``:

- ``cfs`` (default): Mininet's ``CPULimitedHost``, CFS bandwidth control with the share as quota. Exact for
  long computations; but a node that waited starts each period with a fresh quota of at least 1 ms (the
  kernel's minimum), so chunks shorter than about 1 ms of this machine's CPU run at full speed, and
  chunks of a few ms are slowed only in part. Model-parallel stages of a small model at small batches
  are such chunks: their busy seconds come out below the model's;
- ``dilate``: the hosts are not throttled; each node stretches every chunk it computes to its CPU time
  divided by its share, which slows chunks of any length by exactly the share. The node keeps the
  stretched time on its own clock and sleeps the difference once, before its next message: its chunks
  between two messages run back to back, as on the slower device, rather than each after a sleep (a
  call that follows an idle period runs slower here). The machine's load still lengthens the CPU time.

What the testbed does not emulate: latency (``netem`` is not available on every kernel: links have a
rate and no added delay, and the emulated profiles set ``latency_s`` to 0); radio energy and power; a
node's memory. The machine's cores are shared with whatever else runs on it: a busy machine makes the
measured times longer than the model's.

Requirements, checked before anything is built (one line naming the fix): root; Mininet for the system
Python (``apt-get install mininet bridge-utils cgroup-tools iperf3``), whose module lives in
``/usr/lib/python3/dist-packages``. The project's venv never imports it: :mod:`fplstudy.testbed.netctl` runs
under ``/usr/bin/python3`` as a subprocess and starts the nodes (the venv's Python) inside the hosts.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fplstudy.config import Config, ConfigError
from fplstudy.costs.dryrun import plan_events
from fplstudy.costs.ledger import cold_calls, event_costs, price
from fplstudy.facts.profiles import DeviceProfile, Profiles
from fplstudy.facts.topology import Hop, Topology
from fplstudy.plans.events import Compute
from fplstudy.plans.plan import Plan
from fplstudy.train.distributed import DILATE_ENV, GATE_ENV, TRACE_ENV, DistributedError
from fplstudy.train.results import atomic_write_text, write_rows_csv
from fplstudy.train.runner import prepare

SYSTEM_PYTHON = "/usr/bin/python3"  # where the Debian package installs the mininet module
NETCTL = Path(__file__).with_name("netctl.py")
TCP_GOODPUT_SHARE = 1448 / 1514  # TCP payload per Ethernet frame at MTU 1500 with timestamps (RFC 7323)
MAX_LINK_MBIT = 1000.0  # Mininet's TCLink refuses rates above this (Mbit/s on the wire)
CORE_CAP = 0.9  # most of one core a node may get: one training thread, plus gloo's I/O
MACHINE_CAP = 0.8  # most of the machine's cores all nodes may get together (the testbed's own work needs some)
MIN_QUOTA_US = 1000  # the kernel's smallest CFS quota
MAX_PERIOD_US = 100_000  # the longest CFS period used (a share below 1 % of a core would need longer)
MAX_TIME_SCALE = 100.0  # beyond this a round takes too long to emulate: fewer nodes, or more cores
NODE_MEMORY_BYTES = 6e8  # resident size of one node process (torch, the data, the model): refuse beyond RAM
MASTER_PORT = 29500  # inside the hosts' namespaces nothing else listens
IDENTITY_SUFFIX = "id"  # on a topology, host i's address 10.0.0.<i+1> is on its interface <host>-id (netctl)
MAX_LINKS = 1000  # links of a topology the testbed numbers (network_spec's subnets)
TESTBED_COLUMNS = ("round", "node", "warmup", "measured_round_s", "predicted_round_s", "measured_busy_s",
                   "predicted_busy_s", "measured_send_s", "predicted_send_s", "measured_recv_s", "predicted_recv_s",
                   "time_scale")
CALL_COLUMNS = ("round", "node", "phase", "blocks", "samples", "cold", "measured_s", "predicted_s")


def calibrated_name(model: str, batch_size: int) -> str:
    """The device profile that holds this machine's calibrated training FLOP/s for ``model`` at ``batch_size``
    (the rate depends on the batch: small batches leave the CPU's vector units and caches idle)."""
    return f"calibrated_{model}_b{batch_size}"


@dataclass(frozen=True)
class Emulation:
    """How each node of a plan is emulated (see the module docstring for the arithmetic).

    Attributes:
        nodes: node names, in plan order (host ``i`` plays ``nodes[i]``).
        time_scale: the common slow-down ``s`` of compute and links (>= 1).
        cores: cores of this machine.
        calibrated_flops_per_s: ``C``, one core's training FLOP/s for the plan's model.
        calibrated_call_s: ``o``, one core's overhead per compute call.
        core_share: per node, the share of one core it gets (``F / (C s)``).
        period_us: per node, the CFS period (quota = share × period >= 1 ms).
        egress_mbit / ingress_mbit: per node, the shaped rates on the wire (Mbit/s) of what it sends and
            what it receives.
        profiles: the emulated profiles: device FLOP/s and link rates divided by ``s``, no latency; block
            FLOP/s of the plan's model from this machine's calibrated ones, ``c_b F / (C s)``.
        wiring: on a topology, the points, links and routes emulated (:func:`wiring`); None on the uniform site
            (``egress_mbit`` and ``ingress_mbit`` are then the hosts' shaped rates; on a topology they are 0).
        site: on a topology, the plan's topology with every hop's rate divided by ``s`` and no latency (what the
            prediction prices messages on); None on the uniform site.
    """

    nodes: tuple[str, ...]
    time_scale: float
    cores: int
    calibrated_flops_per_s: float
    calibrated_call_s: float
    core_share: tuple[float, ...]
    period_us: tuple[int, ...]
    egress_mbit: tuple[float, ...]
    ingress_mbit: tuple[float, ...]
    profiles: Profiles
    wiring: "Wiring | None" = None
    site: Topology | None = None

    @property
    def cpu_fraction(self) -> tuple[float, ...]:
        """Per node, Mininet's ``cpu`` parameter: the share of the whole machine (share of a core / cores)."""
        return tuple(c / self.cores for c in self.core_share)


@dataclass(frozen=True)
class Wiring:
    """The part of a topology the testbed builds for a plan (module docstring, *On a topology*).

    Attributes:
        points: the topology points emulated: the plan's nodes' points in plan order (host ``i`` plays
            ``points[i]``), then the relays on their paths that host no plan node (sites, unused nodes), in
            order of first use (each a router).
        links: ``(a, b, a -> b bit/s, b -> a bit/s)`` for every pair of emulated points that a hop of some path
            joins, ``a`` the earlier in ``points``; a rate is None where the topology has no hop that way.
        routes: per emulated point, ``((destination point, next point), ...)``: where it sends (or forwards)
            a message for a plan node's point.
    """

    points: tuple[str, ...]
    links: tuple[tuple[str, str, float | None, float | None], ...]
    routes: dict[str, tuple[tuple[str, str], ...]]


def wiring(plan: Plan) -> Wiring:
    """The points, links and routes that emulate ``plan``'s topology (the paths between its nodes' points).

    Raises:
        ConfigError: ``topology`` when a relay's own path to a destination differs from the part of a path
            through it that leads there: the emulated network routes by destination, as IP does.
    """
    site = plan.site
    hosted = [n.point for n in plan.nodes]
    points = list(hosted)
    used: dict[tuple[str, str], None] = {}
    nxt: dict[str, dict[str, str]] = {}
    for a in hosted:
        for b in hosted:
            if a == b:
                continue
            hops = site.path(a, b)
            for k, h in enumerate(hops):
                if k and site.path(h.src, b) != hops[k:]:
                    raise ConfigError("topology", site.name, f"the path {a} -> {b} goes on from {h.src} to {h.dst}, "
                                      f"but {h.src}'s own path to {b} is another; the testbed routes by destination, "
                                      "so give links whose fewest-hop paths agree, or run the simulated backend")
                if h.dst not in points:
                    points.append(h.dst)
                used[(h.src, h.dst)] = None
                nxt.setdefault(h.src, {})[b] = h.dst
    order = {p: i for i, p in enumerate(points)}
    rate = {(h.src, h.dst): h.rate_bps for hs in site.hops.values() for h in hs}
    pairs = sorted({tuple(sorted(ab, key=order.__getitem__)) for ab in used}, key=lambda ab: (order[ab[0]], order[ab[1]]))
    links = tuple((a, b, rate.get((a, b)), rate.get((b, a))) for a, b in pairs)
    routes = {p: tuple(sorted(nxt[p].items(), key=lambda kv: order[kv[0]])) for p in points if p in nxt}
    return Wiring(tuple(points), links, routes)


def scaled_site(site: Topology, time_scale: float, points) -> Topology:
    """``site`` with every hop's rate divided by ``time_scale`` and no latency (what the testbed emulates), and
    the same paths between ``points`` as ``site`` (scaling every rate alike changes no path; set, not recomputed)."""
    hops = {p: tuple(Hop(h.src, h.dst, replace(h.link, up_bps=h.link.up_bps / time_scale,
                                               down_bps=h.link.down_bps / time_scale, latency_s=0.0),
                         h.rate_bps / time_scale) for h in hs) for p, hs in site.hops.items()}
    by_pair = {(h.src, h.dst): h for hs in hops.values() for h in hs}
    paths = {(a, b): tuple(by_pair[(h.src, h.dst)] for h in site.path(a, b)) for a in points for b in points}
    return replace(site, hops=hops, _paths=paths)


def network_spec(emu: "Emulation") -> dict:
    """What :mod:`fplstudy.testbed.netctl` builds for a plan on a topology: routers, links (shaped rates on the wire,
    addresses) and routes, under names local to the run (host ``h<i>`` plays ``wiring.points[i]``, router
    ``r<j>`` the ``j``-th relay). Link ``l`` is the subnet ``10.<1 + l // 256>.<l % 256>.0/24`` (its first end
    ``.1``, its second ``.2``); plan node ``i`` is reached at ``10.0.0.<i+1>`` (:data:`IDENTITY_SUFFIX`)."""
    w, n = emu.wiring, len(emu.nodes)
    local = {p: (f"h{i}" if i < n else f"r{i - n}") for i, p in enumerate(w.points)}
    far: dict[tuple[str, str], str] = {}  # (near point, far point) -> the far end's address on their link
    links = []
    for k, (a, b, ab, ba) in enumerate(w.links):
        net = f"10.{1 + k // 256}.{k % 256}"
        links.append({"ends": [local[a], local[b]], "addrs": [f"{net}.1/24", f"{net}.2/24"],
                      "mbit": [None if r is None else r / emu.time_scale / TCP_GOODPUT_SHARE / 1e6 for r in (ab, ba)]})
        far[(a, b)], far[(b, a)] = f"{net}.2", f"{net}.1"
    identity = {p: f"10.0.0.{i + 1}" for i, p in enumerate(w.points[:n])}
    routes = {local[p]: [[identity[d], far[(p, q)]] for d, q in hops] for p, hops in w.routes.items()}
    return {"routers": [local[p] for p in w.points[n:]], "links": links, "routes": routes}


def emulation(plan: Plan, profiles: Profiles, here: DeviceProfile, cores: int,
              time_scale: float | None = None) -> Emulation:
    """The CPU shares, CFS periods, shaped rates and time scale that emulate ``plan`` on ``cores`` cores.

    Args:
        plan: the plan.
        profiles: its device and link profiles (as priced).
        here: this machine's calibrated device profile for the plan's model and batch size (the profile
            ``calibrated_<model>_b<batch>``, :func:`calibrated_device`). Its numbers, on one core:

            - ``flops_per_s``: the training FLOP/s (``C``);
            - ``call_overhead_s``: the overhead per compute call (``o``); a node slowed to ``F / (C s)`` of a
              core pays ``o C s / F`` per call, which the emulated profile carries;
            - ``block_flops_per_s`` for the plan's model: the training FLOP/s per block (``c_b``; none: none).
              A node slowed to ``F / (C s)`` of a core runs block ``b`` at ``c_b F / (C s)``, which its emulated
              profile carries as its ``block_flops_per_s`` for the plan's model (the host is this machine, so
              its blocks keep this machine's proportions, whatever the device's own block rates); without
              ``c_b`` it carries none;
            - ``block_call_s`` for the plan's model: the fixed seconds per call of each block (``k_b``; none:
              none); the slowed node pays ``k_b C s / F``, which its emulated profile carries as its
              ``block_call_s`` for the plan's model;
            - ``cold_factor``: how much slower this machine runs a compute call that starts cold; a factor, the
              same on the slowed node: its profile's ``cold_factor``;
            - ``batch_s``: the seconds of a batch's work outside the blocks on the node feeding it in; the slowed
              node takes ``batch_s C s / F``: its profile's ``batch_s``;
            - ``cold_s``: the seconds a call that starts cold takes beyond its factor; the slowed node takes
              ``cold_s C s / F``: its profile's ``cold_s``.

            Its name, power and memory take no part.
        cores: cores of the machine.
        time_scale: the slow-down wanted (None: the smallest that fits).

    Returns:
        The :class:`Emulation`.

    Raises:
        ConfigError: ``testbed_time_scale`` below what the plan needs, or a plan that would need a time
            scale above :data:`MAX_TIME_SCALE` (too many or too fast nodes for this machine).
    """
    wires = wiring(plan) if plan.site is not None else None
    if wires is None:
        link = profiles.link(plan.config.link)
        rates = [link.up_bps, link.down_bps]
    else:
        if len(wires.links) > MAX_LINKS:
            raise ConfigError("topology", plan.site.name, f"the plan's paths use {len(wires.links)} links; the testbed "
                              f"numbers at most {MAX_LINKS}: use a smaller topology or the simulated backend")
        rates = [r for *_, ab, ba in wires.links for r in (ab, ba) if r is not None]
    need = [profiles.device(n.device).flops_per_s / here.flops_per_s for n in plan.nodes]  # cores at s = 1
    wire_bps = max(rates, default=0.0) / TCP_GOODPUT_SHARE  # no link: a plan of one node
    fits = max(1.0, max(need) / CORE_CAP, sum(need) / (MACHINE_CAP * cores), wire_bps / (MAX_LINK_MBIT * 1e6))
    if time_scale is not None and time_scale < fits:
        raise ConfigError("testbed_time_scale", time_scale,
                          f"this plan needs at least {fits:.4g} on {cores} cores (or leave it out to use that)")
    s = float(time_scale) if time_scale is not None else fits
    if s > MAX_TIME_SCALE:
        raise ConfigError("nodes", plan.config.nodes,
                          f"too many or too fast nodes for this machine: their CPU shares need a time scale of "
                          f"{s:.4g} on {cores} cores (at most {MAX_TIME_SCALE:g}); use fewer nodes, slower "
                          "device profiles or a machine with more cores")
    share = tuple(f / s for f in need)
    period = tuple(min(MAX_PERIOD_US, math.ceil(MIN_QUOTA_US / c)) for c in share)
    if wires is None:
        up, down = link.up_bps / s / TCP_GOODPUT_SHARE / 1e6, link.down_bps / s / TCP_GOODPUT_SHARE / 1e6
        egress = tuple(down if n.side == "server" else up for n in plan.nodes)  # price_message's direction rule
        ingress = tuple(up if n.side == "server" else down for n in plan.nodes)
        links = {**profiles.links, link.name: replace(link, up_bps=link.up_bps / s, down_bps=link.down_bps / s,
                                                      latency_s=0.0)}
        site = None
    else:  # every link of the topology is shaped on its own (network_spec)
        egress = ingress = (0.0,) * len(plan.nodes)
        links = profiles.links  # the messages are priced on the scaled site, not on link profiles
        site = scaled_site(plan.site, s, [n.point for n in plan.nodes])
    devices = dict(profiles.devices)
    block_rates, block_fixed = here.block_flops_per_s.get(plan.model, {}), here.block_call_s.get(plan.model, {})
    for n in plan.nodes:
        d = profiles.device(n.device)
        speed = d.flops_per_s / (here.flops_per_s * s)  # this machine's speed the host gets: F / (C s)
        blocks = {plan.model: {b: c * speed for b, c in block_rates.items()}} if block_rates else {}
        fixed = {plan.model: {b: k / speed for b, k in block_fixed.items()}} if block_fixed else {}
        devices[n.device] = replace(d, flops_per_s=d.flops_per_s / s,
                                    call_overhead_s=here.call_overhead_s * here.flops_per_s * s / d.flops_per_s,
                                    cold_factor=here.cold_factor, batch_s=here.batch_s / speed,
                                    cold_s=here.cold_s / speed,
                                    block_flops_per_s=blocks, block_call_s=fixed)
    return Emulation(tuple(n.name for n in plan.nodes), s, cores, here.flops_per_s, here.call_overhead_s, share,
                     period, egress, ingress, Profiles(devices, links), wires, site)


def check_rates(plan: Plan, profiles: Profiles) -> None:
    """Refuse a link profile the per-host shaping cannot reproduce: a message goes out through its sender's
    egress and in through its receiver's ingress, so it gets the smaller of the two rates; that is the
    ledger's rate for every pair of nodes only when ``up_bps <= down_bps``."""
    if plan.site is not None:  # on a topology every direction of every link is shaped on its own
        return
    link = profiles.link(plan.config.link)
    if link.up_bps > link.down_bps:
        raise ConfigError("link", link.name, f"up_bps ({link.up_bps:g}) > down_bps ({link.down_bps:g}): the testbed "
                          "shapes one link per host and cannot give messages between edge nodes the up rate; "
                          "use a link profile with up_bps <= down_bps")


# --------------------------------------------------------------------------- requirements

def requirements_problem() -> str | None:
    """Why the testbed cannot run here (one line naming the fix), or None when it can."""
    if os.geteuid() != 0:
        return ("the emulated backend needs root (Mininet builds namespaces, links and cgroups): run it as root, "
                "e.g. sudo -E env PATH=$PATH fplstudy run ... --backend emulated")
    if not Path(SYSTEM_PYTHON).is_file():
        return f"the emulated backend runs Mininet under {SYSTEM_PYTHON}, which is missing: install python3"
    try:
        out = subprocess.run([SYSTEM_PYTHON, str(NETCTL), "check"], capture_output=True, text=True, timeout=60)
        check = json.loads(out.stdout)
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return f"the Mininet check failed ({exc}); install Mininet: apt-get install mininet bridge-utils cgroup-tools"
    if not check["ok"]:
        return ("missing for the emulated backend: " + ", ".join(check["missing"])
                + "; install them with apt-get install mininet bridge-utils cgroup-tools iperf3")
    return None


def _free_memory_bytes() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return float(line.split()[1]) * 1024
    return math.inf  # pragma: no cover - no MemAvailable


def check_capacity(plan: Plan) -> None:
    """Refuse a plan with more node processes than this machine's memory holds or than a /24 network numbers."""
    n = len(plan.nodes)
    if n > 200:
        raise ConfigError("nodes", plan.config.nodes, f"{n} node processes; the testbed hosts at most 200")
    free = _free_memory_bytes()
    if n * NODE_MEMORY_BYTES > free:
        raise ConfigError("nodes", plan.config.nodes, f"{n} node processes need about {n * NODE_MEMORY_BYTES / 1e9:.1f} GB "
                          f"and this machine has {free / 1e9:.1f} GB available; use fewer nodes")


def calibrated_device(plan: Plan, profiles: Profiles) -> DeviceProfile:
    """This machine's calibrated device profile for the plan's model and batch size (the device profile
    ``calibrated_<model>_b<batch_size>``: its FLOP/s, overhead per compute call and the rest; :func:`emulation`'s
    ``here``).

    Raises:
        ConfigError: the profile is missing (one line naming the ``fplstudy calibrate`` command that writes it).
    """
    name = calibrated_name(plan.model, plan.config.batch_size)
    if name not in profiles.devices:
        raise ConfigError("profiles_file", plan.config.profiles_file,
                          f"no device profile '{name}' (this machine's speed for {plan.model} at batch "
                          f"{plan.config.batch_size}); run `fplstudy calibrate --models {plan.model} --batch-size "
                          f"{plan.config.batch_size} --out host.yaml` and set profiles_file=host.yaml")
    return profiles.device(name)


# --------------------------------------------------------------------------- measured vs predicted

def read_traces(folder: Path, plan: Plan) -> pd.DataFrame:
    """Every rank's trace (:data:`fplstudy.train.distributed.TRACE_COLUMNS`), one table."""
    frames = [pd.read_csv(folder / f"trace-{r}.csv", dtype={"peer": str}) for r in range(len(plan.nodes))]
    df = pd.concat(frames, ignore_index=True)
    df["peer"] = df["peer"].fillna("").astype(str)
    return df


def measured(trace: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Per round and node: busy compute seconds, seconds of its sent and received messages; per round: makespan.

    A message's seconds run from when both ends were ready (the later of the send's and the receive's
    posting) to its arrival; they count at the sender (send) and at the receiver (recv), as in the
    ledger. The round's makespan runs from the first chunk's start to the last chunk's end or the last
    message's arrival, over all nodes.
    """
    comp = trace[trace["op"] == "compute"]
    sends = trace[trace["op"] == "send"][["round", "node", "peer", "kind", "seq", "post_s"]]
    recvs = trace[trace["op"] == "recv"][["round", "node", "peer", "kind", "seq", "post_s", "end_s"]]
    msgs = recvs.merge(sends, left_on=["peer", "node", "seq"], right_on=["node", "peer", "seq"],
                       suffixes=("_rx", "_tx"))
    if len(msgs) != len(recvs) or len(msgs) != len(sends) or (msgs["kind_rx"] != msgs["kind_tx"]).any():
        raise RuntimeError("the traces' sends and receives do not pair up")
    msgs["seconds"] = msgs["end_s"] - np.maximum(msgs["post_s_rx"], msgs["post_s_tx"])
    msgs = msgs.rename(columns={"round_rx": "round", "node_rx": "dst", "peer_rx": "src"})
    busy = comp.assign(seconds=comp["end_s"] - comp["post_s"]).groupby(["round", "node"])["seconds"].sum()
    sent = msgs.groupby(["round", "src"])["seconds"].sum().rename_axis(["round", "node"])
    got = msgs.groupby(["round", "dst"])["seconds"].sum().rename_axis(["round", "node"])
    per_node = pd.DataFrame({"measured_busy_s": busy, "measured_send_s": sent, "measured_recv_s": got}).fillna(0.0)
    first = comp.groupby("round")["post_s"].min()
    last = pd.concat([comp.groupby("round")["end_s"].max(), msgs.groupby("round")["end_s"].max()], axis=1).max(axis=1)
    return per_node.reset_index(), (last - first).rename("measured_round_s")


def predicted(plan: Plan, shard_sizes: list[int], emu: Emulation) -> tuple[pd.DataFrame, pd.Series]:
    """The model's figures for the same plan priced with the emulated profiles, in the units of :func:`measured`:
    on the uniform site with the ``star`` network (one interface per node, as the testbed's bridge gives); on a
    topology with the ``inbox`` network on the emulated topology (each pair's path its own, as each host has a
    link per neighbour, and a message moves once its receive is posted, as the distributed backend runs: what
    several paths share is not modelled)."""
    if emu.site is None:
        plan = replace(plan, config=plan.config.model_copy(update={"network": "star"}))  # the testbed's network
    else:
        plan = replace(plan, config=plan.config.model_copy(update={"network": "inbox"}), site=emu.site)
    events = plan_events(plan, shard_sizes)
    _, seconds = event_costs(plan, events, emu.profiles)
    rows = []
    for ev, sec in zip(events, seconds):
        if isinstance(ev, Compute):
            rows.append((ev.round, ev.node, sec, 0.0, 0.0))
        else:
            rows += [(ev.round, ev.src, 0.0, sec, 0.0), (ev.round, ev.dst, 0.0, 0.0, sec)]
    df = pd.DataFrame(rows, columns=["round", "node", "predicted_busy_s", "predicted_send_s", "predicted_recv_s"])
    per_node = df.groupby(["round", "node"], as_index=False).sum()
    ledger = price(plan, events, emu.profiles)
    makespan = ledger.groupby("round")["round_makespan_s"].first().rename("predicted_round_s")
    return per_node, makespan


def call_table(plan: Plan, trace: pd.DataFrame, shard_sizes: list[int], emu: Emulation) -> pd.DataFrame:
    """Every compute call of the run, measured beside predicted (:data:`CALL_COLUMNS`): where the busy seconds'
    error comes from. ``blocks`` joins the call's blocks with ``+``; ``cold`` is whether the model takes it to
    start cold (:func:`fplstudy.costs.ledger.cold_calls`); ``measured_s`` the trace's chunk (a node's calls in the
    order it made them: its events' order), ``predicted_s`` the call priced with the emulated profiles (its
    ``cold_factor`` included)."""
    events = plan_events(plan, shard_sizes)
    _, seconds = event_costs(plan, events, emu.profiles)
    cold = cold_calls(events, frozenset(n.name for n in plan.nodes))
    comp = trace[trace["op"] == "compute"]
    rows = []
    for node in plan.nodes:
        calls = [(ev, s, c) for ev, s, c in zip(events, seconds, cold) if isinstance(ev, Compute) and ev.node == node.name]
        mine = comp[comp["node"] == node.name].sort_values(["round", "seq"])
        if len(mine) != len(calls) or (mine["kind"].to_numpy() != [ev.phase for ev, _, _ in calls]).any():
            raise RuntimeError(f"node {node.name}'s trace has {len(mine)} compute calls, its events {len(calls)}, "
                               "or they differ in kind")
        took = (mine["end_s"] - mine["post_s"]).to_numpy()
        rows += [(ev.round, ev.node, ev.phase, "+".join(ev.blocks), ev.samples, c, float(m), s)
                 for (ev, s, c), m in zip(calls, took)]
    return pd.DataFrame(rows, columns=list(CALL_COLUMNS))


def testbed_table(plan: Plan, trace: pd.DataFrame, shard_sizes: list[int], emu: Emulation) -> pd.DataFrame:
    """Measured beside predicted, one row per round × node (:data:`TESTBED_COLUMNS`); round 0 is the warm-up
    (first use of every connection and kernel) and is left out of the error summary."""
    m_node, m_round = measured(trace)
    p_node, p_round = predicted(plan, shard_sizes, emu)
    grid = pd.DataFrame([(r, n.name) for r in sorted(p_round.index) for n in plan.nodes], columns=["round", "node"])
    df = grid.merge(m_node, on=["round", "node"], how="left").merge(p_node, on=["round", "node"], how="left")
    df = df.merge(m_round.reset_index(), on="round", how="left").merge(p_round.reset_index(), on="round", how="left")
    df["warmup"] = df["round"] == 0
    df["time_scale"] = emu.time_scale
    return df.fillna(0.0)[list(TESTBED_COLUMNS)]


def relative_error(measured_s: pd.Series, predicted_s: pd.Series) -> pd.Series:
    """(measured − predicted) / predicted, where something was predicted."""
    keep = predicted_s > 0
    return (measured_s[keep] - predicted_s[keep]) / predicted_s[keep]


def error_summary(table: pd.DataFrame) -> dict:
    """Median and largest absolute relative error of the round makespan and of per-node busy seconds (and of
    the message seconds), over the rounds after the warm-up."""
    t = table[~table["warmup"].astype(bool)]
    rounds = t.groupby("round")[["measured_round_s", "predicted_round_s"]].first()
    out = {"rounds_compared": int(len(rounds))}
    for name, m, p in (("round_makespan", rounds["measured_round_s"], rounds["predicted_round_s"]),
                       ("busy", t["measured_busy_s"], t["predicted_busy_s"]),
                       ("send", t["measured_send_s"], t["predicted_send_s"]),
                       ("recv", t["measured_recv_s"], t["predicted_recv_s"])):
        err = relative_error(m, p).abs()
        out[f"{name}_median_abs_error"] = float(err.median()) if len(err) else math.nan
        out[f"{name}_max_abs_error"] = float(err.max()) if len(err) else math.nan
        out[f"{name}_points"] = int(len(err))
    return out


def parity_figure(tables: list[tuple[str, pd.DataFrame]], path: str | Path) -> Path:
    """Predicted against measured: the round makespan (one point per plan × round) and per-node busy seconds
    (one point per plan × node × round), warm-up rounds left out; log-log, with the ±15 % band."""
    from matplotlib.figure import (
        Figure,  # drawn without pyplot: the caller's backend is left alone
    )

    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2)
    panels = (("round makespan", "predicted_round_s", "measured_round_s", True),
              ("busy compute seconds per node", "predicted_busy_s", "measured_busy_s", False))
    for ax, (title, p, m, per_round) in zip(axes, panels):
        lo, hi = math.inf, 0.0
        for label, table in tables:
            t = table[~table["warmup"].astype(bool)]
            if per_round:
                t = t.groupby("round")[[p, m]].first()
            t = t[(t[p] > 0) & (t[m] > 0)]
            if t.empty:
                continue
            ax.scatter(t[p], t[m], s=14, alpha=0.7, label=label)
            lo, hi = min(lo, t[p].min(), t[m].min()), max(hi, t[p].max(), t[m].max())
        if hi > 0:
            xs = np.geomspace(lo / 1.5, hi * 1.5, 50)
            ax.plot(xs, xs, color="black", lw=1)
            ax.fill_between(xs, xs * 0.85, xs * 1.15, color="grey", alpha=0.2, label="±15 %")
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("predicted (s, emulated time)")
        ax.set_ylabel("measured (s, emulated time)")
        ax.set_title(title)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- the run

@dataclass
class TestbedOutcome:
    """What :func:`run_emulated` returns.

    Attributes:
        out: the run folder (rank 0's ``metrics.json``, ``rounds.csv``, ``ledger.csv``, ``wire.csv``, and
            ``testbed.csv``, ``testbed_summary.json``, ``testbed_parity.png``, ``testbed/<node>.log``).
        emulation: the emulation used.
        table: measured beside predicted (:data:`TESTBED_COLUMNS`).
        summary: :func:`error_summary` plus the emulation's figures.
        metrics: rank 0's ``metrics.json``.
    """

    out: Path
    emulation: Emulation
    table: pd.DataFrame
    summary: dict
    metrics: dict


def _tag() -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    n, out = os.getpid(), ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return "f" + out[-5:]


def _netctl(*args: str, timeout: float = 120) -> dict:
    out = subprocess.run([SYSTEM_PYTHON, str(NETCTL), *args], capture_output=True, text=True, timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}


def sweep_stale() -> None:
    """Remove what earlier runs killed with SIGKILL left (their controller is gone)."""
    state = Path("/run/fplstudy-testbed")
    for f in state.glob("*") if state.is_dir() else []:
        try:
            pid = int(f.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError, OSError):
            _netctl("sweep", f.name)


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, not empty, or not writable, before anything is built."""
    if str(out) == "" or out.is_file():
        raise ConfigError("--out", str(out), "give a folder to create (not a file)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError("--out", str(out), "the folder is not empty; give a new folder")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise ConfigError("--out", str(out), f"{parent} is not writable")


def prepare_emulation(cfg: Config, time_scale: float | None = None):
    """Every check of an emulated run, before anything is built: plan, profiles, data, requirements, capacity.

    Returns:
        ``(plan, profiles, data, emulation)``.

    Raises:
        ConfigError: one line naming the key (or the missing requirement) and the fix.
    """
    for key, off in (("straggler_prob", 0.0), ("round_deadline_s", None)):
        if getattr(cfg, key) != off:  # the hosts' CPU shares are fixed for the run; a deadline would need scaling
            raise ConfigError(key, getattr(cfg, key), "the emulated testbed runs without stragglers or a round "
                              "deadline (each host's speed is fixed): leave it out, or run the simulated backend")
    plan, profiles, data = prepare(cfg)
    problem = requirements_problem()
    if problem:
        raise ConfigError("--backend", "emulated", problem)
    check_rates(plan, profiles)
    check_capacity(plan)
    emu = emulation(plan, profiles, calibrated_device(plan, profiles), os.cpu_count() or 1,
                    time_scale if time_scale is not None else cfg.testbed_time_scale)
    return plan, profiles, data, emu


def run_emulated(cfg: Config, out: str | Path, *, time_scale: float | None = None) -> TestbedOutcome:
    """Run ``cfg`` on the emulated testbed and write the results and the measured-vs-predicted table.

    Args:
        cfg: validated config (``profiles_file`` must hold the ``calibrated_<model>_b<batch>`` profile).
        out: the run folder (created; must be new or empty).
        time_scale: overrides ``testbed_time_scale``.

    Returns:
        The :class:`TestbedOutcome`.

    Raises:
        ConfigError: bad input or a missing requirement, before anything is built.
        DistributedError: a node failed (the message names it and quotes its log); the network is gone.
    """
    out = Path(out)
    check_out(out)
    plan, profiles, (split, part), emu = prepare_emulation(cfg, time_scale)
    sweep_stale()
    work = Path(tempfile.mkdtemp(prefix="fplstudy-testbed-"))
    tag = _tag()
    try:
        config_file = work / "config.yaml"
        values = cfg.model_dump()
        if values.get("profiles_file"):
            values["profiles_file"] = str(Path(values["profiles_file"]).resolve())
        config_file.write_text(yaml.safe_dump(values, sort_keys=False))
        (work / "gate").mkdir()
        hosts = []
        for i, node in enumerate(emu.nodes):
            rank_out = out.resolve() if i == 0 else work / f"rank{i}"
            argv = [sys.executable, "-m", "fplstudy.cli", "run", str(config_file), "--backend", "distributed",
                    "--quiet", "--out", str(rank_out)]
            env = {"RANK": str(i), "WORLD_SIZE": str(len(emu.nodes)), "MASTER_ADDR": "10.0.0.1",
                   "MASTER_PORT": str(MASTER_PORT), TRACE_ENV: str(work),
                   "GLOO_SOCKET_IFNAME": f"{tag}h{i}-{'eth0' if emu.wiring is None else IDENTITY_SUFFIX}",
                   GATE_ENV: str(work / "gate"), "OMP_NUM_THREADS": "1", "CI": "1"}
            dilate = cfg.testbed_cpu == "dilate"
            if dilate:
                env[DILATE_ENV] = repr(emu.core_share[i])
            hosts.append({"name": node, "cpu": -1 if dilate else emu.cpu_fraction[i], "period_us": emu.period_us[i],
                          "up_mbit": emu.egress_mbit[i], "down_mbit": emu.ingress_mbit[i], "argv": argv,
                          "env": env, "log": str(work / f"{node}.log")})
        spec = {"tag": tag, "hosts": hosts, "cwd": os.getcwd(), "parent_pid": os.getpid(), "gate": str(work / "gate"),
                "deadline_s": 6 * 3600, "fill_idle": False, "scratch": str(work)}
        if emu.wiring is not None:
            spec |= network_spec(emu)
        (work / "spec.json").write_text(json.dumps(spec))
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        ctl = subprocess.Popen([SYSTEM_PYTHON, str(NETCTL), "run", str(work / "spec.json")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = ctl.communicate()
        except BaseException:  # Ctrl-C or a kill: the controller tears the network down, then we go
            ctl.send_signal(signal.SIGTERM)
            try:
                ctl.communicate(timeout=60)
            except subprocess.TimeoutExpired:  # pragma: no cover - a controller that does not stop
                ctl.kill()
            _netctl("sweep", tag)
            raise
        finally:
            if ctl.returncode != 0:
                _netctl("sweep", tag)
        wall_s = time.monotonic() - t0
        try:
            outcome = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DistributedError(f"the testbed controller failed: {(stderr.strip().splitlines() or ['?'])[-1]}") from None
        logs = out / "testbed"
        logs.mkdir(parents=True, exist_ok=True)
        for i, node in enumerate(emu.nodes):
            for name, keep in ((f"{node}.log", f"{node}.log"), (f"trace-{i}.csv", f"trace-{node}.csv")):
                if (work / name).exists():
                    shutil.copy(work / name, logs / keep)
        bad = [(node, code) for node, code in zip(emu.nodes, outcome["codes"]) if code != 0]
        if bad or outcome.get("stopped"):
            node, code = bad[0] if bad else (emu.nodes[0], None)
            last = [ln for ln in (logs / f"{node}.log").read_text().splitlines() if ln.strip()][-1:] or ["(no output)"]
            why = f"stopped ({outcome['stopped']})" if outcome.get("stopped") else f"exit code {code}"
            raise DistributedError(f"emulated node {node} failed ({why}): {last[0].removeprefix('fplstudy: error: ')} "
                                   f"(logs in {logs})")
        trace = read_traces(work, plan)  # rank i wrote trace-<i>.csv
        table = testbed_table(plan, trace, part.samples(), emu)
        calls = call_table(plan, trace, part.samples(), emu)
        summary = {**error_summary(table), "time_scale": emu.time_scale, "cores": emu.cores,
                   "calibrated_flops_per_s": emu.calibrated_flops_per_s, "calibrated_call_s": emu.calibrated_call_s,
                   "cpu": cfg.testbed_cpu,
                   "core_share": dict(zip(emu.nodes, emu.core_share)), "period_us": dict(zip(emu.nodes, emu.period_us)),
                   "egress_mbit": dict(zip(emu.nodes, emu.egress_mbit)),
                   "ingress_mbit": dict(zip(emu.nodes, emu.ingress_mbit)),
                   "topology": None if emu.wiring is None else {
                       "file": cfg.topology, "points": list(emu.wiring.points),
                       "links": [{"ends": [a, b], "mbit": m["mbit"], "tx_bytes": tx} for (a, b, *_), m, tx in
                                 zip(emu.wiring.links, spec["links"], outcome.get("link_tx_bytes") or
                                     [[None, None]] * len(spec["links"]))]},
                   "latency_emulated": False, "load_average_before": load0, "load_average_after": os.getloadavg()[0],
                   "testbed_wall_s": wall_s, "network_build_s": outcome.get("build_s")}
        write_rows_csv(out / "testbed.csv", table.to_dict("records"), TESTBED_COLUMNS)
        write_rows_csv(out / "testbed_calls.csv", calls.to_dict("records"), CALL_COLUMNS)
        atomic_write_text(out / "testbed_summary.json", json.dumps(summary, indent=2) + "\n")
        parity_figure([(f"{plan.strategy}, {len(plan.nodes)} nodes", table)], out / "testbed_parity.png")
        metrics = json.loads((out / "metrics.json").read_text())
        return TestbedOutcome(out, emu, table, summary, metrics)
    finally:
        shutil.rmtree(work, ignore_errors=True)
