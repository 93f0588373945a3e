"""Cuttable models: every model is a *layer sequence*, an ``nn.Sequential`` of named blocks.

A model can be cut at any block boundary with :func:`cut`; the parts keep the block names, so the
state-dict keys of the parts are exactly the keys of the whole (``conv1.0.weight`` stays
``conv1.0.weight``). Junction adapters (:func:`make_adapter`) are identity-initialised, so an
``adapter`` junction starts out computing exactly what the uncut model computes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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
    model = _seq([
        ("conv1", nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU())),  # (B, 16, H, W)
        ("conv2", nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))),  # (B, 32, H/2, W/2)
        ("conv3", nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())),  # (B, 32, H/2, W/2)
        ("conv4", nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))),  # (B, 64, H/4, W/4)
        ("conv5", nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())),  # (B, 64, H/4, W/4)
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU())),  # (B, 128)
        ("fc2", nn.Sequential(nn.Linear(128, 64), nn.ReLU())),  # (B, 64)
        ("fc3", nn.Linear(64, num_classes)),  # (B, classes) logits
    ])
    # He (Kaiming) normal init: with PyTorch's default init this 8-layer ReLU net without
    # normalisation does not start learning on digits within 6 epochs (measured: 10 % accuracy).
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            nn.init.zeros_(mod.bias)
    return model


def _image_shape(model: str, input_shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of ``input_shape``, refused with a :class:`ValueError` when ``model`` cannot run on it."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"{model} takes images of shape (C, H, W); got input_shape={tuple(input_shape)}")
    c, h, w = input_shape
    if min(h, w) < min_side:
        raise ValueError(f"{model} needs images of at least {min_side}x{min_side} pixels; got input_shape="
                         f"{tuple(input_shape)}; use a smaller model (e.g. cnn) or larger inputs")
    return c, h, w


def lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """LeNet-5 for MNIST / Fashion-MNIST (1×28×28): 2 conv blocks and 3 linear blocks, 5 cuttable blocks.

    LeCun et al. 1998 layout (6@5×5 padded, pool, 16@5×5, pool, 120, 84, classes) with the modern
    ReLU and max-pooling in place of the original scaled tanh and trainable sub-sampling.
    """
    c, h, w = _image_shape("lenet5", input_shape, 12)
    flat = 16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2)  # 16·5·5 = 400 at 28×28
    return _seq([
        ("conv1", nn.Sequential(nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))),  # (B, 6, H/2, W/2)
        ("conv2", nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))),  # (B, 16, (H/2-4)/2, ...)
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(flat, 120), nn.ReLU())),  # (B, 120)
        ("fc2", nn.Sequential(nn.Linear(120, 84), nn.ReLU())),  # (B, 84)
        ("fc3", nn.Linear(84, num_classes)),  # (B, classes) logits
    ])


def _stem_conv(like: nn.Conv2d, in_channels: int, kernel_size: int, stride: int,
               nonlinearity: str = "relu") -> nn.Conv2d:
    """A replacement for a torchvision stem convolution (other input channels, kernel or stride), initialised
    the way torchvision initialises that network's convolutions (Kaiming normal, fan-out)."""
    conv = nn.Conv2d(in_channels, like.out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                     bias=like.bias is not None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity=nonlinearity)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def vgg11(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """VGG-11 (configuration "A", no batch norm) for CIFAR-10 (3×32×32): 8 conv blocks, pool, 2 linear
    blocks, 11 cuttable blocks.

    The convolutions are torchvision's (``torchvision.models.vgg.make_layers(cfgs["A"])``, the very
    ``features`` of ``torchvision.models.vgg11``, initialised as torchvision does), one block per
    convolution with its ReLU and the max-pool that follows it. torchvision's 123 M-parameter classifier
    for 224×224 inputs (7×7×512 → 4096 → 4096) is replaced by a small one on the 1×1×512 map that five
    poolings leave of a 32×32 image (global average pool, 512 → 512 → classes), as is usual for CIFAR.
    """
    from torchvision.models.vgg import cfgs, make_layers

    c, _, _ = _image_shape("vgg11", input_shape, 32)
    features = make_layers(cfgs["A"], batch_norm=False)  # [conv, relu, (pool)] × 8
    for m in features.modules():  # torchvision.models.VGG(init_weights=True)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    if c != 3:
        features[0] = _stem_conv(features[0], c, 3, 1)
    groups: list[list[nn.Module]] = []
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            groups.append([layer])
        else:
            groups[-1].append(layer)
    names = ["conv1", "conv2", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1", "conv5_2"]
    blocks: list[tuple[str, nn.Module]] = [(n, nn.Sequential(*g)) for n, g in zip(names, groups, strict=True)]
    # conv1 (B, 64, H/2, W/2) · conv2 (B, 128, H/4, W/4) · conv3_2 (B, 256, H/8, W/8) · conv4_2 (B, 512, H/16, W/16)
    # conv5_2 (B, 512, H/32, W/32) = (B, 512, 1, 1) at 32×32
    fc1, fc2 = nn.Linear(512, 512), nn.Linear(512, num_classes)
    for lin in (fc1, fc2):  # torchvision's VGG init for linear layers
        nn.init.normal_(lin.weight, 0, 0.01)
        nn.init.zeros_(lin.bias)
    blocks += [
        ("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),  # (B, 512)
        ("fc1", nn.Sequential(fc1, nn.ReLU(inplace=True), nn.Dropout(0.5))),  # (B, 512)
        ("fc2", fc2),  # (B, classes) logits
    ]
    return _seq(blocks)


def resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """ResNet-18 for CIFAR-10 (3×32×32): stem, 8 residual blocks, pool, fc; 11 cuttable blocks.

    Built from ``torchvision.models.resnet18(weights=None)``; its ``BasicBlock`` modules are the blocks
    ``layer1_0`` … ``layer4_1``. The stem is adapted to 32×32 inputs as is usual for CIFAR: a 3×3
    stride-1 convolution in place of the 7×7 stride-2 one, and no max-pool, so the residual stages run
    at 32, 16, 8 and 4 pixels.
    """
    from torchvision.models import resnet18 as tv_resnet18

    c, _, _ = _image_shape("resnet18", input_shape, 1)
    net = tv_resnet18(weights=None, num_classes=num_classes)
    stem = nn.Sequential(_stem_conv(net.conv1, c, 3, 1), net.bn1, net.relu)  # (B, 64, H, W)
    blocks: list[tuple[str, nn.Module]] = [("stem", stem)]
    for stage in ("layer1", "layer2", "layer3", "layer4"):  # (B, 64·2^i, H/2^i, W/2^i), i = 0..3
        for i, block in enumerate(getattr(net, stage)):
            blocks.append((f"{stage}_{i}", block))
    blocks += [
        ("pool", nn.Sequential(net.avgpool, nn.Flatten())),  # (B, 512)
        ("fc", net.fc),  # (B, classes) logits
    ]
    return _seq(blocks)


def mobilenetv2(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """MobileNetV2 (width 1.0) for CIFAR-10 (3×32×32): stem, 17 inverted residuals, head conv, pool,
    classifier; 21 cuttable blocks.

    Built from ``torchvision.models.mobilenet_v2(weights=None)``: ``stem`` is ``features[0]``,
    ``features_1`` … ``features_17`` are its ``InvertedResidual`` modules and ``head`` is ``features[18]``
    (1×1 conv 320 → 1280). Adapted to 32×32 inputs as is usual for CIFAR: the stem convolution and the
    first 24-channel block (``features_2``) use stride 1, so the stages run at 32, 16, 8 and 4 pixels.
    """
    from torchvision.models import mobilenet_v2

    c, _, _ = _image_shape("mobilenetv2", input_shape, 1)
    net = mobilenet_v2(weights=None, num_classes=num_classes)
    stem = net.features[0]  # Conv2dNormActivation(conv 3×3, BN, ReLU6)
    if c != 3:
        stem[0] = _stem_conv(stem[0], c, 3, 1, nonlinearity="leaky_relu")  # torchvision: kaiming fan_out, a=0
    stem[0].stride = (1, 1)  # (B, 32, H, W)
    down = net.features[2]  # InvertedResidual 16 → 24: its depthwise conv carries the stride
    down.conv[1][0].stride = (1, 1)
    down.stride = 1  # use_res_connect stays False: 16 ≠ 24 channels
    blocks: list[tuple[str, nn.Module]] = [("stem", stem)]
    # features_1..3 (B, 16|24, H, W) · 4..6 (B, 32, H/2, W/2) · 7..13 (B, 64|96, H/4, W/4) · 14..17 (B, 160|320, H/8, W/8)
    blocks += [(f"features_{i}", net.features[i]) for i in range(1, 18)]
    blocks += [
        ("head", net.features[18]),  # (B, 1280, H/8, W/8)
        ("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),  # (B, 1280)
        ("classifier", net.classifier),  # Dropout(0.2), Linear: (B, classes) logits
    ]
    return _seq(blocks)


MODELS: dict[str, ModelInfo] = {
    "cnn": ModelInfo(small_cnn, 2, "small CNN, 5 conv + 3 linear blocks (digits default)"),
    "lenet5": ModelInfo(lenet5, 2, "LeNet-5, 2 conv + 3 linear blocks, 62 k params (MNIST / Fashion-MNIST default)"),
    "vgg11": ModelInfo(vgg11, 2, "VGG-11 (torchvision convs) with a small classifier, 11 blocks, 9.5 M params"),
    "resnet18": ModelInfo(resnet18, 3, "ResNet-18 (torchvision), CIFAR stem, 11 blocks, 11.2 M params (CIFAR-10 default)"),
    "mobilenetv2": ModelInfo(mobilenetv2, 4, "MobileNetV2 (torchvision), CIFAR strides, 21 blocks, 2.2 M params"),
}

DATASET_DEFAULT_MODEL = {"digits": "cnn", "mnist5k": "lenet5", "mnist": "lenet5", "fashion_mnist": "lenet5",
                         "cifar10": "resnet18"}


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
