"""Command line: ``fplstudy run|plan|cost|explore|calibrate|keys|deps|export-digits|plots-page``.

Examples::

    fplstudy run --set strategy=fpl --set nodes=6 --set branches=2 --out runs/fpl6
    fplstudy run study.yaml --set seed=1 --out runs/fpl6-s1
    fplstudy run study.yaml --set seed=1 --out runs/fpl6-s1 --resume   # after Ctrl-C
    fplstudy plan --set strategy=sl --set nodes=4
    fplstudy cost --set strategy=mp --set nodes=8 --out runs/mp8-cost
    fplstudy explore --set nodes=8 --cuts balanced --budget-bytes-per-round 5e7 --out front.csv
    fplstudy explore --set nodes=4 --set topology=fog_wifi --search-placement --out front.csv
    fplstudy calibrate --models cnn --out host.yaml
    fplstudy run --set profiles_file=host.yaml --set strategy=mp --set nodes=2 --backend emulated --out runs/tb
    fplstudy keys
    fplstudy deps --write        # dvc.yaml's code deps brought up to date after an import changed

Bad input exits with code 2 and one line naming the key, the value and what is allowed (a bad or
busy ``--out`` too, before any work); a run whose loss diverges exits with code 3 and keeps the rounds
it completed; Ctrl-C exits with code 130 and keeps them too (``--resume`` continues the run).

An output file is written only where nothing else is lost: a new file, or one of the kind the command
writes (explore's CSV by its header, a figure by its format's mark, a profiles file that reads as one), or
any file with ``explore --overwrite``; an output in a folder that cannot be written is refused before any
work. A file system that fills up while writing ends in one line (code 2) naming the path. A reader that
closes the pipe early (``fplstudy keys | head -n 1``) ends the command quietly with code 141, as a program
killed by SIGPIPE.

Each command imports the modules it needs inside its function: this module itself loads in a third of a
second, so ``--help``, ``keys`` and a refused argument answer before torch loads (about 5 s).
tests/test_structure.py reads those imports too: none of them hides an import cycle.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from fplstudy.config import Config, ConfigError, PicklableError, load_config, short_repr
from fplstudy.stages import unwritable

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_DISTRIBUTED = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: `kill`, a job scheduler, a container stopping; handled as Ctrl-C is
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left (`yes | head`)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; the user's disk quota used up


def _refuse(message: str) -> int:
    """Print the one-line error every bad input gets and return the exit code for bad input."""
    print("fplstudy: error: " + " ".join(str(message).split()), file=sys.stderr)
    return EXIT_BAD_INPUT


class _Parser(argparse.ArgumentParser):
    """argparse with the house rule for bad input: one line on stderr, exit code 2 (no usage block)."""

    def error(self, message: str):
        _refuse(f"{message} (see `{self.prog} --help`)")
        sys.exit(EXIT_BAD_INPUT)


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _max_placements(text: str) -> int:
    """``--max-placements``: a whole number from 1 to 1000000."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 10**6:
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; must be a whole number in 1..1000000")
    return value


def _workers(text: str) -> int:
    """``--workers``: processes pricing plans, 1..the CPUs this process may use."""
    cpus = _usable_cpus()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= cpus:
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; must be an integer in 1..{cpus} (the CPUs "
                                         f"this process may use)")
    return value


def _nonnegative(text: str, hint: str) -> float:
    """A finite number >= 0 given to a flag; ``hint`` ends the refusal of anything else."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; must be a finite number >= 0 ({hint})")
    return value


def _budget(text: str) -> float:
    """A budget flag: a finite number >= 0."""
    return _nonnegative(text, "leave the flag out for no budget")


def _seconds(text: str) -> float:
    """--checkpoint-every: a finite number of seconds >= 0."""
    return _nonnegative(text, "0 writes a checkpoint after every round")


def _output_file(text: str) -> str:
    """An output file path: not empty, not a folder or other non-regular file, and its folder exists or
    can be created (the nearest existing folder above it is a writable folder, not a file)."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; give a file name")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; that is a folder, give a file path in it")
    if path.exists() and not path.is_file():  # a device, a pipe: the atomic rename would replace it
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; that exists and is not a regular file")
    problem = unwritable(path)
    if problem:
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; {problem}; choose another path")
    return text


def _figure_file(text: str) -> str:
    """``--figure``: an output file in a format matplotlib writes without other tools (png, pdf, svg), new or
    a figure of that format already (anything else there is refused: a paper's PDF, a notebook)."""
    from fplstudy.views.style import FIGURE_FORMATS, is_saved_figure

    path = _output_file(text)
    if Path(path).suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; the file name must end in one of: "
                                         + ", ".join("." + a for a in FIGURE_FORMATS)
                                         + " (formats matplotlib writes without LaTeX or Ghostscript)")
    if Path(path).exists() and not is_saved_figure(path):
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; that file exists and is not a figure fplstudy "
                                         f"drew; choose another file name, or delete it first")
    return path


def _profiles_out(text: str) -> str:
    """``calibrate --out``: a profiles file to write, ``.yaml`` or ``.yml`` (an existing one is checked to be a
    profiles file before any measuring)."""
    path = _output_file(text)
    if Path(path).suffix.lower() not in (".yaml", ".yml"):
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; a profiles file's name ends in .yaml or .yml")
    return path


def _model_list(text: str) -> list[str]:
    """``calibrate --models``: one or more comma-separated model names, none empty."""
    models = [m.strip() for m in text.split(",")]
    if not all(models):
        raise argparse.ArgumentTypeError(f"got {short_repr(text)}; give comma-separated model names, e.g. cnn or "
                                         f"cnn,lenet5 (leave --models out for every model)")
    return models


def _explore_csv(path: Path) -> bool:
    """Whether ``path`` begins as the CSVs of ``fplstudy explore`` do (:func:`fplstudy.costs.search.front_csv`,
    ``plans_csv``): a header whose first columns are name, strategy and nodes and whose last is set."""
    try:
        with path.open("rb") as fh:
            header = fh.readline(65536).decode("utf-8", errors="replace").rstrip("\r\n").split(",")
    except OSError:
        return False
    return header[:3] == ["name", "strategy", "nodes"] and header[-1] == "set"


def _not_ours(args) -> str | None:
    """The one-line refusal of an output file that exists and is not of the kind the command writes, or None.
    Checked after the arguments parse and before any work."""
    if args.command == "explore" and not args.overwrite:
        for flag, given in (("--out", args.out), ("--all-out", args.all_out)):
            if given and Path(given).exists() and not _explore_csv(Path(given)):
                return (f"argument {flag}: got {short_repr(given)}; that file exists and is not a CSV fplstudy "
                        f"explore wrote (header name,strategy,nodes,...,set); choose another {flag}, or add "
                        f"--overwrite to replace it")
    if args.command == "calibrate" and Path(args.out).exists():
        from fplstudy.facts.profiles import load_profiles

        try:
            load_profiles(args.out)
        except ConfigError as exc:
            return (f"argument --out: got {short_repr(args.out)}; that file exists and is not a profiles file "
                    f"({exc.key}: {exc.allowed}); choose another --out (an existing profiles file keeps its "
                    f"entries and gets the measured ones)")
    return None


def _outputs(args) -> list[tuple[str, str]]:
    """``(flag, path)`` of every output the command was given, in the order it writes them."""
    names = {"run": ("--out",), "cost": ("--out",), "explore": ("--all-out", "--out"), "calibrate": ("--out",),
             "plan": ("--figure",)}.get(args.command, ())
    return [(flag, value) for flag in names if (value := getattr(args, flag.lstrip("-").replace("-", "_"), None))]


def _disk_full(exc: OSError, args) -> str:
    """The one line for a file system (or quota) that filled up while writing: the output it was writing."""
    outputs = _outputs(args)
    where = outputs[0] if outputs else ("", exc.filename or "a file")
    if exc.filename:
        failed = Path(exc.filename).absolute()
        for flag, given in outputs:
            mine = Path(given).absolute()
            if failed == mine or mine in failed.parents or failed.parent == mine.parent:
                where = (flag, given)
                break
    flag, path = where
    return f"disk full writing {path}; free space or choose another {flag or 'place'}"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML file of config keys (optional; see `fplstudy keys`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set nodes=6")


def build_parser() -> argparse.ArgumentParser:
    examples = __doc__.split("Examples::", 1)[1].split("\n\n")[1]  # the docstring's examples, as typed
    parser = _Parser(prog="fplstudy", description="Distribute the training of one network over edge nodes, "
                                                   "and price what each node computes, sends and spends.",
                     epilog="examples:\n" + examples.replace("    fplstudy", "  fplstudy"),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    import fplstudy

    parser.add_argument("--version", action="version", version=f"fplstudy {fplstudy.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train a plan; write metrics.json, rounds.csv, ledger.csv",
                       description="Train a plan and write metrics.json, rounds.csv and ledger.csv to --out. It says "
                                   "at once what it will train, then the plan's name (as explore names it) before it "
                                   "loads the data, then shows a progress bar (unless --quiet) and a closing line.")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="run folder to write (new or empty, unless --resume/--overwrite)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out after its last completed round (same config; simulated "
                            "backend); gives the same files as an uninterrupted run")
    again.add_argument("--overwrite", action="store_true", help="delete the run files in --out first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint-every", type=_seconds, default=None, metavar="SECONDS",
                   help="seconds of training between checkpoints, which --resume continues from (default 30; 0: "
                        "after every round); writing one never takes over 2%% of training")
    p.add_argument("--backend", default="simulated", choices=["simulated", "distributed", "emulated"],
                   help="simulated: one process; distributed: one process per node (torch.distributed, gloo); "
                        "emulated: the distributed backend on an emulated edge network (Mininet, root)")

    p = sub.add_parser("plan", help="print which node holds which layers, without training")
    _add_config_args(p)
    p.add_argument("--figure", type=_figure_file, help="also draw the plan to this file (.png, .pdf or .svg; an "
                                                       "existing file only if it is such a figure)")

    p = sub.add_parser("cost", help="price a plan without training (dry run): ledger.csv and metrics.json")
    _add_config_args(p)
    p.add_argument("--out", help="folder to write ledger.csv and metrics.json (default: print totals only)")
    p.add_argument("--overwrite", action="store_true", help="replace the run files in a non-empty --out")

    p = sub.add_parser("explore", help="price every valid plan for --set nodes=N (dry runs); write the Pareto front",
                       description="Price every valid plan for --set nodes=N (dry runs) and keep the Pareto front. "
                                   "While it runs it says how many candidates it resolves and about how long pricing "
                                   "will take; then it counts the refused candidates by reason, prints the front "
                                   "(names, objectives in J, MB and s), the exact `fplstudy run` command of its first "
                                   "plan, and a legend of the parts of the plan names in it, e.g. "
                                   "fpl-3x1+1-j7-shared-none-b-t: 3 branches of 1 stage and a trunk of 1 stage, the "
                                   "junction after the first 7 blocks, a shared junction, no sync, no cuts inside the "
                                   "branches (b) or the trunk (t). The CSV's set column holds each plan's --set pairs.")
    _add_config_args(p)
    p.add_argument("--out", type=_output_file, help="CSV file for the front (default: print it); an existing file "
                                                    "only if explore wrote it, unless --overwrite")
    p.add_argument("--all-out", type=_output_file, help="also write every priced plan to this CSV file (an existing "
                                                        "file as for --out)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out or --all-out file even if it is not a CSV explore wrote")
    p.add_argument("--cuts", default="all", choices=["all", "balanced"],
                   help="all: every placement of the stage cuts; balanced: only FLOP- or count-balanced cuts")
    p.add_argument("--budget-energy-j-per-node", type=_budget, help="max joules of the busiest node over the run")
    p.add_argument("--budget-bytes-per-round", type=_budget, help="max payload bytes moved per round")
    p.add_argument("--workers", type=_workers, default=1, help="processes pricing plans in parallel")
    p.add_argument("--search-placement", action="store_true",
                   help="also search which topology node hosts which plan node (needs --set topology=FILE)")
    p.add_argument("--max-placements", type=_max_placements, default=None,
                   help="placements priced per plan shape at most (default 1000; more: a seeded sample)")

    p = sub.add_parser("calibrate", help="measure this machine's training FLOP/s (one thread, per model) into a "
                                         "device profile file")
    p.add_argument("--out", required=True, type=_profiles_out,
                   help="profiles YAML to write (an existing one must be a profiles file; it keeps its other entries)")
    p.add_argument("--models", default=None, type=_model_list,
                   help="comma-separated models (default: every registered model)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per training step (default 32)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of timed training per model (default 3)")
    p.add_argument("--after-wait", type=float, default=0.0, metavar="S",
                   help="sleep S seconds before each timed call: the rate of calls that follow a wait for a "
                        "message (default 0: a tight loop, the sustained rate)")
    p.add_argument("--processes", type=int, default=1, metavar="K",
                   help="measure in K processes at once, as the testbed runs one process per node (default 1)")
    p.add_argument("--clock", default="wall", metavar="wall|cpu",
                   help="time each call by the wall (default) or by its thread's CPU seconds, which the testbed's "
                        "dilate mode stretches and which waiting for a core does not lengthen")
    p.add_argument("--dataset", default=None,
                   help="train on this dataset's samples, the one the runs train on (default: each model's own: "
                        "cnn digits, lenet5 mnist5k, the others cifar10); real samples time faster than random ones")
    p.add_argument("--fit-batch", type=int, default=None, metavar="B",
                   help="also measure at batch B and give each block a rate per sample plus fixed seconds per call "
                        "(block_call_s), so that a partial batch is priced below a full one's rate")
    p.add_argument("--cold-wait", type=float, default=0.0, metavar="S",
                   help="also time short and long calls that follow S seconds idle, as a call that starts cold "
                        "(after a wait for a message), and write how much longer such a call takes, a line in its warm "
                        "seconds, as cold_factor and cold_s (default 0: not measured)")

    sub.add_parser("keys", help="list every config key with its default")
    p = sub.add_parser("deps", help="check that every stage of dvc.yaml lists in its deps exactly the code it runs "
                                    "(its notebook and import closure, or the training code's hash file); exit 1 "
                                    "naming the stages that do not")
    p.add_argument("--dvc", default="dvc.yaml", help="the pipeline file (default: dvc.yaml)")
    p.add_argument("--write", action="store_true", help="rewrite the deps of those stages in place")
    p = sub.add_parser("export-digits", help="write scikit-learn's digits as the .npy files data.dvc tracks")
    p.add_argument("folder", help="where to write images.npy and target.npy (data/digits)")
    p = sub.add_parser("plots-page", help="write the page template `dvc plots show` fills (.dvc/plots.html, "
                                          "Vega inline: the page needs no network); `make venv` runs it")
    p.add_argument("--out", default=".dvc/plots.html", help="the template to write (default: .dvc/plots.html)")
    return parser


def _cmd_deps(args) -> int:
    from fplstudy.study.provenance import check_stage_deps, write_stage_deps

    if args.write:
        changed = write_stage_deps(args.dvc)
        print(f"{args.dvc}: deps rewritten for {', '.join(changed)}" if changed else
              f"{args.dvc}: every stage lists the code it runs; nothing rewritten")
        return 0
    wrong = check_stage_deps(args.dvc)
    for line in wrong:
        print(line)
    if wrong:
        return 1
    print(f"{args.dvc}: every stage lists the code it runs")
    return 0


def _cmd_export_digits(args) -> int:
    from fplstudy.facts.datasets import export_digits

    for path in export_digits(args.folder):
        print(path)
    return 0


def _cmd_plots_page(args) -> int:
    from fplstudy.views.plotpage import write_page_template

    print(write_page_template(args.out))
    return 0


def _print_keys() -> None:
    """Every config key: its name, default and description (the comment of its line in Config)."""
    from fplstudy.config import key_descriptions

    described = key_descriptions()
    width = max(len(repr(f.default)) for f in Config.model_fields.values())
    for name, field in Config.model_fields.items():
        print(f"{name:22} {field.default!r:{width}}  {described.get(name, '')}")


def _cmd_plan(cfg: Config, args) -> int:
    from fplstudy.facts.partition import load_partitioned
    from fplstudy.facts.profiles import check_profiles
    from fplstudy.plans.dynamics import turnout_rule
    from fplstudy.plans.plan import resolve

    plan = resolve(cfg)
    check_profiles(plan)
    turnout_rule(plan)  # the dynamics keys and a trace file, as a run checks them
    _, part = load_partitioned(plan)
    print(plan.describe())
    print("  samples per branch: " + ", ".join(f"branch {d}: {n}" for d, n in enumerate(part.samples())))
    if args.figure:
        from fplstudy.views.planfig import draw_plan

        draw_plan(plan, path=args.figure)
        print(f"figure: {args.figure}")
    return 0


def _declared_note(cfg: Config) -> str | None:
    """The line that says a dry run is priced on the dataset's declared shape (None: from its files)."""
    from fplstudy.costs.dryrun import FROM_DECLARED, priced_from
    from fplstudy.facts.datasets import dataset_folder

    if priced_from(cfg) != FROM_DECLARED:
        return None
    return (f"priced from the declared shape of {cfg.dataset} (published sizes and class counts; no files in "
            f"{dataset_folder(cfg.dataset, cfg.data_dir)}); `fplstudy run` needs the files")


def _cmd_cost(cfg: Config, args) -> int:
    from fplstudy.train.runner import cost

    note = _declared_note(cfg)
    dry = cost(cfg, args.out, overwrite=args.overwrite)
    if note:
        print(note)
    for key, value in dry.totals.items():
        print(f"{key:24} {value}")
    if cfg.round_deadline_s is not None:  # what the deadline decided (dry_run settles the plan)
        late = [len(t.late) for t in dry.plan.turnouts]
        print(f"{'branches_late':24} {sum(late)} (in {sum(1 for n in late if n)} of {len(late)} rounds; "
              f"deadline {cfg.round_deadline_s:g} s)")
    print(f"{'priced_from':24} {dry.priced_from}")
    if args.out:
        print(f"wrote {args.out}/ledger.csv and metrics.json")
    return 0


def _cmd_explore(cfg: Config, args) -> int:
    from fplstudy.costs.search import MAX_PLACEMENTS, explore, front_csv

    if args.max_placements is not None and not args.search_placement:
        raise ConfigError("--max-placements", args.max_placements, "bounds a placement search; add --search-placement")
    res = explore(cfg, cuts=args.cuts, budget_energy_j_per_node=args.budget_energy_j_per_node,
                  budget_bytes_per_round=args.budget_bytes_per_round, workers=args.workers,
                  search_placement=args.search_placement, max_placements=args.max_placements or MAX_PLACEMENTS,
                  log=lambda line: print(line, flush=True))
    front = front_csv(res)
    note = _declared_note(cfg)
    if note:
        print(note)
    print(f"{len(res.plans)} valid plans ({res.refused} candidates refused, {res.repeats} repeats of a plan already "
          f"found), {int(res.plans['within_budget'].sum())} within budget, {len(front)} on the front; "
          f"{res.seconds:.1f} s")
    for line in refusal_lines(res.refusals):
        print(line)
    from fplstudy.train.results import atomic_write_text

    if args.all_out:
        from fplstudy.costs.search import plans_csv

        atomic_write_text(args.all_out, plans_csv(res).to_csv(index=False))
    for line in front_lines(res.front, front, res.objectives, args.out):
        print(line)
    if args.out:
        atomic_write_text(args.out, front.to_csv(index=False))
        print(f"wrote {args.out}")
    return 0


TOP_REASONS = 5  # refusal reasons explore prints (the rest are summed in one line)
SHOWN_PLANS = 20  # front plans explore prints when it writes them all to --out
# explore's cost columns as its table heads them: (head, divisor)
UNITS = {"energy_j_site": ("energy J", 1.0), "energy_j": ("plan nodes J", 1.0), "energy_j_max_node": ("busiest J", 1.0),
         "energy_j_network": ("network J", 1.0), "bytes_total": ("sent MB", 1e6), "bytes_per_round": ("MB/round", 1e6),
         "makespan_s": ("makespan s", 1.0), "memory_bytes_max_node": ("memory MB", 1e6),
         "flops_total": ("GFLOP", 1e9), "model_params": ("params", 1.0), "model_params_ratio": ("params ratio", 1.0)}


def refusal_lines(refusals: dict[str, int]) -> list[str]:
    """The refused candidates of a search by reason (:func:`fplstudy.costs.search.refusal_reason`), the most
    frequent :data:`TOP_REASONS` one a line, the rest summed."""
    if not refusals:
        return []
    ranked = sorted(refusals.items(), key=lambda kv: -kv[1])
    width = len(str(ranked[0][1]))
    lines = ["refused, by reason (N: a number, …: details):"] + [f"  {n:>{width}}  {why}"
                                                                     for why, n in ranked[:TOP_REASONS]]
    rest = ranked[TOP_REASONS:]
    if rest:
        lines.append(f"  {sum(n for _, n in rest):>{width}}  for {len(rest)} other reasons")
    return lines


def front_lines(front, csv, objectives: Sequence[str], out: str | None) -> list[str]:
    """The front as explore prints it: a table of names and objectives in units, how to train its first plan
    (the exact ``fplstudy run`` command of its ``set`` column) and what the parts of the names mean."""
    import shlex
    import textwrap

    from fplstudy.costs.search import name_legend, set_pairs
    from fplstudy.plans.strategies import strategy

    if front.empty:
        return ["the front is empty: no plan is within the budgets (and fits its devices' memory)"]
    shown = front if out is None else front.head(SHOWN_PLANS)
    columns = [("plan", list(shown["name"]))] + [
        (UNITS.get(o, (o, 1.0))[0], [f"{v / UNITS.get(o, (o, 1.0))[1]:.4g}" for v in shown[o]]) for o in objectives]
    widths = [max(len(head), *map(len, cells)) for head, cells in columns]
    lines = ["front (objectives minimised):"] + [
        "  " + "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
        for row in zip(*([head, *cells] for head, cells in columns))]
    if len(shown) < len(front):
        lines.append(f"  ... and {len(front) - len(shown)} more in {out}")
    first = front.iloc[0]
    command = ["fplstudy", "run", *(a for pair in set_pairs(csv["set"].iloc[0]) for a in ("--set", pair)),
               "--out", f"runs/{first['name']}"]
    lines += [f"the first plan: {strategy(first['strategy']).describe(first)}; train it with",
              "  " + shlex.join(command),
              "  (" + (f"each row's set column in {out} holds its --set pairs" if out else
                       "--out FILE writes every front plan's --set pairs, its set column") + ")",
              "plan names:"]
    for entry in name_legend(front["name"]):
        lines += textwrap.wrap(entry, width=110, initial_indent="  ", subsequent_indent="      ")
    return lines


def _cmd_emulated(cfg: Config, args) -> int:
    from fplstudy.testbed.run import run_emulated
    from fplstudy.views.style import save_figure
    from fplstudy.views.testbed import parity_figure

    res = run_emulated(cfg, args.out)
    save_figure(parity_figure([(f"{cfg.strategy}, {len(res.emulation.nodes)} nodes", res.table)]),
                Path(args.out) / "testbed_parity.png")
    m, s = res.metrics, res.summary
    print(f"{m['status']}: {m['rounds_completed']} rounds on the emulated testbed ({len(res.emulation.nodes)} hosts, "
          f"time scale {s['time_scale']:.3g}); median abs error of the round makespan "
          f"{100 * s['round_makespan_median_abs_error']:.1f} %, of busy seconds {100 * s['busy_median_abs_error']:.1f} %; "
          f"wrote {args.out}")
    return 0 if m["status"] == "completed" else EXIT_DIVERGED


def _cmd_calibrate(args) -> int:
    from fplstudy.testbed.calibrate import calibrate

    for row in calibrate(args.out, models=args.models, batch_size=args.batch_size, seconds=args.seconds,
                         wait_s=args.after_wait, processes=args.processes, clock=args.clock,
                         fit_batch=args.fit_batch, cold_wait_s=args.cold_wait, dataset=args.dataset):
        print(f"{row['profile']:24} {row['flops_per_s']:.4g} FLOP/s, {1e6 * row['call_overhead_s']:.0f} us per call, "
              f"{1e6 * row['batch_s']:.0f} us per batch outside the calls "
              f"({row['model']}, batch {row['batch_size']}, {row['steps']} steps"
              + (f", each call after {row['wait_s']:g} s idle" if row["wait_s"] else "")
              + (f", {row['processes']} processes at once" if row["processes"] > 1 else "")
              + (", CPU seconds" if row["clock"] == "cpu" else "") + ")")
        rates = row["block_flops_per_s"]
        if rates:
            print(" " * 25 + "per block: " + ", ".join(f"{b} {r:.3g}" for b, r in rates.items()))
        if row.get("block_call_s"):
            print(" " * 25 + f"fixed per call (fit through batch {row['fit_batch']}): "
                  + ", ".join(f"{b} {1e6 * c:.0f} us" for b, c in row["block_call_s"].items()))
        if "cold_factor" in row:
            print(" " * 25 + f"a call that starts cold (after {row['cold_wait_s']:g} s idle): "
                  f"{row['cold_factor']:.2f} times its seconds more, plus {1e6 * row['cold_s']:.0f} us")
    print(f"wrote {args.out}")
    return 0


def _announces() -> bool:
    """Whether this process says what it is about to train: not ranks 1.. of a run launched torchrun-style
    (``RANK``), which rank 0 speaks for."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def run_intro(cfg: Config, args) -> str:
    """The line ``fplstudy run`` prints once its config is read, before it loads torch: what it is about to train
    and where."""
    return (f"run: {cfg.strategy} on {cfg.nodes} node{'s' if cfg.nodes != 1 else ''}, {cfg.rounds} "
            f"round{'s' if cfg.rounds != 1 else ''}, {args.backend} backend, into {args.out}"
            + (" (continuing its run)" if args.resume else "") + "; loading torch and resolving the plan ...")


def run_plan_line(plan) -> str:
    """The line ``fplstudy run`` prints once the plan is resolved, before the data is loaded: the plan's name (as
    explore names it) and shape in words."""
    from fplstudy.costs.search import plan_name, plan_row
    from fplstudy.plans.strategies import strategy

    return (f"run: plan {plan_name(plan)} ({strategy(plan.strategy).describe(plan_row(plan))}); loading and "
            f"partitioning the data, building the nodes' models ...")


def _cmd_run(cfg: Config, args) -> int:
    from fplstudy.plans.plan import resolve
    from fplstudy.train.runner import run

    if _announces():
        print(run_plan_line(resolve(cfg)), flush=True)
    if args.backend == "emulated":
        return _cmd_emulated(cfg, args)

    every = {} if args.checkpoint_every is None else {"checkpoint_every_s": args.checkpoint_every}
    outcome = run(cfg, args.out, progress=False if args.quiet else None, backend=args.backend, resume=args.resume,
                  overwrite=args.overwrite, **every)
    m = outcome.metrics
    print(f"{outcome.status}: {m['rounds_completed']} rounds, test accuracy mean {m['test_acc_mean']:.4f} "
          f"worst {m['test_acc_worst']:.4f}, energy {m.get('energy_j', float('nan')):.4g} J, "
          f"{m.get('bytes_total', 0) / 1e6:.4g} MB sent; "
          + (f"wrote {args.out}" if outcome.out is not None else "rank 0 writes the results"))
    if outcome.status != "completed":
        print(f"fplstudy: training stopped: {outcome.message} (completed rounds kept in {args.out})",
              file=sys.stderr)
        return EXIT_DIVERGED
    return 0


class _Terminated(PicklableError, KeyboardInterrupt):
    """SIGTERM, raised where training is, so that it ends as Ctrl-C does (completed rounds written)."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fplstudy`` command. SIGTERM is handled as Ctrl-C (exit code 143, not 130); a closed
    stdout (the reader of a pipe left) ends it quietly with code 141."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, where a closed pipe can be caught, not at the interpreter's exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, so that the interpreter's last flush of what is still
    buffered for the closed pipe writes nowhere instead of printing an error."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a stdout without a descriptor (captured in-process)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    refusal = _not_ours(args)
    if refusal:
        return _refuse(refusal)
    if args.command == "keys":
        _print_keys()
        return 0
    if args.command in ("deps", "export-digits", "plots-page"):
        from fplstudy.config import StudyError

        try:
            return {"deps": _cmd_deps, "export-digits": _cmd_export_digits,
                    "plots-page": _cmd_plots_page}[args.command](args)
        except BrokenPipeError:
            raise
        except (StudyError, OSError) as exc:
            return _refuse(str(exc))
    if args.command == "explore" and args.out and args.all_out and \
            Path(args.out).resolve() == Path(args.all_out).resolve():
        return _refuse(f"argument --all-out: got {args.all_out!r}, the same file as --out; give two files")
    try:
        cfg = None if args.command == "calibrate" else load_config(args.config, args.overrides)
    except ConfigError as exc:
        return _refuse(str(exc))
    if args.command == "run" and _announces():  # at once: what follows loads torch (seconds), then the data
        print(run_intro(cfg, args), flush=True)
    from fplstudy.train.runner import RunFolderError, RunInterrupted

    try:
        if cfg is None:
            return _cmd_calibrate(args)
        handler = {"run": _cmd_run, "plan": _cmd_plan, "cost": _cmd_cost, "explore": _cmd_explore}[args.command]
        return handler(cfg, args)
    except RunInterrupted as exc:
        from fplstudy.train.results import CHECKPOINT

        how, code = _how(exc.__context__)
        done, out = len(exc.outcome.rounds), exc.outcome.out
        where = "nothing written"
        if out is not None:
            again = ("continue with --resume" if (out / CHECKPOINT).is_file() else
                     "no checkpoint yet: --resume starts it again")
            where = f"kept in {out} (status interrupted); {again}"
        print(f"fplstudy: interrupted ({how}) after {done} completed round{'s' if done != 1 else ''}; {where}",
              file=sys.stderr)
        return code
    except KeyboardInterrupt as exc:
        how, code = _how(exc)
        print(f"fplstudy: interrupted ({how}) before or after training; metrics.json in --out says how far it got",
              file=sys.stderr)
        return code
    except (ConfigError, RunFolderError, FileNotFoundError) as exc:
        return _refuse(str(exc))
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        return _refuse(_disk_full(exc, args))
    except RuntimeError as exc:  # a distributed node died or hung, or the wire disagreed with the ledger
        from fplstudy.train.distributed import DistributedError, WireMismatch

        if not isinstance(exc, (DistributedError, WireMismatch)):
            raise
        print(f"fplstudy: error: {exc}", file=sys.stderr)
        return EXIT_DISTRIBUTED


def _how(exc: BaseException | None) -> tuple[str, int]:
    """What stopped the run, and the exit code a shell expects for it."""
    return ("SIGTERM", EXIT_TERMINATED) if isinstance(exc, _Terminated) else ("Ctrl-C", EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
