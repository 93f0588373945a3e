"""Does a calibration at two batch sizes predict a third? The compute model against measured steps.

Calibrates ``--model`` at ``--batch-size`` alone and with ``--fit-batch`` (``fplstudy calibrate``; one thread,
one process, CPU clock unless ``--clock wall``), then measures whole training steps (forward, backward, SGD)
at each of ``--batches`` and prices the same step from each calibration as the ledger does
(:func:`fplstudy.costs.pricing.price_compute` over the model's blocks, two calls). Prints, per batch size, the
measured seconds per step and measured / predicted for both: 1.00 is exact, > 1 slower than predicted.
Every ratio is measured in the same run; this machine is shared, so read them against each other, not as
absolute speeds.

Run: ``python benchmarks/batch_rates.py [--model cnn] [--batch-size 128] [--fit-batch 32]
[--batches 16,52,64,96,256] [--seconds 4] [--clock cpu]``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from fplstudy.costs.pricing import price_compute
from fplstudy.facts.profiles import load_profiles
from fplstudy.testbed.calibrate import block_training_flops, calibrate, measure
from fplstudy.testbed.emulation import calibrated_name


def step_seconds(dev, model: str, per_block: dict[str, int], n: int) -> float:
    """The ledger's seconds of one whole-model step of ``n`` samples: a forward and a backward call over every
    block (split between the two calls as the FLOPs are; the sum is what matters here)."""
    blocks = tuple((b, f * n) for b, f in per_block.items())
    half = tuple((b, f // 2) for b, f in blocks)
    rest = tuple((b, f - f // 2) for b, f in blocks)
    total = sum(f for _, f in blocks)
    return (price_compute(dev, total // 2, model, half)[0]
            + price_compute(dev, total - total // 2, model, rest)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--fit-batch", type=int, default=32)
    ap.add_argument("--batches", default="16,52,64,96,256")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--clock", default="cpu", choices=["wall", "cpu"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    per_block, _, _ = block_training_flops(args.model)
    name = calibrated_name(args.model, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        plain, fitted = Path(tmp) / "plain.yaml", Path(tmp) / "fitted.yaml"
        calibrate(plain, models=[args.model], batch_size=args.batch_size, seconds=args.seconds, clock=args.clock)
        row = calibrate(fitted, models=[args.model], batch_size=args.batch_size, seconds=args.seconds,
                        clock=args.clock, fit_batch=args.fit_batch)[0]
        one, two = load_profiles(plain).device(name), load_profiles(fitted).device(name)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.model}, one thread, "
          f"{args.clock} clock; calibrated at batch {args.batch_size} (and {args.fit_batch}): "
          f"blocks' fixed seconds per call summing to {1e6 * sum(row['block_call_s'].values()):.0f} us")
    print(f"{'batch':>6} {'measured s/step':>16} {'measured/predicted, one batch':>30} {'with the fit':>13}")
    worst = {"one": 0.0, "fit": 0.0}
    for n in map(int, args.batches.split(",")):
        measured = measure(args.model, n, args.seconds, 0.0, args.clock)["whole_s"]
        r1, r2 = measured / step_seconds(one, args.model, per_block, n), measured / step_seconds(two, args.model,
                                                                                                 per_block, n)
        worst["one"], worst["fit"] = max(worst["one"], abs(r1 - 1)), max(worst["fit"], abs(r2 - 1))
        print(f"{n:>6} {measured:>16.4g} {r1:>30.3f} {r2:>13.3f}", flush=True)
    print(f"largest |measured / predicted - 1|: one batch {100 * worst['one']:.1f} %, with the fit "
          f"{100 * worst['fit']:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
