"""The ``accelerator`` key: the torch device that trains. On a machine without CUDA (this one), ``cuda`` is
refused with one line before any work, ``auto`` trains on the CPU exactly as ``cpu`` does, and the distributed
backend refuses ``cuda``. The GPU itself is checked by ``benchmarks/gpu_check.py`` where there is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fplstudy.config import ConfigError, load_config
from fplstudy.study.params import load_study, smoke_params
from fplstudy.study.pool import run_group
from fplstudy.train.engine import training_device
from fplstudy.train.runner import run

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA")

SRC = Path(__file__).resolve().parents[3] / "src"
TINY = {"max_train_samples": 96, "rounds": 2, "batch_size": 16, "strategy": "fl", "nodes": 2}


def test_cuda_without_a_gpu_is_one_line_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fplstudy.cli", "run", "--set", "accelerator=cuda", "--set",
                           "strategy=fl", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC), "CI": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "accelerator" in lines[0] and "'cuda'" in lines[0] and "cpu" in lines[0], lines
    assert not out.exists()


def test_auto_trains_on_the_cpu_as_cpu_does_and_the_run_records_it(tmp_path):
    import pandas as pd

    run(load_config(None, {**TINY, "accelerator": "auto"}), tmp_path / "auto", progress=False)
    run(load_config(None, {**TINY, "accelerator": "cpu"}), tmp_path / "cpu", progress=False)
    # the run ids differ (the configs differ by their accelerator); every other value is the same
    for name, volatile in (("ledger.csv", ["run_id"]), ("rounds.csv", ["run_id"])):
        a, c = (pd.read_csv(tmp_path / run / name).drop(columns=volatile) for run in ("auto", "cpu"))
        pd.testing.assert_frame_equal(a, c)
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["environment"]["accelerator"] == "cpu"


def test_the_distributed_backend_refuses_cuda():
    with pytest.raises(ConfigError, match="accelerator.*gloo"):
        run(load_config(None, {**TINY, "accelerator": "cuda"}), None, backend="distributed")


def test_a_study_asking_for_cuda_is_refused_before_any_folder(tmp_path):
    study = load_study(smoke_params(accelerator="cuda"))
    with pytest.raises(ConfigError, match="accelerator"):
        run_group(study, "fl", tmp_path / "runs", log=lambda line: None)
    assert not (tmp_path / "runs").exists()
    assert training_device("auto") == torch.device("cpu") == training_device("cpu")
