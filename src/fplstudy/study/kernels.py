"""The CPU kernel levels a study pins its runs to, so the same study gives the same bytes on every
x86-64 CPU that has the level, and the check that this CPU can run the level asked for."""

from __future__ import annotations

import os

from fplstudy.config import StudyError

# The CPU kernel levels a study can pin (params.yaml `study.kernels`): the environment of every run, and the
# level torch must then report. ATen's kernels capped at a level, oneDNN's capped at the same ISA and MKL's
# conditional-numerical-reproducibility COMPATIBLE branch compute the same floats on every x86-64 CPU that
# has the level; with one thread the summation order is fixed.
# - avx2 (default): x86-64-v3 (AVX2 + FMA), every Intel CPU since Haswell (2013) and AMD since Excavator
#   (2015, all Zen). Costs nothing here (benchmarks/portable_cost.py: 1.0x the native AVX-512 kernels).
# - sse41: every x86-64 CPU with SSE4.1 (all since 2008); oneDNN's SSE4.1 convolutions cost about 3-4x.
# - native: this CPU's fastest kernels (floats differ between CPUs).
_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

KERNELS: dict[str, tuple[dict[str, str], str | None]] = {
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE", **_THREADS},
             "AVX2"),
    "sse41": ({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE", **_THREADS},
              "DEFAULT"),
    "native": (dict(_THREADS), None),
}



DEFAULT_KERNELS = "avx2"

KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def check_kernels(kernels: str) -> None:
    """Refuse, in the parent and before any worker starts, a kernel level this CPU cannot run.

    torch trusts ``ATEN_CPU_CAPABILITY``: a worker pinned to ``avx2`` on a CPU without AVX2 dies of an
    illegal instruction before it can check anything. This process's torch is not pinned (the variables
    are set only for the workers), so its capability is the CPU's own level (``default`` when it lacks AVX2).
    """
    if kernels not in KERNELS:
        raise StudyError(f"kernels: got {kernels!r}; use one of {', '.join(KERNELS)}")
    level = KERNELS[kernels][1]
    if level is None or level == "DEFAULT":
        return
    pinned = {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ}
    if pinned:  # this process pinned by hand: its torch would report the pin, not the CPU
        return
    import torch

    own = torch.backends.cpu.get_cpu_capability()
    if own == "DEFAULT":
        raise StudyError(f"params.yaml: study.kernels: got {kernels!r}, but this CPU lacks {level} (torch finds "
                         f"only {own} kernels); use `kernels: sse41` (every x86-64 CPU, slower) or `native`")
