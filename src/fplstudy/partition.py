"""Partitioners: which training samples (or which view of every sample) each branch sees.

All partitioners are deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARTITIONS = ("iid", "dirichlet", "shards", "features")


@dataclass(frozen=True)
class Partition:
    """Shards of the training set, one per branch.

    Attributes:
        kind: partitioner name.
        indices: per branch, the sorted training-sample indices it holds.
        views: for ``features``, per branch the ``(start, stop)`` rows of every sample it sees; else None.
    """

    kind: str
    indices: tuple[np.ndarray, ...]
    views: tuple[tuple[int, int], ...] | None = None

    def samples(self) -> list[int]:
        """Training samples held by each branch."""
        return [len(ix) for ix in self.indices]

    def label_histogram(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """``(branches, classes)`` counts of each label in each shard."""
        return np.stack([np.bincount(labels[ix], minlength=num_classes) for ix in self.indices])


def iid(n_samples: int, parts: int, seed: int) -> Partition:
    """Shuffle and split into ``parts`` shards whose sizes differ by at most one."""
    perm = np.random.default_rng(seed).permutation(n_samples)
    return Partition("iid", tuple(np.sort(p) for p in np.array_split(perm, parts)))


def make_partition(kind: str, labels: np.ndarray, parts: int, *, seed: int, alpha: float = 0.5,
                   classes_per_node: int = 2, input_shape: tuple[int, ...] | None = None) -> Partition:
    """Partition a training set among ``parts`` branches.

    Args:
        kind: one of :data:`PARTITIONS`.
        labels: ``(N,)`` training labels.
        parts: number of branches D.
        seed: random seed.
        alpha: Dirichlet concentration.
        classes_per_node: classes per shard for ``shards``.
        input_shape: per-sample input shape, needed for ``features``.

    Returns:
        The :class:`Partition`.
    """
    if kind == "iid":
        return iid(len(labels), parts, seed)
    raise KeyError(f"unknown partition {kind!r}; known: {', '.join(PARTITIONS)}")
