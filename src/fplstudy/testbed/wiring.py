"""The network of the emulated testbed on a topology: the points, links and routes that emulate a plan's paths
(:func:`wiring`), the topology with its rates scaled (:func:`scaled_site`), and what
:mod:`fplstudy.testbed.netctl` builds from them (:func:`network_spec`). See :mod:`fplstudy.testbed.emulation`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fplstudy.config import ConfigError
from fplstudy.facts.topology import Hop, Topology
from fplstudy.plans.plan import Plan

TCP_GOODPUT_SHARE = 1448 / 1514  # TCP payload per Ethernet frame at MTU 1500 with timestamps (RFC 7323)
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
