"""What does training a study's group on Dask cost against the local pool, and are the files the same?

Trains one small group of the smoke study (:func:`fplstudy.study.params.smoke_params`, ``--group``, ``--seeds``
seeds, ``--rounds`` rounds) three ways in one run, each into its own folder: the local pool with 2 worker
processes; a :class:`distributed.LocalCluster` (2 worker processes, one thread each, on 127.0.0.1); and a
scheduler and 2 workers started as separate processes (``dask scheduler --host 127.0.0.1``, ``dask worker``),
as on a real cluster. Prints each way's wall seconds (the group only; starting a cluster is printed apart) and
its ratio to the local pool (the goal: 1.1x or less), and checks that every file is byte-identical to the
local pool's. Each Dask worker starts its training processes once (so the pinned kernels apply before torch
loads) and keeps them, as the local pool keeps its workers. This machine may be shared: read the ratios
against each other, not as absolute speeds.

Run: ``python benchmarks/dask_pool.py [--group fl] [--seeds 2] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fplstudy.study.params import load_study, smoke_params
from fplstudy.study.pool import run_group


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def timed(study, group: str, runs: Path, workers) -> float:
    t0 = time.perf_counter()
    run_group(study, group, runs, workers=workers, log=lambda line: print("   ", line, flush=True))
    return time.perf_counter() - t0


def separate_processes(folder: Path) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and two workers (one thread each), each its own process group, listening on 127.0.0.1."""
    dask = str(Path(sys.executable).parent / "dask")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    file = folder / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                               "127.0.0.1:0", "--scheduler-file", str(file)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    while not file.is_file():
        time.sleep(0.2)
    address = json.loads(file.read_text())["address"]
    procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                               env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for _ in range(2)]
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)
    return address, procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="fl", help="a group of the smoke study (default fl: 4 plans)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per plan (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run (default 2, the smoke size)")
    args = parser.parse_args()
    params = smoke_params(rounds=args.rounds)
    params["study"]["seeds"] = list(range(args.seeds))
    study = load_study(params)
    count = len(study.group_plans(args.group)) * args.seeds
    import distributed
    import torch

    print(f"group {args.group}: {count} runs of {args.rounds} rounds; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, distributed {distributed.__version__}")
    with tempfile.TemporaryDirectory(prefix="fplstudy-dask-bench-") as tmp:
        root = Path(tmp)
        print("local pool, 2 processes:")
        seconds = {"local pool": timed(study, args.group, root / "local", 2)}
        reference = files(root / "local")

        print("LocalCluster, 2 worker processes:")
        t0 = time.perf_counter()
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address="127.0.0.1:0") as cluster:
            print(f"    (cluster started in {time.perf_counter() - t0:.1f} s)")
            seconds["LocalCluster"] = timed(study, args.group, root / "localcluster", cluster.scheduler_address)

        print("dask scheduler + 2 dask workers, separate processes:")
        t0 = time.perf_counter()
        address, procs = separate_processes(root)
        try:
            print(f"    (cluster started in {time.perf_counter() - t0:.1f} s)")
            seconds["separate processes"] = timed(study, args.group, root / "separate", address)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)

        print(f"\n{'way':<22}{'wall s':>9}{'x local':>9}  files")
        for way, folder in [("local pool", "local"), ("LocalCluster", "localcluster"),
                            ("separate processes", "separate")]:
            same = files(root / folder) == reference
            print(f"{way:<22}{seconds[way]:>9.1f}{seconds[way] / seconds['local pool']:>8.2f}x  "
                  f"{'byte-identical' if same else 'DIFFERENT'} ({len(reference)} files)")
            if not same:
                shutil.copytree(root / folder, Path.cwd() / f"dask-bench-{folder}", dirs_exist_ok=True)


if __name__ == "__main__":
    main()
