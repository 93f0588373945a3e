"""Datasets: digits splits, and torchvision's own loaders reading tiny files in the real on-disk formats.

No network: MNIST/Fashion-MNIST are written as uncompressed idx-ubyte files under
``<root>/<ClassName>/raw`` (what torchvision 0.29's ``MNIST._check_exists`` looks for; it checks
existence only), CIFAR-10 as the pickled python batches under ``<root>/cifar-10-batches-py``.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fplstudy.facts.datasets import (
    DATASET_META,
    DATASETS,
    DatasetSplit,
    load_dataset,
    load_digits,
    subsample,
)

N_TRAIN, N_TEST = 12, 5  # samples in the synthetic files


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file (LeCun's MNIST format): magic 0x00 0x00 0x08(ubyte) ndim, big-endian dims, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _fake_mnist(root: Path, class_name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = root / class_name / "raw"
    raw.mkdir(parents=True)
    data = {"x_train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, N_TRAIN).astype(np.uint8),
            "x_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, N_TEST).astype(np.uint8)}
    data["x_train"][0, 0, 0], data["x_train"][0, 0, 1] = 0, 255  # both ends of the pixel range
    _write_idx(raw / "train-images-idx3-ubyte", data["x_train"])
    _write_idx(raw / "train-labels-idx1-ubyte", data["y_train"])
    _write_idx(raw / "t10k-images-idx3-ubyte", data["x_test"])
    _write_idx(raw / "t10k-labels-idx1-ubyte", data["y_test"])
    return data


def _fake_cifar(root: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Five training batches + test batch + batches.meta, as in cifar-10-python.tar.gz; returns md5s."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per_batch = 2
    batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": N_TEST}
    x_train, y_train = [], []
    data: dict[str, np.ndarray] = {}
    for name, n in batches.items():
        x = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G plane, B plane
        y = rng.integers(0, 10, n).tolist()
        entry = {"batch_label": name, "labels": y, "data": x, "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        if name == "test_batch":
            data["x_test"], data["y_test"] = x, np.array(y)
        else:
            x_train.append(x)
            y_train += y
    data["x_train"], data["y_train"] = np.concatenate(x_train), np.array(y_train)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"], "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    return data, md5


def _trust_synthetic_cifar_md5(monkeypatch, md5: dict[str, str]) -> None:
    """torchvision's CIFAR10 md5-checks every batch against the real files' checksums, which no
    synthetic file can match. We replace ONLY the expected checksums (class attributes) by those of
    our synthetic files; the real class still runs its own integrity check and loading code."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})


def _check_split(split: DatasetSplit, name: str) -> None:
    shape, num_classes = DATASET_META[name]
    assert split.name == name and split.num_classes == num_classes and split.input_shape == shape
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.ndim == 4 and tuple(x.shape[1:]) == shape and len(x) == len(y)
        assert x.min() >= 0 and x.max() <= 1
        assert x.is_contiguous()


@pytest.mark.parametrize("name,class_name", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_files_round_trip(tmp_path, name, class_name):
    raw = _fake_mnist(tmp_path, class_name)
    split = load_dataset(name, data_dir=tmp_path)
    _check_split(split, name)
    assert len(split.y_train) == N_TRAIN and len(split.y_test) == N_TEST  # official test file = test split
    assert torch.equal(split.x_train, torch.from_numpy(raw["x_train"]).float()[:, None] / 255)
    assert torch.equal(split.x_test, torch.from_numpy(raw["x_test"]).float()[:, None] / 255)
    assert split.y_train.tolist() == raw["y_train"].tolist() and split.y_test.tolist() == raw["y_test"].tolist()
    assert split.x_train[0, 0, 0, 0] == 0 and split.x_train[0, 0, 0, 1] == 1


def test_cifar10_batches_round_trip(tmp_path, monkeypatch):
    raw, md5 = _fake_cifar(tmp_path)
    _trust_synthetic_cifar_md5(monkeypatch, md5)
    split = load_dataset("cifar10", data_dir=str(tmp_path))
    _check_split(split, "cifar10")
    assert len(split.y_train) == 10 and len(split.y_test) == N_TEST
    # CIFAR rows are channel-major (1024 R, 1024 G, 1024 B): reshaping to (N, 3, 32, 32) is the layout.
    assert torch.equal(split.x_train, torch.from_numpy(raw["x_train"].reshape(-1, 3, 32, 32)).float() / 255)
    assert torch.equal(split.x_test, torch.from_numpy(raw["x_test"].reshape(-1, 3, 32, 32)).float() / 255)
    assert split.y_train.tolist() == raw["y_train"].tolist() and split.y_test.tolist() == raw["y_test"].tolist()


def test_cifar10_files_failing_checksum_are_reported(tmp_path):
    _fake_cifar(tmp_path)  # present, but not the real files: torchvision's md5 check refuses them
    with pytest.raises(RuntimeError, match="failed torchvision's checks") as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


def test_torchvision_subset_matches_subsample(tmp_path):
    _fake_mnist(tmp_path, "MNIST")
    full = load_dataset("mnist", data_dir=tmp_path, seed=4)
    part = load_dataset("mnist", data_dir=tmp_path, seed=4, max_train_samples=5)
    ref = subsample(full, 5, seed=4)
    assert torch.equal(part.x_train, ref.x_train) and torch.equal(part.y_train, ref.y_train)
    assert len(part.y_train) == 5 and torch.equal(part.x_test, full.x_test)


@pytest.mark.parametrize("name,folder", [("mnist", ("MNIST", "raw")), ("fashion_mnist", ("FashionMNIST", "raw")),
                                         ("cifar10", ("cifar-10-batches-py",))])
def test_missing_files_name_the_folder_and_the_fix(tmp_path, name, folder):
    root = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, data_dir=root)
    message = str(info.value)
    assert str(root.joinpath(*folder)) in message
    assert "--set download=true" in message and "data_dir" in message
    assert not root.exists()  # nothing was created or downloaded


def test_missing_one_file_lists_it(tmp_path):
    _fake_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="did not find t10k-labels-idx1-ubyte \\(download=False\\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_default_data_dir_is_the_project_data_folder(monkeypatch, tmp_path):
    import fplstudy.paths

    monkeypatch.setattr(fplstudy.paths, "DATA", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "data" / "MNIST" / "raw"))):
        load_dataset("mnist")


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in DATASETS)


# --- digits (offline default)


@pytest.fixture(scope="module")
def digits0() -> DatasetSplit:
    return load_dataset("digits", seed=0)


def test_digits_shapes_and_ranges(digits0):
    _check_split(digits0, "digits")
    assert len(digits0.y_train) + len(digits0.y_test) == 1797
    assert digits0.x_train.max() == 1  # 16 / 16


def test_digits_split_is_deterministic_and_seeded(digits0):
    again, other = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(again.x_train, digits0.x_train) and torch.equal(again.y_test, digits0.y_test)
    assert not torch.equal(other.y_train, digits0.y_train)


def test_digits_test_split_is_stratified(digits0):
    from sklearn.datasets import load_digits

    total = np.bincount(load_digits().target, minlength=10)
    test = np.bincount(digits0.y_test.numpy(), minlength=10)
    assert len(digits0.y_test) == int(np.ceil(0.2 * 1797))
    assert (np.abs(test - 0.2 * total) <= 1).all()  # every class in proportion, to one sample


def test_digits_max_train_samples_is_a_deterministic_subset(digits0):
    a = load_dataset("digits", seed=0, max_train_samples=50)
    b = load_dataset("digits", seed=0, max_train_samples=50)
    assert len(a.y_train) == 50 and torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.x_test, digits0.x_test)
    rows = {tuple(r.flatten().tolist()) + (int(y),) for r, y in zip(digits0.x_train, digits0.y_train)}
    assert all(tuple(r.flatten().tolist()) + (int(y),) in rows for r, y in zip(a.x_train, a.y_train))
    assert torch.equal(load_dataset("digits", seed=0, max_train_samples=10**6).y_train, digits0.y_train)  # all kept
    with pytest.raises(ValueError, match="max_train_samples: got 0"):
        load_dataset("digits", max_train_samples=0)


def test_digits_read_from_the_tracked_copy_when_present(tmp_path):
    """data/digits/*.npy (what data.dvc tracks) is what trains; it equals scikit-learn's copy."""
    from fplstudy.facts.datasets import digits_pixels, load_dataset

    images, target = digits_pixels(None)
    (tmp_path / "digits").mkdir()
    np.save(tmp_path / "digits" / "images.npy", images)
    np.save(tmp_path / "digits" / "target.npy", target)
    from_file = load_dataset("digits", seed=3, data_dir=str(tmp_path))
    from_sklearn = load_dataset("digits", seed=3, data_dir=str(tmp_path / "elsewhere"))
    assert torch.equal(from_file.x_train, from_sklearn.x_train)
    assert torch.equal(from_file.y_test, from_sklearn.y_test)
    # and the file really is read: a changed label in the file shows up
    target2 = target.copy()
    target2[:] = 0
    np.save(tmp_path / "digits" / "target.npy", target2)
    assert int(load_dataset("digits", seed=3, data_dir=str(tmp_path)).y_train.max()) == 0


@pytest.mark.parametrize("seed", [0, 7])
def test_the_kept_split_is_scikit_learns_split(seed, tmp_path, monkeypatch):
    """The split read back from the cache equals the one counted without it, and both equal scikit-learn's
    train_test_split of the pixels themselves, sample for sample; another seed keeps another entry."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    from fplstudy.facts.cache import CACHE_VARIABLE

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, bunch.target.astype(np.int64), test_size=0.2, random_state=seed,
                                              stratify=bunch.target)
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    cold = load_digits(seed)
    assert len(list((tmp_path / "splits").glob("*.json"))) == 1
    warm = load_digits(seed)
    for split in (cold, warm):
        assert np.array_equal(split.x_train.numpy(), x_tr) and np.array_equal(split.x_test.numpy(), x_te)
        assert np.array_equal(split.y_train.numpy(), y_tr) and np.array_equal(split.y_test.numpy(), y_te)
    load_digits(seed + 1)
    assert len(list((tmp_path / "splits").glob("*.json"))) == 2
