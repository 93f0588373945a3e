"""Hostile-but-fair input, class by class: every case is refused before any work with exit code 2 and
one stderr line ``fplstudy: error: ...`` naming the key (or file) and the offending value; no
traceback, nothing written, nothing executed.

The classes: YAML and files (config, ``--set`` values, ``profiles_file``), numbers (finite floats,
seed range, bounds derived from the data and the model, rounds/local_epochs), profile numbers
(physically plausible, so that costs stay finite) and the CLI's own flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_refusal import as_process, in_process, one_line

from fplstudy.cli import main

BAD_SEED_RANGE = "0..4294967295"


@dataclass(frozen=True)
class Case:
    """One hostile input: CLI arguments (``{tmp}`` = the test's folder), files to create there, and
    two strings the one-line error must contain (the key or file, and the value)."""

    id: str
    argv: tuple[str, ...]
    key: str
    value: str
    files: dict[str, bytes] = field(default_factory=dict)


def _sets(*pairs: str) -> tuple[str, ...]:
    out: list[str] = []
    for p in pairs:
        out += ["--set", p]
    return tuple(out)


TOY = b"devices:\n  toy: {flops_per_s: 1.0e+9, active_w: 2.0, idle_w: 0.5}\n"
BOMB = b"".join(
    [b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"]
    + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n".encode() for p, c in zip("abcdefg", "bcdefgh")]
    + [b"branch_cuts: [" + b", ".join([b"*h"] * 9) + b"]\n"])
RUN = ("run", "--quiet", "--out", "{tmp}/out")
SMALL = _sets("rounds=1", "max_train_samples=64", "batch_size=16")


def _profile_case(id: str, line: bytes, key: str, value: str, device: bool = True) -> Case:
    body = b"devices:\n  toy: {" + line + b"}\n" if device else b"links:\n  toy: {" + line + b"}\n"
    use = "device=toy" if device else "link=toy"
    return Case(id, ("cost", *_sets("profiles_file={tmp}/p.yaml", use)), key, value, {"p.yaml": body})


DEVICE_OK = b"flops_per_s: 1.0e+9, active_w: 2.0, idle_w: 0.5"
LINK_OK = b"up_bps: 1.0e+6, down_bps: 1.0e+6, tx_j_per_bit: 1.0e-8, rx_j_per_bit: 1.0e-8"

CASES = [
    # --- YAML and files: config file, --set values, profiles_file (one loader for all three)
    Case("config-invalid-yaml", ("plan", "{tmp}/c.yaml"), "c.yaml", "line 2, column 1", {"c.yaml": b"nodes: [1,\n"}),
    Case("config-not-utf8", ("plan", "{tmp}/c.yaml"), "c.yaml", "0xff", {"c.yaml": b"nodes: 4\nlink: \xff\xfe\n"}),
    Case("config-utf16", ("plan", "{tmp}/c.yaml"), "c.yaml", "UTF-8", {"c.yaml": "nodes: 4\n".encode("utf-16")}),
    Case("config-python-tag", ("plan", "{tmp}/c.yaml"), "c.yaml", "python/object/apply",
         {"c.yaml": b"nodes: !!python/object/apply:os.system ['touch pwned']\n"}),
    Case("config-duplicate-key", ("plan", "{tmp}/c.yaml"), "nodes", "3",
         {"c.yaml": b"nodes: 2\nstrategy: fl\nnodes: 3\n"}),
    Case("config-duplicate-nested-key", ("plan", "{tmp}/c.yaml"), "node_devices.n0", "minipc",
         {"c.yaml": b"node_devices:\n  n0: rpi4\n  n0: minipc\n"}),
    Case("config-non-string-key", ("plan", "{tmp}/c.yaml"), "1", "2", {"c.yaml": b"1: 2\n"}),
    Case("config-deep-nesting", ("plan", "{tmp}/c.yaml"), "c.yaml", "nested",
         {"c.yaml": b"branch_cuts: " + b"[" * 5000 + b"]" * 5000 + b"\n"}),
    Case("config-alias-bomb", ("plan", "{tmp}/c.yaml"), "c.yaml", "aliases", {"c.yaml": BOMB}),
    Case("config-is-a-folder", ("plan", "{tmp}"), "CONFIG", "folder"),
    Case("config-multi-document", ("plan", "{tmp}/c.yaml"), "c.yaml", "document",
         {"c.yaml": b"nodes: 2\n---\nnodes: 3\n"}),
    Case("set-invalid-yaml", ("plan", *_sets("nodes=[2,")), "nodes", "[2,"),
    Case("set-python-tag", ("plan", *_sets("seed=!!python/name:os.system")), "seed", "python/name"),
    Case("set-multi-document", ("plan", *_sets("nodes=1\n---\n2")), "nodes", "document"),
    Case("set-duplicate-key", ("plan", *_sets("node_devices={n0: rpi4, n0: minipc}")), "node_devices.n0", "minipc"),
    Case("set-control-character", ("plan", *_sets("link=\x07")), "link", "\\x07"),
    Case("profiles-not-utf8", ("plan", *_sets("profiles_file={tmp}/p.yaml")), "p.yaml", "0xff",
         {"p.yaml": b"devices:\n  toy: {flops_per_s: \xff}\n"}),
    Case("profiles-invalid-yaml", ("plan", *_sets("profiles_file={tmp}/p.yaml")), "p.yaml", "line 2, column 1",
         {"p.yaml": b"devices: [\n"}),
    Case("profiles-python-tag", ("plan", *_sets("profiles_file={tmp}/p.yaml")), "p.yaml", "python/object",
         {"p.yaml": b"devices: !!python/object/apply:os.system ['touch pwned']\n"}),
    Case("profiles-duplicate-key", ("plan", *_sets("profiles_file={tmp}/p.yaml")), "devices.toy.flops_per_s",
         "2000000000.0", {"p.yaml": b"devices:\n  toy: {flops_per_s: 1.0e+9, active_w: 2.0, idle_w: 0.5, "
                              b"flops_per_s: 2.0e+9}\n"}),
    # --- numbers: finite floats, blamed on the right key
    Case("momentum-nan", (*RUN, *SMALL, *_sets("momentum=.nan")), "momentum", "nan"),
    Case("momentum-one", (*RUN, *SMALL, *_sets("momentum=1.5")), "momentum", "1.5"),
    Case("weight-decay-inf", (*RUN, *SMALL, *_sets("weight_decay=.inf")), "weight_decay", "inf"),
    Case("alpha-inf", (*RUN, *SMALL, *_sets("partition=dirichlet", "alpha=.inf")), "alpha", "inf"),
    Case("lr-nan", (*RUN, *SMALL, *_sets("lr=.nan")), "lr", "nan"),
    Case("lr-inf", (*RUN, *SMALL, *_sets("lr=.inf")), "lr", "inf"),
    Case("lr-above-float32", (*RUN, *SMALL, *_sets("lr=1.0e+300")), "lr", "1e+300"),
    Case("weight-decay-huge", (*RUN, *SMALL, *_sets("weight_decay=1.0e+300")), "weight_decay", "1e+300"),
    Case("weight-decay-unstable", (*RUN, *SMALL, *_sets("lr=0.5", "weight_decay=4")), "weight_decay", "4"),
    Case("test-fraction-nan", ("plan", *_sets("test_fraction=.nan")), "test_fraction", "nan"),
    # --- seed: numpy's (and scikit-learn's) seed range
    Case("seed-negative", ("plan", *_sets("seed=-1")), "seed", BAD_SEED_RANGE),
    Case("seed-huge", ("plan", *_sets("seed=100000000000000000000000")), "seed", BAD_SEED_RANGE),
    Case("seed-2**32", ("plan", *_sets("seed=4294967296")), "seed", BAD_SEED_RANGE),
    Case("seed-float-string", ("plan", *_sets("seed=1e23")), "seed", "1e+23"),
    # --- bounds derived from the data: a test sample per class, a training sample per branch
    Case("test-fraction-0.999", ("plan", *_sets("test_fraction=0.999")), "test_fraction", "0.999"),
    Case("test-fraction-0.001", ("plan", *_sets("test_fraction=0.001")), "test_fraction", "0.001"),
    Case("fl-nodes-20000", ("cost", *_sets("strategy=fl", "nodes=20000")), "nodes", "20000"),
    Case("fl-nodes-1e9", ("cost", *_sets("strategy=fl", "nodes=1000000000")), "nodes", "1000000000"),
    Case("sl-nodes-1e6", ("cost", *_sets("strategy=sl", "nodes=1000000")), "nodes", "1000000"),
    Case("fpl-branches-1e6", ("cost", *_sets("strategy=fpl", "nodes=1000001", "branches=1000000",
                                             "trunk_stages=1")), "branches", "1000000"),
    Case("fl-more-nodes-than-samples", ("plan", *_sets("strategy=fl", "nodes=4", "max_train_samples=3")),
         "nodes", "4"),
    Case("shards-classes-per-node", ("plan", *_sets("partition=shards", "classes_per_node=11")),
         "classes_per_node", "11"),
    Case("batch-size-huge", ("plan", *_sets("batch_size=1000000000000000000000000000000")), "batch_size",
         "1000000000000000000000000000000"),
    Case("rounds-1e8", (*RUN, *_sets("rounds=100000000")), "rounds", "100000000"),
    Case("local-epochs-1e9", (*RUN, *_sets("local_epochs=1000000000")), "local_epochs", "1000000000"),
    Case("explore-nodes-1e9", ("explore", *_sets("nodes=1000000000")), "nodes", "1000000000"),
    # --- profile numbers: positive where needed, finite, physically plausible
    _profile_case("profile-flops-tiny", b"flops_per_s: 1.0e-300, active_w: 2.0, idle_w: 0.5",
                  "devices.toy.flops_per_s", "1e-300"),
    _profile_case("profile-flops-huge", b"flops_per_s: 1.0e+300, active_w: 2.0, idle_w: 0.5",
                  "devices.toy.flops_per_s", "1e+300"),
    _profile_case("profile-power-huge", b"flops_per_s: 1.0e+9, active_w: 1.0e+300, idle_w: 0.5",
                  "devices.toy.active_w", "1e+300"),
    _profile_case("profile-memory-tiny", DEVICE_OK + b", memory_bytes: 1.0e-300",
                  "devices.toy.memory_bytes", "1e-300"),
    _profile_case("profile-up-bps-tiny", b"up_bps: 1.0e-300, down_bps: 1.0e+6, tx_j_per_bit: 0, rx_j_per_bit: 0",
                  "links.toy.up_bps", "1e-300", device=False),
    _profile_case("profile-tx-energy-huge", b"up_bps: 1.0e+6, down_bps: 1.0e+6, tx_j_per_bit: 1.0e+300, "
                  b"rx_j_per_bit: 0", "links.toy.tx_j_per_bit", "1e+300", device=False),
    _profile_case("profile-latency-huge", LINK_OK + b", latency_s: 1.0e+300", "links.toy.latency_s", "1e+300",
                  device=False),
    # --- the CLI's own flags
    Case("figure-unknown-extension", ("plan", "--figure", "{tmp}/x.weird"), "--figure", "x.weird"),
    Case("figure-under-a-file", ("plan", "--figure", "{tmp}/c.yaml/x.png"), "--figure", "is a file",
         {"c.yaml": b"nodes: 4\n"}),
    Case("figure-is-a-folder", ("plan", "--figure", "{tmp}"), "--figure", "folder"),
    Case("explore-out-existing-folder", ("explore", *_sets("nodes=2"), "--out", "{tmp}"), "--out", "folder"),
    Case("explore-out-under-a-file", ("explore", *_sets("nodes=2"), "--out", "{tmp}/c.yaml/f.csv"), "--out",
         "is a file", {"c.yaml": b"nodes: 4\n"}),
    Case("explore-out-equals-all-out", ("explore", *_sets("nodes=2"), "--out", "{tmp}/f.csv", "--all-out",
                                        "{tmp}/f.csv"), "--all-out", "f.csv"),
    Case("explore-out-empty", ("explore", *_sets("nodes=2"), "--out", ""), "--out", "''"),
    Case("explore-all-out-folder", ("explore", *_sets("nodes=2"), "--all-out", "{tmp}"), "--all-out", "folder"),
    Case("explore-budget-nan", ("explore", *_sets("nodes=2"), "--budget-bytes-per-round", "nan"),
         "--budget-bytes-per-round", "nan"),
    Case("explore-budget-inf", ("explore", *_sets("nodes=2"), "--budget-bytes-per-round", "inf"),
         "--budget-bytes-per-round", "inf"),
    Case("explore-budget-negative", ("explore", *_sets("nodes=2"), "--budget-energy-j-per-node", "-1"),
         "--budget-energy-j-per-node", "-1"),
    Case("explore-workers-0", ("explore", *_sets("nodes=2"), "--workers", "0"), "--workers", "0"),
    Case("explore-workers-huge", ("explore", *_sets("nodes=2"), "--workers", "100000"), "--workers", "100000"),
    Case("explore-workers-not-int", ("explore", *_sets("nodes=2"), "--workers", "two"), "--workers", "two"),
    Case("explore-max-placements-0", ("explore", *_sets("nodes=2", "topology=fog_wifi"), "--search-placement",
                                      "--max-placements", "0"), "--max-placements", "0"),
    Case("explore-max-placements-alone", ("explore", *_sets("nodes=2"), "--max-placements", "5"),
         "--max-placements", "5"),
    Case("explore-search-no-topology", ("explore", *_sets("nodes=2"), "--search-placement"),
         "search_placement", "topology"),
]


def _argv(case: Case, tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in case.argv]


def _setup(case: Case, tmp: Path) -> set[str]:
    for name, data in case.files.items():
        (tmp / name).write_bytes(data)
    return set(os.listdir(tmp))


def _check_refusal(case: Case, rc: int, err: str, tmp: Path, before: set[str]) -> None:
    one_line(rc, err, case.key, case.value)
    assert set(os.listdir(tmp)) == before, "nothing may be written (or executed) for refused input"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_before_work_in_one_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _setup(case, tmp_path)
    _check_refusal(case, in_process(_argv(case, tmp_path)), capsys.readouterr().err, tmp_path, before)


SUBPROCESS = ("config-python-tag", "config-not-utf8", "set-invalid-yaml", "config-alias-bomb",
              "explore-workers-not-int", "fl-nodes-1e9")


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS], ids=list(SUBPROCESS))
def test_hostile_input_from_a_real_process(case, tmp_path):
    before = _setup(case, tmp_path)
    proc = as_process(_argv(case, tmp_path), tmp_path, timeout=300)
    _check_refusal(case, proc.returncode, proc.stderr, tmp_path, before)
    assert proc.stdout == ""


# --------------------------------------------------------------------------- the limits themselves

def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path, capsys):
    """A pipe (or a device such as /dev/null) would be replaced by the atomic rename of the CSV."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(SystemExit) as exc:
        main(["explore", "--set", "nodes=2", "--out", str(pipe)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fplstudy: error: argument --out:") and "not a regular file" in err
    assert pipe.exists() and not pipe.is_file()


def test_weight_decay_bound_follows_lr_and_momentum():
    """lr * weight_decay < 2 (1 + momentum): SGD's decay step alone is stable below, diverges at or above."""
    from fplstudy.config import ConfigError, make_config

    make_config({"lr": 0.5, "weight_decay": 3.99})
    make_config({"lr": 0.5, "momentum": 0.5, "weight_decay": 5.99})
    for values in ({"lr": 0.5, "weight_decay": 4.0}, {"lr": 0.5, "momentum": 0.5, "weight_decay": 6.0}):
        with pytest.raises(ConfigError, match="'weight_decay'"):
            make_config(values)


def test_a_figure_in_a_new_folder_is_written(tmp_path, capsys):
    """The output checks refuse what cannot be written, not what can: a missing folder is created."""
    figure = tmp_path / "figures" / "plan.svg"
    assert main(["plan", "--figure", str(figure)]) == 0
    assert figure.read_text().lstrip().startswith("<?xml")


def test_seed_range_ends_are_accepted():
    from fplstudy.config import make_config

    assert make_config({"seed": 0}).seed == 0
    assert make_config({"seed": 2**32 - 1}).seed == 2**32 - 1


def test_test_fraction_bounds_follow_the_dataset_size():
    """digits has 1797 samples in 10 classes: scikit-learn's stratified split needs at least one test
    and one training sample per class, so ceil(f * 1797) must lie in 10..1787."""
    from fplstudy.config import ConfigError, make_config
    from fplstudy.plans.plan import resolve

    for good in (9.5 / 1797, 1786.5 / 1797):  # 10 test samples; 1787 test samples (10 for training)
        resolve(make_config({"test_fraction": good}))
    for bad in (8.5 / 1797, 1787.5 / 1797):  # 9 test samples; 1788 (9 for training)
        with pytest.raises(ConfigError, match=r"'test_fraction'.* above 0.00500835 and at most 0.994435"):
            resolve(make_config({"test_fraction": bad}))


def test_branch_count_bound_is_the_training_set_size():
    """Every branch needs at least one training sample (so at least one batch)."""
    from fplstudy.config import ConfigError, make_config
    from fplstudy.facts.partition import load_partitioned
    from fplstudy.plans.plan import resolve

    plan = resolve(make_config({"strategy": "fl", "nodes": 5, "max_train_samples": 5}))
    _, part = load_partitioned(plan)
    assert part.samples() == [1, 1, 1, 1, 1]
    with pytest.raises(ConfigError, match="'nodes'.*at most 5"):
        resolve(make_config({"strategy": "fl", "nodes": 6, "max_train_samples": 5}))


def test_every_shipped_profile_lies_inside_the_profile_bounds():
    from fplstudy.facts.profiles import BOUNDS, PER_BIT, load_profiles

    prof = load_profiles()
    for section, entries in (("devices", prof.devices), ("links", prof.links)):
        for p in entries.values():
            for key, (lo, hi, _) in BOUNDS[section].items():
                if key in PER_BIT:  # read from a user's file as power; a profile holds tx_w and rx_w
                    continue
                value = getattr(p, key)
                if value is not None:
                    assert lo <= value <= hi, (section, p.name, key, value)


def test_duplicate_keys_are_refused_but_yaml_merge_keys_still_work(tmp_path):
    from fplstudy.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("<<: {nodes: 6, branches: 2}\nnodes: 5\n")
    loaded = load_config(cfg)
    assert (loaded.nodes, loaded.branches) == (5, 2)  # an explicit key overrides a merged one (YAML 1.1)
