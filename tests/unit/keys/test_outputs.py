"""Outputs, refused before any work in one line (exit code 2) when writing them would lose something: a file
of another kind where a command writes its own (explore's CSVs, a plan figure, a profiles file), a folder that
cannot be written (a read-only mount), a file system that fills up while writing; and a closed pipe on stdout
ends a command quietly.

Every refusal is checked the same way: exit code 2, exactly one stderr line naming the argument and the path,
and every file of the test's folder byte for byte and by mtime as it was.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_refusal import as_process, in_process, one_line

from fplstudy.cli import main

ROOT = Path(__file__).resolve().parents[3]
EXPLORE = ("explore", "--set", "nodes=2", "--cuts", "balanced")
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
NOTEBOOK = json.dumps({"cells": [{"cell_type": "code", "source": ["print(1)"]}], "metadata": {},
                       "nbformat": 4, "nbformat_minor": 5}).encode()


def _refusal(rc: int, err: str, *words: str) -> str:
    """:func:`cli_refusal.one_line`, any prefix (a stage's entry prints its own)."""
    return one_line(rc, err, *words, prefix="")


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mtime (nanoseconds)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- files of another kind

HOSTILE = [
    # (id, argv after the command's own, the file put there first and its bytes, words of the one line)
    ("explore-out-params-yaml", [*EXPLORE, "--out", "params.yaml"], ("params.yaml", (ROOT / "params.yaml").read_bytes()),
     ["--out", "params.yaml", "--overwrite"]),
    ("explore-out-python", [*EXPLORE, "--out", "module.py"], ("module.py", b"import os\nprint(os.getcwd())\n"),
     ["--out", "module.py", "--overwrite"]),
    ("explore-out-notebook", [*EXPLORE, "--out", "work.ipynb"], ("work.ipynb", NOTEBOOK),
     ["--out", "work.ipynb", "--overwrite"]),
    ("explore-out-empty-init", [*EXPLORE, "--out", "__init__.py"], ("__init__.py", b""),
     ["--out", "__init__.py"]),
    ("explore-all-out-other-csv", [*EXPLORE, "--all-out", "data.csv"], ("data.csv", b"a,b,set\n1,2,3\n"),
     ["--all-out", "data.csv", "--overwrite"]),
    ("figure-pgf-needs-latex", ["plan", "--figure", "plan.pgf"], None, ["--figure", "plan.pgf", ".png, .pdf, .svg"]),
    ("figure-eps", ["plan", "--figure", "plan.eps"], None, ["--figure", "plan.eps", ".png, .pdf, .svg"]),
    ("figure-over-a-paper", ["plan", "--figure", "paper.pdf"],
     ("paper.pdf", b"%PDF-1.5\n1 0 obj << /Producer (pdfTeX-1.40.25) >> endobj\n%%EOF\n"),
     ["--figure", "paper.pdf", "not a figure"]),
    ("figure-over-text-named-png", ["plan", "--figure", "notes.png"], ("notes.png", b"my notes\n"),
     ["--figure", "notes.png", "not a figure"]),
    ("figure-over-an-inkscape-svg", ["plan", "--figure", "logo.svg"],
     ("logo.svg", b'<?xml version="1.0"?>\n<!-- Created with Inkscape -->\n<svg xmlns="http://www.w3.org/2000/svg"/>\n'),
     ["--figure", "logo.svg", "not a figure"]),
    ("calibrate-models-empty", ["calibrate", "--models", "", "--out", "host.yaml"], None, ["--models", "''"]),
    ("calibrate-models-comma", ["calibrate", "--models", ",", "--out", "host.yaml"], None, ["--models", "','"]),
    ("calibrate-models-trailing-comma", ["calibrate", "--models", "cnn,", "--out", "host.yaml"], None,
     ["--models", "'cnn,'"]),
    ("calibrate-out-params-yaml", ["calibrate", "--models", "cnn", "--out", "params.yaml"],
     ("params.yaml", (ROOT / "params.yaml").read_bytes()), ["--out", "params.yaml", "not a profiles file"]),
    ("calibrate-out-yaml-list", ["calibrate", "--models", "cnn", "--out", "hosts.yaml"],
     ("hosts.yaml", b"- rpi4\n- minipc\n"), ["--out", "hosts.yaml", "not a profiles file"]),
    ("calibrate-out-python", ["calibrate", "--models", "cnn", "--out", "setup.py"], ("setup.py", b""),
     ["--out", "setup.py", ".yaml"]),
]


@pytest.mark.parametrize("argv,existing,words", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_an_output_of_another_kind_is_refused_and_left_as_it_was(argv, existing, words, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    if existing:
        (tmp_path / existing[0]).write_bytes(existing[1])
    before = _snapshot(tmp_path)
    _refusal(in_process(argv), capsys.readouterr().err, *words)
    assert _snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == sorted(before), "nothing may be written for refused input"


def test_the_refusal_comes_from_a_real_process_before_any_pricing(tmp_path):
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    before = _snapshot(tmp_path)
    proc = as_process([*EXPLORE, "--out", "params.yaml"], tmp_path)
    _refusal(proc.returncode, proc.stderr, "--out", "params.yaml")
    assert proc.stdout == "", "refused before any plan is priced (explore prints its count first)"
    assert _snapshot(tmp_path) == before


def test_explore_writes_over_its_own_csvs_and_over_anything_with_overwrite(tmp_path, capsys):
    front, every, notes = tmp_path / "front.csv", tmp_path / "all.csv", tmp_path / "notes.txt"
    assert main([*EXPLORE, "--out", str(front), "--all-out", str(every)]) == 0
    first = front.read_bytes()
    assert first.startswith(b"name,strategy,nodes,") and every.read_bytes().startswith(b"name,strategy,nodes,")
    assert main([*EXPLORE, "--out", str(front), "--all-out", str(every)]) == 0  # its own CSVs: written again
    assert front.read_bytes() == first
    notes.write_text("mine\n")
    assert main([*EXPLORE, "--out", str(notes)]) == 2
    assert main([*EXPLORE, "--out", str(notes), "--overwrite"]) == 0
    assert notes.read_bytes() == first
    capsys.readouterr()


def test_plan_draws_over_its_own_figure(tmp_path, capsys):
    figure = tmp_path / "plan.pdf"
    assert main(["plan", "--figure", str(figure)]) == 0
    assert main(["plan", "--figure", str(figure)]) == 0
    assert figure.read_bytes().startswith(b"%PDF-")
    capsys.readouterr()


def test_a_figure_is_recognised_by_its_format_mark(tmp_path):
    import matplotlib.pyplot as plt

    from fplstudy.views.style import FIGURE_FORMATS, is_saved_figure, save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    for kind in FIGURE_FORMATS:
        path = save_figure(fig, tmp_path / f"f.{kind}")
        assert is_saved_figure(path), kind
        other = tmp_path / f"g.{kind}"
        other.write_bytes(path.read_bytes().replace(b"Matplotlib", b"Other prog").replace(b"\x89PNG", b"\x89GIF"))
        assert not is_saved_figure(other), kind
        assert not is_saved_figure(tmp_path / f"missing.{kind}")
    plt.close(fig)
    (tmp_path / "f.pgf").write_text("%% Creator: Matplotlib v3\n")
    assert not is_saved_figure(tmp_path / "f.pgf")


def test_calibrate_accepts_an_existing_profiles_file_up_front(tmp_path, capsys):
    """The check of an existing --out passes a profiles file (calibrate keeps its entries); what follows here
    is calibrate's own refusal of an unknown model, before any measuring."""
    host = tmp_path / "host.yaml"
    host.write_text("devices:\n  toy: {flops_per_s: 1.0e+9, active_w: 2.0, idle_w: 0.5}\n")
    before = _snapshot(tmp_path)
    line = _refusal(in_process(["calibrate", "--models", "gpt2", "--out", str(host)]), capsys.readouterr().err,
                     "--models", "gpt2")
    assert "profiles file" not in line
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- folders that cannot be written

@pytest.fixture
def read_only(tmp_path):
    """A folder holding one file, ``kept.txt``, that this process cannot write: a read-only tmpfs as root (root
    writes through permissions), a folder without write permission otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
        (folder / "kept.txt").write_text("kept\n")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        (folder / "kept.txt").write_text("kept\n")
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o755)


READ_ONLY = [
    ("explore-out", [*EXPLORE, "--out", "{ro}/front.csv"], "--out"),
    ("explore-all-out", [*EXPLORE, "--all-out", "{ro}/sub/all.csv"], "--all-out"),
    ("plan-figure", ["plan", "--figure", "{ro}/plan.png"], "--figure"),
    ("calibrate-out", ["calibrate", "--models", "cnn", "--out", "{ro}/host.yaml"], "--out"),
]


@pytest.mark.parametrize("argv,flag", [r[1:] for r in READ_ONLY], ids=[r[0] for r in READ_ONLY])
def test_an_output_in_a_read_only_folder_is_refused(argv, flag, read_only, capsys):
    before = _snapshot(read_only)
    argv = [a.replace("{ro}", str(read_only)) for a in argv]
    _refusal(in_process(argv), capsys.readouterr().err, flag, str(read_only), "not writable")
    assert _snapshot(read_only) == before


def _aggregate(out: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fplstudy.stages.aggregate", "--params", str(ROOT / "params.yaml"),
                           "--runs", str(ROOT / "results" / "runs"), "--out", out], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "CI": "1"}, timeout=600)


@pytest.mark.parametrize("where", ["read-only", "read-only-subfolder", "a-file", "under-a-file"])
def test_the_aggregate_stage_refuses_an_unwritable_out_before_reading_a_run(where, read_only, tmp_path):
    (tmp_path / "tables.csv").write_text("mine\n")
    out = {"read-only": str(read_only), "read-only-subfolder": str(read_only / "tables"),
           "a-file": str(tmp_path / "tables.csv"), "under-a-file": str(tmp_path / "tables.csv" / "t")}[where]
    before = _snapshot(tmp_path)
    proc = _aggregate(out, tmp_path)
    line = _refusal(proc.returncode, proc.stderr, "--out", out)
    assert line.startswith("error: argument --out:"), line
    assert proc.stdout == ""
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- a file system that fills up

@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled to the last byte, holding ``front.csv`` (a CSV as explore writes it) and
    ``host.yaml`` (a profiles file) written before it filled."""
    folder = tmp_path / "full"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        (folder / "front.csv").write_text("name,strategy,nodes,set\nold,fl,2,strategy=fl\n")
        (folder / "host.yaml").write_text("devices:\n  toy: {flops_per_s: 1.0e+9, active_w: 2.0, idle_w: 0.5}\n")
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError) as full:
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        assert full.value.errno == errno.ENOSPC
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


FULL = [
    ("explore", [*EXPLORE, "--out", "{full}/front.csv"], "{full}/front.csv"),
    ("cost", ["cost", "--set", "nodes=2", "--out", "{full}/cost"], "{full}/cost"),
    ("run", ["run", "--quiet", "--set", "strategy=fl", "--set", "nodes=2", "--set", "rounds=1",
             "--set", "max_train_samples=32", "--set", "batch_size=16", "--out", "{full}/run"], "{full}/run"),
    ("calibrate", ["calibrate", "--models", "lenet5", "--seconds", "0.05", "--out", "{full}/host.yaml"],
     "{full}/host.yaml"),
]


@AS_ROOT
@pytest.mark.parametrize("argv,path", [f[1:] for f in FULL], ids=[f[0] for f in FULL])
def test_a_full_disk_ends_in_one_line_naming_the_output(argv, path, full_disk, tmp_path):
    before = {k: v for k, v in _snapshot(full_disk).items() if k != "filler"}
    proc = as_process([a.replace("{full}", str(full_disk)) for a in argv], tmp_path)
    line = _refusal(proc.returncode, proc.stderr, "disk full writing", path.replace("{full}", str(full_disk)),
                     "--out")
    assert line.startswith("fplstudy: error: disk full writing "), line
    after = {k: v for k, v in _snapshot(full_disk).items() if k != "filler"}
    assert after == before, "the files there before (explore's CSV, the profiles file) are as they were"


# --------------------------------------------------------------------------- a closed pipe

PIPED = ["keys", "--help", "plan --help", "explore --help"]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("reader", ["head -n 1", "true"])
@pytest.mark.parametrize("command", PIPED)
def test_a_reader_that_leaves_early_ends_the_command_quietly(command, reader, buffered, tmp_path):
    """``true`` has left before fplstudy writes anything; ``head -n 1`` leaves after the first line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ({} if buffered else {"PYTHONUNBUFFERED": "1"})
    script = f"{sys.executable} -m fplstudy.cli {command} | {reader}; echo \"${{PIPESTATUS[0]}}\" >&2"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    *messages, status = proc.stderr.splitlines()
    assert messages == [], proc.stderr
    assert status in ("0", "141"), proc.stderr
    if reader.startswith("head"):
        assert len(proc.stdout.splitlines()) == 1


def test_the_whole_output_still_reaches_a_reader_that_stays(tmp_path):
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m fplstudy.cli keys | cat"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.splitlines()[0].startswith("strategy ") and len(proc.stdout.splitlines()) > 10


def test_the_stage_entries_are_unchanged_by_a_missing_params_file(tmp_path):
    """Beside the output check, the aggregate stage still names a missing params file (its other refusal)."""
    proc = subprocess.run([sys.executable, "-m", "fplstudy.stages.aggregate", "--params", "nothere.yaml", "--runs",
                           "runs", "--out", "tables"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _refusal(proc.returncode, proc.stderr, "nothere.yaml")
    assert not (tmp_path / "tables").exists()
