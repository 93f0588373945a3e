"""Topology files: loading and refusing them, the path a message takes, its store-and-forward price by hand,
and the uniform site of the shorthand keys priced exactly as the ledger prices a message on one link."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from fplstudy.config import make_config
from fplstudy.costs.pricing import price_message
from fplstudy.facts.profiles import load_profiles
from fplstudy.facts.topology import (
    TopologyError,
    load_topology,
    parse_topology,
    price_path,
    uniform_links,
)
from fplstudy.plans.plan import resolve

SHIPPED = sorted((Path(__file__).resolve().parents[3] / "src" / "fplstudy" / "facts" / "topologies").glob("*.yaml"))

HAND = """links:
  radio: {up_bps: 1.0e+6, down_bps: 2.0e+6, tx_j_per_bit: 1.0e-7, rx_j_per_bit: 5.0e-8, latency_s: 0.01}
  wire: {up_bps: 1.0e+7, down_bps: 1.0e+7, tx_j_per_bit: 1.0e-9, rx_j_per_bit: 2.0e-9, latency_s: 0.001}
  fibre: {up_bps: 1.0e+8, down_bps: 1.0e+8, tx_j_per_bit: 0, rx_j_per_bit: 0}
"""

THREE_HOPS = {
    "nodes": {"s0": {"device": "rpi4"}, "gw": {"device": "jetson_orin_nano"}, "srv": {"device": "minipc"}},
    "sites": ["ap"],
    "links": [{"between": ["s0", "ap"], "profile": "radio"}, {"between": ["ap", "gw"], "profile": "wire"},
              {"between": ["gw", "srv"], "profile": "fibre"}],
}


@pytest.fixture(scope="module")
def hand_profiles(tmp_path_factory):
    path = tmp_path_factory.mktemp("topo") / "hand.yaml"
    path.write_text(HAND)
    return load_profiles(path)


def test_three_hops_store_and_forward_by_hand(hand_profiles):
    """1000 bytes = 8000 bits from s0 to srv: radio up (1e6 bit/s, 10 ms), wire up (1e7, 1 ms), fibre up
    (1e8, 0 ms). Store-and-forward (``message``), one hop after the other: 8 ms + 10 ms + 0.8 ms + 1 ms +
    0.08 ms = 19.88 ms; packet by packet (``packet``, the default), at the slowest hop's rate plus every
    latency: 8 ms + 11 ms = 19 ms. Energy either way: s0 sends on the radio 8000 × 1e-7 = 8e-4 J; ap receives
    on the radio 8000 × 5e-8 = 4e-4 J and sends on the wire 8000 × 1e-9 = 8e-6 J; gw receives 8000 × 2e-9 =
    1.6e-5 J and sends on the fibre 0; srv receives 0. Back down: the radio's down rate, 2e6 bit/s: 4 ms
    instead of 8."""
    topo = parse_topology(THREE_HOPS, hand_profiles)
    hops = topo.path("s0", "srv")
    assert [(h.src, h.dst) for h in hops] == [("s0", "ap"), ("ap", "gw"), ("gw", "srv")]
    for forwarding, up_s, down_s in (("message", 0.008 + 0.01 + 0.0008 + 0.001 + 0.00008,
                                      0.00008 + 0.0008 + 0.001 + 0.004 + 0.01),
                                     ("packet", 0.008 + 0.011, 0.004 + 0.011)):
        seconds, tx, rx = price_path(hops, 1000, forwarding)
        assert seconds == pytest.approx(up_s, rel=1e-12), forwarding
        assert tx == pytest.approx({"s0": 8e-4, "ap": 8e-6, "gw": 0.0}, rel=1e-12)
        assert rx == pytest.approx({"ap": 4e-4, "gw": 1.6e-5, "srv": 0.0}, rel=1e-12)
        down, _, _ = price_path(topo.path("srv", "s0"), 1000, forwarding)
        assert down == pytest.approx(down_s, rel=1e-12), forwarding
        assert price_path((), 1000, forwarding) == (0.0, {}, {})
    assert price_path(hops, 1000) == price_path(hops, 1000, "packet")  # the default
    assert topo.path("s0", "s0") == ()


def test_fewest_hops_first_then_the_faster_path(hand_profiles):
    """A direct slow link beats two fast hops (fewest hops); between two paths of two hops, the one of fewer
    seconds per bit wins."""
    doc = {"nodes": {"a": {"device": "rpi4"}, "b": {"device": "rpi4"}}, "sites": ["x", "y"],
           "links": [{"between": ["a", "x"], "profile": "radio"}, {"between": ["x", "b"], "profile": "radio"},
                     {"between": ["a", "y"], "profile": "fibre"}, {"between": ["y", "b"], "profile": "fibre"}]}
    topo = parse_topology(doc, hand_profiles)
    assert [h.dst for h in topo.path("a", "b")] == ["y", "b"]
    doc["links"].append({"from": "a", "to": "b", "profile": "radio", "rate": "down"})
    topo = parse_topology(doc, hand_profiles)
    assert [(h.src, h.dst, h.rate_bps) for h in topo.path("a", "b")] == [("a", "b", 2.0e6)]
    assert [h.dst for h in topo.path("b", "a")] == ["y", "a"]  # the direct link is one way


@pytest.mark.parametrize("strategy,nodes,extra", [("fl", 4, {}), ("sfl", 3, {}), ("fpl", 4, {"branches": 2}),
                                                  ("mp", 3, {})])
def test_the_uniform_site_prices_every_message_as_the_ledger_does(strategy, nodes, extra):
    """A topology linking every ordered pair of the plan's nodes directly with the config's ``link``, directed
    by the nodes' sides (:func:`uniform_links`), prices every message float for float as
    :func:`fplstudy.costs.pricing.price_message` does: the shorthand keys are its special case. wifi4 has different
    up and down rates, so a wrong direction would show."""
    plan = resolve(make_config({"strategy": strategy, "nodes": nodes, "link": "wifi4", **extra}))
    profiles = load_profiles()
    sides = {n.name: n.side for n in plan.nodes}
    topo = parse_topology({"nodes": {n.name: {"device": n.device} for n in plan.nodes},
                           "links": uniform_links(sides, "wifi4")}, profiles)
    link, by_name = profiles.link("wifi4"), {n.name: n for n in plan.nodes}
    assert profiles.link("wifi4").up_bps != profiles.link("wifi4").down_bps
    for a in by_name:
        for b in by_name:
            if a == b:
                continue
            for nbytes in (1, 4096, 1_234_567):
                seconds, tx, rx = price_path(topo.path(a, b), nbytes)
                assert (seconds, tx[a], rx[b]) == price_message(link, nbytes, by_name[a], by_name[b])
                assert set(tx) == {a} and set(rx) == {b}


def test_node_and_link_overrides(hand_profiles):
    doc = yaml.safe_load(yaml.safe_dump(THREE_HOPS))
    doc["nodes"]["s0"]["flops_per_s"] = 2.0e9
    doc["links"][0]["up_bps"] = 5.0e5
    topo = parse_topology(doc, hand_profiles, "t.yaml")
    dev = topo.device("s0", hand_profiles)
    assert dev.flops_per_s == 2.0e9 and dev.status["flops_per_s"] == "U" and "t.yaml" in dev.source["flops_per_s"]
    assert dev.active_w == hand_profiles.device("rpi4").active_w
    assert topo.device("gw", hand_profiles) == hand_profiles.device("jetson_orin_nano")
    first = topo.path("s0", "ap")[0]
    assert first.rate_bps == 5.0e5 and topo.path("ap", "s0")[0].rate_bps == 2.0e6  # down keeps the profile's


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_topologies_load_and_every_node_reaches_every_other(path):
    profiles = load_profiles()
    topo = load_topology(path, profiles)
    assert len(topo.nodes) >= 6 and not topo.overrides  # every number is a shipped profile's, sourced there
    doc = yaml.safe_load(path.read_text())
    assert doc["source"].strip() and doc["description"].strip()
    topo.check_reachable((a, b) for a in topo.nodes for b in topo.nodes)
    for a in topo.nodes:
        for b in topo.nodes:
            seconds, tx, rx = price_path(topo.path(a, b), 1000)
            assert math.isfinite(seconds) and (seconds > 0) == (a != b)


def test_fog_example_path_by_hand():
    """fog_wifi: d0 -> d7 goes d0 -> gw0 (Wi-Fi 4 up, 2.9e7) -> server (Ethernet, 9.4e8) -> gw1 (Ethernet
    down, 9.4e8) -> d7 (Wi-Fi 4 down, 4.0e7); 1 MB = 8e6 bits: at the Wi-Fi 4 up rate packet by packet, every
    hop's time store-and-forward (no latency on these profiles)."""
    topo = load_topology(next(p for p in SHIPPED if p.stem == "fog_wifi"), load_profiles())
    hops = topo.path("d0", "d7")
    assert [h.dst for h in hops] == ["gw0", "server", "gw1", "d7"]
    assert price_path(hops, 1_000_000)[0] == pytest.approx(8e6 / 2.9e7, rel=1e-12)
    seconds, _, _ = price_path(hops, 1_000_000, "message")
    assert seconds == pytest.approx(8e6 / 2.9e7 + 8e6 / 9.4e8 + 8e6 / 9.4e8 + 8e6 / 4.0e7, rel=1e-12)


BAD = [
    (lambda d: d["nodes"]["s0"].update(device="rpi9"), "nodes.s0.device", "'rpi9'", "unknown device profile"),
    (lambda d: d["links"][1].update(profile="wire9"), "links[1].profile", "'wire9'", "unknown link profile"),
    (lambda d: d["sites"].append("gw"), "sites[1]", "'gw'", "duplicate name"),
    (lambda d: d["links"][0].update(up_bps=-5.0), "links[0].up_bps", "-5.0", "must be a number in"),
    (lambda d: d["nodes"]["gw"].update(flops_per_s=0), "nodes.gw.flops_per_s", "0", "must be a number in"),
    (lambda d: d["nodes"]["gw"].update(colour="red"), "nodes.gw.colour", "'red'", "unknown field"),
    (lambda d: d["links"].append({"between": ["gw", "nowhere"], "profile": "wire"}), "links[3]", "'nowhere'",
     "unknown point"),
    (lambda d: d["links"].append({"from": "ap", "to": "gw", "profile": "wire", "rate": "up"}), "links[3]",
     "'ap -> gw'", "already linked"),
    (lambda d: d["links"].append({"from": "ap", "to": "gw", "profile": "wire", "rate": "sideways"}),
     "links[3].rate", "'sideways'", "up or down"),
    (lambda d: d.update(routers=[]), "routers", "[]", "unknown entry"),
]


@pytest.mark.parametrize("mutate,key,value,hint", BAD, ids=[b[1] for b in BAD])
def test_bad_topologies_are_refused_naming_the_entry(hand_profiles, tmp_path, mutate, key, value, hint):
    doc = yaml.safe_load(yaml.safe_dump(THREE_HOPS))
    mutate(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TopologyError) as err:
        load_topology(path, hand_profiles)
    msg = str(err.value)
    assert msg.startswith(f"topology file '{path}', entry '{key}': got {value}; ") and hint in msg, msg
    assert "\n" not in msg


def test_a_duplicate_node_key_and_a_pair_with_no_path_are_refused(hand_profiles, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("nodes:\n  a: {device: rpi4}\n  a: {device: rpi5}\n")
    with pytest.raises(TopologyError, match=r"entry 'nodes\.a'") as err:
        load_topology(path, hand_profiles)
    assert "\n" not in str(err.value)
    doc = yaml.safe_load(yaml.safe_dump(THREE_HOPS))
    doc["nodes"]["lone"] = {"device": "rpi4"}
    topo = parse_topology(doc, hand_profiles, "t.yaml")
    topo.check_reachable([("s0", "srv")])  # the pairs a plan's messages join: these are joined
    with pytest.raises(TopologyError, match=r"entry 'links': got 's0 -> lone'; no path from s0 to lone"):
        topo.check_reachable([("s0", "srv"), ("s0", "lone")])
