"""Costs at the paper's scale without the data: dry runs on a dataset's declared shape, and the scale study.

By hand: FL's parameter bytes on ResNet-18, MP's activation bytes on VGG-11, the crossover on a hand-made
table and on two small models; and the declared-shape dry run equals the file-based one, row for row, on
small files written in the real on-disk formats (as tests/unit/facts/test_datasets.py writes them).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fplstudy.config import ConfigError, StudyError, make_config
from fplstudy.costs.dryrun import FROM_DECLARED, FROM_FILES, dry_run
from fplstudy.facts.datasets import DATASET_CLASS_COUNTS, DATASET_SIZES, files_present
from fplstudy.plans.plan import resolve
from fplstudy.stages.scale import run_scale
from fplstudy.study.params import ScaleParams, load_scale
from fplstudy.study.scale import crossover_grid, crossover_points

CIFAR10_TRAIN = 50_000


def _empty(tmp_path: Path) -> str:
    folder = tmp_path / "no-files"
    folder.mkdir()
    return str(folder)


def test_declared_class_counts_sum_to_the_declared_sizes():
    for name, (train, test) in DATASET_CLASS_COUNTS.items():
        assert (sum(train), sum(test)) == DATASET_SIZES[name], name
        assert len(train) == len(test) == 10
    assert DATASET_CLASS_COUNTS["mnist"][0][1] == 6742 and DATASET_CLASS_COUNTS["mnist"][1][5] == 892


# --------------------------------------------------------------------------- by hand, at the paper's scale

def test_fl_resnet18_params_up_per_client_per_round_by_hand(tmp_path):
    """ResNet-18 (CIFAR stem, 10 classes): 11,173,962 parameters; BatchNorm running mean and variance of
    64 (stem) + 4 x 64 (layer1) + 4 x 128 + 128 (layer2, with its downsample) + 4 x 256 + 256 + 4 x 512 + 512
    = 4,800 channels = 9,600 floats. ``num_batches_tracked`` (one int64 per BatchNorm, 20 of them) is not
    shipped: the engine's FedAvg averages floating-point state only (``sync_numel``)."""
    cfg = make_config({"dataset": "cifar10", "model": "resnet18", "strategy": "fl", "nodes": 3, "rounds": 2,
                       "data_dir": _empty(tmp_path)})
    dry = dry_run(cfg)
    assert dry.priced_from == FROM_DECLARED
    assert sum(dry.shard_sizes) == CIFAR10_TRAIN
    bn_channels = 64 + 4 * 64 + (4 * 128 + 128) + (4 * 256 + 256) + (4 * 512 + 512)
    per_client = 4 * (11_173_962 + 2 * bn_channels)
    assert per_client == 44_734_248

    from fplstudy.facts.models import build_model

    state = build_model("resnet18", (3, 32, 32), 10).state_dict()
    ints = [k for k, v in state.items() if not v.is_floating_point()]
    assert len(ints) == 20 and all(k.endswith("num_batches_tracked") for k in ints)

    up = dry.ledger[dry.ledger["kind"] == "params_up"]
    clients = [n.name for n in dry.plan.nodes if n.name != dry.plan.aggregator]
    assert len(clients) == 3
    for rnd in (0, 1):
        rows = up[up["round"] == rnd].set_index("node")
        for c in clients:
            assert rows.loc[c, "bytes_tx"] == per_client and rows.loc[c, "count"] == 1
        assert rows.loc[dry.plan.aggregator, "bytes_rx"] == 3 * per_client


# per-sample output shapes of VGG-11's blocks on a 3x32x32 input (conv blocks with their max-pool)
VGG11_OUT = {"conv1": (64, 16, 16), "conv2": (128, 8, 8), "conv3_1": (256, 8, 8), "conv3_2": (256, 4, 4),
             "conv4_1": (512, 4, 4), "conv4_2": (512, 2, 2), "conv5_1": (512, 2, 2), "conv5_2": (512, 1, 1),
             "pool": (512,), "fc1": (512,)}


@pytest.mark.parametrize("cuts", [None, [3]])  # None: the FLOP-balanced default cut
def test_mp_vgg11_two_stages_activation_bytes_per_epoch_by_hand(tmp_path, cuts):
    cfg = make_config({"dataset": "cifar10", "model": "vgg11", "strategy": "mp", "nodes": 2, "rounds": 1,
                       "trunk_cuts": cuts, "data_dir": _empty(tmp_path)})
    dry = dry_run(cfg)
    assert dry.priced_from == FROM_DECLARED
    cut = dry.plan.trunk[1].start
    if cuts:
        assert cut == 3
    below = dry.plan.block_names[cut - 1]
    expected = 4 * math.prod(VGG11_OUT[below]) * CIFAR10_TRAIN  # float32 activations of every training sample
    sent = dry.ledger.groupby("kind")["bytes_tx"].sum()
    assert sent["activations"] == expected
    assert sent["gradients"] == expected
    assert sent["labels"] == 8 * CIFAR10_TRAIN  # int64 labels to the loss node
    assert set(sent.index) & {"params_up", "params_down"} == set()


# --------------------------------------------------------------------------- declared shape == files

def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _labels(rng, n: int) -> np.ndarray:
    """Skewed labels in a shuffled order (class k about (k + 1) times as frequent as class 0)."""
    y = rng.choice(10, size=n, p=np.arange(1, 11) / 55)
    return y.astype(np.uint8)


def _mnist_files(root: Path, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    y_train, y_test = _labels(rng, n_train), _labels(rng, n_test)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    _write_idx(raw / "train-labels-idx1-ubyte", y_train)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    _write_idx(raw / "t10k-labels-idx1-ubyte", y_test)
    return y_train, y_test


def _cifar_files(root: Path, monkeypatch, per_batch: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The pickled batches of cifar-10-python.tar.gz; torchvision's expected md5s are replaced by those of
    these files (its own integrity check and loader still run)."""
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(4)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    ys = {}
    for name, n in {**{f"data_batch_{i}": per_batch for i in range(1, 6)}, "test_batch": n_test}.items():
        y = _labels(rng, n).tolist()
        entry = {"batch_label": name, "labels": y, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        ys[name] = y
    meta = {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    y_train = np.concatenate([ys[f"data_batch_{i}"] for i in range(1, 6)])
    return y_train, np.array(ys["test_batch"])


PLANS = [  # (strategy, nodes, partition, extra keys): every partitioner, and a seeded subset for iid
    ("fl", 3, "iid", {}),
    ("fl", 3, "dirichlet", {"alpha": 1.0}),
    ("sfl", 4, "shards", {"classes_per_node": 2}),
    ("fpl", 4, "dirichlet", {"alpha": 1.0}),
    ("sl", 3, "iid", {"max_train_samples": 37}),
    ("mp", 2, "iid", {}),
]


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_declared_shape_dry_run_equals_the_files_dry_run(tmp_path, monkeypatch, dataset):
    files = tmp_path / "files"
    if dataset == "mnist":
        y_train, y_test = _mnist_files(files, 90, 20)
    else:
        y_train, y_test = _cifar_files(files, monkeypatch, 18, 20)
    assert files_present(dataset, files) and not files_present(dataset, _empty(tmp_path))
    # the declared table says what these files hold (the real one says what the real files hold)
    counts = (tuple(np.bincount(y_train, minlength=10).tolist()), tuple(np.bincount(y_test, minlength=10).tolist()))
    assert min(counts[0]) < max(counts[0])  # skewed, so a partition by label is tested
    monkeypatch.setitem(DATASET_CLASS_COUNTS, dataset, counts)
    model = "lenet5" if dataset == "mnist" else "cnn"
    for strategy, nodes, partition, extra in PLANS:
        keys = {"dataset": dataset, "model": model, "strategy": strategy, "nodes": nodes, "partition": partition,
                "rounds": 2, "batch_size": 8, "seed": 5, **extra}
        from_files = dry_run(make_config({**keys, "data_dir": str(files)}))
        declared = dry_run(make_config({**keys, "data_dir": str(tmp_path / "no-files")}))
        assert (from_files.priced_from, declared.priced_from) == (FROM_FILES, FROM_DECLARED)
        assert from_files.shard_sizes == declared.shard_sizes, (strategy, partition)
        pd.testing.assert_frame_equal(from_files.ledger, declared.ledger)
        assert from_files.totals == declared.totals
        pd.testing.assert_frame_equal(from_files.memory, declared.memory)


def test_declared_shape_refuses_a_label_skewed_subset(tmp_path):
    cfg = make_config({"dataset": "cifar10", "model": "cnn", "strategy": "fl", "nodes": 2, "partition": "dirichlet",
                       "max_train_samples": 1000, "data_dir": _empty(tmp_path)})
    with pytest.raises(ConfigError) as info:
        dry_run(cfg)
    assert info.value.key == "max_train_samples" and "partition=iid" in str(info.value)


def test_cost_prints_declared_shape_and_run_still_needs_the_files(tmp_path, capsys):
    from fplstudy.cli import main

    keys = ["--set", "dataset=cifar10", "--set", "model=cnn", "--set", "strategy=fl", "--set", "nodes=2",
            "--set", "rounds=1", "--set", f"data_dir={_empty(tmp_path)}"]
    assert main(["cost", *keys, "--out", str(tmp_path / "cost")]) == 0
    out = capsys.readouterr().out
    assert "priced from the declared shape of cifar10" in out and "declared shape" in out.splitlines()[-2]
    import json

    metrics = json.loads((tmp_path / "cost" / "metrics.json").read_text())
    assert metrics["priced_from"] == "declared shape" and sum(metrics["shard_sizes"]) == CIFAR10_TRAIN
    assert main(["run", *keys, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "did not find data_batch_1" in err


def test_explore_says_it_priced_the_declared_shape(tmp_path, capsys):
    from fplstudy.cli import main

    assert main(["explore", "--set", "dataset=cifar10", "--set", "model=cnn", "--set", "nodes=2", "--set",
                 f"data_dir={_empty(tmp_path)}", "--out", str(tmp_path / "front.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("priced from the declared shape of cifar10") for line in out[:3]), out[:3]
    assert len(pd.read_csv(tmp_path / "front.csv")) > 0


# --------------------------------------------------------------------------- the crossover

def test_crossover_of_a_hand_made_table():
    """Model a: FL 50,000 B; MP 200 B per sample -> n* = 250, so FL ships less at 1,000 but not at 100.
    Model b: FL 1,000,000 B; MP 1,000 B fixed + 100 B per sample -> n* = 9,990, MP ships less at both."""
    table = pd.DataFrame([
        ("a", "fl", 100, 50_000), ("a", "fl", 1000, 50_000), ("a", "mp", 100, 20_000), ("a", "mp", 1000, 200_000),
        ("b", "fl", 100, 1_000_000), ("b", "fl", 1000, 1_000_000), ("b", "mp", 100, 11_000), ("b", "mp", 1000, 101_000),
    ], columns=["model", "strategy", "train_samples", "bytes_per_epoch"])
    points = crossover_points(table).set_index("model")
    assert points.loc["a", "crossover_samples"] == 250 and points.loc["a", "bytes_per_sample"] == 200
    assert points.loc["a", "fixed_bytes"] == 0 and points.loc["a", "fl_cheaper_at_largest"]
    assert points.loc["b", "crossover_samples"] == 9990 and points.loc["b", "fixed_bytes"] == 1000
    assert not points.loc["b", "fl_cheaper_at_largest"]
    with pytest.raises(ValueError, match="vary"):
        crossover_points(table.assign(bytes_per_epoch=table["bytes_per_epoch"] + table["train_samples"]))


def test_crossover_of_two_priced_models_lies_where_the_arithmetic_says(tmp_path):
    """FL with 2 clients ships 2 x 2 x 4 x (floats of the model) per epoch; MP with 2 stages ships, per
    sample, the cut's activations and their gradients (2 x 4 x numel) and the label (8 B): n* is the ratio."""
    from fplstudy.facts.models import build_model

    params = ScaleParams(dataset="mnist", models=("cnn", "lenet5"), crossover_nodes=2,
                         crossover_samples=(200, 1000), crossover_against=("mp",),
                         extra={"data_dir": _empty(tmp_path)})
    table = crossover_grid(params)
    points = crossover_points(table).set_index("model")
    for model in ("cnn", "lenet5"):
        floats = sum(v.numel() for v in build_model(model, (1, 28, 28), 10).state_dict().values())
        fl = 2 * 2 * 4 * floats
        plan = resolve(make_config(params.config(model=model, strategy="mp", nodes=2)))
        cut = math.prod(plan.profile[plan.trunk[1].start - 1].out_shape)
        per_sample = 2 * 4 * cut + 8
        assert points.loc[model, "fl_bytes_per_epoch"] == fl
        assert points.loc[model, "bytes_per_sample"] == per_sample and points.loc[model, "fixed_bytes"] == 0
        assert points.loc[model, "crossover_samples"] == pytest.approx(fl / per_sample, rel=1e-12)
        rows = table[(table["model"] == model) & (table["strategy"] == "mp")].set_index("train_samples")
        for n in (200, 1000):
            assert rows.loc[n, "bytes_per_epoch"] == per_sample * n
            assert (fl < rows.loc[n, "bytes_per_epoch"]) == (n > fl / per_sample)


# --------------------------------------------------------------------------- the stage

def test_scale_params_refuse_bad_values_naming_key_value_and_fix():
    with pytest.raises(StudyError, match=r"scale\.models.*'vgg12'.*resnet18"):
        load_scale({"scale": {"models": ["vgg12"]}})
    with pytest.raises(StudyError, match=r"scale\.nodez.*unknown key"):
        load_scale({"scale": {"nodez": [2]}})
    with pytest.raises(StudyError, match=r"scale\.crossover\.train_samples.*must lie in 4\.\.50000"):
        load_scale({"scale": {"dataset": "cifar10", "crossover": {"nodes": 2, "train_samples": [100, 10**6]}}})
    with pytest.raises(StudyError, match=r"scale\.link.*'wifi9'.*known"):
        load_scale({"scale": {"link": "wifi9"}})
    with pytest.raises(StudyError, match=r"scale\.crossover\.reference\.model.*'cnn9'.*use one of"):
        load_scale({"scale": {"crossover": {"reference": {"dataset": "digits", "model": "cnn9"}}}})


def test_the_shipped_scale_section_is_valid():
    from fplstudy.paths import ROOT
    params = load_scale(Path(ROOT) / "params.yaml")
    assert params.dataset == "cifar10" and set(params.models) == {"vgg11", "resnet18", "mobilenetv2"}
    assert min(params.nodes) == 2 and max(params.nodes) == 16
    assert params.crossover_reference == ("digits", "cnn")


def test_run_scale_writes_tables_findings_and_figures(tmp_path):
    params = load_scale({"scale": {"dataset": "mnist", "models": ["cnn"], "strategies": ["centralized", "fl", "mp", "fpl"],
                           "nodes": [2, 4], "crossover": {"nodes": 2, "train_samples": [100, 400], "against": ["mp"]},
                           "extra": {"data_dir": _empty(tmp_path)}}})
    res = run_scale(params, tmp_path / "out", tmp_path / "fig")
    costs = pd.read_csv(tmp_path / "out" / "costs.csv")
    assert len(costs) == 1 + 3 * 2 and (costs["priced_from"] == "declared shape").all()
    assert (costs["status"] == "priced").all()
    for name in ("memory", "crossover", "crossover_points"):
        assert (tmp_path / "out" / f"{name}.csv").stat().st_size > 100
    text = (tmp_path / "out" / "findings.md").read_text()
    n_star = res["points"].iloc[0]["crossover_samples"]
    assert f"above {n_star:,.0f} training samples" in text
    for fig in ("bytes_energy_vs_nodes", "memory_vs_device", "crossover"):
        assert (tmp_path / "fig" / f"{fig}.png").stat().st_size > 10_000
