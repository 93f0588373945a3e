"""Partitioners: determinism, coverage, skew and exact small cases."""

from __future__ import annotations

import numpy as np
import pytest

from fplstudy.facts.partition import (
    PARTITIONS,
    Partition,
    dirichlet,
    features,
    iid,
    make_partition,
    shards,
)

NUM_CLASSES = 10
BALANCED = np.repeat(np.arange(NUM_CLASSES), 40)  # (400,) 40 samples of each of 10 classes


def _partition(kind: str, seed: int, labels: np.ndarray = BALANCED, parts: int = 4) -> Partition:
    return make_partition(kind, labels, parts, seed=seed, alpha=0.5, classes_per_node=2, input_shape=(1, 8, 8))


def _same(a: Partition, b: Partition) -> bool:
    return len(a.indices) == len(b.indices) and all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices))


@pytest.mark.parametrize("kind", PARTITIONS)
def test_deterministic_for_a_seed(kind):
    a, b = _partition(kind, seed=3), _partition(kind, seed=3)
    assert _same(a, b) and a.views == b.views and a.kind == kind


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
def test_another_seed_gives_another_partition(kind):
    assert not _same(_partition(kind, seed=3), _partition(kind, seed=4))


def test_features_uses_no_randomness():
    # Vertical partitioning has nothing to draw: every seed gives the same views of all samples.
    assert _same(_partition("features", seed=3), _partition("features", seed=4))


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
@pytest.mark.parametrize("parts", [1, 3, 10])
def test_horizontal_partitions_are_disjoint_and_cover_every_sample_once(kind, parts):
    part = _partition(kind, seed=0, parts=parts)
    joined = np.concatenate(part.indices)
    assert len(part.indices) == parts
    assert np.array_equal(np.sort(joined), np.arange(len(BALANCED)))  # each index exactly once
    for ix in part.indices:
        assert ix.dtype == np.int64 and np.array_equal(ix, np.sort(ix)) and len(ix) > 0
    assert part.views is None


@pytest.mark.parametrize("n_samples,parts", [(400, 4), (401, 4), (10, 3), (7, 7)])
def test_iid_sizes_differ_by_at_most_one(n_samples, parts):
    sizes = iid(n_samples, parts, seed=1).samples()
    assert sum(sizes) == n_samples and max(sizes) - min(sizes) <= 1


def test_iid_exact_sizes_small_case():
    # 10 samples into 3 shards: np.array_split gives 4, 3, 3 (the first 10 % 3 shards get one more).
    assert iid(10, 3, seed=5).samples() == [4, 3, 3]


@pytest.mark.parametrize("parts,classes_per_node", [(5, 2), (10, 2), (4, 5), (10, 1), (2, 10)])
def test_shards_give_each_branch_exactly_classes_per_node_classes(parts, classes_per_node):
    for seed in (0, 1, 2):
        part = shards(BALANCED, parts, classes_per_node, seed)
        hist = part.label_histogram(BALANCED, NUM_CLASSES)
        assert ((hist > 0).sum(axis=1) == classes_per_node).all()
        assert part.samples() == [len(BALANCED) // parts] * parts


def test_shards_hand_computed_small_case():
    # 4 classes × 2 samples, 2 branches × 2 classes = 4 shards of one class each. Dealt round-robin
    # in a seeded class order (o0, o1, o2, o3), one branch gets {o0, o2} and the other {o1, o3}: each
    # branch holds exactly all samples of its two classes.
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    for seed in range(5):
        part = shards(labels, 2, 2, seed)
        held = [set(labels[ix].tolist()) for ix in part.indices]
        assert all(len(h) == 2 for h in held) and held[0] | held[1] == {0, 1, 2, 3}
        for ix, h in zip(part.indices, held):
            assert np.array_equal(ix, np.flatnonzero(np.isin(labels, sorted(h))))


def test_shards_refuse_impossible_settings():
    with pytest.raises(ValueError, match="classes_per_node: got 11"):
        shards(BALANCED, 2, 11, seed=0)
    with pytest.raises(ValueError, match="need 8 shards but there are only 5 samples"):
        shards(np.array([0, 1, 0, 1, 0]), 4, 2, seed=0)


def _mean_tv_from_global(part: Partition, labels: np.ndarray) -> float:
    """Mean total-variation distance between each branch's label distribution and the global one."""
    hist = part.label_histogram(labels, NUM_CLASSES).astype(float)
    local = hist / hist.sum(axis=1, keepdims=True)
    glob = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    return float((0.5 * np.abs(local - glob).sum(axis=1)).mean())


def test_dirichlet_small_alpha_is_more_skewed_than_large_alpha():
    labels = np.repeat(np.arange(NUM_CLASSES), 100)  # (1000,)
    for seed in (0, 1):
        skewed = _mean_tv_from_global(dirichlet(labels, 5, alpha=0.1, seed=seed), labels)
        even = _mean_tv_from_global(dirichlet(labels, 5, alpha=100.0, seed=seed), labels)
        # Dir(0.1) puts most of each class on one branch (TV ~ 0.6); Dir(100) is near iid (TV ~ 0.05).
        assert skewed > 0.4 and even < 0.15 and skewed > 4 * even


def test_dirichlet_respects_min_samples():
    labels = np.repeat(np.arange(NUM_CLASSES), 40)
    for seed in range(5):
        assert min(dirichlet(labels, 8, alpha=0.5, seed=seed, min_samples=20).samples()) >= 20
    # Default: 8 per branch, lowered for a tiny set (20 samples, 4 branches -> max(1, 20 // 8) = 2).
    assert min(dirichlet(np.arange(20) % 2, 4, alpha=0.5, seed=0).samples()) >= 2
    assert min(make_partition("dirichlet", labels, 4, seed=0, alpha=0.3).samples()) >= 8


def test_dirichlet_gives_up_with_a_useful_message():
    labels = np.zeros(20, dtype=np.int64)  # one class, 2 branches of >= 10: only an exact 10/10 cut works
    with pytest.raises(ValueError, match="raise alpha .* or lower the number of branches"):
        dirichlet(labels, 2, alpha=0.001, seed=0, min_samples=10)
    with pytest.raises(ValueError, match="only 20 training samples"):
        dirichlet(labels, 3, alpha=1.0, seed=0, min_samples=10)
    with pytest.raises(ValueError, match="alpha: got 0"):
        dirichlet(labels, 2, alpha=0, seed=0)


@pytest.mark.parametrize("input_shape,parts", [((1, 8, 8), 4), ((3, 32, 32), 8), ((1, 28, 28), 7), ((28, 28), 2)])
def test_features_views_tile_the_height(input_shape, parts):
    part = features(50, parts, input_shape)
    height = input_shape[-2]
    assert part.views[0][0] == 0 and part.views[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(part.views, part.views[1:]))  # contiguous, no overlap
    assert {stop - start for start, stop in part.views} == {height // parts}
    assert all(np.array_equal(ix, np.arange(50)) for ix in part.indices)  # every branch holds everything


def test_features_hand_computed_and_errors():
    part = make_partition("features", np.array([0, 1, 2]), 4, seed=9, input_shape=(1, 8, 8))
    assert part.views == ((0, 2), (2, 4), (4, 6), (6, 8))
    assert part.samples() == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="3 branches for an input of 8 rows.*divides 8"):
        features(10, 3, (1, 8, 8))
    with pytest.raises(ValueError, match="input_shape: got None"):
        make_partition("features", np.zeros(4), 2, seed=0)


@pytest.mark.parametrize("kind", PARTITIONS)
def test_label_histogram_sums_to_samples(kind):
    part = _partition(kind, seed=2)
    hist = part.label_histogram(BALANCED, NUM_CLASSES)
    assert hist.shape == (4, NUM_CLASSES)
    assert hist.sum(axis=1).tolist() == part.samples()


def test_label_histogram_hand_computed():
    part = Partition("hand", (np.array([0, 1]), np.array([2, 3, 4])))
    assert part.label_histogram(np.array([0, 0, 1, 2, 2]), 3).tolist() == [[2, 0, 0], [0, 1, 2]]


def test_unknown_kind_and_bad_parts():
    with pytest.raises(KeyError, match="known: iid, dirichlet, shards, features"):
        make_partition("random", BALANCED, 2, seed=0)
    with pytest.raises(ValueError, match="5 branches for 4 training samples"):
        iid(4, 5, seed=0)
    with pytest.raises(ValueError, match="parts: got 0"):
        make_partition("iid", BALANCED, 0, seed=0)


def test_accepts_torch_labels():
    torch = pytest.importorskip("torch")
    y = torch.from_numpy(BALANCED)
    assert _same(make_partition("shards", y, 5, seed=1), make_partition("shards", BALANCED, 5, seed=1))
