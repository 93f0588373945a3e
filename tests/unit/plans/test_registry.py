"""The strategy registry: one place for every strategy-level fact, read by config checks, explore, the
figures, the plan picture and the teaching helpers; a strategy added to it and given a look (views/looks.py:
title, colour, marker, teaching text, kept out of the training code) is a strategy everywhere."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.colors import to_rgb

from fplstudy.config import ConfigError, make_config
from fplstudy.costs import search as explore
from fplstudy.plans import strategies
from fplstudy.plans.plan import resolve
from fplstudy.plans.strategies import REGISTRY, STRATEGIES, Shape, preset, strategy
from fplstudy.views import looks, planfig, style, teach
from fplstudy.views.looks import LOOKS, Look

ROOT = Path(__file__).resolve().parents[3]


def test_names_order_and_looks():
    assert STRATEGIES == ("centralized", "fl", "mp", "sl", "sfl", "fpl")  # DESIGN.md's table, the walk's order
    assert style.STRATEGY_ORDER == ("centralized", "mp", "fl", "sl", "sfl", "fpl")  # every legend's order
    assert sorted(s.legend for s in REGISTRY.values()) == list(range(len(REGISTRY)))
    assert style.LABEL_ORDER == ("centralized", "mp", "fl", "sl", "sfl", "fpl-shared", "fpl-adapter", "fpl-concat")
    assert list(style.LABEL_PALETTE.values()) == [to_rgb(c) for c in style.COLORBLIND[:8]]
    assert style.LABEL_MARKERS == {"centralized": "*", "mp": "s", "fl": "o", "sl": "^", "sfl": "v",
                                   "fpl-shared": "D", "fpl-adapter": "P", "fpl-concat": "X"}
    assert style.LABEL_PALETTE["fpl-shared"] == style.PALETTE["fpl"]
    assert len({LOOKS[s].marker for s in REGISTRY}) == len({LOOKS[s].colour for s in REGISTRY}) == len(REGISTRY)
    assert [name for name, _ in teach.WALK] == list(STRATEGIES)
    assert teach.STRATEGY_NAMES == {"centralized": "centralized", "fl": "FL", "mp": "MP", "sl": "SL", "sfl": "SFL",
                                    "fpl": "FPL"}


@pytest.mark.parametrize("values, shape", [
    ({"strategy": "centralized", "nodes": 1}, Shape(1, 1, 0, 8, "shared", "none", False)),
    ({"strategy": "fl", "nodes": 4}, Shape(4, 1, 0, 8, "shared", "fedavg", True)),
    ({"strategy": "mp", "nodes": 4}, Shape(1, 0, 4, 0, "shared", "none", False)),
    ({"strategy": "sl", "nodes": 4}, Shape(3, 1, 1, 2, "shared", "relay", False)),
    ({"strategy": "sfl", "nodes": 4, "junction_at": 3}, Shape(3, 1, 1, 3, "shared", "fedavg", False)),
    ({"strategy": "fpl", "nodes": 6}, Shape(3, 1, 3, 2, "adapter", "fedavg", False)),
    ({"strategy": "fpl", "nodes": 6, "branch_stages": 2, "junction": "concat", "partition": "features"},
     Shape(1, 2, 4, 2, "concat", "none", False)),
])
def test_presets_by_hand(values, shape):
    """DESIGN.md's table for a model of 8 blocks whose default head is 2 blocks."""
    assert preset(make_config(values), 8, 2) == shape
    assert shape.cuts_a_head == (values["strategy"] in ("sl", "sfl", "fpl"))


def test_an_unknown_strategy_is_refused_in_one_line_naming_the_known_ones():
    cfg = make_config({"strategy": "fedprox"})  # the name is checked where the plan is resolved
    with pytest.raises(ConfigError) as err:
        resolve(cfg)
    assert (err.value.key, err.value.value) == ("strategy", "fedprox")
    assert str(err.value) == ("config key 'strategy': got 'fedprox'; known strategies: centralized, fl, mp, sl, "
                              "sfl, fpl")
    with pytest.raises(ConfigError, match="config key 'strategies': got 'fedprox'; known strategies: centralized"):
        explore.enumerate_plans(make_config({"max_train_samples": 40}), 2, strategies=("fl", "fedprox"))
    with pytest.raises(ConfigError, match="config key 'strategy': got 3; input should be a valid string"):
        make_config({"strategy": 3})


def test_the_cli_refuses_an_unknown_strategy_before_any_work(capsys):
    from fplstudy.cli import main

    assert main(["plan", "--set", "strategy=fedprox"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'strategy'" in err[0] and "fedprox" in err[0] and "centralized, fl, mp" in err[0]


def test_a_junction_only_fpl_has_is_refused_naming_fpl():
    with pytest.raises(ConfigError, match="strategy sfl has no junction layer; 'adapter' and 'concat' need "
                                          "strategy=fpl"):
        preset(make_config({"strategy": "sfl", "junction": "concat"}), 8, 2)


@pytest.mark.parametrize("values, key", [
    ({"strategy": "fl", "nodes": 6}, "nodes"),
    ({"strategy": "sl", "nodes": 7}, "nodes"),
    ({"strategy": "fpl", "nodes": 7, "branches": 6}, "branches"),
    ({"strategy": "fpl", "nodes": 12}, "nodes"),
])
def test_too_many_branches_names_the_registrys_key_and_fix(values, key):
    cfg = make_config({**values, "max_train_samples": 5})
    got_key, value, fix = strategy(cfg.strategy).fewer_branches(cfg, 5)
    with pytest.raises(ConfigError) as err:
        resolve(cfg)
    assert (err.value.key, err.value.value, got_key) == (key, value, key)
    assert fix in str(err.value)


def test_config_does_not_import_the_registry():
    """strategies reads config; config must not read strategies at import (no cycle)."""
    code = ("import sys, fplstudy.config; "
            "print('fplstudy.plans.strategies' in sys.modules, hasattr(fplstudy.config, 'STRATEGIES'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]  # the names live in the registry only


def test_a_strategy_added_to_the_registry_and_its_look_is_resolved_enumerated_named_and_drawn(monkeypatch):
    """A preset that fits the plan's shape, registered in strategies.py with a look in looks.py: FL whose
    clients are averaged every other round by default, under its own name."""
    fl = REGISTRY["fl"]

    def shape(cfg, n_blocks, default_junction):
        return dataclasses.replace(fl.shape(cfg, n_blocks, default_junction), sync=cfg.sync or "fedavg")

    def candidates(axes):
        for c in fl.candidates(axes):
            yield {**c, "strategy": "lazyfl"}

    lazy = dataclasses.replace(fl, name="lazyfl", shape=shape,
                               candidates=candidates, plan_name=lambda plan: f"lazyfl-{plan.config.nodes}-every{plan.sync_every}",
                               describe=lambda row: f"LFL: {row['nodes']} clients")
    monkeypatch.setitem(strategies.REGISTRY, "lazyfl", lazy)
    monkeypatch.setitem(looks.LOOKS, "lazyfl", Look(title="Lazy federated learning (LFL)", short="LFL",
                                                    teaching="FL averaged every other round", colour="#000000",
                                                    marker="h"))
    base = {"max_train_samples": 40, "rounds": 2}
    plan = resolve(make_config({**base, "strategy": "lazyfl", "nodes": 3}))
    assert (len(plan.branches), plan.sync, plan.aggregator is not None) == (3, "fedavg", True)
    plans, refused = explore.enumerate_plans(make_config(base), 3, strategies=("lazyfl",), sync_every=(1, 2))
    assert [explore.plan_name(p) for p in plans] == ["lazyfl-3-every1", "lazyfl-3-every2"] and refused == 0
    assert teach.readable_name(explore.plan_row(plans[0])) == "LFL: 3 clients"
    assert planfig.plan_words(plan).startswith("Lazy federated learning (LFL) on 4 nodes: 3 nodes each hold")
    assert explore.price_candidate(plans[0])["bytes_total"] > 0
