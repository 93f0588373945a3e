"""What does one ``fplstudy run`` cost against a bare PyTorch script of the same training, whole process?

FedAvg with CLIENTS clients (IID shards) for ROUNDS rounds on digits, the default cnn, batch size, learning
rate and momentum, one thread, evaluation after every round, two ways, each a fresh Python process (imports,
data, model, training and files all counted), interleaved TRIALS times:

- ``fplstudy run --set strategy=fl --set nodes=CLIENTS --set rounds=ROUNDS --out <tmp>``: the engine, the
  ledger priced from the event stream, ``metrics.json``/``rounds.csv``/``ledger.csv``, checkpoints at their
  default cadence;
- a bare script: scikit-learn's digits split as fplstudy's, CLIENTS shards, per round every client trains one
  epoch from the global weights and the server takes the sample-weighted mean, one CSV of rounds.

Prints each way's median wall seconds, the ratio (the goal: 1.05x or less), the seconds the run spent in its
training loop (``timing.train_wall_s``) and so its fixed cost, and, when ``results/notebooks/train-*.ipynb``
hold the last ``make study``'s progress lines, the study's median seconds per run. This machine may be
shared: read the ratio measured here, not the absolute seconds.

Run: ``python benchmarks/run_overhead.py [ROUNDS] [CLIENTS] [TRIALS]`` (defaults 20, 10, 3).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BARE = r'''
import csv, sys
import numpy as np, torch, torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from fplstudy.facts.models import build_model

rounds, clients, lr, momentum, batch, seed, out = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                                   float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
                                                   sys.argv[7])
torch.set_num_threads(1)
d = load_digits()
x = (d.images.astype(np.float32) / 16.0)[:, None]
x_tr, x_te, y_tr, y_te = train_test_split(x, d.target.astype(np.int64), test_size=0.2, random_state=seed,
                                          stratify=d.target)
x_tr, y_tr, x_te, y_te = map(torch.from_numpy, (x_tr, y_tr, x_te, y_te))
torch.manual_seed(seed)
shards = torch.randperm(len(y_tr)).chunk(clients)
model = build_model("cnn", (1, 8, 8), 10)
rows = []
for r in range(rounds):
    start = [p.detach().clone() for p in model.state_dict().values()]
    total = [torch.zeros_like(p, dtype=torch.float32) for p in start]
    for shard in shards:
        model.load_state_dict(dict(zip(model.state_dict(), start)))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        order = shard[torch.randperm(len(shard))]
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for t, p in zip(total, model.state_dict().values()):
            t += p.float() * len(shard)
    model.load_state_dict(dict(zip(model.state_dict(), [t / len(y_tr) for t in total])))
    with torch.no_grad():
        model.eval()
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
        model.train()
    rows.append({"round": r, "test_acc": acc})
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, ["round", "test_acc"])
    w.writeheader()
    w.writerows(rows)
print(rows[-1]["test_acc"])
'''


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return took, proc.stdout


def study_seconds_per_run(root: Path = ROOT) -> tuple[float, int] | None:
    """Median wall seconds per run, and how many runs, from the last ``make study``'s executed train notebooks
    (their progress lines ``[group i/n] plan seed s: completed, test accuracy a, W s; ...``)."""
    line = re.compile(r"\[\S+ \d+/\d+\] .*?: \w+, test accuracy [\d.]+, ([\d.]+) s;")
    walls = []
    for nb in sorted((root / "results" / "notebooks").glob("train-*.ipynb")):
        walls += [float(w) for w in line.findall(nb.read_text(encoding="utf-8", errors="replace"))]
    return (statistics.median(walls), len(walls)) if walls else None


def main(rounds: int = 20, clients: int = 10, trials: int = 3) -> None:
    from fplstudy.config import load_config

    cfg = load_config(None)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1", "PYTHONPATH": str(ROOT / "src")}
    fplstudy = [sys.executable, "-m", "fplstudy.cli", "run", "--quiet", "--set", "strategy=fl", "--set",
                f"nodes={clients}", "--set", f"rounds={rounds}"]
    times: dict[str, list[float]] = {"fplstudy run": [], "bare script": []}
    training: list[float] = []
    acc: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fplstudy-bench-") as tmp:
        for trial in range(trials):
            out = Path(tmp) / f"run-{trial}"
            took, _ = _timed([*fplstudy, "--out", str(out)], env)
            times["fplstudy run"].append(took)
            metrics = json.loads((out / "metrics.json").read_text())
            acc["fplstudy run"] = metrics["test_acc_mean"]
            training.append(_rounds_wall(out))
            took, printed = _timed([sys.executable, "-c", BARE, str(rounds), str(clients), str(cfg.lr),
                                    str(cfg.momentum), str(cfg.batch_size), str(cfg.seed),
                                    str(Path(tmp) / f"bare-{trial}.csv")], env)
            times["bare script"].append(took)
            acc["bare script"] = float(printed.split()[-1])
    base = statistics.median(times["bare script"])
    run_s, train_s = statistics.median(times["fplstudy run"]), statistics.median(training)
    print(f"# FedAvg {clients} clients x {rounds} rounds on digits, one thread, median of {trials} interleaved "
          f"trials, whole processes")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:14} {med:6.2f} s   ratio to the bare script {med / base:5.2f}   final accuracy "
              f"{acc[name]:.4f}")
    print(f"fplstudy run: training loop {train_s:.2f} s, the rest (imports, data, FLOP profile, pricing, "
          f"files) {run_s - train_s:.2f} s")
    per_run = study_seconds_per_run()
    if per_run is not None:
        print(f"study: median {per_run[0]:.1f} s of training per run over {per_run[1]} runs (the last make study's "
              f"progress lines in results/notebooks/)")


def _rounds_wall(run_dir: Path) -> float:
    """Seconds of the run's training loop (``timing.train_wall_s`` of its metrics.json)."""
    return json.loads((run_dir / "metrics.json").read_text())["timing"]["train_wall_s"]


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
