"""Set up this checkout's own virtual environment (``make venv``); standard library only.

Every checkout (a clone, a worktree) gets its own ``.venv`` with *its own* code installed in it
(editable), so two checkouts never run each other's code and deleting one leaves the others whole.
What makes that fast is a package cache shared by every checkout: uv, installed once by pip into
``<cache>/uv-tool``, creates the venv and installs the dependencies by hard-linking them from
``<cache>/uv-cache`` — about half a minute the first time on a machine (torch is large), seconds
for every checkout after it. uv is given the same package indexes as pip (``index-url``,
``extra-index-url`` and ``find-links`` from ``pip config list``, which includes ``PIP_*`` variables)
and pip's choice of the best version across them. Where uv cannot be installed, plain
``python -m venv`` and pip do the same, slower.

Usage: ``python3 tools/venv.py --venv .venv --cache ~/.cache/fplstudy --stamp .venv/.complete-<hash>``
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIP_KEYS = ("index-url", "extra-index-url", "find-links")


def base_python() -> str:
    """The interpreter to build the venv on: this one, or the one under it when this runs inside a
    venv (a venv must not depend on another checkout's venv)."""
    if sys.prefix == sys.base_prefix:
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for name in (version, "python3"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    return sys.executable


def pip_indexes(python: str) -> dict[str, list[str]]:
    """pip's configured ``index-url``, ``extra-index-url`` and ``find-links``: from its config files,
    overridden by ``PIP_*`` variables (the ``:env:`` scope), as pip reads them."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True)
    files: dict[str, list[str]] = {}
    env: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        if sep and name in PIP_KEYS:
            (env if scope == ":env:" else files)[name] = shlex.split(value.strip().strip("'\""))
    return {**files, **env}


def uv_index_args(indexes: dict[str, list[str]]) -> list[str]:
    """The uv options that read the same indexes as pip, choosing the best version across them."""
    args = ["--index-strategy", "unsafe-best-match"]
    for url in indexes.get("index-url", [])[:1]:
        args += ["--default-index", url]
    for url in indexes.get("extra-index-url", []):
        args += ["--index", url]
    for path in indexes.get("find-links", []):
        args += ["--find-links", path]
    return args


def find_uv(cache: Path, python: str) -> str | None:
    """uv from the PATH, or from ``<cache>/uv-tool`` (installed there by pip once, under a lock)."""
    if shutil.which("uv"):
        return shutil.which("uv")
    tool = cache / "uv-tool"
    uv = tool / "bin" / "uv"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "uv-tool.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not uv.exists():
            shutil.rmtree(tool, ignore_errors=True)
            made = subprocess.run([python, "-m", "venv", str(tool)]).returncode == 0 and subprocess.run(
                [str(tool / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "uv"]).returncode == 0
            if not made:
                shutil.rmtree(tool, ignore_errors=True)
                return None
    return str(uv)


def check_venv_path(venv: Path) -> None:
    """Refuse to replace a folder that is not a virtual environment, or the checkout itself."""
    if venv.resolve() in (ROOT, Path.home().resolve(), Path("/")):
        sys.exit(f"tools/venv.py: --venv {venv} is the checkout, home or root; use a folder of its own (.venv)")
    if venv.exists() and not (venv / "pyvenv.cfg").exists():
        sys.exit(f"tools/venv.py: {venv} exists and is not a virtual environment; move it away or set VENV=...")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "fplstudy")
    parser.add_argument("--stamp", type=Path, help="file to create once the venv is complete")
    args = parser.parse_args(argv)
    venv = args.venv if args.venv.is_absolute() else Path.cwd() / args.venv
    check_venv_path(venv)
    t0 = time.perf_counter()
    python = base_python()
    shutil.rmtree(venv, ignore_errors=True)  # a venv from older dependencies or a broken set-up
    uv = find_uv(args.cache, python)
    run = lambda cmd, **kw: subprocess.run(cmd, cwd=ROOT, check=True, **kw)  # noqa: E731
    if uv:
        env = {**os.environ, "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(args.cache / "uv-cache"))}
        env.pop("VIRTUAL_ENV", None)
        run([uv, "venv", "--quiet", "--python", python, str(venv)], env=env)
        run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
             *uv_index_args(pip_indexes(python)), "pip", "-e", ".[test]"], env=env)
        how = f"uv, packages linked from {env['UV_CACHE_DIR']}"
    else:
        run([python, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-e", ".[test]"])
        how = "pip (uv could not be installed)"
    run([str(venv / "bin" / "python"), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
        stdout=subprocess.DEVNULL)
    if args.stamp:
        args.stamp.touch()
    print(f"fplstudy: {venv} ready in {time.perf_counter() - t0:.0f} s ({how}); "
          f"enter it with `source {os.path.relpath(venv)}/bin/activate` or `make shell`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
