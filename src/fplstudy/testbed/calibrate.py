"""Calibration: this machine's sustained training FLOP/s, one thread, per model, as a device profile file.

:func:`measure` trains a model on its dataset's training samples (:func:`training_inputs`; random inputs of their
shape where the files are missing) with one intra-op thread — per step, gathering a batch, forward,
cross-entropy, backward, SGD step: what a node does per batch — and divides the FLOPs of the steps' calls —
the project's own count, :mod:`fplstudy.facts.flops`, forward plus backward, the first block without an input
gradient as in the engine — by their time, less the per-call overhead found by also running the model cut
into one chunk per block (:func:`measure`). The rest of a step (gathering the batch, the SGD step, zeroing the
gradients) is timed on its own: the profile's ``batch_s``, which the ledger prices once per batch on the node
feeding it in (:func:`fplstudy.costs.pricing.opens_batch`). The rate is the median of several timed windows,
so that a burst of other work on a shared machine moves it little. In the cut step every block's forward and
backward calls are timed too, which gives each block its own training FLOP/s (:func:`block_rates`): a first
convolution on one channel runs far below the model's average, and a model-parallel stage of a few blocks at
its blocks' rates, not the whole model's. :func:`calibrate` writes one device
profile ``calibrated_<model>_b<batch>`` per model and batch size (status ``M``, measured; the date, CPU model, torch version and
settings in its ``source``), loadable with the config key ``profiles_file``; the emulated testbed reads it
(:mod:`fplstudy.testbed.emulation`); the block rates go in its optional field ``block_flops_per_s``
(``{<model>: {<block>: FLOP/s}}``), which prices every call of that model block by block
(:func:`fplstudy.costs.pricing.price_compute`). Two settings measure the machine as the emulated testbed uses it
rather than in a tight loop alone: ``wait_s`` (each call after an idle, :func:`measure`) and ``processes``
(several processes at once, :func:`measure_together`); ``cold_wait_s`` also times cut steps whose every
block call follows an idle and whole steps whose forward does, as a call that starts cold does (after a wait for a
message), and writes how much longer such a call takes, a line in its warm seconds, as the optional fields
``cold_factor`` and ``cold_s`` (:func:`fit_cold`). Power is not measured: ``active_w`` and ``idle_w`` are written as 0 with status
``E`` (set them to price energy).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from fplstudy.config import ConfigError
from fplstudy.costs.memory import MEMORY_SHARE, available_memory_bytes, gib
from fplstudy.facts.datasets import DATASET_META, load_dataset
from fplstudy.facts.flops import profile_model
from fplstudy.facts.models import MODELS, build_model, make_adapter
from fplstudy.facts.profiles import load_profiles
from fplstudy.plans.program import adapter_profile, default_adapter_shape
from fplstudy.testbed.emulation import calibrated_name
from fplstudy.train.results import atomic_write_text, cpu_model

WINDOWS = 5  # timed windows per model; the median is kept
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}  # what measure times a call by
MODEL_DATASET = {"cnn": "digits", "lenet5": "mnist5k", "vgg11": "cifar10", "resnet18": "cifar10",
                 "mobilenetv2": "cifar10"}  # the dataset a model is measured on unless another of its shape is named


def training_inputs(model: str, batch_size: int, dataset: str | None = None) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The samples :func:`measure` trains ``model`` on: the training set of ``dataset`` (default: the model's own,
    :data:`MODEL_DATASET`), split as a run splits it with seed 0, or, where that dataset's files are not on this
    machine, as many random-normal inputs of its shape with random labels. The same step runs measurably faster
    on real samples than on random ones (cnn at batch 128 on this project's machine: 8 % on digits; lenet5 at batch
    64: about 17 % on mnist5k), so the calibration times what a run computes where it can: name the dataset the
    runs train on. Fewer samples than ``batch_size`` are repeated to fill a batch.

    Returns:
        ``(what the inputs are, the samples, their labels)``.
    """
    name = dataset or MODEL_DATASET[model]
    try:
        split = load_dataset(name, seed=0)
        what, x, y = f"{name} training samples", split.x_train, split.y_train
    except FileNotFoundError:
        shape, classes = DATASET_META[name]
        gen = torch.Generator().manual_seed(0)
        n = max(batch_size, 1024)
        what = f"{name}-shaped random-normal inputs ({name}'s files are not on this machine)"
        x, y = torch.randn(n, *shape, generator=gen), torch.randint(0, classes, (n,), generator=gen)
    if len(x) < batch_size:
        reps = -(-batch_size // len(x))
        x, y = x.repeat(reps, *([1] * (x.dim() - 1))), y.repeat(reps)
    return what, x, y


def sample_bytes(model: str) -> int:
    """Bytes one sample of a training step of ``model`` holds at its peak (float32): what autograd keeps for
    backward in every block, the largest output and its gradient, and three copies of the input (the pool of
    samples, the gathered batch, the copy the cut step sends on)."""
    shape, classes = DATASET_META[MODEL_DATASET[model]]
    prof = profile_model(model, tuple(shape), classes)
    in_bytes = 4 * int(np.prod(shape))
    return 3 * in_bytes + sum(p.saved_bytes for p in prof) + 2 * max(p.out_bytes for p in prof)


def check_batch_memory(model: str, batch_size: int, processes: int = 1, available: float | None = None) -> None:
    """Refuse a batch whose training step would not fit in memory before anything is measured: ``processes``
    steps of ``batch_size`` samples of :func:`sample_bytes` against
    :data:`fplstudy.costs.memory.MEMORY_SHARE` of ``available`` bytes (None: this machine's available memory).

    Raises:
        ConfigError: naming ``--batch-size``, the model, the estimated memory and the largest batch that fits.
    """
    per_sample = sample_bytes(model)
    need = per_sample * batch_size * processes
    budget = MEMORY_SHARE * (available_memory_bytes() if available is None else available)
    if need > budget:
        fit = int(budget // (per_sample * processes))
        raise ConfigError("--batch-size", batch_size,
                          f"a training step of {model} holds about {per_sample:,} bytes a sample, {gib(need)} at this "
                          f"batch{f' in {processes} processes' if processes > 1 else ''}, more than the {gib(budget)} "
                          f"this machine can spare; give a batch of at most {fit}")


def training_flops_per_sample(model: str) -> tuple[int, tuple[int, ...], int]:
    """``(FLOPs of one training sample, input shape, classes)``: forward plus backward of every block, the first
    block without its input's gradient (it reads data), as the ledger counts a whole-model step."""
    per_block, shape, classes = block_training_flops(model)
    return sum(per_block.values()), shape, classes


def block_training_flops(model: str) -> tuple[dict[str, int], tuple[int, ...], int]:
    """``({block: FLOPs of one training sample}, input shape, classes)``: each block's forward plus backward, the
    first block's backward without its input's gradient (it reads data), every other block's with it (its input
    requires grad, in the whole model and in the cut step alike): the ledger's count (``pricing.chunk_flops``)."""
    shape, classes = DATASET_META[MODEL_DATASET[model]]
    prof = profile_model(model, tuple(shape), classes)
    per_block = {p.name: p.flops_fwd + (p.flops_bwd_no_input_grad if i == 0 else p.flops_bwd)
                 for i, p in enumerate(prof)}
    return per_block, tuple(shape), classes


def adapter_training_flops(model: str) -> tuple[int, tuple[int, ...], int] | None:
    """``(FLOPs of one training sample, activation shape, blocks below)`` of the junction adapter at ``model``'s default
    junction (an fpl plan's adapter; :func:`fplstudy.facts.models.make_adapter`): its forward plus its backward with its input's
    gradient (the head below it has parameters), as the ledger counts it; None for a model whose default junction is 0."""
    shape, classes = DATASET_META[MODEL_DATASET[model]]
    out = default_adapter_shape(model, profile_model(model, tuple(shape), classes))
    if out is None:
        return None
    p = adapter_profile(out)
    return p.flops_fwd + p.flops_bwd, out, MODELS[model].default_junction


def block_rates(flops: dict[str, int], block_s: dict[str, float], cut_s: float, call_s: float) -> dict[str, float]:
    """Each block's training FLOP/s from the cut step's timings.

    A block's seconds are its two timed calls (forward, backward) ``t_b`` less their overhead ``2 o``, plus its
    FLOP share of the rest of the cut step, ``R = cut_s − Σ t_b − 2 (k − |P|) o`` over the blocks ``P`` that
    have FLOPs (``R``: the loss, and the calls of blocks without FLOPs, less their overhead; the batch's work
    outside the calls is not in ``cut_s``: :func:`measure`'s ``batch_s``): ``rate_b = FLOPs_b / (t_b − 2 o + R FLOPs_b / Σ_P FLOPs)``. The rest is shared by
    FLOPs as the whole-model rate shares it, so ``Σ_P`` of the blocks' seconds is ``cut_s − 2 k o``; with
    ``o = (cut_s − whole_s) / (2k − 2)`` that is ``whole_s − 2 o``, and the FLOP-weighted harmonic mean of the
    block rates (``Σ FLOPs / Σ FLOPs_b / rate_b``) is the whole-model rate. Blocks without FLOPs, or whose
    seconds come out not positive (noise on a block far shorter than a call's overhead), get no rate (the
    ledger prices them at ``flops_per_s``).

    Args:
        flops: per block, its FLOPs in one step (all samples).
        block_s: per block, seconds of its forward and backward calls in one cut step.
        cut_s: seconds of the whole cut step.
        call_s: the overhead of one compute call (``o``).

    Returns:
        ``{block: FLOP/s}``, in block order.
    """
    rated = [b for b in flops if flops[b] > 0]
    total = sum(flops[b] for b in rated)
    if not total:
        return {}
    rest = cut_s - sum(block_s[b] for b in rated) - 2 * (len(flops) - len(rated)) * call_s
    out = {}
    for b in rated:
        seconds = block_s[b] - 2 * call_s + rest * flops[b] / total
        if seconds > 0:
            out[b] = flops[b] / seconds
    return out


def fit_block_costs(per_sample: dict[str, int], batch: int, block_s: dict[str, float], batch2: int,
                    block_s2: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Each block's rate per sample and fixed seconds per call, from its seconds per step at two batch sizes.

    A block's seconds per training step are taken as a line in the batch size, ``s(n) = c + n u``: ``u`` the
    seconds of one more sample, ``c`` what the step costs whatever its batch (the framework's work per operator,
    kernels that do not fill the core on a small batch). Through the two points, ``u = (s − s₂) / (n − n₂)``,
    ``c = s − n u``; the block's rate is ``FLOPs per sample / u`` and its fixed seconds per call ``c / 2`` (a step
    is two calls of it, forward and backward), which :func:`fplstudy.costs.pricing.price_compute` adds to every call.
    At ``batch`` the two give back ``s`` exactly. A block whose ``u`` comes out not positive (noise: it is as
    slow at the smaller batch) keeps its rate at ``batch`` and no fixed seconds; one whose ``c`` comes out
    negative gets no fixed seconds and its rate at ``batch`` (``s / batch`` per sample). Blocks missing from
    either timing are left out.

    Args:
        per_sample: per block, its training FLOPs of one sample.
        batch, block_s: the first batch size, and per block its seconds per step there (FLOPs / block rate).
        batch2, block_s2: the same at the second batch size (``!= batch``).

    Returns:
        ``({block: FLOP/s}, {block: fixed seconds per call})``, in block order; the second only for blocks
        with a positive fixed part.
    """
    rates, fixed = {}, {}
    for b, f in per_sample.items():
        if b not in block_s or b not in block_s2:
            continue
        u = (block_s[b] - block_s2[b]) / (batch - batch2)
        c = block_s[b] - batch * u
        if u <= 0 or c <= 0:
            rates[b] = f * batch / block_s[b]
            continue
        rates[b], fixed[b] = f / u, c / 2
    return rates, fixed


def fit_cold(calls: int, calls_s: float, cold_calls_s: float, forward_s: float, cold_forward_s: float
             ) -> tuple[float, float]:
    """How much longer a call that starts cold takes, as a line in its warm seconds: ``extra = cold_s + cold_factor ×
    warm``, through two measured points: the short calls of a cut step (``calls`` block calls taking ``calls_s``
    seconds in all warm, ``cold_calls_s`` each after the idle: a mean call of ``calls_s / calls`` seconds, longer by
    ``(cold_calls_s − calls_s) / calls``) and the one long forward of a whole step (``forward_s`` warm, ``cold_forward_s``
    after the idle). Measured here, neither a factor nor fixed seconds alone holds: a cold block call of about 0.5 ms
    takes about 0.45 ms more, a cold 4.6 ms forward about 1 ms more. A negative slope (the long call gained less
    than the short ones) gives no factor and the short calls' extra seconds; a negative intercept gives no fixed
    seconds and the long call's factor; neither is ever below 0.

    Returns:
        ``(cold_factor, cold_s)``.
    """
    x1, y1 = calls_s / calls, (cold_calls_s - calls_s) / calls
    x2, y2 = forward_s, cold_forward_s - forward_s
    slope = (y2 - y1) / (x2 - x1) if x2 != x1 else 0.0
    if slope <= 0:
        return 0.0, max(0.0, y1)
    fixed = y1 - slope * x1
    if fixed <= 0:
        return max(0.0, y2 / x2), 0.0
    return slope, fixed


def measure(model: str, batch_size: int = 32, seconds: float = 3.0, wait_s: float = 0.0, clock: str = "wall",
            cold_wait_s: float = 0.0, dataset: str | None = None) -> dict:
    """Time training steps of ``model`` on one thread, whole and cut into one chunk per block.

    The whole model is two compute calls per step (forward, backward); cut into its ``k`` blocks as the
    engine cuts stages (each block's input detached and requiring its gradient, one backward call per
    block), ``2k``. The extra time per extra call is the call overhead ``o``; the FLOP/s is the FLOPs of
    the step over its time less its two calls' overhead: ``t_whole = FLOPs / F + 2 o``. In the cut step
    each block's forward and backward calls are timed (``perf_counter`` around each), the median per block
    over the windows kept, and :func:`block_rates` turns them into per-block FLOP/s. Each step gathers a new
    batch of :func:`training_inputs` by index, as the engine does; that gathering, the SGD step and zeroing the
    gradients are timed apart from the calls (the step's times are its calls' only), their median seconds per step
    being ``batch_s``.

    The junction adapter of an fpl plan at the model's default junction (:func:`adapter_training_flops`) is timed in
    steps of its own, alternating with the others: its forward and backward calls on that junction's activations of
    a fresh batch (computed untimed), as a branch's adapter node makes them; its seconds less two call overheads give
    the block ``adapter`` its rate. Measured here for cnn at batch 128: 0.55 ms for its two calls, 2.8x what the ledger
    priced them at before (their FLOPs at the whole model's rate plus two call overheads): a 1x1 convolution of 32
    channels on 4x4 features does little work per operator.

    With ``wait_s > 0`` every compute call (a forward, a backward) follows ``wait_s`` seconds of sleep, as on
    a node that waits for a message (or, on the emulated testbed, sleeps out its CPU share) before each
    chunk: caches and predictors have gone cold, and the same call takes longer than in a tight loop
    (measured here: a whole cnn step at batch 128 after 50 ms idle 1.2-1.3x its tight-loop time). Only the
    calls are timed, never the sleeps.

    With ``cold_wait_s > 0`` two more kinds of step are timed beside them, as calls that start cold (they follow a
    wait for a message, or open the node's round): a cut step whose every block call follows ``cold_wait_s``
    seconds of sleep (short calls) and a whole step whose forward does (a long one); :func:`fit_cold` draws the
    line through the two, ``cold_factor`` and ``cold_s``: :func:`fplstudy.costs.pricing.price_compute` prices a call that
    starts cold at ``1 + cold_factor`` times its seconds plus ``cold_s``. (A factor alone, timed on the whole step's
    forward, underprices short calls: the cold start weighs less on one long call than on a stage's short calls.)

    ``clock="cpu"`` times each call by its thread's CPU seconds (``thread_time``) rather than the wall:
    what the testbed's ``dilate`` mode stretches, and not lengthened while the process waits for a core
    (more processes than cores), though still by the caches the other processes evict.

    Args:
        model: a registered model (:data:`MODEL_DATASET`).
        batch_size: samples per step.
        seconds: timed training in all (whole and cut alternate, :data:`WINDOWS` windows each), after a
            warm-up; with ``wait_s``, the sleeps count in it (at least one step per window is timed).
        wait_s: seconds of idle before each compute call (0: a tight loop, the sustained rate).
        clock: ``"wall"`` (``perf_counter``) or ``"cpu"`` (``thread_time``), what the calls are timed by.
        cold_wait_s: seconds of idle before the forward of the cold steps (0: none timed).
        dataset: the samples' dataset (:func:`training_inputs`; default the model's own).

    Returns:
        ``{"model", "flops_per_s", "call_overhead_s", "batch_s", "inputs", "batch_size", "steps", "whole_s", "cut_s",
        "blocks", "block_flops_per_s", "block_s", "block_flops"}`` (``inputs``: what :func:`training_inputs` gave;
        ``blocks``: the model's block names, in order), with ``cold_wait_s > 0`` also ``"calls_s"`` and
        ``"cold_calls_s"`` (median seconds of the block calls of a tight-loop and of a cold cut step),
        ``"forward_s"`` and ``"cold_forward_s"`` (of the forward of a tight-loop and of a cold whole step), and
        ``"cold_factor"``, ``"cold_s"`` (:func:`fit_cold`) (``whole_s``/``cut_s``:
        median seconds of a step's calls;
        ``block_s``: per block, median seconds of its forward and backward calls per cut step; ``block_flops``:
        per block, FLOPs per step; ``block_flops_per_s``: :func:`block_rates`; the three also hold the adapter,
        ``adapter``, where the model has one: its seconds per adapter step, its FLOPs, its rate).
    """
    per_block, shape, classes = block_training_flops(model)
    flops = sum(per_block.values())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = build_model(model, shape, classes)
        names, blocks = zip(*net.named_children())
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        adapting = adapter_training_flops(model)
        if adapting:  # the junction adapter, fed the default junction's activations with a fixed gradient from above
            head = torch.nn.Sequential(*blocks[:adapting[2]])
            adapter = make_adapter(adapting[1])
            from_above = torch.randn(batch_size, *adapting[1])
        tick = CLOCKS[clock]
        spent = [0.0] * len(blocks)  # seconds of each block's calls, summed over a window's cut steps
        inputs, pool_x, pool_y = training_inputs(model, batch_size, dataset)
        rng = np.random.default_rng(0)
        order, at = rng.permutation(len(pool_x)), [0]
        per_batch = [0.0]  # seconds of the batches' work outside the blocks, summed over a window's steps

        def batch() -> tuple[torch.Tensor, torch.Tensor]:  # the next batch, gathered as the engine gathers it
            if at[0] + batch_size > len(order):
                order[:], at[0] = rng.permutation(len(pool_x)), 0
            idx = order[at[0]:at[0] + batch_size]
            at[0] += batch_size
            return pool_x[idx], pool_y[idx]

        def step() -> float:  # the optimizer step and zeroing after the batch's last call (engine.run_batch)
            t = tick()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return tick() - t

        def pause(idle: float | None = None) -> None:  # before a call: idle seconds of sleep (None: wait_s)
            if idle is None:
                idle = wait_s
            if idle > 0:
                time.sleep(idle)

        def whole(first: float | None = None) -> float:  # the seconds of its calls (without pauses or batch work)
            t = tick()  # first: seconds idle before the forward (None: wait_s)
            x, y = batch()
            gathered = tick() - t
            pause(first)
            t = tick()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            took = tick() - t
            forward[0] += took
            pause()
            t = tick()
            loss.backward()
            took += tick() - t
            per_batch[0] += gathered + step()
            return took

        def cut(idle: float | None = None) -> float:  # as fplstudy.train.engine runs a chain of stages
            t = tick()  # idle: seconds of sleep before each block call (None: wait_s)
            x, y = batch()
            gathered = tick() - t
            h, ins, outs = x, [], []
            took = 0.0
            for i, block in enumerate(blocks):
                pause(idle)
                t = tick()
                inp = h if i == 0 else h.detach().requires_grad_(True)
                h = block(inp)
                d = tick() - t
                took, spent[i] = took + d, spent[i] + d
                ins.append(inp)
                outs.append(h)
            t = tick()
            outs[-1] = torch.nn.functional.cross_entropy(outs[-1], y)
            took += tick() - t
            g = None
            for i in range(len(blocks) - 1, -1, -1):
                pause(idle)
                t = tick()
                torch.autograd.backward(outs[i], g)
                d = tick() - t
                took, spent[i] = took + d, spent[i] + d
                g = ins[i].grad if i > 0 else None
            per_batch[0] += gathered + step()
            return took

        def adapt() -> float:  # the adapter's forward and backward calls, as an fpl branch's adapter node makes them
            x, _ = batch()
            with torch.no_grad():
                h = head(x)  # the junction's activations (not timed)
            pause()
            t = tick()
            out = adapter(h.requires_grad_(True))
            took = tick() - t
            pause()
            t = tick()
            out.backward(from_above)
            took += tick() - t
            adapter.zero_grad(set_to_none=True)
            return took

        def cold() -> float:  # a cut step whose every block call follows cold_wait_s idle: short calls that start cold
            return cut(cold_wait_s)

        def cold_whole() -> float:  # a whole step whose forward follows cold_wait_s idle: a long call that starts cold
            return whole(cold_wait_s)

        forward = [0.0]  # seconds of the whole steps' forward calls, summed over a window


        t0, warm = time.perf_counter(), 0
        while warm < 3 or time.perf_counter() - t0 < min(1.0, seconds / 3):  # warm-up: allocator, kernels
            whole()
            cut()
            if adapting:
                adapt()
            warm += 1
        per_step = (time.perf_counter() - t0) / warm / 2  # wall, pauses included
        steps = max(1, round(seconds / (2 * WINDOWS) / per_step))
        kinds = (whole, cut) + ((adapt,) if adapting else ()) + ((cold, cold_whole) if cold_wait_s > 0 else ())
        times: dict = {fn: [] for fn in kinds}
        calls: dict = {cut: [], cold: []}  # per window, seconds of the block calls per cut step
        forwards: dict = {whole: [], cold_whole: []}  # per window, seconds of the forward call per whole step
        batches: list[float] = []  # per window and kind, seconds of the batch work per step
        # cold steps sleep before each call: as many as fit the same seconds as the others' (at least 3)
        cold_steps = max(3, round(steps * per_step / (per_step + 2 * len(blocks) * cold_wait_s)))
        steps_of = {cold: cold_steps, cold_whole: max(3, round(steps * per_step / (per_step + cold_wait_s)))}
        windows: list[list[float]] = []  # per window, each block's seconds per cut step
        for _ in range(WINDOWS):
            for fn in kinds:  # alternate: all see the same background load
                spent[:], per_batch[0], forward[0] = [0.0] * len(blocks), 0.0, 0.0
                took, n = 0.0, steps_of.get(fn, steps)
                for _ in range(n):
                    took += fn()
                times[fn].append(took / n)
                if fn in (whole, cut):
                    batches.append(per_batch[0] / n)
                if fn in calls:
                    calls[fn].append(sum(spent) / n)
                if fn in forwards:
                    forwards[fn].append(forward[0] / n)
                if fn is cut:  # (the next kind clears spent)
                    windows.append([b / steps for b in spent])
    finally:
        torch.set_num_threads(threads)
    whole_s, cut_s = statistics.median(times[whole]), statistics.median(times[cut])
    k = len(blocks)
    call_s = max(0.0, (cut_s - whole_s) / (2 * k - 2)) if k > 1 else 0.0
    block_s = {n: statistics.median(w[i] for w in windows) for i, n in enumerate(names)}
    block_flops = {n: f * batch_size for n, f in per_block.items()}
    rates = block_rates(block_flops, block_s, cut_s, call_s)
    if adapting:  # the adapter: its two calls' seconds less their overhead
        block_s["adapter"], block_flops["adapter"] = statistics.median(times[adapt]), adapting[0] * batch_size
        if block_s["adapter"] > 2 * call_s:
            rates["adapter"] = block_flops["adapter"] / (block_s["adapter"] - 2 * call_s)
    row = {"model": model, "flops_per_s": flops * batch_size / (whole_s - 2 * call_s), "call_overhead_s": call_s,
           "batch_s": statistics.median(batches), "inputs": inputs,
           "batch_size": batch_size, "wait_s": wait_s, "clock": clock,
           "steps": (3 if adapting else 2) * steps * WINDOWS, "whole_s": whole_s, "cut_s": cut_s, "blocks": list(names),
           "block_flops_per_s": rates, "block_s": block_s, "block_flops": block_flops}
    if cold_wait_s > 0:
        warm_c, cold_c = statistics.median(calls[cut]), statistics.median(calls[cold])
        warm_f, cold_f = statistics.median(forwards[whole]), statistics.median(forwards[cold_whole])
        factor, fixed = fit_cold(2 * k, warm_c, cold_c, warm_f, cold_f)
        row |= {"cold_wait_s": cold_wait_s, "calls_s": warm_c, "cold_calls_s": cold_c, "forward_s": warm_f,
                "cold_forward_s": cold_f, "cold_factor": factor, "cold_s": fixed,
                "steps": row["steps"] + (steps_of[cold] + steps_of[cold_whole]) * WINDOWS}
    return row


def _measure_child(barrier, queue, args: tuple) -> None:  # a process of measure_together
    try:
        barrier.wait()  # torch imported in every process: all start timing together
        queue.put(measure(*args))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put(exc)


def measure_together(model: str, batch_size: int = 32, seconds: float = 3.0, wait_s: float = 0.0,
                     processes: int = 1, clock: str = "wall", cold_wait_s: float = 0.0,
                     dataset: str | None = None) -> dict:
    """:func:`measure` in ``processes`` processes at once (one thread each), the medians over them.

    A node of the emulated testbed is one process among as many as the plan has nodes, all on this
    machine's few cores: between its own calls, the others compute and evict its caches, so its calls run
    slower than one process alone (measured here: 8 processes at once, each call after 50 ms idle, 1.4x
    the time per call of 4). Calibrating with the testbed's number of processes measures the speed a
    node's process gets. ``processes=1`` is :func:`measure` itself.

    Returns:
        :func:`measure`'s dict with the medians over the processes of ``flops_per_s``, ``call_overhead_s``,
        ``batch_s``, the cold timings (and the line through their medians, :func:`fit_cold`), ``whole_s``, ``cut_s`` and each block's rate and seconds, ``steps`` summed, plus ``processes``.
    """
    if processes == 1:
        return measure(model, batch_size, seconds, wait_s, clock, cold_wait_s, dataset) | {"processes": 1}
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_measure_child, args=(barrier, queue, (model, batch_size, seconds, wait_s, clock,
                                                                           cold_wait_s, dataset)))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    try:
        rows = [queue.get(timeout=600 + 3 * seconds * processes) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    for row in rows:
        if isinstance(row, BaseException):
            raise row

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    def med_blocks(key: str) -> dict:
        names = [b for b in rows[0][key] if all(b in r[key] for r in rows)]
        return {b: statistics.median(r[key][b] for r in rows) for b in names}

    cold = {k: med(k) for k in ("calls_s", "cold_calls_s", "forward_s", "cold_forward_s")} if "cold_factor" in rows[0] else {}
    if cold:  # the line through the medians
        cold["cold_factor"], cold["cold_s"] = fit_cold(2 * len(rows[0]["blocks"]), cold["calls_s"], cold["cold_calls_s"],
                                                       cold["forward_s"], cold["cold_forward_s"])
    return rows[0] | {"flops_per_s": med("flops_per_s"), "call_overhead_s": med("call_overhead_s"),
                      "batch_s": med("batch_s"),
                      "whole_s": med("whole_s"), "cut_s": med("cut_s"), "steps": sum(r["steps"] for r in rows),
                      "block_flops_per_s": med_blocks("block_flops_per_s"), "block_s": med_blocks("block_s"),
                      "processes": processes} | cold


def _fit(row: dict, row2: dict) -> dict:
    """``row`` (:func:`measure_together` at its batch) with its block rates refitted through ``row2``'s (another
    batch size) by :func:`fit_block_costs`, their fixed seconds in ``block_call_s``."""
    b, b2 = row["batch_size"], row2["batch_size"]
    seconds = {r["batch_size"]: {k: r["block_flops"][k] / v for k, v in r["block_flops_per_s"].items()}
               for r in (row, row2)}
    per_sample = {k: f // b for k, f in row["block_flops"].items()}
    rates, fixed = fit_block_costs(per_sample, b, seconds[b], b2, seconds[b2])
    return row | {"block_flops_per_s": rates, "block_call_s": fixed,
                  "batch_block_flops_per_s": row["block_flops_per_s"], "fit_batch": b2, "fit_whole_s": row2["whole_s"],
                  "fit_block_flops_per_s": row2["block_flops_per_s"]}


def calibrate(out: str | Path, models: list[str] | None = None, batch_size: int = 32, seconds: float = 3.0,
              wait_s: float = 0.0, processes: int = 1, clock: str = "wall", fit_batch: int | None = None,
              cold_wait_s: float = 0.0, dataset: str | None = None) -> list[dict]:
    """Measure every model and write (or update) the profiles file ``out``.

    An existing ``out`` keeps its other devices and links (its comments are not kept); its
    ``calibrated_<model>_b<batch>`` entries are replaced.

    ``wait_s`` (:func:`measure`): idle seconds before each timed call; 0 gives the sustained rate, a
    positive value the rate of calls that follow a wait, as the emulated testbed's nodes make them.
    ``processes`` (:func:`measure_together`): that many processes measure at once, as the testbed runs
    one process per node. ``clock`` (:func:`measure`): ``"cpu"`` times the calls by their CPU seconds, as
    the testbed's ``dilate`` mode stretches them. ``fit_batch``: also measure at this batch size and refit
    each block's rate as a rate per sample plus fixed seconds per call (:func:`fit_block_costs`, the profile's
    ``block_call_s``), so that the ledger prices a partial or micro-batch below the rate of a full one.
    ``cold_wait_s`` (:func:`measure`): also time short and long calls that follow that many seconds idle and write
    how much longer such a call takes, a line in its warm seconds, as ``cold_factor`` and ``cold_s`` (:func:`fit_cold`).
    ``dataset``: the samples every model trains on (:func:`training_inputs`; default each model's own), a dataset
    of the models' input shape: the one the runs train on.

    Returns:
        One dict per model (:func:`measure`'s, plus ``profile``: the device profile's name; with ``fit_batch``,
        ``block_call_s``, ``batch_block_flops_per_s`` (the block rates at the batch size, before the fit),
        ``fit_batch``, ``fit_whole_s`` and ``fit_block_flops_per_s``: the second measurement's).

    Raises:
        ConfigError: an unknown model, a batch size < 1, seconds <= 0, wait_s or cold_wait_s outside [0, 10], processes
            outside [1, 64], an unknown clock, a fit batch < 1 or equal to the batch size, a dataset unknown or of
            another input shape than a model's, or an ``out`` that is not a profiles file.
    """
    models = list(MODEL_DATASET) if models is None else models
    for m in models:
        if m not in MODEL_DATASET:
            raise ConfigError("--models", m, f"unknown model; known: {', '.join(MODEL_DATASET)}")
    if batch_size < 1:
        raise ConfigError("--batch-size", batch_size, "must be an integer >= 1")
    if dataset is not None:
        if dataset not in DATASET_META:
            raise ConfigError("--dataset", dataset, f"unknown dataset; known: {', '.join(DATASET_META)}")
        for m in models:
            want = DATASET_META[MODEL_DATASET[m]][0]
            if DATASET_META[dataset][0] != want:
                raise ConfigError("--dataset", dataset, f"its samples are {DATASET_META[dataset][0]}, {m} takes {want}: "
                                                        f"name a dataset of {m}'s input shape, or calibrate {m} apart")
    if not 0 < seconds <= 3600:
        raise ConfigError("--seconds", seconds, "must be > 0 and <= 3600")
    if not 0 <= wait_s <= 10:
        raise ConfigError("--after-wait", wait_s, "give seconds >= 0 and <= 10 (0: calls in a tight loop)")
    if isinstance(cold_wait_s, bool) or not isinstance(cold_wait_s, (int, float)) or not 0 <= cold_wait_s <= 10:
        raise ConfigError("--cold-wait", cold_wait_s, "give seconds >= 0 and <= 10 (0: no cold call timed, no "
                                                         "cold_factor written)")
    if not (isinstance(processes, int) and 1 <= processes <= 64):
        raise ConfigError("--processes", processes, "give an integer >= 1 and <= 64 (1: one process alone)")
    if clock not in CLOCKS:
        raise ConfigError("--clock", clock, f"give one of {', '.join(CLOCKS)}")
    if fit_batch is not None and (isinstance(fit_batch, bool) or not isinstance(fit_batch, int) or fit_batch < 1
                                  or fit_batch == batch_size):
        raise ConfigError("--fit-batch", fit_batch, f"give an integer batch size >= 1 other than --batch-size "
                                                    f"({batch_size}), e.g. the plan's last partial batch")
    for m in models:
        check_batch_memory(m, max(batch_size, fit_batch or 0), processes)
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
        row = measure_together(m, batch_size, seconds, wait_s, processes, clock, cold_wait_s, dataset)
        if fit_batch is not None:
            row = _fit(row, measure_together(m, fit_batch, seconds, wait_s, processes, clock, dataset=dataset))
        row["profile"] = calibrated_name(m, batch_size)
        rows.append(row)
        how = (f"fplstudy calibrate, {now}: {cpu}, torch {version}, 1 thread, {m} on {row['inputs']}, "
               f"batch {batch_size}, medians of {WINDOWS} windows ({row['steps']} steps of forward + "
               f"backward + SGD, whole and cut per block: {row['whole_s']:.4g} s and {row['cut_s']:.4g} s of calls "
               f"per step), "
               + (f"each call after {wait_s:g} s idle, " if wait_s else "calls in a tight loop, ")
               + (f"{processes} processes at once (medians over them), " if processes > 1 else "")
               + ("each call timed by its thread's CPU seconds, " if clock == "cpu" else "")
               + "FLOPs counted by fplstudy.facts.flops")
        entry = {
            "description": f"this machine ({cpu}), one thread, training {m}"
                           + (f", each call after {wait_s:g} s idle" if wait_s else "")
                           + (f", {processes} processes at once" if processes > 1 else "")
                           + (", CPU seconds" if clock == "cpu" else "")
                           + f"; measured {now} with torch {version}",
            "flops_per_s": {"value": float(f"{row['flops_per_s']:.4g}"), "status": "M", "source": how},
            "call_overhead_s": {"value": float(f"{row['call_overhead_s']:.4g}"), "status": "M", "source": how},
            "batch_s": {"value": float(f"{row['batch_s']:.4g}"), "status": "M",
                        "source": how + "; per step, the work outside the calls: gathering the batch from the "
                                        "training samples, the SGD step, zeroing the gradients"},
        }
        if "cold_factor" in row:
            entry["cold_factor"] = {
                "value": float(f"{row['cold_factor']:.4g}"), "status": "M",
                "source": how + f"; with cold_s, a line through the block calls of a cut step, each after "
                                f"{cold_wait_s:g} s idle ({row['cold_calls_s']:.4g} s) against those of one in the tight "
                                f"loop ({row['calls_s']:.4g} s), and a whole step's forward after the idle "
                                f"({row['cold_forward_s']:.4g} s) against one in the tight loop ({row['forward_s']:.4g} s): "
                                "fplstudy.testbed.calibrate.fit_cold"}
            entry["cold_s"] = {"value": float(f"{row['cold_s']:.4g}"), "status": "M", "source": entry["cold_factor"]["source"]}
        if row["block_flops_per_s"]:
            entry["block_flops_per_s"] = {
                "value": {m: {b: float(f"{r:.4g}") for b, r in row["block_flops_per_s"].items()}}, "status": "M",
                "source": how + "; per block: its forward and backward calls timed in the cut step, less two "
                                "call overheads, plus its FLOP share of the step's other seconds (the loss, "
                                "blocks without FLOPs): fplstudy.testbed.calibrate.block_rates"
                                + ("; the junction adapter (adapter) at the default junction: its forward and backward "
                                   "calls timed in steps of their own, less two call overheads"
                                   if "adapter" in row["block_flops_per_s"] else "")
                                + (f"; then per sample, through the same at batch {fit_batch} "
                                   "(fplstudy.testbed.calibrate.fit_block_costs)" if fit_batch is not None else "")}
        if row.get("block_call_s"):
            entry["block_call_s"] = {
                "value": {m: {b: float(f"{c:.4g}") for b, c in row["block_call_s"].items()}}, "status": "M",
                "source": how + f"; per block: the part of its seconds per step that does not grow with the batch, "
                                f"through batch {batch_size} and {fit_batch}, halved (forward and backward calls): "
                                "fplstudy.testbed.calibrate.fit_block_costs"}
        devices[row["profile"]] = entry | {
            "active_w": {"value": 0.0, "status": "E", "source": "not measured (calibrate measures speed only)"},
            "idle_w": {"value": 0.0, "status": "E", "source": "not measured (calibrate measures speed only)"},
        }
    head = (f"# Device profiles of this machine, measured by `fplstudy calibrate` on {now}\n"
            f"# CPU: {cpu}; torch {version}; one thread. Load with the config key profiles_file.\n")
    atomic_write_text(out, head + yaml.safe_dump(doc, sort_keys=False, width=200))
    load_profiles(out)  # what was written loads
    return rows
