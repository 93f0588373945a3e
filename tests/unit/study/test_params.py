"""One parser for the three studies of params.yaml: a bad config value is refused by the same code, in the
same one-line shape, whether it sits in the trained study (``study:``), the priced one (``scale:``) or the
dropout sweep (``dynamics:``)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from fplstudy.config import StudyError, read_yaml_file
from fplstudy.study.params import load_scale, load_study, load_sweep

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = read_yaml_file(ROOT / "params.yaml")

# (section, where its shared config keys live, its loader)
SECTIONS = [("study", ("study", "train"), load_study), ("scale", ("scale",), load_scale),
            ("dynamics", ("dynamics", "train"), load_sweep)]


def _with(path: tuple[str, ...], key: str, value) -> dict:
    params = copy.deepcopy(SHIPPED)
    block = params
    for part in path:
        block = block[part]
    block[key] = value
    return params


def _refusal(load, params) -> tuple[str, list[str]]:
    with pytest.raises(StudyError) as err:
        load(params)
    return str(err.value), [entry.name for entry in err.traceback]


@pytest.mark.parametrize("key, value, fix", [
    ("batch_size", 0, "must be an integer >= 1"),
    ("link", "wifi9", "unknown link profile"),
    ("dataset", "imagenet", "known datasets"),
])
def test_a_bad_config_value_is_refused_alike_in_every_section(key, value, fix):
    shapes = set()
    for _section, path, load in SECTIONS:
        message, frames = _refusal(load, _with(path, key, value))
        where = ".".join(path)
        assert "\n" not in message
        assert message.startswith(f"params.yaml: {where}.{key}: got {value!r}; "), message
        assert fix in message.lower(), message
        assert "check_config" in frames or "check_plan" in frames  # the same code refused it
        shapes.add(re.sub(r" \(in [^)]*\)$", "", message.replace(where, "<section>")))
    assert len(shapes) == 1, shapes  # one message, whichever section held the value


@pytest.mark.parametrize("section, path, load", SECTIONS)
def test_an_unknown_key_is_refused_naming_its_section(section, path, load):
    message, _ = _refusal(load, _with(path, "colour", "red"))
    assert message.startswith(f"params.yaml: {'.'.join(path)}.colour: got 'red'; "), message


def test_the_shipped_sections_all_load():
    study, scale, sweep = load_study(SHIPPED), load_scale(SHIPPED), load_sweep(SHIPPED)
    assert study.plans and scale.models and sweep.strategies
