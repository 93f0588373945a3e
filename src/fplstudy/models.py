"""Cuttable models: every model is a *layer sequence*, an ``nn.Sequential`` of named blocks.

A model can be cut at any block boundary with :func:`cut`; the parts keep the block names, so the
state-dict keys of the parts are exactly the keys of the whole (``conv1.0.weight`` stays
``conv1.0.weight``). Junction adapters (:func:`make_adapter`) are identity-initialised, so an
``adapter`` junction starts out computing exactly what the uncut model computes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model.

    Attributes:
        builder: ``builder(input_shape, num_classes) -> nn.Sequential`` of named blocks.
        default_junction: blocks below the junction in split plans (the "head" held by a data owner).
        summary: one line for ``fplstudy plan`` and the docs.
    """

    builder: Callable[[tuple[int, ...], int], nn.Sequential]
    default_junction: int
    summary: str


def _seq(blocks: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(blocks))


def small_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """The default model for digits (1×8×8): 5 conv blocks and 3 linear blocks, 8 cuttable blocks.

    Every block holds parameters, so every stage of an 8-stage model-parallel plan does work.
    """
    c, h, w = input_shape
    flat = 64 * (h // 4) * (w // 4)
    return _seq([
        ("conv1", nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU())),  # (B, 16, H, W)
        ("conv2", nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))),  # (B, 32, H/2, W/2)
        ("conv3", nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())),  # (B, 32, H/2, W/2)
        ("conv4", nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))),  # (B, 64, H/4, W/4)
        ("conv5", nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())),  # (B, 64, H/4, W/4)
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU())),  # (B, 128)
        ("fc2", nn.Sequential(nn.Linear(128, 64), nn.ReLU())),  # (B, 64)
        ("fc3", nn.Linear(64, num_classes)),  # (B, classes) logits
    ])


MODELS: dict[str, ModelInfo] = {
    "cnn": ModelInfo(small_cnn, 2, "small CNN, 5 conv + 3 linear blocks (digits default)"),
}

DATASET_DEFAULT_MODEL = {"digits": "cnn", "mnist": "lenet5", "fashion_mnist": "lenet5", "cifar10": "resnet18"}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """Build a registered model as a layer sequence (uses the current torch RNG for init).

    Args:
        name: a key of :data:`MODELS`.
        input_shape: per-sample input shape, e.g. ``(1, 8, 8)``.
        num_classes: outputs of the last block.

    Returns:
        ``nn.Sequential`` of named blocks.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name].builder(tuple(input_shape), num_classes)


def cut(model: nn.Sequential, start: int, stop: int) -> nn.Sequential:
    """Blocks ``[start, stop)`` of a layer sequence as a new ``nn.Sequential`` sharing the modules.

    Block names are preserved, so the part's state-dict keys are a subset of the whole's.
    """
    items = list(model.named_children())[start:stop]
    return nn.Sequential(OrderedDict(items))


def block_names(model: nn.Sequential) -> list[str]:
    """Names of the blocks of a layer sequence, in order."""
    return [name for name, _ in model.named_children()]


class ChannelAdapter(nn.Module):
    """Per-branch junction adapter for conv features: a 1×1 convolution C → C, identity at init."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            self.proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return self.proj(x)


class VectorAdapter(nn.Module):
    """Per-branch junction adapter for feature vectors: a linear layer F → F, identity at init."""

    def __init__(self, features: int):
        super().__init__()
        self.proj = nn.Linear(features, features)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(features))
            self.proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, F)
        return self.proj(x)


def make_adapter(activation_shape: tuple[int, ...]) -> nn.Module:
    """The junction adapter for activations of per-sample shape ``activation_shape``.

    Args:
        activation_shape: ``(C, H, W)`` for conv features or ``(F,)`` for vectors.

    Returns:
        An identity-initialised :class:`ChannelAdapter` or :class:`VectorAdapter`.
    """
    if len(activation_shape) == 3:
        return ChannelAdapter(activation_shape[0])
    if len(activation_shape) == 1:
        return VectorAdapter(activation_shape[0])
    raise ValueError(f"no adapter for activations of shape {activation_shape}; expected (C, H, W) or (F,)")
