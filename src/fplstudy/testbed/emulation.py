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

Requirements, checked before anything is built (one line naming the fix): ``tc``, ``ip`` and ``brctl`` on
PATH (they live in ``/usr/sbin``, which ``env -i`` and some sudo setups leave out); root; Mininet for the
system Python (``apt-get install mininet bridge-utils cgroup-tools iperf3``), whose module lives in
``/usr/lib/python3/dist-packages``. The project's venv never imports it: :mod:`fplstudy.testbed.netctl` runs
under ``/usr/bin/python3`` as a subprocess and starts the nodes (the venv's Python) inside the hosts.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from fplstudy.config import ConfigError, short_repr
from fplstudy.facts.profiles import DeviceProfile, Profiles
from fplstudy.facts.topology import Topology
from fplstudy.plans.plan import Plan
from fplstudy.testbed.wiring import TCP_GOODPUT_SHARE, Wiring, scaled_site, wiring

SYSTEM_PYTHON = "/usr/bin/python3"  # where the Debian package installs the mininet module
NETCTL = Path(__file__).with_name("netctl.py")
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
    wiring: Wiring | None = None
    site: Topology | None = None

    @property
    def cpu_fraction(self) -> tuple[float, ...]:
        """Per node, Mininet's ``cpu`` parameter: the share of the whole machine (share of a core / cores)."""
        return tuple(c / self.cores for c in self.core_share)


def network_spec(emu: Emulation) -> dict:
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
    """Why the testbed cannot run here (one line naming the fix), or None when it can.

    The network controller's check (:mod:`fplstudy.testbed.netctl`) comes first, so that a PATH without the
    folder of ``tc`` and ``ip`` (``/usr/sbin``: ``env -i``, some sudo setups) is named, with its fix, whether or
    not this process is root; then root; then what is not installed.
    """
    if not Path(SYSTEM_PYTHON).is_file():
        return f"the emulated backend runs Mininet under {SYSTEM_PYTHON}, which is missing: install python3"
    try:
        out = subprocess.run([SYSTEM_PYTHON, str(NETCTL), "check"], capture_output=True, text=True, timeout=60)
        check = json.loads(out.stdout)
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return f"the Mininet check failed ({exc}); install Mininet: apt-get install mininet bridge-utils cgroup-tools"
    off_path = check.get("off_path") or {}
    if off_path:
        folders = sorted(set(off_path.values()))
        return (f"{', '.join(off_path)} {'is' if len(off_path) == 1 else 'are'} installed in {', '.join(folders)}, "
                f"which PATH ({short_repr(os.environ.get('PATH', os.defpath))}) lacks, and Mininet runs them by name: put "
                f"{' and '.join(folders)} on PATH, e.g. export PATH=$PATH:{':'.join(folders)}")
    if os.geteuid() != 0:
        return ("the emulated backend needs root (Mininet builds namespaces, links and cgroups): run it as root, "
                "e.g. sudo -E env PATH=$PATH fplstudy run ... --backend emulated")
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
