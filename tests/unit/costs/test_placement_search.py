"""The placement search (``explore(..., search_placement=True)``): which topology nodes may swap hosts, the
placements it prices (listed by hand), their prices against the reference, the exact front against a brute
force over every placement, the memory bound, the sample beyond ``max_placements``, and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import yaml

from fplstudy.config import ConfigError, make_config
from fplstudy.costs.dryrun import plan_events, round_shapes, shard_sizes
from fplstudy.costs.ledger import price as price_events
from fplstudy.costs.ledger import totals
from fplstudy.costs.search import (
    data_owners,
    enumerate_plans,
    explore,
    interchangeable,
    network_joules,
    pair_bytes,
    placed,
    placements,
    price_candidate,
    price_placements,
)
from fplstudy.facts.profiles import check_profiles
from fplstudy.plans.events import Transfer
from fplstudy.plans.plan import resolve

HAND = {"links": {
    "radio": {"up_bps": 1.0e6, "down_bps": 2.0e6, "tx_w": 0.1, "rx_w": 0.05, "latency_s": 0.01},
    "wire": {"up_bps": 1.0e7, "down_bps": 1.0e7, "tx_w": 0.01, "rx_w": 0.02, "latency_s": 0.001}}}
# d0, d1 -radio- gw -wire- srv -radio- e0, e1: a tree; gw and srv lie inside paths, d0/d1 and e0/e1 are twins
TREE = {
    "nodes": {"d0": {"device": "rpi4"}, "d1": {"device": "rpi4"}, "gw": {"device": "jetson_orin_nano"},
              "srv": {"device": "minipc"}, "e0": {"device": "rpi4"}, "e1": {"device": "rpi4"}},
    "links": [{"between": ["d0", "gw"], "profile": "radio"}, {"between": ["d1", "gw"], "profile": "radio"},
              {"between": ["gw", "srv"], "profile": "wire"}, {"between": ["e0", "srv"], "profile": "radio"},
              {"between": ["e1", "srv"], "profile": "radio"}],
}
SMALL = {"dataset": "digits", "rounds": 2, "max_train_samples": 200, "batch_size": 64}


def _keys(tmp_path, topo: dict = TREE) -> dict:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(topo, sort_keys=False))
    (tmp_path / "links.yaml").write_text(yaml.safe_dump(HAND))
    return {"topology": str(tmp_path / "site.yaml"), "profiles_file": str(tmp_path / "links.yaml")}


def _plan(tmp_path, topo: dict = TREE, **values):
    return resolve(make_config({**SMALL, **_keys(tmp_path, topo), **values}))


def test_interchangeable_nodes_by_hand(tmp_path):
    plan = _plan(tmp_path, strategy="fl", nodes=2)
    assert interchangeable(plan.site, check_profiles(plan)) == {
        "d0": "d0", "d1": "d0", "gw": "gw", "srv": "srv", "e0": "e0", "e1": "e0"}
    # a device field overridden on e1 makes it another device: no longer a twin of e0
    topo = {**TREE, "nodes": {**TREE["nodes"], "e1": {"device": "rpi4", "flops_per_s": 1.0e9}}}
    plan = _plan(tmp_path, topo, strategy="fl", nodes=2)
    assert interchangeable(plan.site, check_profiles(plan))["e1"] == "e1"
    # fog_wifi: the four devices behind each gateway are twins, the gateways and the server are not
    fog = resolve(make_config({**SMALL, "strategy": "fl", "nodes": 2, "topology": "fog_wifi"}))
    cls = interchangeable(fog.site, check_profiles(fog))
    assert [cls[f"d{i}"] for i in range(8)] == ["d0"] * 4 + ["d4"] * 4
    assert [cls[p] for p in ("gw0", "gw1", "server")] == ["gw0", "gw1", "server"]


def test_the_placements_listed_by_hand(tmp_path):
    """fl on 2 clients: the data owners n0, n1 stay on d0, d1; the aggregator may go to gw, srv or e0 (e1 is
    e0's twin). mp on 3 stages: n0 (the data) stays on d0, n1 and n2 go to two of d1, gw, srv, e0, e1: 20
    placements, 13 up to the twin e0/e1 (e1 only once e0 is taken)."""
    fl = _plan(tmp_path, strategy="fl", nodes=2)
    assert data_owners(fl) == ("n0", "n1")
    assert [w["n2"] for w in placements(fl)] == ["gw", "srv", "e0"]
    assert [w["n2"] for w in placements(fl, twins=False)] == ["gw", "srv", "e0", "e1"]
    mp = _plan(tmp_path, strategy="mp", nodes=3)
    assert data_owners(mp) == ("n0",)
    got = [(w["n1"], w["n2"]) for w in placements(mp)]
    assert got == [("d1", "gw"), ("d1", "srv"), ("d1", "e0"), ("gw", "d1"), ("gw", "srv"), ("gw", "e0"),
                   ("srv", "d1"), ("srv", "gw"), ("srv", "e0"), ("e0", "d1"), ("e0", "gw"), ("e0", "srv"),
                   ("e0", "e1")]
    assert all(w["n0"] == "d0" for w in placements(mp))
    assert sorted((w["n1"], w["n2"]) for w in placements(mp, twins=False)) == sorted(
        itertools.permutations(["d1", "gw", "srv", "e0", "e1"], 2))


def test_placed_plans_equal_resolved_ones_and_their_prices_the_reference(tmp_path):
    """:func:`placed` gives the plan resolve gives for the config with that placement; price_placements gives
    :func:`price_candidate` of it (to 1e-12), and price's totals are the event-by-event reference's."""
    plan = _plan(tmp_path, strategy="fpl", nodes=4, branches=2)
    wheres = list(placements(plan, twins=False))
    assert len(wheres) == 12  # the trunk's n2, n3 on two of gw, srv, e0, e1 (d0, d1 hold the data)
    fast = price_placements(plan, wheres)
    for where, cost in zip(wheres, fast):
        cfg = make_config({**plan.config.model_dump(exclude_defaults=True), "placement": where})
        ref = resolve(cfg)
        assert placed(plan, where).nodes == ref.nodes and placed(plan, where).config == cfg
        want = price_candidate(ref)
        assert set(cost) == set(want)
        for key, value in want.items():
            assert cost[key] == pytest.approx(value, rel=1e-12), (where, key)
        events = plan_events(ref, shard_sizes(ref))
        slow = totals(ref, price_events(ref, events, check_profiles(ref), fast=False))
        for key, value in slow.items():
            assert want[key] == pytest.approx(value, rel=1e-12), (where, key)


def _path(src: str, dst: str) -> list[str]:
    """The points from src to dst in TREE (a tree: one path), found here without the package's routing."""
    adj: dict[str, list[str]] = {}
    for link in TREE["links"]:
        a, b = link["between"]
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    todo, back = [src], {src: None}
    while todo:
        here = todo.pop()
        for nxt in adj[here]:
            if nxt not in back:
                back[nxt] = here
                todo.append(nxt)
    out = [dst]
    while out[-1] != src:
        out.append(back[out[-1]])
    return out[::-1]


def _network_by_hand(plan, events) -> float:
    """Joules of the points hosting no plan node on each message's path: rx W x the airtime of the hop in, tx W
    x the airtime of the hop out (a ``between: [a, b]`` link carries a -> b at its up rate, b -> a at its down)."""
    hop = {}  # (src, dst) -> (profile, rate)
    for link in TREE["links"]:
        (a, b), prof = link["between"], HAND["links"][link["profile"]]
        hop[(a, b)], hop[(b, a)] = (prof, prof["up_bps"]), (prof, prof["down_bps"])
    point = {n.name: n.point for n in plan.nodes}
    total = 0.0
    for ev in events:
        if isinstance(ev, Transfer):
            path = _path(point[ev.src], point[ev.dst])
            for before, here, after in zip(path, path[1:], path[2:]):
                if here not in point.values():
                    (into, rate_in), (out_of, rate_out) = hop[(before, here)], hop[(here, after)]
                    total += ev.nbytes * 8 * (into["rx_w"] / rate_in + out_of["tx_w"] / rate_out)
    return total


def test_the_exact_front_against_every_placement(tmp_path):
    """mp on 3 stages of TREE, both balanced cuts: every one of the 20 placements of each shape priced one by
    one (resolve, the reference ledger, the free relays' joules by hand), the front on (site energy,
    makespan) by brute force; the search's front (13 placements a shape, twins once) has exactly the same
    cost points, and each of its plans is on the brute-force front."""
    base = {**SMALL, **_keys(tmp_path), "strategy": "mp", "nodes": 3}
    shapes, _ = enumerate_plans(make_config(base), 3, strategies=("mp",), cuts="balanced")
    assert len(shapes) >= 2
    brute = []
    for shape in shapes:
        cuts = tuple(st.start for st in shape.trunk)
        wheres = list(placements(shape, twins=False))
        assert len(wheres) == 20
        for where in wheres:
            plan = resolve(make_config({**shape.config.model_dump(exclude_defaults=True), "placement": where}))
            events = plan_events(plan, shard_sizes(plan))
            t = totals(plan, price_events(plan, events, check_profiles(plan), fast=False))
            brute.append(((cuts, tuple(where[n] for n in ("n0", "n1", "n2"))),
                          t["energy_j"] + _network_by_hand(plan, events), t["makespan_s"]))
    front = [b for b in brute if not any(o[1] <= b[1] and o[2] <= b[2] and (o[1] < b[1] or o[2] < b[2])
                                         for o in brute)]
    assert 2 <= len(front) < len(brute) / 2
    res = explore(base, 3, strategies=("mp",), cuts="balanced", search_placement=True,
                  objectives=("energy_j_site", "makespan_s"))
    assert res.plans["placements_exhaustive"].all() and len(res.plans) == 13 * len(shapes)
    # the same cost points (twins, one placement and its mirror, cost the same: the search keeps one of them)
    assert sorted(map(tuple, np.round(res.front[["energy_j_site", "makespan_s"]].to_numpy(), 9).tolist())) == sorted(
        set(map(tuple, np.round([[e, m] for _, e, m in front], 9).tolist())))
    on_front = {key for key, _, _ in front}
    for cfg, name in zip(res.configs(), res.front["name"]):
        plan = resolve(cfg)  # the front's configs rebuild its plans on their placements
        assert ",".join(n.point for n in plan.nodes) == name.split("@")[1]
        assert (tuple(st.start for st in plan.trunk), tuple(n.point for n in plan.nodes)) in on_front


def test_twins_swapped_give_the_same_prices(tmp_path):
    plan = resolve(make_config({**SMALL, "strategy": "fpl", "nodes": 4, "branches": 2, "topology": "fog_wifi"}))
    a = {"n0": "d0", "n1": "d1", "n2": "d2", "n3": "d5"}
    b = {"n0": "d0", "n1": "d1", "n2": "d3", "n3": "d7"}
    pa, pb = price_placements(plan, [a, b])
    assert pa == pb
    assert pa != price_placements(plan, [{"n0": "d0", "n1": "d1", "n2": "gw0", "n3": "d5"}])[0]


def test_free_relays_cost_energy(tmp_path):
    """The aggregator on srv: every client's message passes gw, which hosts no plan node; its joules are
    the network's (not in the ledger) and energy_j_site adds them. On gw itself nothing is relayed."""
    fl = _plan(tmp_path, strategy="fl", nodes=2)
    on_srv, on_gw = price_placements(fl, [{"n0": "d0", "n1": "d1", "n2": "srv"}, {"n0": "d0", "n1": "d1", "n2": "gw"}])
    pairs = pair_bytes(round_shapes(fl, shard_sizes(fl)))
    sent = sum(pairs.values())
    # half the bytes go up (gw receives on the radio at 1e6 bit/s, sends on the wire at 1e7), half come down (gw
    # receives on the wire, sends on the radio at its down rate, 2e6): power / rate per bit at each end
    up, down = 0.05 / 1e6 + 0.01 / 1e7, 0.02 / 1e7 + 0.1 / 2e6
    assert on_srv["energy_j_network"] == pytest.approx(sent * 8 * (up + down) / 2, rel=1e-12)
    assert on_gw["energy_j_network"] == 0.0 and network_joules(placed(fl, {"n0": "d0", "n1": "d1", "n2": "gw"}),
                                                               pairs) == 0.0
    assert on_srv["energy_j_site"] == on_srv["energy_j"] + on_srv["energy_j_network"]


def test_memory_bounds_the_search_and_flags_plans(tmp_path):
    """A device of 1 kB holds no stage: the search never puts a plan node there, and a data owner on one
    leaves its shape without placements; without the search the plan is flagged and off the front."""
    tiny = {**TREE, "nodes": {**TREE["nodes"], "srv": {"device": "minipc", "memory_bytes": 1.0e3}}}
    mp = _plan(tmp_path, tiny, strategy="mp", nodes=3)
    assert all("srv" not in w.values() for w in placements(mp)) and len(list(placements(mp))) == 7
    owner = {**TREE, "nodes": {**TREE["nodes"], "d0": {"device": "rpi4", "memory_bytes": 1.0e3}}}
    assert list(placements(_plan(tmp_path, owner, strategy="mp", nodes=3))) == []
    res = explore({**SMALL, **_keys(tmp_path, owner)}, 2, strategies=("mp",), cuts="balanced")
    assert not res.plans["memory_fits"].any() and not res.plans["within_budget"].any() and res.front.empty
    ok = explore({**SMALL, **_keys(tmp_path)}, 2, strategies=("mp",), cuts="balanced")
    assert ok.plans["memory_fits"].all()
    # a run is refused before any work, naming the key that chose the device and the node's peak
    from fplstudy.costs.memory import memory_rows
    from fplstudy.train.runner import prepare

    cfg = make_config({**SMALL, **_keys(tmp_path, owner), "strategy": "mp", "nodes": 3})
    with pytest.raises(ConfigError) as err:
        prepare(cfg)
    peak = memory_rows(resolve(cfg))[0][-1]
    assert err.value.key == "topology (d0)" and err.value.value == "rpi4@d0"
    assert f"needs {peak / 1e6:.3g} MB" in str(err.value) and "0.001 MB" in str(err.value)
    prepare(make_config({**SMALL, **_keys(tmp_path), "strategy": "mp", "nodes": 3}))  # the same plan fits on TREE


def test_workers_give_the_same_search(tmp_path):
    base = {**SMALL, **_keys(tmp_path)}
    one = explore(base, 3, strategies=("mp", "fl"), cuts="balanced", search_placement=True)
    two = explore(base, 3, strategies=("mp", "fl"), cuts="balanced", search_placement=True, workers=2)
    pd.testing.assert_frame_equal(one.plans.drop(columns="overrides"), two.plans.drop(columns="overrides"))
    assert len(one.plans) > 13


def test_beyond_max_placements_a_seeded_sample(tmp_path):
    base = {**SMALL, **_keys(tmp_path), "strategy": "mp", "nodes": 3}
    one = explore(base, 3, strategies=("mp",), cuts="balanced", search_placement=True, max_placements=5)
    two = explore(base, 3, strategies=("mp",), cuts="balanced", search_placement=True, max_placements=5)
    assert not one.plans["placements_exhaustive"].any()
    per_shape = one.plans["name"].str.split("@").str[0].value_counts()
    assert (per_shape == 5).all()
    assert one.plans["name"].tolist() == two.plans["name"].tolist()
    shape = {k: v for k, v in one.plans["overrides"][0].items() if k != "placement"}
    own = ",".join(n.point for n in resolve(make_config(shape)).nodes)  # the default placement is always priced
    assert f"{one.plans['name'][0].split('@')[0]}@{own}" in set(one.plans["name"])


@pytest.mark.parametrize("kwargs,field", [
    ({"search_placement": True}, "search_placement"),
    ({"search_placement": True, "max_placements": 0, "topology": True}, "max_placements"),
    ({"search_placement": True, "placement": True, "topology": True}, "placement"),
])
def test_bad_searches_are_refused(tmp_path, kwargs, field):
    base = dict(SMALL)
    if kwargs.pop("topology", False):
        base |= _keys(tmp_path)
    if kwargs.pop("placement", False):
        base["placement"] = {"n0": "d0"}
    with pytest.raises(ConfigError) as err:
        explore(base, 2, strategies=("mp",), **kwargs)
    assert err.value.key == field


def test_cli_explore_with_placement_search(tmp_path, capsys):
    from fplstudy.cli import main

    keys = _keys(tmp_path)
    out = tmp_path / "front.csv"
    args = ["explore", "--set", "nodes=2", "--set", "max_train_samples=200", "--set", "rounds=1",
            "--set", f"topology={keys['topology']}", "--set", f"profiles_file={keys['profiles_file']}",
            "--search-placement", "--max-placements", "3", "--out", str(out)]
    assert main(args) == 0
    front = pd.read_csv(out)
    assert front["name"].str.contains("@").all() and front["set"].str.contains("placement=").all()
    from fplstudy.config import load_config
    from fplstudy.costs.search import OBJECTIVES, decode_name, plan_name, set_pairs

    for _, row in front.iterrows():  # each row's set column gives that plan on that placement
        plan = resolve(load_config(None, set_pairs(row["set"])))
        shape, _, where = row["name"].partition("@")
        assert plan_name(plan) == shape and where == ",".join(n.point for n in plan.nodes)
        assert decode_name(row["name"])["placement"] == where
        cost = price_candidate(plan)
        for column in OBJECTIVES:
            assert cost[column] == pytest.approx(row[column], rel=1e-9), (row["name"], column)
    assert main(["explore", "--set", "nodes=2", "--max-placements", "3"]) != 0
    assert "--max-placements" in capsys.readouterr().err
