"""Calibration: this machine's sustained training FLOP/s, one thread, per model, as a device profile file.

:func:`measure` trains a model on random inputs of its dataset's shape (forward, cross-entropy,
backward, SGD step: what a node does per batch) with one intra-op thread, and divides the FLOPs of the
steps — the project's own count, :mod:`fplstudy.flops`, forward plus backward, the first block without an
input gradient as in the engine — by their wall time, less the per-call overhead found by also running
the model cut into one chunk per block (:func:`measure`). The rate is the median of several timed windows,
so that a burst of other work on a shared machine moves it little. :func:`calibrate` writes one device
profile ``calibrated_<model>_b<batch>`` per model and batch size (status ``M``, measured; the date, CPU model, torch version and
settings in its ``source``), loadable with the config key ``profiles_file``; the emulated testbed reads it
(:mod:`fplstudy.testbed`). Power is not measured: ``active_w`` and ``idle_w`` are written as 0 with status
``E`` (set them to price energy).
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

from fplstudy.config import ConfigError
from fplstudy.datasets import DATASET_META
from fplstudy.flops import profile_model
from fplstudy.models import build_model
from fplstudy.profiles import load_profiles
from fplstudy.results import atomic_write_text
from fplstudy.testbed import calibrated_name

WINDOWS = 5  # timed windows per model; the median is kept
MODEL_DATASET = {"cnn": "digits", "lenet5": "mnist", "vgg11": "cifar10", "resnet18": "cifar10",
                 "mobilenetv2": "cifar10"}  # the dataset whose input shape a model is measured on


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def training_flops_per_sample(model: str) -> tuple[int, tuple[int, ...], int]:
    """``(FLOPs of one training sample, input shape, classes)``: forward plus backward of every block, the first
    block without its input's gradient (it reads data), as the ledger counts a whole-model step."""
    shape, classes = DATASET_META[MODEL_DATASET[model]]
    prof = profile_model(model, tuple(shape), classes)
    fwd = sum(p.flops_fwd for p in prof)
    bwd = prof[0].flops_bwd_no_input_grad + sum(p.flops_bwd for p in prof[1:])
    return fwd + bwd, tuple(shape), classes


def measure(model: str, batch_size: int = 32, seconds: float = 3.0) -> dict:
    """Time training steps of ``model`` on one thread, whole and cut into one chunk per block.

    The whole model is two compute calls per step (forward, backward); cut into its ``k`` blocks as the
    engine cuts stages (each block's input detached and requiring its gradient, one backward call per
    block), ``2k``. The extra time per extra call is the call overhead ``o``; the FLOP/s is the FLOPs of
    the step over its time less its two calls' overhead: ``t_whole = FLOPs / F + 2 o``.

    Args:
        model: a registered model (:data:`MODEL_DATASET`).
        batch_size: samples per step.
        seconds: timed training in all (whole and cut alternate, :data:`WINDOWS` windows each), after a
            warm-up.

    Returns:
        ``{"model", "flops_per_s", "call_overhead_s", "batch_size", "steps", "whole_s", "cut_s"}``
        (``whole_s``/``cut_s``: median seconds per step).
    """
    flops, shape, classes = training_flops_per_sample(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = build_model(model, shape, classes)
        blocks = list(net.children())
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        x, y = torch.randn(batch_size, *shape), torch.randint(0, classes, (batch_size,))

        def whole() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

        def cut() -> None:  # as fplstudy.engine runs a chain of stages
            opt.zero_grad(set_to_none=True)
            h, ins, outs = x, [], []
            for i, block in enumerate(blocks):
                inp = h if i == 0 else h.detach().requires_grad_(True)
                h = block(inp)
                ins.append(inp)
                outs.append(h)
            outs[-1] = torch.nn.functional.cross_entropy(outs[-1], y)
            g = None
            for i in range(len(blocks) - 1, -1, -1):
                torch.autograd.backward(outs[i], g)
                g = ins[i].grad if i > 0 else None
            opt.step()

        t0, warm = time.perf_counter(), 0
        while warm < 3 or time.perf_counter() - t0 < min(1.0, seconds / 3):  # warm-up: allocator, kernels
            whole()
            cut()
            warm += 1
        per_step = (time.perf_counter() - t0) / warm / 2
        steps = max(1, round(seconds / (2 * WINDOWS) / per_step))
        times: dict = {whole: [], cut: []}
        for _ in range(WINDOWS):
            for fn in (whole, cut):  # alternate: both see the same background load
                t = time.perf_counter()
                for _ in range(steps):
                    fn()
                times[fn].append((time.perf_counter() - t) / steps)
    finally:
        torch.set_num_threads(threads)
    whole_s, cut_s = statistics.median(times[whole]), statistics.median(times[cut])
    k = len(blocks)
    call_s = max(0.0, (cut_s - whole_s) / (2 * k - 2)) if k > 1 else 0.0
    return {"model": model, "flops_per_s": flops * batch_size / (whole_s - 2 * call_s), "call_overhead_s": call_s,
            "batch_size": batch_size, "steps": 2 * steps * WINDOWS, "whole_s": whole_s, "cut_s": cut_s}


def calibrate(out: str | Path, models: list[str] | None = None, batch_size: int = 32, seconds: float = 3.0,
              ) -> list[dict]:
    """Measure every model and write (or update) the profiles file ``out``.

    An existing ``out`` keeps its other devices and links (its comments are not kept); its
    ``calibrated_<model>_b<batch>`` entries are replaced.

    Returns:
        One dict per model (:func:`measure`'s, plus ``profile``: the device profile's name).

    Raises:
        ConfigError: an unknown model, a batch size < 1, seconds <= 0, or an ``out`` that is not a profiles file.
    """
    models = list(MODEL_DATASET) if models is None else models
    for m in models:
        if m not in MODEL_DATASET:
            raise ConfigError("--models", m, f"unknown model; known: {', '.join(MODEL_DATASET)}")
    if batch_size < 1:
        raise ConfigError("--batch-size", batch_size, "must be an integer >= 1")
    if not 0 < seconds <= 3600:
        raise ConfigError("--seconds", seconds, "must be > 0 and <= 3600")
    out = Path(out)
    doc: dict = {}
    if out.exists():
        load_profiles(out)  # refuses a file that is not a valid profiles file, naming the key
        doc = yaml.safe_load(out.read_text()) or {}
    elif not out.parent.exists() or out.is_dir():
        raise ConfigError("--out", str(out), "give a YAML file in an existing folder")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    cpu, version = cpu_model(), torch.__version__
    rows = []
    devices = doc.setdefault("devices", {})
    for m in models:
        row = measure(m, batch_size, seconds)
        row["profile"] = calibrated_name(m, batch_size)
        rows.append(row)
        how = (f"fplstudy calibrate, {now}: {cpu}, torch {version}, 1 thread, {m} on {MODEL_DATASET[m]}-shaped "
               f"random inputs, batch {batch_size}, medians of {WINDOWS} windows ({row['steps']} steps of forward + "
               f"backward + SGD, whole and cut per block: {row['whole_s']:.4g} s and {row['cut_s']:.4g} s per step), "
               "FLOPs counted by fplstudy.flops")
        devices[row["profile"]] = {
            "description": f"this machine ({cpu}), one thread, training {m}; measured {now} with torch {version}",
            "flops_per_s": {"value": float(f"{row['flops_per_s']:.4g}"), "status": "M", "source": how},
            "call_overhead_s": {"value": float(f"{row['call_overhead_s']:.4g}"), "status": "M", "source": how},
            "active_w": {"value": 0.0, "status": "E", "source": "not measured (calibrate measures speed only)"},
            "idle_w": {"value": 0.0, "status": "E", "source": "not measured (calibrate measures speed only)"},
        }
    head = (f"# Device profiles of this machine, measured by `fplstudy calibrate` on {now}\n"
            f"# CPU: {cpu}; torch {version}; one thread. Load with the config key profiles_file.\n")
    atomic_write_text(out, head + yaml.safe_dump(doc, sort_keys=False, width=200))
    load_profiles(out)  # what was written loads
    return rows
