"""Does training on a GPU (``accelerator: cuda``) give the study's answers? A short check for a machine with one.

1. The default study's ``fl-4-iid`` and ``fpl-8-adapter-iid`` plans (params.yaml) trained on ``cuda`` for
   SEEDS seeds: each seed's final test accuracy lies within the CPU runs' seed range (the committed runs under
   ``results/runs``, or trained here on the CPU when absent), and every ledger equals the CPU run's ledger
   row for row (the ledger prices the profiles' devices, not the host that trains).
2. ResNet-18 on CIFAR-10-shaped random data (batch 128): a few SGD steps on the GPU and on the CPU, the
   seconds per step of each.

Prints one line per check and ``GPU check passed`` or the checks that failed (exit code 1). Without a CUDA
device it says so and exits 0 after checking that ``accelerator: cuda`` is refused. Runs in a few minutes on
one GPU.

Run: ``python benchmarks/gpu_check.py [SEEDS]`` (default 2).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from fplstudy.config import ConfigError
from fplstudy.facts.models import build_model
from fplstudy.study.params import load_study
from fplstudy.train.runner import run

ROOT = Path(__file__).resolve().parents[1]
PLANS = ("fl-4-iid", "fpl-8-adapter-iid")


def _final_acc(run_dir: Path) -> float:
    return float(pd.read_csv(run_dir / "rounds.csv")["test_acc_mean"].iloc[-1])


def check_plans(seeds: int) -> list[str]:
    """The study's plans on cuda against the CPU runs; returns the failures."""
    study = load_study(ROOT / "params.yaml")
    failures = []
    with tempfile.TemporaryDirectory(prefix="fplstudy-gpu-") as tmp:
        for spec in (p for p in study.plans if p.name in PLANS):
            cpu_accs, gpu_accs = [], []
            for i, seed in enumerate(study.seeds):
                committed = ROOT / "results" / "runs" / spec.group / spec.name / f"seed-{seed}"
                if not (committed / "ledger.csv").is_file():
                    committed = Path(tmp) / "cpu" / spec.name / f"seed-{seed}"
                    run(spec.for_seed(seed), committed, progress=False)
                cpu_accs.append(_final_acc(committed))
                if i >= seeds:  # cuda on the study's first SEEDS seeds, whatever their numbers
                    continue
                cfg = spec.for_seed(seed).model_copy(update={"accelerator": "cuda"})
                gpu_dir = Path(tmp) / "gpu" / spec.name / f"seed-{seed}"
                t0 = time.perf_counter()
                run(cfg, gpu_dir, progress=False)
                gpu_accs.append(_final_acc(gpu_dir))
                cpu_ledger = pd.read_csv(committed / "ledger.csv").drop(columns=["run_id"])
                gpu_ledger = pd.read_csv(gpu_dir / "ledger.csv").drop(columns=["run_id"])
                same = cpu_ledger.equals(gpu_ledger)
                print(f"{spec.name} seed {seed}: cuda accuracy {gpu_accs[-1]:.4f} (cpu {cpu_accs[-1]:.4f}), "
                      f"ledger {'equal' if same else 'DIFFERENT'} ({len(gpu_ledger)} rows), "
                      f"{time.perf_counter() - t0:.1f} s")
                if not same:
                    failures.append(f"{spec.name} seed {seed}: the cuda ledger differs from the cpu ledger")
            low, high = min(cpu_accs), max(cpu_accs)
            outside = [a for a in gpu_accs if not low <= a <= high]
            print(f"{spec.name}: cpu accuracy over {len(cpu_accs)} seeds {low:.4f}..{high:.4f}; cuda "
                  f"{', '.join(f'{a:.4f}' for a in gpu_accs)}")
            if outside:
                failures.append(f"{spec.name}: cuda accuracy {outside} outside the cpu seeds' {low:.4f}..{high:.4f}")
    return failures


def step_seconds(device: torch.device, steps: int = 5, batch: int = 128) -> float:
    """Median seconds of one SGD step of ResNet-18 on CIFAR-10-shaped random data on ``device``."""
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for _ in range(steps + 1):  # the first step warms up (kernels, allocator) and is left out
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(seeds: int = 2) -> int:
    if not torch.cuda.is_available():
        try:
            run(load_study(ROOT / "params.yaml").plans[0].for_seed(0).model_copy(update={"accelerator": "cuda"}),
                None, progress=False)
        except ConfigError as exc:
            print(f"no CUDA device here: GPU path not run; accelerator: cuda is refused ({exc})")
            return 0
        print("no CUDA device here, yet accelerator: cuda was not refused")
        return 1
    print(f"# {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, torch {torch.__version__}")
    failures = check_plans(seeds)
    gpu, cpu = step_seconds(torch.device("cuda")), step_seconds(torch.device("cpu"), steps=2)
    print(f"resnet18, CIFAR-10 shape, batch 128: {gpu * 1e3:.1f} ms per step on cuda, {cpu * 1e3:.0f} ms on cpu "
          f"({torch.get_num_threads()} threads): {cpu / gpu:.0f}x")
    for line in failures:
        print(f"FAILED: {line}")
    print("GPU check passed" if not failures else f"GPU check: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:2])))
