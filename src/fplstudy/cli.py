"""Command line: ``fplstudy run|plan|cost|explore|keys``.

Examples::

    fplstudy run --set strategy=fpl --set nodes=6 --set branches=2 --out runs/fpl6
    fplstudy run study.yaml --set seed=1 --out runs/fpl6-s1
    fplstudy plan --set strategy=sl --set nodes=4
    fplstudy cost --set strategy=mp --set nodes=8 --out runs/mp8-cost
    fplstudy explore --set nodes=8 --cuts balanced --budget-bytes-per-round 5e7 --out front.csv
    fplstudy calibrate --models cnn --out host.yaml
    fplstudy run --set profiles_file=host.yaml --set strategy=mp --set nodes=2 --backend emulated --out runs/tb
    fplstudy keys

Bad input exits with code 2 and one line naming the key, the value and what is allowed; a run whose
loss diverges exits with code 3 and keeps the rounds it completed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fplstudy.config import Config, ConfigError, load_config

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_DISTRIBUTED = 4


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML file of config keys (optional; see `fplstudy keys`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set nodes=6")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fplstudy", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train a plan; write metrics.json, rounds.csv, ledger.csv")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--backend", default="simulated", choices=["simulated", "distributed", "emulated"],
                   help="simulated: one process; distributed: one process per node (torch.distributed, gloo); "
                        "emulated: the distributed backend on an emulated edge network (Mininet, root)")

    p = sub.add_parser("plan", help="print which node holds which layers, without training")
    _add_config_args(p)
    p.add_argument("--figure", help="also draw the plan to this PNG file")

    p = sub.add_parser("cost", help="price a plan without training (dry run): ledger.csv and metrics.json")
    _add_config_args(p)
    p.add_argument("--out", help="folder to write ledger.csv and metrics.json (default: print totals only)")

    p = sub.add_parser("explore", help="price every valid plan for --set nodes=N (dry runs); write the Pareto front")
    _add_config_args(p)
    p.add_argument("--out", help="CSV file for the front (default: print it)")
    p.add_argument("--all-out", help="also write every priced plan to this CSV file")
    p.add_argument("--cuts", default="all", choices=["all", "balanced"],
                   help="all: every placement of the stage cuts; balanced: only FLOP- or count-balanced cuts")
    p.add_argument("--budget-energy-j-per-node", type=float, help="max joules of the busiest node over the run")
    p.add_argument("--budget-bytes-per-round", type=float, help="max payload bytes moved per round")
    p.add_argument("--workers", type=int, default=1, help="processes pricing plans in parallel")

    p = sub.add_parser("calibrate", help="measure this machine's training FLOP/s (one thread, per model) into a "
                                         "device profile file")
    p.add_argument("--out", required=True, help="profiles YAML to write (an existing one keeps its other entries)")
    p.add_argument("--models", default=None, help="comma-separated models (default: every registered model)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per training step (default 32)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of timed training per model (default 3)")

    sub.add_parser("keys", help="list every config key with its default")
    return parser


def _print_keys() -> None:
    for name, field in Config.model_fields.items():
        print(f"{name:18} default={field.default!r}")


def _cmd_plan(cfg: Config, args) -> int:
    from fplstudy.plan import resolve
    from fplstudy.profiles import check_profiles
    from fplstudy.engine import load_partitioned

    plan = resolve(cfg)
    check_profiles(plan)
    _, part = load_partitioned(plan)
    print(plan.describe())
    print("  samples per branch: " + ", ".join(f"branch {d}: {n}" for d, n in enumerate(part.samples())))
    if args.figure:
        from fplstudy.plots import draw_plan

        draw_plan(plan, path=args.figure)
        print(f"figure: {args.figure}")
    return 0


def _cmd_cost(cfg: Config, args) -> int:
    from fplstudy.runner import cost

    dry = cost(cfg, args.out)
    for key, value in dry.totals.items():
        print(f"{key:24} {value}")
    if args.out:
        print(f"wrote {args.out}/ledger.csv and metrics.json")
    return 0


def _cmd_explore(cfg: Config, args) -> int:
    from fplstudy.explore import explore, front_csv

    res = explore(cfg, cuts=args.cuts, budget_energy_j_per_node=args.budget_energy_j_per_node,
                  budget_bytes_per_round=args.budget_bytes_per_round, workers=args.workers)
    front = front_csv(res)
    print(f"{len(res.plans)} valid plans ({res.refused} candidates refused), "
          f"{int(res.plans['within_budget'].sum())} within budget, {len(front)} on the front; {res.seconds:.1f} s")
    if args.all_out:
        from fplstudy.explore import plans_csv

        plans_csv(res).to_csv(args.all_out, index=False)
    if args.out:
        front.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    else:
        print(front[["name", *res.objectives]].to_string(index=False))
    return 0


def _cmd_emulated(cfg: Config, args) -> int:
    from fplstudy.testbed import run_emulated

    res = run_emulated(cfg, args.out)
    m, s = res.metrics, res.summary
    print(f"{m['status']}: {m['rounds_completed']} rounds on the emulated testbed ({len(res.emulation.nodes)} hosts, "
          f"time scale {s['time_scale']:.3g}); median abs error of the round makespan "
          f"{100 * s['round_makespan_median_abs_error']:.1f} %, of busy seconds {100 * s['busy_median_abs_error']:.1f} %; "
          f"wrote {args.out}")
    return 0 if m["status"] == "completed" else EXIT_DIVERGED


def _cmd_calibrate(args) -> int:
    from fplstudy.calibrate import calibrate

    models = [m.strip() for m in args.models.split(",")] if args.models else None
    for row in calibrate(args.out, models=models, batch_size=args.batch_size, seconds=args.seconds):
        print(f"{row['profile']:24} {row['flops_per_s']:.4g} FLOP/s, {1e6 * row['call_overhead_s']:.0f} us per call "
              f"({row['model']}, batch {row['batch_size']}, {row['steps']} steps)")
    print(f"wrote {args.out}")
    return 0


def _cmd_run(cfg: Config, args) -> int:
    from fplstudy.runner import run

    if args.backend == "emulated":
        return _cmd_emulated(cfg, args)

    outcome = run(cfg, args.out, progress=False if args.quiet else None, backend=args.backend)
    m = outcome.metrics
    print(f"{outcome.status}: {m['rounds_completed']} rounds, test accuracy mean {m['test_acc_mean']:.4f} "
          f"worst {m['test_acc_worst']:.4f}, energy {m.get('energy_j', float('nan')):.4g} J, "
          f"bytes {m.get('bytes_total', 0):.4g}; "
          + (f"wrote {args.out}" if outcome.out is not None else "rank 0 writes the results"))
    if outcome.status != "completed":
        print(f"fplstudy: training stopped: {outcome.message} (completed rounds kept in {args.out})",
              file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fplstudy`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        _print_keys()
        return 0
    try:
        if args.command == "calibrate":
            return _cmd_calibrate(args)
        cfg = load_config(args.config, args.overrides)
        handler = {"run": _cmd_run, "plan": _cmd_plan, "cost": _cmd_cost, "explore": _cmd_explore}[args.command]
        return handler(cfg, args)
    except ConfigError as exc:
        print(f"fplstudy: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileNotFoundError as exc:
        print(f"fplstudy: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:  # a distributed node died or hung, or the wire disagreed with the ledger
        from fplstudy.distributed import DistributedError, WireMismatch

        if not isinstance(exc, (DistributedError, WireMismatch)):
            raise
        print(f"fplstudy: error: {exc}", file=sys.stderr)
        return EXIT_DISTRIBUTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
