"""The house rule for bad input, as the refusal tests of the command line check it: exit code 2, no
traceback, exactly one line on stderr, naming what it must name; and the command run in this process or as
a real one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fplstudy.cli import main

PREFIX = "fplstudy: error: "


def one_line(rc: int, err: str, *words: str, prefix: str = PREFIX) -> str:
    """The one line of a refusal (asserting the rule), with every one of ``words`` in it."""
    assert rc == 2, (rc, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:3000]
    line = lines[0]
    assert line.startswith(prefix), line
    assert len(line) < 1000, f"a one-line error, not {len(line)} characters"
    for word in words:
        assert word in line, (word, line)
    return line


def in_process(argv: list[str]) -> int:
    """``fplstudy <argv>`` in this process: its exit code (argparse's own refusals exit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def as_process(argv: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python -m fplstudy.cli <argv>`` as a real process in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "fplstudy.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "CI": "1", **env}, timeout=timeout)
