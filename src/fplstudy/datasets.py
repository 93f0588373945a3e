"""Datasets as in-memory tensors: the embedded ``digits`` (offline default) and torchvision's own.

Every loader returns a :class:`DatasetSplit` of float32 images ``(N, C, H, W)`` and int64 labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")

# Per-sample input shape (C, H, W) and number of classes, known without loading the data.
DATASET_META: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
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


def load_digits(seed: int, test_fraction: float = 0.2) -> DatasetSplit:
    """scikit-learn's 8×8 digits (1797 samples, shipped inside scikit-learn), split by ``seed``.

    Pixels are scaled from 0..16 to 0..1. The split is stratified and depends only on the seed.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DatasetSplit("digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                        torch.from_numpy(x_te), torch.from_numpy(y_te), 10)


def subsample(split: DatasetSplit, max_train_samples: int | None, seed: int) -> DatasetSplit:
    """Keep a seeded random subset of at most ``max_train_samples`` training samples."""
    if max_train_samples is None or max_train_samples >= len(split.y_train):
        return split
    gen = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(split.y_train), generator=gen)[:max_train_samples].sort().values
    return DatasetSplit(split.name, split.x_train[keep], split.y_train[keep], split.x_test, split.y_test,
                        split.num_classes)


def load_dataset(name: str, *, seed: int = 0, data_dir: str | None = None, download: bool = False,
                 test_fraction: float = 0.2, max_train_samples: int | None = None) -> DatasetSplit:
    """Load a dataset by name.

    Args:
        name: one of :data:`DATASETS`.
        seed: fixes the digits split and the training subset.
        data_dir: torchvision root folder (ignored for digits).
        download: let torchvision download a missing dataset.
        test_fraction: digits only.
        max_train_samples: optional seeded subset of the training set.

    Returns:
        The :class:`DatasetSplit`.
    """
    if name == "digits":
        split = load_digits(seed, test_fraction)
    else:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return subsample(split, max_train_samples, seed)
