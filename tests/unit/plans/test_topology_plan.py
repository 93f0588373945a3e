"""A plan on a topology (config keys ``topology`` and ``placement``): where its nodes go, the devices they get,
and the ledger that prices every message on its path (by hand on three hops, exactly today's ledger on the
uniform site), and bad placements refused before any work."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import plan_events, price_plan, shard_sizes
from fplstudy.costs.ledger import price, totals
from fplstudy.facts.profiles import check_profiles
from fplstudy.facts.topology import uniform_links
from fplstudy.plans.events import Compute, Transfer
from fplstudy.plans.plan import resolve

HAND = {"links": {
    "radio": {"up_bps": 1.0e6, "down_bps": 2.0e6, "tx_w": 0.1, "rx_w": 0.05, "latency_s": 0.01},
    "wire": {"up_bps": 1.0e7, "down_bps": 1.0e7, "tx_w": 0.01, "rx_w": 0.02, "latency_s": 0.001},
    "fibre": {"up_bps": 1.0e8, "down_bps": 1.0e8, "tx_w": 0.0, "rx_w": 0.0}}}
THREE_HOPS = {  # s0 -radio- ap -wire- gw -fibre- srv; ap is a site (computes nothing)
    "nodes": {"s0": {"device": "rpi4"}, "gw": {"device": "jetson_orin_nano"}, "srv": {"device": "minipc"}},
    "sites": ["ap"],
    "links": [{"between": ["s0", "ap"], "profile": "radio"}, {"between": ["ap", "gw"], "profile": "wire"},
              {"between": ["gw", "srv"], "profile": "fibre"}],
}
SMALL = {"dataset": "digits", "rounds": 2, "max_train_samples": 300, "batch_size": 64}


def _files(tmp_path, topo: dict, profiles: dict | None = None) -> dict:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(topo))
    keys = {"topology": str(tmp_path / "site.yaml")}
    if profiles is not None:
        (tmp_path / "links.yaml").write_text(yaml.safe_dump(profiles))
        keys["profiles_file"] = str(tmp_path / "links.yaml")
    return keys


def _hops(bits: float, hops: list[tuple[float, float]], forwarding: str) -> float:
    """A message's seconds on ``hops`` ``(rate, latency)``: store-and-forward (``message``), added hop by hop; or
    packet by packet, bits / the slowest rate + the latencies; as :func:`fplstudy.facts.topology.price_path` adds them."""
    seconds = 0.0
    for rate, latency in hops:
        seconds += bits / rate + latency if forwarding == "message" else latency
    return seconds if forwarding == "message" else bits / min(rate for rate, _ in hops) + seconds


@pytest.mark.parametrize("forwarding", ["packet", "message"])
def test_three_hops_in_the_ledger_by_hand(tmp_path, forwarding):
    """mp on 3 stages: n0 on s0, n1 on srv, n2 on gw. Activations n0 -> n1 take s0 -> ap -> gw -> srv at the up
    rates, gradients n1 -> n0 the way back at the down rates; n2 (on gw) relays both: its row gets their bytes
    both ways and the joules of its two hops (wire rx + fibre tx up, fibre rx + wire tx down) in a ``relay`` row,
    one count per message forwarded and no seconds; ``bytes_total`` counts every message once. The labels
    n0 -> n2 pass the site ap, which is charged nothing. Every figure by hand, event by event."""
    cfg = make_config({**SMALL, "strategy": "mp", "nodes": 3, **_files(tmp_path, THREE_HOPS, HAND),
                       "placement": {"n0": "s0", "n1": "srv", "n2": "gw"}, "forwarding": forwarding})
    plan = resolve(cfg)
    assert [(n.point, n.device) for n in plan.nodes] == [("s0", "rpi4"), ("srv", "minipc"), ("gw", "jetson_orin_nano")]
    events = plan_events(plan, shard_sizes(plan))
    want: dict[tuple, list] = {}  # (round, node, kind) -> [count, tx, rx, seconds, energy]

    def add(key, count, tx, rx, s, e):
        row = want.setdefault(key, [0, 0, 0, 0.0, 0.0])
        for i, v in enumerate((count, tx, rx, s, e)):
            row[i] += v

    # (hops, then J/bit = power / the hop's rate: at the sender, at the receiver, at the relay n2 on gw)
    routes = {("n0", "n1"): ([(1e6, 0.01), (1e7, 0.001), (1e8, 0.0)], 0.1 / 1e6, 0.0, 0.02 / 1e7 + 0.0),
              ("n1", "n0"): ([(1e8, 0.0), (1e7, 0.001), (2e6, 0.01)], 0.0, 0.05 / 2e6, 0.0 + 0.01 / 1e7),
              ("n1", "n2"): ([(1e8, 0.0)], 0.0, 0.0, None), ("n2", "n1"): ([(1e8, 0.0)], 0.0, 0.0, None),
              ("n0", "n2"): ([(1e6, 0.01), (1e7, 0.001)], 0.1 / 1e6, 0.02 / 1e7, None)}  # the labels, past the site ap
    relayed = 0
    for ev in events:
        if not isinstance(ev, Transfer):
            continue
        hops, tx_j, rx_j, relay_j = routes[(ev.src, ev.dst)]
        bits = ev.nbytes * 8
        s = _hops(bits, hops, forwarding)
        add((ev.round, ev.src, ev.kind), 1, ev.nbytes, 0, s, bits * tx_j)
        add((ev.round, ev.dst, ev.kind), 1, 0, ev.nbytes, s, bits * rx_j)
        if relay_j is not None:
            add((ev.round, "n2", "relay"), 1, ev.nbytes, ev.nbytes, 0.0, bits * relay_j)
            relayed += ev.nbytes
    assert relayed > 0
    for fast in (True, False):
        ledger = price(plan, events, check_profiles(plan), fast=fast)
        msgs = ledger[ledger.kind.isin(["activations", "gradients", "labels", "relay"])]
        got = {(r.round, r.node, r.kind): [r.count, r.bytes_tx, r.bytes_rx, r.seconds, r.energy_j]
               for r in msgs.itertuples()}
        assert set(got) == set(want)
        for key, row in want.items():
            assert got[key][:3] == row[:3], key
            assert got[key][3:] == pytest.approx(row[3:], rel=1e-12, abs=1e-18), key
        assert ledger.bytes_tx.sum() == ledger.bytes_rx.sum() == sum(
            ev.nbytes for ev in events if isinstance(ev, Transfer)) + relayed
        assert totals(plan, ledger)["bytes_total"] == sum(ev.nbytes for ev in events if isinstance(ev, Transfer))


@pytest.mark.parametrize("strategy,nodes,extra", [("fl", 4, {}), ("sfl", 3, {}), ("fpl", 4, {"branches": 2}),
                                                  ("mp", 3, {}), ("sl", 3, {"network": "star"})])
def test_a_uniform_topology_file_gives_todays_ledger(tmp_path, strategy, nodes, extra):
    """The shorthand keys are a special case: a topology file that links every pair of the plan's nodes
    directly with the config's link profile, each node on the plan's own device, placed one to one, gives the
    same ledger DataFrame as the plan without it, float for float, on the fast and the reference path."""
    base = make_config({**SMALL, "strategy": strategy, "nodes": nodes, "link": "wifi4", **extra})
    plain = resolve(base)
    topo = {"nodes": {n.name: {"device": n.device} for n in plain.nodes},
            "links": uniform_links({n.name: n.side for n in plain.nodes}, "wifi4")}
    placed = resolve(make_config({**base.model_dump(exclude_defaults=True), **_files(tmp_path, topo),
                                  "placement": {n.name: n.name for n in plain.nodes}}))
    assert [n.point for n in placed.nodes] == [n.name for n in plain.nodes]
    sizes = shard_sizes(plain)
    events = plan_events(plain, sizes)
    assert events == plan_events(placed, sizes)
    for fast in (True, False):
        want = price(plain, events, check_profiles(plain), fast=fast)
        pd.testing.assert_frame_equal(price(placed, events, check_profiles(placed), fast=fast), want, check_exact=True)
    pd.testing.assert_frame_equal(price_plan(placed, sizes), price_plan(plain, sizes), check_exact=True)


def test_default_placement_and_a_node_override(tmp_path):
    """Default rule: the aggregator on the last topology node, the clients on the first ones in file order.
    A node's override of its device's FLOP/s is its device (``<profile>@<node>``) and prices its compute."""
    topo = {"nodes": {"a": {"device": "rpi4", "flops_per_s": 1.0e9}, "b": {"device": "rpi4"},
                      "c": {"device": "rpi4"}, "hub": {"device": "minipc"}},
            "links": [{"between": [x, "hub"], "profile": "wifi4"} for x in "abc"]}
    plan = resolve(make_config({**SMALL, "strategy": "fl", "nodes": 2, **_files(tmp_path, topo)}))
    assert [(n.name, n.point, n.device) for n in plan.nodes] == [
        ("n0", "a", "rpi4@a"), ("n1", "b", "rpi4"), ("n2", "hub", "minipc")]
    profiles = check_profiles(plan)
    events = plan_events(plan, shard_sizes(plan))
    ledger = price(plan, events, profiles)
    fwd = ledger[(ledger.kind == "forward") & (ledger.node == "n0")]
    calls = [ev for ev in events if isinstance(ev, Compute) and ev.node == "n0" and ev.phase == "forward"]
    assert fwd["count"].sum() == len(calls)
    assert fwd.seconds.sum() == pytest.approx(fwd.flops.sum() / 1.0e9, rel=1e-9)
    assert profiles.device("rpi4@a").status["flops_per_s"] == "U"
    other = ledger[(ledger.kind == "forward") & (ledger.node == "n1")]
    assert other.seconds.sum() == pytest.approx(other.flops.sum() / profiles.device("rpi4").flops_per_s, rel=1e-9)


@pytest.mark.parametrize("keys,field,hint", [
    ({"placement": {"n0": "d0"}}, "placement", "give topology: FILE too"),
    ({"topology": "fog_wifi", "node_devices": {"n0": "rpi4"}}, "node_devices", "drop node_devices or topology"),
    ({"topology": "fog_wifi", "placement": {"n9": "d0"}}, "placement", "no node named 'n9'"),
    ({"topology": "fog_wifi", "placement": {"n0": "mars"}}, "placement.n0", "not a node of topology"),
    ({"topology": "fog_wifi", "placement": {"n0": "d0", "n1": "d0"}}, "placement.n1", "already hosts n0"),
    ({"topology": "fog_wifi", "nodes": 11}, "topology", "has 11 nodes and the plan 12"),
    ({"topology": "no_such_site"}, "topology", "shipped one: fog_wifi"),
])
def test_bad_placements_are_refused_before_any_work(keys, field, hint):
    with pytest.raises(ConfigError) as err:
        resolve(make_config({"strategy": "fl", "nodes": 4, **keys}))
    assert err.value.key == field and hint in str(err.value) and "\n" not in str(err.value)


def test_placed_nodes_with_no_path_between_them_are_refused(tmp_path):
    topo = {"nodes": {"a": {"device": "rpi4"}, "b": {"device": "rpi4"}, "hub": {"device": "minipc"}},
            "links": [{"between": ["a", "hub"], "profile": "wifi4"}, {"from": "b", "to": "hub", "profile": "wifi4",
                                                                     "rate": "up"}]}
    with pytest.raises(ConfigError, match=r"no path from a to b"):
        resolve(make_config({"strategy": "fl", "nodes": 2, **_files(tmp_path, topo)}))


def test_explore_prices_its_plans_on_the_topology():
    """explore's plans carry the base config's topology (default placement): each is priced on its paths, as
    a dry run of the same plan prices it, and not as the uniform site of the same devices would."""
    from fplstudy.costs.dryrun import dry_run
    from fplstudy.costs.search import enumerate_plans
    from fplstudy.costs.search import price_candidate as explore_price

    base = make_config({**SMALL, "nodes": 3, "topology": "fog_wifi"})
    plans, _ = enumerate_plans(base, strategies=("fl", "sl", "fpl"), cuts="balanced")
    assert len(plans) >= 3 and all(n.point for p in plans for n in p.nodes)
    for plan in plans[:3]:
        got, want = explore_price(plan), dry_run(plan).totals
        assert (got["energy_j"], got["makespan_s"], got["bytes_total"]) == (
            want["energy_j"], want["makespan_s"], want["bytes_total"])
        uniform = {**plan.config.model_dump(exclude_defaults=True), "topology": None, "placement": None,
                   "node_devices": {n.name: n.device for n in plan.nodes}}
        assert dry_run(make_config(uniform)).totals["energy_j"] != got["energy_j"]


def test_the_plan_figure_names_points_and_links(tmp_path):
    """On a topology the plan picture says which topology node hosts each box and the path of every pair
    that exchanges messages, hop by hop with its link profile; without one it says neither."""
    from fplstudy.views.planfig import draw_plan, plan_graph

    cfg = make_config({**SMALL, "strategy": "mp", "nodes": 3, **_files(tmp_path, THREE_HOPS, HAND),
                       "placement": {"n0": "s0", "n1": "srv", "n2": "gw"}})
    g = plan_graph(resolve(cfg))
    assert [b.device for b in g.boxes] == ["rpi4 on s0", "minipc on srv", "jetson_orin_nano on gw"]
    assert g.title.endswith(" On topology site: n0–n1: s0 –radio→ ap –wire→ gw –fibre→ srv; "
                            "n0–n2: s0 –radio→ ap –wire→ gw; n1–n2: srv –fibre→ gw.")
    plain = plan_graph(resolve(make_config({**SMALL, "strategy": "mp", "nodes": 3})))
    assert "topology" not in plain.title and [b.device for b in plain.boxes] == ["rpi4"] * 3
    draw_plan(resolve(cfg), tmp_path / "plan.png")
    assert (tmp_path / "plan.png").stat().st_size > 0


def test_the_shipped_microcontroller_site_refuses_the_whole_model_on_a_256_kb_node():
    """wearables_mcu: fl puts the whole model (1.73 MB at its peak) on m0, an nRF52840 of 256 KB: refused before
    any work, naming the topology node, the plan node and both sizes; sl cut after the first block puts only its
    head there (0.132 MB) and every node fits its device."""
    from fplstudy.costs.memory import misfits
    from fplstudy.train.runner import prepare

    with pytest.raises(ConfigError, match=r"^config key 'topology \(m0\)': got 'nrf52840'; node n0 \(branch0/stage0\) "
                                          r"needs 1\.73 MB at its peak and the device has 0\.262 MB"):
        prepare(make_config({"strategy": "fl", "nodes": 4, "topology": "wearables_mcu"}))
    plan, profiles, _ = prepare(make_config({"strategy": "sl", "nodes": 4, "junction_at": 1,
                                             "topology": "wearables_mcu"}))
    assert [(n.point, n.device) for n in plan.nodes][:2] == [("m0", "nrf52840"), ("m1", "nrf52840")]
    assert misfits(plan, profiles) == [] and profiles.device("nrf52840").memory_bytes == 262144
