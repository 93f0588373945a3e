"""One run on the emulated testbed (``--backend emulated``, :func:`run_emulated`): the hosts built, the plan trained
on the distributed backend one rank per host, the traces set beside the prediction, everything torn down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from fplstudy.config import Config, ConfigError
from fplstudy.testbed.emulation import (
    IDENTITY_SUFFIX,
    MASTER_PORT,
    NETCTL,
    SYSTEM_PYTHON,
    Emulation,
    calibrated_device,
    check_capacity,
    check_rates,
    emulation,
    network_spec,
    requirements_problem,
)
from fplstudy.testbed.validation import (
    CALL_COLUMNS,
    TESTBED_COLUMNS,
    call_table,
    error_summary,
    predicted,
    read_traces,
    testbed_table,
)
from fplstudy.train.distributed import DILATE_ENV, GATE_ENV, TRACE_ENV, DistributedError
from fplstudy.train.results import atomic_write_text, write_rows_csv
from fplstudy.train.runner import prepare


@dataclass
class TestbedOutcome:
    """What :func:`run_emulated` returns.

    Attributes:
        out: the run folder (rank 0's ``metrics.json``, ``rounds.csv``, ``ledger.csv``, ``wire.csv``, and
            ``testbed.csv``, ``testbed_summary.json``, ``testbed_parity.png``, ``testbed/<node>.log``).
        emulation: the emulation used.
        table: measured beside predicted (:data:`TESTBED_COLUMNS`).
        summary: :func:`error_summary` plus the emulation's figures.
        metrics: rank 0's ``metrics.json``.
    """

    out: Path
    emulation: Emulation
    table: pd.DataFrame
    summary: dict
    metrics: dict


def _tag() -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    n, out = os.getpid(), ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return "f" + out[-5:]


def _netctl(*args: str, timeout: float = 120) -> dict:
    out = subprocess.run([SYSTEM_PYTHON, str(NETCTL), *args], capture_output=True, text=True, timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}


def sweep_stale() -> None:
    """Remove what earlier runs killed with SIGKILL left (their controller is gone)."""
    state = Path("/run/fplstudy-testbed")
    for f in state.glob("*") if state.is_dir() else []:
        try:
            pid = int(f.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError, OSError):
            _netctl("sweep", f.name)


def check_testbed_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, not empty, or not writable, before anything is built."""
    if str(out) == "" or out.is_file():
        raise ConfigError("--out", str(out), "give a folder to create (not a file)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError("--out", str(out), "the folder is not empty; give a new folder")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise ConfigError("--out", str(out), f"{parent} is not writable")


def prepare_emulation(cfg: Config, time_scale: float | None = None):
    """Every check of an emulated run, before anything is built: plan, profiles, data, requirements, capacity.

    Returns:
        ``(plan, profiles, data, emulation)``.

    Raises:
        ConfigError: one line naming the key (or the missing requirement) and the fix.
    """
    for key, off in (("straggler_prob", 0.0), ("round_deadline_s", None)):
        if getattr(cfg, key) != off:  # the hosts' CPU shares are fixed for the run; a deadline would need scaling
            raise ConfigError(key, getattr(cfg, key), "the emulated testbed runs without stragglers or a round "
                              "deadline (each host's speed is fixed): leave it out, or run the simulated backend")
    plan, profiles, data = prepare(cfg)
    problem = requirements_problem()
    if problem:
        raise ConfigError("--backend", "emulated", problem)
    check_rates(plan, profiles)
    check_capacity(plan)
    emu = emulation(plan, profiles, calibrated_device(plan, profiles), os.cpu_count() or 1,
                    time_scale if time_scale is not None else cfg.testbed_time_scale)
    return plan, profiles, data, emu


def node_timeout_s(cfg: Config, predicted_round_s: pd.Series) -> float:
    """The ``distributed_timeout_s`` of the emulated nodes: three times the longest predicted round (emulated
    seconds), at least the config's own, at most a day. On slow emulated links a node legitimately waits longer than
    the default minute: in ``sl`` on 8 nodes at 5 Mbit/s (time scale 5.95) the fifth client waits over 60 s for the
    fourth to finish its shard."""
    longest = float(predicted_round_s.max()) if len(predicted_round_s) else 0.0
    return min(86400.0, max(cfg.distributed_timeout_s, 3.0 * longest))


def run_emulated(cfg: Config, out: str | Path, *, time_scale: float | None = None) -> TestbedOutcome:
    """Run ``cfg`` on the emulated testbed and write the results and the measured-vs-predicted table.

    Args:
        cfg: validated config (``profiles_file`` must hold the ``calibrated_<model>_b<batch>`` profile).
        out: the run folder (created; must be new or empty).
        time_scale: overrides ``testbed_time_scale``.

    Returns:
        The :class:`TestbedOutcome`.

    Raises:
        ConfigError: bad input or a missing requirement, before anything is built.
        DistributedError: a node failed (the message names it and quotes its log); the network is gone.
    """
    out = Path(out)
    check_testbed_out(out)
    plan, profiles, (split, part), emu = prepare_emulation(cfg, time_scale)
    sweep_stale()
    work = Path(tempfile.mkdtemp(prefix="fplstudy-testbed-"))
    tag = _tag()
    try:
        config_file = work / "config.yaml"
        values = cfg.model_dump()
        # a node may wait a whole round for its turn (sl's clients one after the other): the longest wait for a message
        # covers three predicted rounds at the emulated speed, never less than the config gives
        values["distributed_timeout_s"] = node_timeout_s(cfg, predicted(plan, part.samples(), emu)[1])
        if values.get("profiles_file"):
            values["profiles_file"] = str(Path(values["profiles_file"]).resolve())
        config_file.write_text(yaml.safe_dump(values, sort_keys=False))
        (work / "gate").mkdir()
        hosts = []
        for i, node in enumerate(emu.nodes):
            rank_out = out.resolve() if i == 0 else work / f"rank{i}"
            argv = [sys.executable, "-m", "fplstudy.cli", "run", str(config_file), "--backend", "distributed",
                    "--quiet", "--out", str(rank_out)]
            env = {"RANK": str(i), "WORLD_SIZE": str(len(emu.nodes)), "MASTER_ADDR": "10.0.0.1",
                   "MASTER_PORT": str(MASTER_PORT), TRACE_ENV: str(work),
                   "GLOO_SOCKET_IFNAME": f"{tag}h{i}-{'eth0' if emu.wiring is None else IDENTITY_SUFFIX}",
                   GATE_ENV: str(work / "gate"), "OMP_NUM_THREADS": "1", "CI": "1"}
            dilate = cfg.testbed_cpu == "dilate"
            if dilate:
                env[DILATE_ENV] = repr(emu.core_share[i])
            hosts.append({"name": node, "cpu": -1 if dilate else emu.cpu_fraction[i], "period_us": emu.period_us[i],
                          "up_mbit": emu.egress_mbit[i], "down_mbit": emu.ingress_mbit[i], "argv": argv,
                          "env": env, "log": str(work / f"{node}.log")})
        spec = {"tag": tag, "hosts": hosts, "cwd": os.getcwd(), "parent_pid": os.getpid(), "gate": str(work / "gate"),
                "deadline_s": 6 * 3600, "fill_idle": False, "scratch": str(work)}
        if emu.wiring is not None:
            spec |= network_spec(emu)
        (work / "spec.json").write_text(json.dumps(spec))
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        ctl = subprocess.Popen([SYSTEM_PYTHON, str(NETCTL), "run", str(work / "spec.json")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = ctl.communicate()
        except BaseException:  # Ctrl-C or a kill: the controller tears the network down, then we go
            ctl.send_signal(signal.SIGTERM)
            try:
                ctl.communicate(timeout=60)
            except subprocess.TimeoutExpired:  # pragma: no cover - a controller that does not stop
                ctl.kill()
            _netctl("sweep", tag)
            raise
        finally:
            if ctl.returncode != 0:
                _netctl("sweep", tag)
        wall_s = time.monotonic() - t0
        try:
            outcome = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DistributedError(f"the testbed controller failed: {(stderr.strip().splitlines() or ['?'])[-1]}") from None
        logs = out / "testbed"
        logs.mkdir(parents=True, exist_ok=True)
        for i, node in enumerate(emu.nodes):
            for name, keep in ((f"{node}.log", f"{node}.log"), (f"trace-{i}.csv", f"trace-{node}.csv")):
                if (work / name).exists():
                    shutil.copy(work / name, logs / keep)
        bad = [(node, code) for node, code in zip(emu.nodes, outcome["codes"]) if code != 0]
        if bad or outcome.get("stopped"):
            node, code = bad[0] if bad else (emu.nodes[0], None)
            last = [ln for ln in (logs / f"{node}.log").read_text().splitlines() if ln.strip()][-1:] or ["(no output)"]
            why = f"stopped ({outcome['stopped']})" if outcome.get("stopped") else f"exit code {code}"
            raise DistributedError(f"emulated node {node} failed ({why}): {last[0].removeprefix('fplstudy: error: ')} "
                                   f"(logs in {logs})")
        trace = read_traces(work, plan)  # rank i wrote trace-<i>.csv
        table = testbed_table(plan, trace, part.samples(), emu)
        calls = call_table(plan, trace, part.samples(), emu)
        summary = {**error_summary(table), "time_scale": emu.time_scale, "cores": emu.cores,
                   "calibrated_flops_per_s": emu.calibrated_flops_per_s, "calibrated_call_s": emu.calibrated_call_s,
                   "cpu": cfg.testbed_cpu,
                   "core_share": dict(zip(emu.nodes, emu.core_share)), "period_us": dict(zip(emu.nodes, emu.period_us)),
                   "egress_mbit": dict(zip(emu.nodes, emu.egress_mbit)),
                   "ingress_mbit": dict(zip(emu.nodes, emu.ingress_mbit)),
                   "topology": None if emu.wiring is None else {
                       "file": cfg.topology, "points": list(emu.wiring.points),
                       "links": [{"ends": [a, b], "mbit": m["mbit"], "tx_bytes": tx} for (a, b, *_), m, tx in
                                 zip(emu.wiring.links, spec["links"], outcome.get("link_tx_bytes") or
                                     [[None, None]] * len(spec["links"]))]},
                   "distributed_timeout_s": values["distributed_timeout_s"], "latency_emulated": False,
                   "load_average_before": load0, "load_average_after": os.getloadavg()[0],
                   "testbed_wall_s": wall_s, "network_build_s": outcome.get("build_s")}
        write_rows_csv(out / "testbed.csv", table.to_dict("records"), TESTBED_COLUMNS)
        write_rows_csv(out / "testbed_calls.csv", calls.to_dict("records"), CALL_COLUMNS)
        atomic_write_text(out / "testbed_summary.json", json.dumps(summary, indent=2) + "\n")
        metrics = json.loads((out / "metrics.json").read_text())
        return TestbedOutcome(out, emu, table, summary, metrics)
    finally:
        shutil.rmtree(work, ignore_errors=True)
