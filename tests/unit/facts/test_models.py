"""The model zoo: every registered model is a layer sequence that can be cut at any block boundary.

The equivalence tests run the stages the way a split-learning engine does: each stage receives the
previous stage's activation as a fresh leaf (``h.detach().requires_grad_()``) and the gradient comes
back across each boundary through an explicit ``torch.autograd.backward(out, grad)``. Output, loss,
input gradient, every parameter's gradient and the BatchNorm running statistics must equal the uncut
model's (``torch.testing.assert_close``; float64 where cheap, see ``DTYPE``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fplstudy.facts.models import MODELS, block_names, build_model, cut, make_adapter

NATURAL_SHAPE = {  # per-sample input shape each model is meant for
    "cnn": (1, 8, 8),  # digits
    "lenet5": (1, 28, 28),  # MNIST / Fashion-MNIST
    "vgg11": (3, 32, 32),  # CIFAR-10
    "resnet18": (3, 32, 32),
    "mobilenetv2": (3, 32, 32),
}
DTYPE = {  # float64 where it is cheap; float32 for the large torchvision models (float64 depthwise
    # convolutions are ~15x slower on CPU). The staged run does the same arithmetic as the whole, so
    # float32 agrees to well within assert_close's float32 tolerance.
    "cnn": torch.float64,
    "lenet5": torch.float64,
    "vgg11": torch.float64,
    "resnet18": torch.float32,
    "mobilenetv2": torch.float32,
}
BATCH = 4
NUM_CLASSES = 10
ALL = sorted(MODELS)


def _build(name: str, input_shape: tuple[int, ...] | None = None, num_classes: int = NUM_CLASSES,
           seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model(name, input_shape or NATURAL_SHAPE[name], num_classes)


def _batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, *NATURAL_SHAPE[name], generator=g).to(DTYPE[name])  # (B, C, H, W)
    y = torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)  # (B,)
    return x, y


def _cut_sets(n: int, singles: bool = True) -> list[list[int]]:
    """Stage boundaries ``[0, ..., n]``: a 3-stage cut, one stage per block (every boundary crossed in
    one run) and, with ``singles``, each single boundary on its own."""
    sets = [[0, n // 3, 2 * n // 3, n], list(range(n + 1))]
    return sets + ([[0, k, n] for k in range(1, n)] if singles else [])


def _run_whole(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor):
    xin = x.clone().requires_grad_()
    torch.manual_seed(2)  # dropout masks are drawn in the same order by the staged run
    out = model(xin)
    loss = nn.functional.cross_entropy(out, y)
    loss.backward()
    return out.detach(), loss.detach(), xin.grad


def _run_staged(model: nn.Sequential, bounds: list[int], x: torch.Tensor, y: torch.Tensor):
    stages = [cut(model, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    torch.manual_seed(2)
    inputs, outputs = [], []
    h = x
    for stage in stages:  # forward: each stage gets a leaf, as if received over a link
        h_in = h.detach().requires_grad_()
        h = stage(h_in)
        inputs.append(h_in)
        outputs.append(h)
    loss = nn.functional.cross_entropy(outputs[-1], y)
    loss.backward()  # last stage holds the labels
    for i in range(len(stages) - 2, -1, -1):  # backward: the gradient is handed down across each boundary
        torch.autograd.backward(outputs[i], inputs[i + 1].grad)
    return outputs[-1].detach(), loss.detach(), inputs[0].grad


def test_every_model_has_a_natural_input_shape():
    assert set(NATURAL_SHAPE) == set(MODELS), "add the new model's input shape to NATURAL_SHAPE"


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", ALL)
def test_staged_run_equals_uncut_model(name, mode):
    """Train mode (BatchNorm on batch statistics, dropout on) tries every cut set; eval mode the 3-stage
    cut and the one-stage-per-block cut, which crosses every boundary."""
    base = _build(name).to(DTYPE[name])
    base.train(mode == "train")  # train: BatchNorm uses batch statistics and updates running stats
    n = len(base)
    x, y = _batch(name)

    ref = copy.deepcopy(base)
    out_ref, loss_ref, xgrad_ref = _run_whole(ref, x, y)
    grads_ref = {k: p.grad for k, p in ref.named_parameters()}
    assert all(g is not None for g in grads_ref.values())
    buffers_ref = dict(ref.named_buffers())

    for bounds in _cut_sets(n, singles=mode == "train"):
        model = copy.deepcopy(base)
        out, loss, xgrad = _run_staged(model, bounds, x, y)
        where = f"{name} ({mode}) cut at {bounds}"
        torch.testing.assert_close(out, out_ref, msg=lambda m: f"{where}: output: {m}")
        torch.testing.assert_close(loss, loss_ref, msg=lambda m: f"{where}: loss: {m}")
        torch.testing.assert_close(xgrad, xgrad_ref, msg=lambda m: f"{where}: input grad: {m}")
        for key, p in model.named_parameters():
            assert p.grad is not None, f"{where}: no gradient reached {key}"
            torch.testing.assert_close(p.grad, grads_ref[key], msg=lambda m: f"{where}: grad of {key}: {m}")
        for key, b in model.named_buffers():
            torch.testing.assert_close(b, buffers_ref[key], msg=lambda m: f"{where}: buffer {key}: {m}")


@pytest.mark.parametrize("name", ALL)
def test_parts_partition_the_state_dict(name):
    model = _build(name)
    whole = model.state_dict()
    for bounds in _cut_sets(len(model)):
        parts = [cut(model, a, b).state_dict() for a, b in zip(bounds[:-1], bounds[1:])]
        keys = [set(p) for p in parts]
        assert sum(len(k) for k in keys) == len(whole), f"{name} cut at {bounds}: parts share keys"
        assert set().union(*keys) == set(whole), f"{name} cut at {bounds}: keys differ from the whole's"
        for part in parts:  # same names, same tensors (cut shares the modules)
            assert all(part[k].data_ptr() == whole[k].data_ptr() for k in part)


@pytest.mark.parametrize("name", ALL)
def test_shapes_blocks_and_default_junction(name):
    model = _build(name).eval()
    n = len(model)
    assert n >= 5
    assert block_names(model) == [k for k, _ in model.named_children()]
    assert len(set(block_names(model))) == n
    assert 1 <= MODELS[name].default_junction <= n - 1
    assert MODELS[name].summary and "\n" not in MODELS[name].summary
    x, _ = _batch(name)
    x = x.float()
    with torch.no_grad():
        assert model(x).shape == (BATCH, NUM_CLASSES)
        assert _build(name, num_classes=7).eval()(x).shape == (BATCH, 7)


def test_cnn_blocks_all_hold_parameters():
    model = _build("cnn")
    assert len(model) >= 8
    for block_name, block in model.named_children():
        assert sum(p.numel() for p in block.parameters()) > 0, block_name


@pytest.mark.parametrize("name", ALL)
def test_input_channels_come_from_input_shape(name):
    c, h, w = NATURAL_SHAPE[name]
    other = (4 - c if c in (1, 3) else 1, h, w)  # 1 ↔ 3 channels
    model = _build(name, other).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *other)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_weights(name):
    a, b = _build(name).state_dict(), _build(name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["lenet5", "vgg11"])
def test_too_small_or_flat_input_is_refused(name):
    with pytest.raises(ValueError, match=name):
        build_model(name, (1, 8, 8), NUM_CLASSES)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model(name, (28, 28), NUM_CLASSES)


@pytest.mark.parametrize("name", ALL)
def test_adapter_at_default_junction_keeps_the_output(name):
    model = _build(name).to(DTYPE[name]).eval()
    j = MODELS[name].default_junction
    head, trunk = cut(model, 0, j), cut(model, j, len(model))
    x, _ = _batch(name)
    with torch.no_grad():
        h = head(x)
        adapter = make_adapter(tuple(h.shape[1:])).to(DTYPE[name])
        torch.testing.assert_close(trunk(adapter(h)), model(x))


def test_torchvision_modules_and_weight_layout():
    from torchvision.models import mobilenet_v2, resnet18
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.models.resnet import BasicBlock

    ours = _build("resnet18")
    assert block_names(ours) == ["stem"] + [f"layer{i}_{j}" for i in range(1, 5) for j in (0, 1)] + ["pool", "fc"]
    assert all(isinstance(block, BasicBlock) for block in ours[1:9])
    assert ours.stem[0].kernel_size == (3, 3) and ours.stem[0].stride == (1, 1)
    mine = ours.state_dict()
    rename = {"conv1": "stem.0", "bn1": "stem.1"}
    for key, t in resnet18(weights=None, num_classes=NUM_CLASSES).state_dict().items():
        top, rest = key.split(".", 1)
        if top.startswith("layer"):
            idx, rest = rest.split(".", 1)
            top = f"{top}_{idx}"
        mapped = f"{rename.get(top, top)}.{rest}"
        assert mapped in mine, key
        if key != "conv1.weight":  # the CIFAR stem is 3×3, not 7×7
            assert mine[mapped].shape == t.shape, key

    ours = _build("mobilenetv2")
    assert block_names(ours) == ["stem"] + [f"features_{i}" for i in range(1, 18)] + ["head", "pool", "classifier"]
    assert all(isinstance(block, InvertedResidual) for block in ours[1:18])
    mine = ours.state_dict()
    for key, t in mobilenet_v2(weights=None, num_classes=NUM_CLASSES).state_dict().items():
        parts = key.split(".")
        if parts[0] == "features":
            i = int(parts[1])
            top = "stem" if i == 0 else "head" if i == 18 else f"features_{i}"
            mapped = ".".join([top, *parts[2:]])
        else:
            mapped = key
        assert mine[mapped].shape == t.shape, key
    assert len(mine) == len(mobilenet_v2(weights=None).state_dict())

    with torch.no_grad():  # CIFAR strides: 32×32 in, 4×4 at the last stage
        assert _build("resnet18").eval()[:9](torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)
        assert ours.eval()[:19](torch.randn(1, 3, 32, 32)).shape == (1, 1280, 4, 4)
        assert _build("vgg11").eval()[:8](torch.randn(1, 3, 32, 32)).shape == (1, 512, 1, 1)


@pytest.mark.parametrize("shape", [(16, 5, 5), (3, 1, 1), (84,), (1,)])
def test_make_adapter_is_identity_at_init(shape):
    adapter = make_adapter(shape)
    c = shape[0]
    assert sum(p.numel() for p in adapter.parameters()) == c * c + c
    x = torch.randn(BATCH, *shape)
    with torch.no_grad():
        torch.testing.assert_close(adapter(x), x)


@pytest.mark.parametrize("shape", [(), (3, 4), (1, 2, 3, 4)])
def test_make_adapter_refuses_other_shapes(shape):
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(F,\)"):
        make_adapter(shape)


def test_unknown_model_is_refused_with_known_names():
    with pytest.raises(KeyError) as info:
        build_model("alexnet", (3, 32, 32), NUM_CLASSES)
    message = str(info.value)
    assert "alexnet" in message
    assert all(name in message for name in MODELS)
