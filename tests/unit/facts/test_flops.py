"""Grouped and depthwise convolutions: forward and backward FLOPs against hand counts.

Hand count (FLOP = 2 MAC, bias not counted, as torch's counter): a convolution applies each weight
entry once per sample and per kernel position (output positions; input positions for a transposed
convolution), so forward = input gradient = weight gradient = ``2 · N · positions · numel(weight)``,
with ``numel(weight) = C_out · C_in / groups · k_h · k_w``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fplstudy.facts.flops import count_flops, profile_block, profile_model

# (layer, per-sample input shape, hand-counted forward FLOPs per sample)
LAYERS = {
    # depthwise 3x3, 4 channels, 5x5 output: 2 * 25 positions * (4 * 1 * 3 * 3 = 36) = 1800
    "depthwise": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), (4, 5, 5), 1800),
    # 6 -> 4 channels in 2 groups, stride 2, 3x3 output: 2 * 9 * (4 * 3 * 3 * 3 = 108) = 1944
    "grouped": (lambda: nn.Conv2d(6, 4, 3, stride=2, groups=2), (6, 7, 7), 1944),
    # transposed, 4 -> 6 channels in 2 groups, weight (4, 3, 3, 3) applied at 3x3 input positions: 1944
    "transposed-grouped": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (4, 3, 3), 1944),
    # ordinary conv, 3 -> 8, 4x4 output: 2 * 16 * (8 * 3 * 3 * 3 = 216) = 6912 (unchanged by the fix)
    "plain": (lambda: nn.Conv2d(3, 8, 3), (3, 6, 6), 6912),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_conv_flops_forward_and_backward_equal_the_hand_count(name):
    make, shape, fwd = LAYERS[name]
    torch.manual_seed(0)
    prof = profile_block(name, make(), shape)
    assert prof.flops_fwd == fwd
    assert prof.flops_bwd == 2 * fwd  # input gradient + weight gradient
    assert prof.flops_bwd_no_input_grad == fwd  # weight gradient only


@pytest.mark.parametrize("name", list(LAYERS))
def test_conv_flops_scale_with_the_batch(name):
    make, shape, fwd = LAYERS[name]
    layer = make()
    x = torch.zeros((3, *shape), requires_grad=True)
    assert count_flops(lambda: layer(x)) == 3 * fwd
    y = layer(x)
    assert count_flops(lambda: y.backward(torch.ones_like(y))) == 3 * 2 * fwd


def test_torch_alone_overcounts_the_depthwise_weight_gradient_by_the_groups():
    """Why the formula is replaced: torch's own count multiplies the weight gradient by all input
    channels (4) instead of one group's (1). If this fails, torch counts groups itself now and the
    replacement in fplstudy.facts.flops can go."""
    make, shape, fwd = LAYERS["depthwise"]
    layer = make()
    y = layer(torch.zeros((1, *shape)))  # input needs no gradient: the weight gradient alone
    with FlopCounterMode(display=False) as counter:
        y.backward(torch.ones_like(y))
    assert counter.get_total_flops() == 4 * fwd


def test_mobilenetv2_backward_is_twice_its_forward_per_sample():
    """Every counted op of MobileNetV2 is a convolution or a matrix product, so its backward with the
    input gradient is exactly 2x forward; training skips the stem's input gradient (the data).
    Forward 175.95 MFLOP per 32x32 sample (torch alone counted 3722.79 MFLOP for the backward)."""
    blocks = profile_model("mobilenetv2", (3, 32, 32), 10)
    fwd = sum(b.flops_fwd for b in blocks)
    assert fwd == 175_952_896
    assert sum(b.flops_bwd for b in blocks) == 2 * fwd
    stem = blocks[0]
    stem_input_grad = 2 * 32 * 32 * (32 * 3 * 3 * 3)  # 3 -> 32 channels, 3x3, stride 1 (CIFAR stem)
    assert stem.flops_bwd - stem.flops_bwd_no_input_grad == stem_input_grad
    train_bwd = stem.flops_bwd_no_input_grad + sum(b.flops_bwd for b in blocks[1:])
    assert train_bwd == 2 * fwd - stem_input_grad == 350_136_320
