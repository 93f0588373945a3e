"""One environment per checkout: two clones set up with the README's command each run their own code,
and deleting one leaves the other working.

Real clones (``git clone`` of this repository's HEAD) and the real ``make venv`` that ``make test`` and
``make study`` run first, with the package cache every checkout shares (so a set-up takes seconds once
the cache is warm). The clones live beside that cache, on its file system, so packages are
hard-linked as they are for a user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "fplstudy"


def _clean_env() -> dict[str, str]:
    """The environment of a fresh shell: no venv on the PATH, no PYTHONPATH, no outer make."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONHOME")}
    venvs = {str(Path(sys.prefix) / "bin"), str(ROOT / ".venv" / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p not in venvs)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} in {cwd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout.strip()


def test_two_clones_each_run_their_own_code_and_outlive_each_other():
    env = _clean_env()
    head = _run(["git", "rev-parse", "HEAD"], ROOT, env)
    (CACHE / "test-clones").mkdir(parents=True, exist_ok=True)
    where = Path(tempfile.mkdtemp(prefix="two-clones-", dir=CACHE / "test-clones"))
    try:
        clones, seconds = {}, {}
        for name in ("a", "b"):
            clone = where / name
            _run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], where, env)
            _run(["git", "checkout", "--quiet", head], clone, env)
            t0 = time.perf_counter()
            _run(["make", "venv"], clone, env)
            seconds[name] = time.perf_counter() - t0
            clones[name] = clone
        print(f"set-up: first clone {seconds['a']:.1f} s, second {seconds['b']:.1f} s")

        def python(clone: Path, code: str) -> str:
            return _run([str(clone / ".venv" / "bin" / "python"), "-c", code], clone, env)

        for clone in clones.values():
            assert python(clone, "import fplstudy; print(fplstudy.__file__)") == \
                str(clone / "src" / "fplstudy" / "__init__.py")
            assert _run(["git", "status", "--porcelain"], clone, env) == ""  # .venv is ignored
        init = clones["a"] / "src" / "fplstudy" / "__init__.py"
        init.write_text(init.read_text() + '\nCHECKOUT = "a"\n')
        marker = "import fplstudy; print(getattr(fplstudy, 'CHECKOUT', 'none'))"
        assert python(clones["a"], marker) == "a" and python(clones["b"], marker) == "none"

        shutil.rmtree(clones["a"])
        b = clones["b"]
        assert python(b, "import torch, fplstudy.views.teach, fplstudy.views.planfig; print(torch.__version__)").startswith("2.14.1")
        assert "nodes" in _run([str(b / ".venv" / "bin" / "fplstudy"), "keys"], b, env)
        assert f'"{b}/.venv/bin/python" -m pytest' in _run(["make", "-n", "test"], b, env)
        assert "tools/venv.py" not in _run(["make", "-n", "venv"], b, env)  # set up: nothing left to do
    finally:
        shutil.rmtree(where, ignore_errors=True)
