"""The FLOP profile of a model is counted once per machine: later processes read it from the cache, which
holds exactly what counting gives, is keyed on the code that counts, and is counted again when unusable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fplstudy.facts import flops
from fplstudy.facts.cache import CACHE_VARIABLE

SRC = Path(__file__).resolve().parents[3] / "src"
SHAPE = (1, 8, 8)


def _profile_in_a_process(cache: Path) -> list[dict]:
    code = ("import json, dataclasses; from fplstudy.facts.flops import profile_model; "
            "print(json.dumps([dataclasses.asdict(p) for p in profile_model('cnn', (1, 8, 8), 10)]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(SRC), CACHE_VARIABLE: str(cache)})
    return json.loads(proc.stdout)


def test_a_second_process_reads_what_the_first_counted(tmp_path: Path, monkeypatch):
    first = _profile_in_a_process(tmp_path)
    [entry] = list((tmp_path / "flops").glob("cnn-*.json"))
    assert json.loads(entry.read_text()) == first
    rows = json.loads(entry.read_text())
    rows[0]["flops_fwd"] += 1  # a doctored entry: a process that reads the cache returns it
    entry.write_text(json.dumps(rows))
    assert _profile_in_a_process(tmp_path)[0]["flops_fwd"] == first[0]["flops_fwd"] + 1
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    flops.profile_model.cache_clear()
    counted = [json.loads(json.dumps(p.__dict__)) for p in flops._count_model("cnn", SHAPE, 10)]
    assert counted == first  # what the cache held first is what counting gives


def test_an_unusable_entry_is_counted_again_and_replaced(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    flops.profile_model.cache_clear()
    path = flops._cache_file("cnn", SHAPE, 10)
    path.parent.mkdir(parents=True)
    path.write_text("[{\"name\": ")  # cut short
    assert flops.profile_model("cnn", SHAPE, 10) == flops._count_model("cnn", SHAPE, 10)
    assert len(json.loads(path.read_text())) == len(flops._count_model("cnn", SHAPE, 10))
    flops.profile_model.cache_clear()


def test_the_key_names_the_model_its_input_and_the_counting_code(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    keys = {flops._cache_file("cnn", SHAPE, 10), flops._cache_file("cnn", SHAPE, 9),
            flops._cache_file("cnn", (1, 16, 16), 10), flops._cache_file("lenet5", (1, 28, 28), 10)}
    assert len(keys) == 4
    monkeypatch.setenv(CACHE_VARIABLE, "")
    assert flops.cache_dir() is None and flops._cache_file("cnn", SHAPE, 10) is None
