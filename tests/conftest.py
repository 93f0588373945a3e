"""Test-wide settings and fixtures: one torch thread (tiny models run faster and the 2 cores are
shared), and one tiny study trained once per session for the tests that read a study's tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> tuple[object, Path]:
    """``(study, folder)``: :func:`fplstudy.study.params.smoke_params`' study (2 rounds on 120 samples, 3 seeds,
    15 plans of every strategy) trained into ``folder/runs`` and aggregated into ``folder``."""
    from fplstudy.study.params import load_study, smoke_params
    from fplstudy.study.pool import run_group
    from fplstudy.study.tables import aggregate, write_aggregate

    folder = tmp_path_factory.mktemp("tiny-study")
    the_study = load_study(smoke_params())
    run_group(the_study, None, folder / "runs", log=lambda line: None)
    write_aggregate(the_study, aggregate(the_study, folder / "runs"), folder)
    return the_study, folder


@pytest.fixture
def calibrated():
    """``calibrated(C, **numbers)``: a calibrated device profile as :func:`fplstudy.testbed.emulation.emulation` reads this
    machine's (``here``): ``C`` training FLOP/s on one core (4e10 unless given), no power, and the calibration's
    other numbers as given (``call_overhead_s``, ``cold_factor``, ``batch_s``, ``cold_s``, ``block_flops_per_s``,
    ``block_call_s``; 0 or none unless given)."""
    from fplstudy.facts.profiles import DeviceProfile

    def make(flops_per_s: float = 4e10, **numbers) -> DeviceProfile:
        return DeviceProfile("calibrated", flops_per_s=flops_per_s, active_w=0.0, idle_w=0.0, **numbers)

    return make


@pytest.fixture(autouse=True)
def _sigint_as_python_sets_it():
    """Every test starts with Python's own Ctrl-C: SIGINT raising KeyboardInterrupt and not blocked. A suite
    started as a background job of a non-interactive shell (``sh -c 'make test &'``, nohup) inherits SIGINT
    ignored (POSIX), Python then leaves it ignored, and so does every child it starts: the Ctrl-C tests of
    tests/unit/train/test_run_folders.py would fail (4 of them did, launched so, without this fixture)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    yield


@pytest.fixture
def notebook(tmp_path_factory):
    """``notebook(name)``: ``notebooks/<name>.py`` (the percent script git tracks) written as an ``.ipynb`` with
    the python3 kernel in a temporary folder, what papermill executes (as the DVC stages do through Jupytext)."""
    import jupytext

    folder = tmp_path_factory.mktemp("notebooks")

    def make(name: str) -> Path:
        nb = jupytext.read(Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.py")
        nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
        path = folder / f"{name}.ipynb"
        jupytext.write(nb, path)
        return path

    return make
