"""DVC stage ``code``: the hash of the training code (:func:`fplstudy.study.provenance.code_hash`) into a
small file that the train stages depend on, so they rerun exactly when the code that trains and prices a
run changes (not for a docstring, a comment, a figure or a table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fplstudy.paths import PACKAGE
from fplstudy.stages import output_problem
from fplstudy.study.provenance import RUN_MODULES, code_hash, import_closure
from fplstudy.train.results import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    """Write ``--out``: the code hash, then the files it covers (one per line)."""
    parser = argparse.ArgumentParser(prog="python -m fplstudy.stages.code", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the file to write (results/code/train.txt)")
    args = parser.parse_args(argv)
    refusal = output_problem("--out", args.out)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    files = import_closure(RUN_MODULES, PACKAGE)
    text = (f"code_hash {code_hash()}\n# the training code it covers (docstrings and comments left out):\n"
            + "".join(f"# src/fplstudy/{rel}\n" for rel in files))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), text)
    print(f"{args.out}: code_hash {code_hash()} over {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
