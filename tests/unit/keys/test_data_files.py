"""Data files given by path, and work bounded before it starts, through the command line: every hostile file
(a dropout trace, a topology, a profiles file) and every hostile placement is refused with exit code 2 and one
stderr line naming the file (or key), the entry and the bad value, before any work and with nothing written; a
dry run, a calibration batch and a thread count that would not fit the machine are refused the same way; a plan
search says what it will do before it does it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_refusal import as_process, in_process, one_line

from fplstudy.config import MAX_YAML_BYTES, make_config
from fplstudy.plans.dynamics import MAX_TRACE_BYTES

SPARSE = b""  # a file made by truncate to the size in Case.sparse: its bytes are zeros, on disk it takes none


@dataclass(frozen=True)
class Case:
    """One hostile input: CLI arguments (``{tmp}`` = the test's folder), files to create there (``SPARSE``: a
    file of ``sparse`` zero bytes), and the strings the one error line must contain."""

    id: str
    argv: tuple[str, ...]
    words: tuple[str, ...]
    files: dict[str, bytes] = field(default_factory=dict)
    sparse: int = 0


def _sets(*pairs: str) -> tuple[str, ...]:
    return tuple(a for p in pairs for a in ("--set", p))


def _trace(id: str, body: bytes, *words: str, command: str = "cost") -> Case:
    return Case(id, (command, *_sets("dropout_trace={tmp}/t.csv")), ("t.csv", *words),
                {"t.csv": b"round,node\n" + body})


def _topology(id: str, body: bytes, *words: str) -> Case:
    return Case(id, ("plan", *_sets("topology={tmp}/t.yaml")), ("topology file", "t.yaml", *words), {"t.yaml": body})


def _profiles(id: str, body: bytes, *words: str, use: str = "device=toy") -> Case:
    return Case(id, ("cost", *_sets("profiles_file={tmp}/p.yaml", use)), ("profile file", "p.yaml", *words),
                {"p.yaml": body})


def _placement(id: str, placement: str, *words: str) -> Case:
    return Case(id, ("plan", *_sets("strategy=mp", "nodes=3", "topology=fog_wifi", f"placement={placement}")),
                ("placement", *words))


TOPOLOGY_OK = b"nodes:\n  a: {device: rpi4}\n  b: {device: minipc}\nlinks:\n  - {between: [a, b], profile: wifi5}\n"
DEVICE = b"devices:\n  toy: {flops_per_s: 1.0e+9, active_w: 2.0, idle_w: 0.5"

CASES = [
    # --- the dropout trace (config key dropout_trace): encoding, digits, ranges, nodes, size
    _trace("trace-binary", b"\xff\xfe\x00\x01,n1\n", "line '2'", "0xff", "UTF-8"),
    _trace("trace-nul-byte", b"1,n1\x00\n", "line '2'", "NUL"),
    _trace("trace-superscript-digit", "²,n1\n".encode(), "line '2'", "²", "digits 0-9"),
    _trace("trace-arabic-indic-digit", "0,n1\n٣,n2\n".encode(), "line '3'", "٣", "digits 0-9"),
    _trace("trace-negative-round", b"-1,n1\n", "line '2'", "-1,n1", "from 0"),
    _trace("trace-round-past-the-run", b"0,n1\n20,n1\n", "line '3'", "20,n1", "rounds 0..19"),
    _trace("trace-round-of-40-digits", b"9" * 40 + b",n1\n", "line '2'", "9999"),
    _trace("trace-unknown-node", b"3,n9\n", "line '2'", "n9", "n0, n1, n2, n3"),
    _trace("trace-unknown-node-by-plan", b"3,n9\n", "line '2'", "n9", command="plan"),
    _trace("trace-three-cells", b"3,n1,n2\n", "line '2'", "round,node"),
    _trace("trace-open-quote-huge-field", b'1,"' + b"a" * 200_000 + b"\n", "line", "CSV"),
    Case("trace-huge-file", ("cost", *_sets("dropout_trace={tmp}/t.csv")), ("t.csv", "bytes", "MiB"),
         {"t.csv": SPARSE}, sparse=MAX_TRACE_BYTES + 1),
    Case("trace-is-a-folder", ("cost", *_sets("dropout_trace={tmp}")), ("dropout_trace", "folder")),
    # --- topology files
    _topology("topology-not-utf8", TOPOLOGY_OK.replace(b"minipc", b"mini\xe9pc"), "0xe9", "UTF-8"),
    _topology("topology-nodes-a-list", b"nodes: [a, b]\n", "nodes", "mapping"),
    _topology("topology-unknown-device", TOPOLOGY_OK.replace(b"minipc", b"cray1"), "nodes.b.device", "cray1"),
    _topology("topology-link-to-unknown-point", TOPOLOGY_OK.replace(b"[a, b]", b"[a, z]"), "links[0]", "'z'"),
    _topology("topology-rate-out-of-range", TOPOLOGY_OK.replace(b"wifi5}", b"wifi5, up_bps: -5}"),
              "links[0].up_bps", "-5"),
    _topology("topology-python-tag", b"nodes: !!python/object/apply:os.system ['touch pwned']\n", "python/object"),
    _topology("topology-integer-of-5000-digits", TOPOLOGY_OK.replace(b"{device: rpi4}", b"{device: rpi4, flops_per_s: "
                                                                     + b"9" * 5000 + b"}"), "digits"),
    Case("topology-huge-file", ("plan", *_sets("topology={tmp}/t.yaml")), ("t.yaml", "bytes", "MiB"),
         {"t.yaml": SPARSE}, sparse=MAX_YAML_BYTES + 1),
    # --- profiles files
    _profiles("profiles-radio-a-list", b"links:\n  toy: {up_bps: 1.0e+6, down_bps: 1.0e+6, tx_w: 0.5, rx_w: 0.5, "
              b"radio: [wifi]}\n", "links.toy.radio", "['wifi']", use="link=toy"),
    _profiles("profiles-binary", b"\x89PNG\r\n\x1a\n\x00\x00", "0x89", "UTF-8"),
    _profiles("profiles-idle-above-active", DEVICE.replace(b"idle_w: 0.5", b"idle_w: 5.0") + b"}\n",
              "devices.toy.idle_w", "5.0"),
    _profiles("profiles-number-as-list", DEVICE + b", memory_bytes: [4.0e+9]}\n", "devices.toy.memory_bytes", "4000000000.0"),
    _profiles("profiles-mistagged-number", DEVICE + b", memory_bytes: !!float lots}\n", "lots", "not a number"),
    Case("profiles-huge-file", ("cost", *_sets("profiles_file={tmp}/p.yaml")), ("p.yaml", "bytes", "MiB"),
         {"p.yaml": SPARSE}, sparse=MAX_YAML_BYTES + 1),
    # --- placements (config key placement, with a topology)
    _placement("placement-unknown-plan-node", "{n7: d0}", "n7", "n0, n1, n2"),
    _placement("placement-unknown-topology-node", "{n0: d99}", "placement.n0", "d99", "d0"),
    _placement("placement-two-on-one-node", "{n0: d0, n1: d0}", "placement.n1", "d0", "hosts one"),
    _placement("placement-value-a-list", "{n0: [d0]}", "placement.n0", "['d0']"),
    Case("placement-without-topology", ("plan", *_sets("placement={n0: d0}")), ("placement", "topology")),
    # --- paths no file system takes, and bounded work
    Case("data-dir-name-too-long", ("cost", *_sets("data_dir=" + "a" * 300)), ("data_dir", "300 bytes", "255")),
    Case("topology-name-too-long", ("plan", *_sets("topology=" + "t" * 300)), ("topology", "300 bytes")),
    Case("threads-5000", ("cost", *_sets("threads=5000")), ("threads", "5000", "per CPU")),
    Case("cost-rounds-beyond-memory", ("cost", "--out", "{tmp}/out", *_sets("rounds=100000", "micro_batches=32")),
         ("rounds", "100000", "GiB", "at most")),
    Case("calibrate-batch-beyond-memory", ("calibrate", "--models", "cnn", "--batch-size", "500000000", "--out",
                                           "{tmp}/host.yaml"), ("--batch-size", "500000000", "GiB", "at most")),
]


def _argv(case: Case, tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in case.argv]


def _setup(case: Case, tmp: Path) -> dict[str, tuple[int, float]]:
    for name, data in case.files.items():
        with open(tmp / name, "wb") as fh:
            fh.write(data)
            if data is SPARSE:
                fh.truncate(case.sparse)
    return _listing(tmp)


def _listing(tmp: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(tmp)): (p.stat().st_size, p.stat().st_mtime) for p in tmp.rglob("*")}


def _check(case: Case, rc: int, err: str, tmp: Path, before: dict) -> None:
    one_line(rc, err, *case.words)
    assert _listing(tmp) == before, "nothing may be written or changed for refused input"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_data_file_is_refused_in_one_line_before_work(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _setup(case, tmp_path)
    _check(case, in_process(_argv(case, tmp_path)), capsys.readouterr().err, tmp_path, before)


SUBPROCESS = ("trace-superscript-digit", "trace-binary", "topology-unknown-device", "profiles-radio-a-list",
              "placement-two-on-one-node", "cost-rounds-beyond-memory")


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS], ids=list(SUBPROCESS))
def test_a_hostile_data_file_from_a_real_process(case, tmp_path):
    before = _setup(case, tmp_path)
    proc = as_process(_argv(case, tmp_path), tmp_path)
    _check(case, proc.returncode, proc.stderr, tmp_path, before)
    assert proc.stdout == ""


def test_a_good_trace_is_read_as_written(tmp_path):
    """The reader refuses what is wrong, not what is right: a BOM, CRLF line ends, blanks around cells, a node
    twice in a round and an empty line are a good trace."""
    from fplstudy.plans.dynamics import read_trace

    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffround,node\r\n 0 , n1\r\n\r\n3,n0\r\n3,n0\r\n19,n3\r\n".encode())
    assert read_trace(path, rounds=20, nodes=["n0", "n1", "n2", "n3"]) == {0: ["n1"], 3: ["n0", "n0"], 19: ["n3"]}


def test_threads_bound_follows_the_cpus_this_process_may_use():
    from fplstudy.config import ConfigError, max_threads

    cpus = len(os.sched_getaffinity(0))
    assert max_threads() == 4 * cpus
    assert make_config({"threads": 0}).threads == 0 and make_config({"threads": 4 * cpus}).threads == 4 * cpus
    with pytest.raises(ConfigError, match="'threads'"):
        make_config({"threads": 4 * cpus + 1})


def test_the_dry_run_bound_counts_the_events_it_would_list():
    """The estimate is the event stream's length, exactly: the same count plan_events lists; the refusal comes
    where that many events at EVENT_BYTES exceed the share of the memory given, and names the rounds that fit."""
    from fplstudy.config import ConfigError
    from fplstudy.costs.dryrun import EVENT_BYTES, check_dry_run_memory, dry_run_events, plan_events, shard_sizes
    from fplstudy.plans.plan import resolve

    plan = resolve(make_config({"strategy": "sl", "nodes": 3, "rounds": 4, "max_train_samples": 200}))
    sizes = shard_sizes(plan)
    events = dry_run_events(plan, sizes)
    assert events == len(plan_events(plan, sizes))
    check_dry_run_memory(plan, sizes, available=2 * events * EVENT_BYTES)  # exactly half: fits
    with pytest.raises(ConfigError, match=r"'rounds'.*price at most 3 rounds"):
        check_dry_run_memory(plan, sizes, available=2 * events * EVENT_BYTES * 0.8)


def test_explore_says_what_it_will_price_before_it_prices(tmp_path):
    """The first line of a search comes at once (its candidates), the second once one plan is priced (the time
    at that rate), both while the search still runs."""
    proc = subprocess.Popen([sys.executable, "-m", "fplstudy.cli", "explore", *_sets("nodes=3", "rounds=1",
                             "max_train_samples=200"), "--out", str(tmp_path / "front.csv")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        running_at_first = proc.poll() is None
        second = proc.stdout.readline()
        rest, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert first.startswith("explore: ") and "candidate plans for 3 nodes" in first, first
    assert running_at_first
    assert second.startswith("explore: ") and "valid plans" in second and " s for all" in second, second
    assert (tmp_path / "front.csv").is_file()
