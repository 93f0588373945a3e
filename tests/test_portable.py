"""The same study bytes on another x86-64 CPU.

An emulated older CPU (QEMU user mode, ``-cpu Nehalem``: SSE4.2, no AVX) runs the same run as this
machine's AVX-512 CPU. With :data:`fplstudy.study.PORTABLE_ENV` (the kernels of the study) the run
files are byte-identical; without it they differ, which shows that the comparison can fail. Slow
(two emulated runs, about 3 minutes); needs ``qemu-x86_64`` (Debian's ``qemu-user``, which
``.ci/run`` installs where it is root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fplstudy import study

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                                 reason="qemu-x86_64 missing: apt-get install qemu-user (as root) to emulate another CPU")]

ROOT = Path(__file__).resolve().parents[1]
RUN = ("import sys, torch; torch.set_num_threads(1); from fplstudy import config, study; "
       "cfg = config.make_config({'strategy': 'fpl', 'nodes': 4, 'rounds': 2, 'max_train_samples': 120}); "
       "study.run_plan(cfg, sys.argv[1]); print(torch.backends.cpu.get_cpu_capability())")


def _run(folder: Path, *, emulate: bool, portable: bool) -> tuple[dict[str, bytes], str]:
    env = {k: v for k, v in os.environ.items() if k not in study.PORTABLE_ENV}
    env.update(study.PORTABLE_ENV if portable else {"OMP_NUM_THREADS": "1"})
    env["PYTHONPATH"] = str(ROOT / "src")
    cmd = [sys.executable, "-c", RUN, str(folder)]
    if emulate:
        cmd = ["qemu-x86_64", "-cpu", "Nehalem", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}, proc.stdout.strip()


def test_portable_kernels_give_the_same_bytes_on_another_cpu(tmp_path: Path):
    here, here_level = _run(tmp_path / "here", emulate=False, portable=True)
    there, there_level = _run(tmp_path / "there", emulate=True, portable=True)
    assert here_level == there_level == "DEFAULT"
    assert set(here) == {"metrics.json", "rounds.csv", "ledger.csv"}
    assert here == there


def test_native_kernels_differ_between_the_two_cpus(tmp_path: Path):
    here, here_level = _run(tmp_path / "here", emulate=False, portable=False)
    there, there_level = _run(tmp_path / "there", emulate=True, portable=False)
    if here_level == there_level:
        pytest.skip(f"this CPU runs {here_level} kernels too: nothing to tell apart")
    assert there_level == "DEFAULT"  # the emulated CPU has no AVX
    assert here["rounds.csv"] != there["rounds.csv"]  # so the check above can fail
