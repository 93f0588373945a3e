"""Model profile: per-block FLOPs, parameters and activation sizes, measured once per input shape.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (FLOP = 2 MAC; it counts matrix
multiplies and convolutions, not element-wise ops), with one formula replaced: torch 2.14's count of a
convolution's weight gradient ignores ``groups``, so a depthwise layer's backward came out ``groups``
times too high (MobileNetV2: 3722.79 MFLOP per sample instead of 350.14). :func:`conv_backward_flop`
counts it right and :func:`flop_counter` registers it. Backward FLOPs are measured, not assumed to be
2× forward: a block whose input comes straight from the data skips the input gradient, so it is
profiled both ways.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from math import prod
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from fplstudy.config import ConfigError
from fplstudy.facts import cache


@dataclass(frozen=True)
class BlockProfile:
    """Per-sample costs of one block for one input shape.

    Attributes:
        name: block name.
        in_shape: per-sample input shape.
        out_shape: per-sample output shape.
        flops_fwd: forward FLOPs per sample.
        flops_bwd: backward FLOPs per sample when the input gradient is computed.
        flops_bwd_no_input_grad: backward FLOPs per sample when it is not (the block reads data).
        params: parameter count (trainable).
        param_bytes: bytes of the parameters.
        out_bytes: bytes of the output activation per sample.
        saved_bytes: bytes autograd keeps for backward per sample (measured with saved-tensor hooks).
        sync_numel: floating-point state entries (parameters and float buffers such as BatchNorm
            running statistics) -- what a sync message carries for this block.
    """

    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    flops_fwd: int
    flops_bwd: int
    flops_bwd_no_input_grad: int
    params: int
    param_bytes: int
    out_bytes: int
    saved_bytes: int
    sync_numel: int


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.convolution_backward``, grouped convolutions included (FLOP = 2 MAC).

    Input gradient: a convolution of the output gradient with the weight, counted by torch's
    ``conv_flop_count`` (right for groups: the weight's second dimension is already per group).
    Weight gradient: every weight entry meets one input value per sample and per position where the
    kernel is applied (output positions; input positions for a transposed convolution), so it costs
    ``2 · N · positions · numel(weight)`` — torch 2.14 multiplies by all input channels instead of
    those of one group, which overcounts by ``groups``. Bias gradients are not counted (as in torch).
    Both terms equal the forward count ``2 · N · positions · numel(weight)``, so a convolution's
    backward is exactly twice its forward.

    Args:
        grad_out_shape, x_shape, w_shape: shapes of the output gradient, the input and the weight.
        transposed: whether the convolution is transposed.
        output_mask: which of (input, weight, bias) gradients are computed.
        out_shape: shapes of the computed gradients.

    Returns:
        The FLOPs.
    """
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], transposed=not transposed)
    if output_mask[1]:
        positions = prod((x_shape if transposed else grad_out_shape)[2:])
        flops += 2 * x_shape[0] * positions * prod(w_shape)
    return flops


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` (no display) with :func:`conv_backward_flop` in place of torch's formula."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop})


def count_flops(fn) -> int:
    """Total FLOPs :func:`flop_counter` counts while ``fn()`` runs."""
    with flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())


def _saved_bytes(block: nn.Module, x: torch.Tensor) -> int:
    seen: dict[int, int] = {}
    skip = {x.untyped_storage().data_ptr()} | {p.untyped_storage().data_ptr() for p in block.parameters()}

    def pack(t: torch.Tensor):
        # Count each distinct storage once; the input belongs to the previous block, parameters
        # are counted as parameters.
        if t.untyped_storage().data_ptr() not in skip:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x)
    return sum(seen.values())


def profile_block(name: str, block: nn.Module, in_shape: tuple[int, ...]) -> BlockProfile:
    """Measure one block on a batch of one sample of shape ``in_shape``.

    Runs in train mode on a copy's state (BatchNorm running statistics are restored afterwards).
    """
    state = {k: v.clone() for k, v in block.state_dict().items()}
    was_training = block.training
    block.train()
    try:
        x = torch.zeros((1, *in_shape))
        with torch.no_grad():
            out = block(x)
        flops_fwd = count_flops(lambda: block(x))

        def backward(input_grad: bool) -> int:
            xi = torch.zeros((1, *in_shape), requires_grad=input_grad)
            y = block(xi)
            if not y.requires_grad:
                return 0
            grad = torch.ones_like(y)
            return count_flops(lambda: torch.autograd.backward(y, grad))

        flops_bwd = backward(True)
        flops_bwd_nig = backward(False)
        xs = torch.zeros((1, *in_shape), requires_grad=True)
        saved = _saved_bytes(block, xs)
        params = [p for p in block.parameters() if p.requires_grad]
        block.zero_grad(set_to_none=True)
    finally:
        block.load_state_dict(state)
        block.train(was_training)
    return BlockProfile(
        name=name, in_shape=tuple(in_shape), out_shape=tuple(out.shape[1:]), flops_fwd=flops_fwd,
        flops_bwd=flops_bwd, flops_bwd_no_input_grad=flops_bwd_nig,
        params=sum(p.numel() for p in params), param_bytes=sum(p.numel() * p.element_size() for p in params),
        out_bytes=out[0].numel() * out.element_size(), saved_bytes=saved,
        sync_numel=sum(v.numel() for v in state.values() if v.is_floating_point()),
    )


def profile_sequence(model: nn.Sequential, in_shape: tuple[int, ...]) -> list[BlockProfile]:
    """Profile every block of a layer sequence in order, feeding each the previous output shape."""
    profiles = []
    shape = tuple(in_shape)
    for name, block in model.named_children():
        prof = profile_block(name, block, shape)
        profiles.append(prof)
        shape = prof.out_shape
    return profiles


def cache_dir() -> Path | None:
    """Where the FLOP profiles are kept between processes (:func:`fplstudy.facts.cache.cache_dir`)."""
    return cache.cache_dir("flops")


def _cache_file(model_name: str, in_shape: tuple[int, ...], num_classes: int) -> Path | None:
    """The cache entry of one model and input: named by a digest of the arguments, torch's version and the
    bytes of the code that builds and counts the model (this module and the models')."""
    return cache.entry("flops", model_name, [model_name, list(in_shape), num_classes, torch.__version__],
                       tuple(Path(__file__).with_name(module) for module in ("flops.py", "models.py")))


def _read_cached(path: Path | None) -> tuple[BlockProfile, ...] | None:
    """A cached profile, or None when there is none or it cannot be used (then it is counted again)."""
    try:
        return tuple(BlockProfile(**{**row, "in_shape": tuple(row["in_shape"]), "out_shape": tuple(row["out_shape"])})
                     for row in cache.read(path))
    except (TypeError, KeyError):
        return None


@lru_cache(maxsize=64)
def profile_model(model_name: str, in_shape: tuple[int, ...], num_classes: int) -> tuple[BlockProfile, ...]:
    """Profile a registered model (built with a fixed seed; costs do not depend on the weights), counted once
    per machine: later processes read it from :func:`cache_dir` (counting takes seconds, reading
    milliseconds)."""
    cached_at = _cache_file(model_name, tuple(in_shape), num_classes)
    cached = _read_cached(cached_at)
    if cached is not None:
        return cached
    profile = _count_model(model_name, tuple(in_shape), num_classes)
    cache.write(cached_at, [asdict(p) for p in profile])
    return profile


def _count_model(model_name: str, in_shape: tuple[int, ...], num_classes: int) -> tuple[BlockProfile, ...]:
    """:func:`profile_model` without the cache."""
    from fplstudy.facts.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            model = build_model(model_name, in_shape, num_classes)
        except ValueError as exc:  # the model's own rule on its input size
            raise ConfigError("model", model_name, " ".join(str(exc).split())) from None
        try:
            return tuple(profile_sequence(model, in_shape))
        except (RuntimeError, ValueError) as exc:  # torch refuses the shape: a kernel larger than the map, ...
            reason = " ".join(str(exc).split())[:160]
            raise ConfigError("model", model_name, f"cannot take inputs of shape {tuple(in_shape)} ({reason}); "
                                                   f"choose a model for inputs this size (`fplstudy keys`: model)") from None


@lru_cache(maxsize=256)
def profile_blocks(model_name: str, model_input_shape: tuple[int, ...], num_classes: int, start: int, stop: int,
                   in_shape: tuple[int, ...]) -> tuple[BlockProfile, ...]:
    """Profile blocks ``[start, stop)`` of a registered model fed inputs of per-sample ``in_shape``.

    Used where a part sees another shape than in the whole model: the views of a ``concat`` junction.
    """
    from fplstudy.facts.models import build_model, cut

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(model_name, model_input_shape, num_classes)
    return tuple(profile_sequence(cut(model, start, stop), in_shape))
