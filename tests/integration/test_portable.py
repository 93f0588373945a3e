"""The same study bytes on another x86-64 CPU.

Emulated CPUs (QEMU user mode) run the same run as this machine's AVX-512 CPU:

- ``-cpu Haswell`` (AVX2 + FMA, no AVX-512) with the default study kernels (``kernels: avx2``,
  ``fplstudy.study.params.KERNELS["avx2"]``): the run files are byte-identical to this machine's with the same
  pinning; this machine's native AVX-512 kernels give other bytes, which shows the comparison can fail.
- ``-cpu Nehalem`` (SSE4.2, no AVX) with ``kernels: sse41``: byte-identical to this machine's sse41 run;
  a study pinned to avx2 there is refused by the parent in one line naming ``study.kernels``, before any
  worker starts (a pinned worker's torch would die of an illegal instruction first).

Slow (three emulated runs, several minutes); needs ``qemu-x86_64`` (Debian's ``qemu-user``, which
``.ci/run`` installs where it is root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fplstudy.study.kernels import KERNEL_VARIABLES, KERNELS

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                                 reason="qemu-x86_64 missing: apt-get install qemu-user (as root) to emulate another CPU")]

ROOT = Path(__file__).resolve().parents[2]
RUN = ("import sys, torch; torch.set_num_threads(1); from fplstudy import config; "
       "from fplstudy.study.pool import run_plan; "
       "cfg = config.make_config({'strategy': 'fpl', 'nodes': 4, 'rounds': 2, 'max_train_samples': 120}); "
       "run_plan(cfg, sys.argv[1]); print(torch.backends.cpu.get_cpu_capability())")


def _env(kernels: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    env.update(KERNELS[kernels][0])
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


def _run(folder: Path, *, cpu: str | None, kernels: str) -> tuple[dict[str, bytes], str]:
    cmd = [sys.executable, "-c", RUN, str(folder)]
    if cpu:
        cmd = ["qemu-x86_64", "-cpu", cpu, *cmd]
    proc = subprocess.run(cmd, env=_env(kernels), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}, proc.stdout.strip()


@pytest.fixture(scope="module")
def haswell(tmp_path_factory) -> tuple[dict[str, bytes], str]:
    return _run(tmp_path_factory.mktemp("haswell"), cpu="Haswell", kernels="avx2")


def test_avx2_kernels_give_the_same_bytes_on_another_cpu(tmp_path: Path, haswell):
    here, here_level = _run(tmp_path / "here", cpu=None, kernels="avx2")
    there, there_level = haswell
    assert here_level == there_level == "AVX2"
    assert set(here) == {"metrics.json", "rounds.csv", "ledger.csv"}
    assert here == there


def test_native_kernels_differ_between_the_two_cpus(tmp_path: Path, haswell):
    here, here_level = _run(tmp_path / "here", cpu=None, kernels="native")
    there, there_level = haswell  # Haswell's own best level is AVX2, as pinned
    if here_level == there_level:
        pytest.skip(f"this CPU runs {here_level} kernels too: nothing to tell apart")
    assert here["rounds.csv"] != there["rounds.csv"]  # so the check above can fail


def test_sse41_kernels_give_the_same_bytes_on_a_cpu_without_avx(tmp_path: Path):
    here, here_level = _run(tmp_path / "here", cpu=None, kernels="sse41")
    there, there_level = _run(tmp_path / "there", cpu="Nehalem", kernels="sse41")
    assert here_level == there_level == "DEFAULT"
    assert here == there


REFUSE = ("import sys; from fplstudy import config\n"
          "from fplstudy.config import StudyError\nfrom fplstudy.study.pool import train_runs\n"
          "cfg = config.make_config({'strategy': 'fpl', 'nodes': 4, 'rounds': 2, 'max_train_samples': 120})\n"
          "try:\n    train_runs([(cfg, sys.argv[1], 'fpl')], kernels='avx2')\n"
          "except StudyError as exc:\n    print(exc, file=sys.stderr); sys.exit(2)")


def test_avx2_kernels_on_a_cpu_without_avx2_are_refused_in_one_line_before_any_run(tmp_path: Path):
    """On a CPU without AVX2 a study pinned to ``avx2`` is refused by the parent (``check_kernels``,
    before any worker starts, since a pinned worker's torch would die of an illegal instruction first),
    in one line naming ``study.kernels`` and the fix; no run folder is made. On this CPU the same call trains
    (the check can pass)."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}  # the parent is not pinned
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run(["qemu-x86_64", "-cpu", "Nehalem", sys.executable, "-c", REFUSE, str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=900)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-1000:])
    assert lines[0].startswith("params.yaml: study.kernels: got 'avx2', but this CPU lacks AVX2") and "sse41" in lines[0]
    assert not (tmp_path / "run").exists()
    here = subprocess.run([sys.executable, "-c", REFUSE, str(tmp_path / "here")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert here.returncode == 0, here.stderr[-1000:]
    assert (tmp_path / "here" / "rounds.csv").exists()
