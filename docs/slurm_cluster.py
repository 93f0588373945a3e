"""A Dask cluster on Slurm for a study's runs, through dask-jobqueue (``pip install dask-jobqueue``, not a
dependency of fplstudy): submits Slurm jobs that each start one Dask worker, then runs ``dvc repro`` with
``FPLSTUDY_SCHEDULER`` pointing at the cluster, and cancels the jobs when it ends.

Run on the cluster's login node, from the repository root, in the environment fplstudy is installed in (the
same checkout must be importable on the compute nodes; docs/cluster.md)::

    python docs/slurm_cluster.py --jobs 4 --cores 16 --partition normal -- dvc repro

Every value below is an example: queue names, memory, wall time and the network interface are your site's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="Slurm jobs, one Dask worker each")
    parser.add_argument("--cores", type=int, default=16, help="cores per job: runs at once per worker")
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--partition", default="normal", help="Slurm partition (queue)")
    parser.add_argument("--walltime", default="04:00:00", help="wall time per job")
    parser.add_argument("--interface", default=None, help="network interface of the compute nodes, e.g. ib0")
    parser.add_argument("command", nargs="+", help="what to run against the cluster, e.g. dvc repro")
    args = parser.parse_args()

    cluster = SLURMCluster(
        queue=args.partition,
        cores=args.cores,          # one worker per job with one thread per core: each thread waits on one
        processes=1,               # run, which trains in its own single-threaded process
        memory=args.memory,
        walltime=args.walltime,
        interface=args.interface,  # keep traffic on the cluster's private network
        job_script_prologue=[f"cd {os.getcwd()}", f"export PATH={os.path.dirname(sys.executable)}:$PATH"],
        scheduler_options={"dashboard_address": "127.0.0.1:8787"},  # reach it with `ssh -L 8787:127.0.0.1:8787`
    )
    try:
        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=3600)  # queued jobs start when Slurm says; the rest join later
        print(f"scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}", flush=True)
        env = {**os.environ, "FPLSTUDY_SCHEDULER": cluster.scheduler_address}
        return subprocess.call(args.command, env=env)
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
