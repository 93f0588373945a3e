"""Partitioners: which training samples (or which view of every sample) each branch sees.

All partitioners are deterministic given the seed (numpy's ``default_rng``), and return a
:class:`Partition` with one sorted int64 index array per branch.

- ``iid`` — shuffle, then split into near-equal shards (sizes differ by at most one).
- ``dirichlet`` — label skew: for every class, Dirichlet(``alpha``) proportions over the branches
  (Hsu, Qi & Brown 2019, arXiv 1909.06335; as in NIID-Bench, Li et al. 2022). Small ``alpha`` = each
  branch sees few classes; large ``alpha`` = close to iid.
- ``shards`` — pathological label skew (McMahan et al. 2017, AISTATS, "FedAvg"): sort by label, cut
  into ``parts * classes_per_node`` shards, give each branch ``classes_per_node`` shards.
- ``features`` — vertical partitioning: every branch holds every training sample but sees only an
  equal horizontal strip of input rows (``views``); the ``concat`` junction joins them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fplstudy.config import ConfigError
from fplstudy.facts.datasets import DatasetSplit, load_dataset

PARTITIONS = ("iid", "dirichlet", "shards", "features")

DIRICHLET_MIN_SAMPLES = 8  # default floor of samples per branch for ``dirichlet`` (see dirichlet())
DIRICHLET_MAX_TRIES = 100  # redraws of the proportions before ``dirichlet`` gives up


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
        labels = np.asarray(labels)
        return np.stack([np.bincount(labels[ix], minlength=num_classes) for ix in self.indices])


def _check_parts(parts: int, n_samples: int) -> None:
    if not isinstance(parts, (int, np.integer)) or parts < 1:
        raise ValueError(f"parts: got {parts!r}; the number of branches must be an integer >= 1")
    if parts > n_samples:
        raise ValueError(f"parts: got {parts} branches for {n_samples} training samples; every branch needs "
                         f"at least one sample: use fewer branches or more samples (max_train_samples)")


def _as_labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels: got an array of shape {y.shape}; give the (N,) training labels")
    return y


def iid(n_samples: int, parts: int, seed: int) -> Partition:
    """Shuffle and split into ``parts`` shards whose sizes differ by at most one.

    Args:
        n_samples: training-set size N.
        parts: number of branches D (1..N).
        seed: random seed.

    Returns:
        The :class:`Partition`; the first ``N % D`` branches hold one sample more.
    """
    _check_parts(parts, n_samples)
    perm = np.random.default_rng(seed).permutation(n_samples)
    return Partition("iid", tuple(np.sort(p) for p in np.array_split(perm, parts)))


def dirichlet(labels: np.ndarray, parts: int, alpha: float, seed: int,
              min_samples: int | None = None) -> Partition:
    """Label-skewed shards: per class, Dirichlet(``alpha``) proportions over the branches.

    For every class (in sorted label order) the class's samples are shuffled and cut at the cumulative
    proportions ``p ~ Dir(alpha, ..., alpha)``. If some branch ends with fewer than ``min_samples``
    samples, everything is redrawn with a seed derived from ``(seed, try)``, up to
    :data:`DIRICHLET_MAX_TRIES` times.

    Args:
        labels: ``(N,)`` integer training labels.
        parts: number of branches D.
        alpha: Dirichlet concentration (> 0); small = skewed, large = close to iid.
        seed: random seed.
        min_samples: fewest samples any branch may hold. None = :data:`DIRICHLET_MIN_SAMPLES` (8),
            lowered to ``max(1, N // (2 D))`` when the training set is too small for 8 per branch
            (smoke runs). It does not depend on the batch size.

    Returns:
        The :class:`Partition`.

    Raises:
        ValueError: for ``alpha <= 0``, an impossible ``min_samples``, or when no draw in
            :data:`DIRICHLET_MAX_TRIES` gives every branch ``min_samples`` samples.
    """
    y = _as_labels(labels)
    n = len(y)
    _check_parts(parts, n)
    if not alpha > 0:
        raise ValueError(f"alpha: got {alpha!r}; the Dirichlet concentration must be > 0 (e.g. 0.5)")
    if min_samples is None:
        min_samples = min(DIRICHLET_MIN_SAMPLES, max(1, n // (2 * parts)))
    if min_samples < 0 or min_samples * parts > n:
        raise ValueError(f"min_samples: got {min_samples} per branch for {parts} branches, but there are only "
                         f"{n} training samples; lower min_samples or the number of branches")
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    for attempt in range(DIRICHLET_MAX_TRIES):
        rng = np.random.default_rng([seed, attempt])
        shards: list[list[np.ndarray]] = [[] for _ in range(parts)]
        for idx in classes:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(parts, float(alpha)))
            cuts = np.floor(np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for d, piece in enumerate(np.split(idx, cuts)):
                shards[d].append(piece)
        indices = tuple(np.sort(np.concatenate(s)).astype(np.int64) for s in shards)
        if min(len(ix) for ix in indices) >= min_samples:
            return Partition("dirichlet", indices)
    raise ValueError(f"alpha: got {alpha!r}; {DIRICHLET_MAX_TRIES} Dirichlet draws over {parts} branches all "
                     f"left some branch with fewer than {min_samples} of the {n} samples; raise alpha "
                     f"(e.g. 0.5 or 1.0) or lower the number of branches")


def shards(labels: np.ndarray, parts: int, classes_per_node: int, seed: int) -> Partition:
    """Pathological label skew: each branch gets ``classes_per_node`` label-sorted shards.

    Samples are shuffled within their class, the classes are put in a seeded random order, and the
    samples sorted by that order are cut into ``S = parts * classes_per_node`` near-equal shards.
    Shards are dealt round-robin (shard ``s`` goes to the ``s % parts``-th branch of a seeded
    permutation of the branches), so a branch's shards are ``parts`` shards apart in label order.
    Unlike McMahan et al.'s random assignment, a branch gets two shards of one class only if that class
    fills more than ``parts`` shards (far larger than the average class). When the shards align with the classes (every class has the same number of samples, ``S``
    is a multiple of the number of classes K, and the class size is a multiple of ``S / K``) every
    branch holds exactly ``classes_per_node`` classes; otherwise a shard can straddle two classes and a
    branch may hold one or two more.

    Args:
        labels: ``(N,)`` integer training labels.
        parts: number of branches D.
        classes_per_node: shards (≈ classes) per branch, 1..number of classes.
        seed: random seed.

    Returns:
        The :class:`Partition`.

    Raises:
        ValueError: if ``classes_per_node`` is outside 1..number of classes, or there are fewer
            samples than shards.
    """
    y = _as_labels(labels)
    n = len(y)
    _check_parts(parts, n)
    present = np.unique(y)
    if not 1 <= classes_per_node <= len(present):
        raise ValueError(f"classes_per_node: got {classes_per_node!r}; the labels hold {len(present)} classes, "
                         f"so use 1..{len(present)}")
    n_shards = parts * classes_per_node
    if n_shards > n:
        raise ValueError(f"classes_per_node: {parts} branches × {classes_per_node} classes need {n_shards} "
                         f"shards but there are only {n} samples; lower classes_per_node or the branches")
    rng = np.random.default_rng(seed)
    class_order = rng.permutation(present)
    ordered = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in class_order])
    pieces = np.array_split(ordered, n_shards)
    branch_at = rng.permutation(parts)  # branch dealt the r-th shard of every round
    indices: list[list[np.ndarray]] = [[] for _ in range(parts)]
    for s, piece in enumerate(pieces):
        indices[branch_at[s % parts]].append(piece)
    return Partition("shards", tuple(np.sort(np.concatenate(ix)).astype(np.int64) for ix in indices))


def features(n_samples: int, parts: int, input_shape: tuple[int, ...] | None) -> Partition:
    """Vertical partitioning: every branch holds all samples and sees an equal strip of input rows.

    Args:
        n_samples: training-set size N.
        parts: number of branches D; must divide the input height.
        input_shape: per-sample input shape ``(C, H, W)`` (or ``(H, W)``).

    Returns:
        The :class:`Partition` with ``views[d] = (d * H // D, (d + 1) * H // D)``. It uses no
        randomness (the seed of :func:`make_partition` is ignored).

    Raises:
        ValueError: without an input shape, or when D does not divide the height.
    """
    if input_shape is None or len(input_shape) not in (2, 3):
        raise ValueError(f"input_shape: got {input_shape!r}; partition=features needs the per-sample shape "
                         f"(C, H, W) to cut the rows into views")
    if not isinstance(parts, (int, np.integer)) or parts < 1:
        raise ValueError(f"parts: got {parts!r}; the number of branches must be an integer >= 1")
    height = int(input_shape[1] if len(input_shape) == 3 else input_shape[0])
    if height % parts:
        raise ValueError(f"parts: got {parts} branches for an input of {height} rows; partition=features cuts "
                         f"the rows into equal views, so use a number of branches that divides {height}")
    rows = height // parts
    every = np.arange(n_samples, dtype=np.int64)
    return Partition("features", tuple(every.copy() for _ in range(parts)),
                     tuple((d * rows, (d + 1) * rows) for d in range(parts)))


def make_partition(kind: str, labels: np.ndarray, parts: int, *, seed: int, alpha: float = 0.5,
                   classes_per_node: int = 2, input_shape: tuple[int, ...] | None = None,
                   min_samples: int | None = None) -> Partition:
    """Partition a training set among ``parts`` branches.

    Args:
        kind: one of :data:`PARTITIONS`.
        labels: ``(N,)`` training labels (numpy array or CPU tensor).
        parts: number of branches D.
        seed: random seed.
        alpha: Dirichlet concentration.
        classes_per_node: classes per shard for ``shards``.
        input_shape: per-sample input shape, needed for ``features``.
        min_samples: ``dirichlet`` only: fewest samples per branch (None = see :func:`dirichlet`).

    Returns:
        The :class:`Partition`.

    Raises:
        KeyError: for an unknown ``kind``, listing the known ones.
        ValueError: for settings the chosen partitioner cannot satisfy (see each partitioner).
    """
    y = _as_labels(labels)
    if kind == "iid":
        return iid(len(y), parts, seed)
    if kind == "dirichlet":
        return dirichlet(y, parts, alpha, seed, min_samples)
    if kind == "shards":
        return shards(y, parts, classes_per_node, seed)
    if kind == "features":
        return features(len(y), parts, input_shape)
    raise KeyError(f"unknown partition {kind!r}; known: {', '.join(PARTITIONS)}")


def load_partitioned(plan) -> tuple[DatasetSplit, Partition]:
    """Load the plan's dataset and partition its training set among the branches.

    Raises:
        fplstudy.config.ConfigError: when a branch would get no samples.
    """
    cfg = plan.config
    data = load_dataset(cfg.dataset, seed=cfg.seed, data_dir=cfg.data_dir, download=cfg.download,
                        test_fraction=cfg.test_fraction, max_train_samples=cfg.max_train_samples)
    try:
        part = make_partition(cfg.partition, data.y_train.numpy(), len(plan.branches), seed=cfg.seed,
                              alpha=cfg.alpha, classes_per_node=cfg.classes_per_node,
                              input_shape=data.input_shape)
    except ValueError as exc:
        raise ConfigError("partition", cfg.partition, str(exc)) from None
    empty = [d for d, n in enumerate(part.samples()) if n == 0]
    if empty:
        raise ConfigError("branches", len(plan.branches),
                          f"branch(es) {empty} get no training samples with partition={cfg.partition}; "
                          f"use fewer branches or more samples")
    return data, part
