"""Every reader of user input, fed random input: a seeded generator of random bytes, random YAML documents
and random values of the wrong type. Each reader either returns a valid result or refuses in one clean line
(one of the package's exceptions of bad input, one line, under 600 characters) -- never another exception.

The generator is ``random.Random`` with a fixed seed per reader, so a failure names its case index and
replays as it failed. The readers: :func:`fplstudy.config.parse_yaml`, :func:`fplstudy.config.load_config`
(config files and ``--set`` values), :func:`fplstudy.facts.profiles.load_profiles` (a ``profiles_file``),
:func:`fplstudy.facts.topology.load_topology`, :func:`fplstudy.plans.dynamics.read_trace` (a ``dropout_trace``),
:func:`fplstudy.study.params.load_study` (a params mapping) and
:func:`fplstudy.study.params.check_notebook_parameters`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fplstudy.config import Config, ConfigError, StudyError, YamlError, load_config, make_config, parse_yaml
from fplstudy.facts.profiles import DEVICE_FIELDS, LINK_FIELDS, SECTIONS, load_profiles
from fplstudy.facts.topology import load_topology
from fplstudy.plans.dynamics import read_trace
from fplstudy.study.params import NOTEBOOK_PARAMETERS, check_notebook_parameters, load_study, smoke_params

CLEAN = (ConfigError, StudyError, YamlError)  # the refusals of bad input (FileError and its kinds are ConfigErrors)
MAX_MESSAGE = 600
SEED = 20240601

# pieces the generator draws from: a reader meets its own keys far more often than pure noise would give them
WORDS = [*Config.model_fields, *DEVICE_FIELDS, *LINK_FIELDS, "devices", "links", "nodes", "sites", "between",
         "from", "to", "profile", "rate", "up", "down", "device", "rpi4", "minipc", "wifi5", "ethernet", "n0", "n1",
         "round", "node", "study", "train", "seeds", "workers", "groups", "findings", "fl", "mp", "fpl", "value",
         "status", "source", "radio", "wired", "iid", "<<", "", " "]
SCALARS = [0, 1, -1, 2, 7, 2**31, 2**63, -(2**64), 10**30, 0.0, -0.0, 0.5, 1e-300, 1e308, float("inf"),
           float("-inf"), float("nan"), True, False, None, "", "x", "nan", "1e3", "0x1f", "²", "٣", "\x00", "\x07",
           "é" * 3, "a" * 700, "../../etc/passwd", "n0", "rpi4"]
YAML_TOKENS = ["{", "}", "[", "]", ":", ", ", "- ", "\n", "  ", "&a ", "*a", "!!python/object/apply:os.system ",
               "!!str ", "!!int ", "? ", "|", ">", "'", '"', "#", "---\n", "...\n", "<<: ", "%YAML 1.2\n", "\t",
               "9" * 5000, "0x" + "f" * 5000, "1e999", ".inf", ".nan", "~", "yes", "010", "0o17"]


def value(rng: random.Random, depth: int = 0) -> Any:
    """A random value: a scalar of any type, a word, or (shallow) a list or mapping of such."""
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and roll < 0.3:
        return {rng.choice(WORDS): value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if roll < 0.55:
        return rng.choice(WORDS)
    if roll < 0.65:
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 20)))
    if roll < 0.7:
        return rng.uniform(-1e6, 1e6)
    return rng.choice(SCALARS)


def mapping(rng: random.Random, keys: list[str], good: dict[str, Any] | None = None) -> dict[str, Any]:
    """A mapping of some of ``keys`` to random values, on top of ``good`` (a valid mapping) with a few of its
    entries replaced, dropped or wrapped."""
    out = dict(good or {})
    for key in rng.sample(sorted(out), k=min(len(out), rng.randint(0, 2))):
        out[key] = rng.choice([value(rng), None, [out[key]], {"value": out[key]}, str(out[key])])
    for _ in range(rng.randint(0, 3)):
        out[rng.choice(keys)] = value(rng)
    return out


def random_bytes(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if kind < 0.7:
        return "".join(rng.choice(YAML_TOKENS + WORDS) for _ in range(rng.randint(0, 30))).encode(
            rng.choice(["utf-8", "utf-8", "utf-16", "latin-1"]), errors="replace")
    text = yaml_text(rng, value(rng))
    cut = rng.randint(0, len(text))
    return (text[:cut] + rng.choice(YAML_TOKENS) + text[cut:]).encode("utf-8", errors="surrogatepass")


def yaml_text(rng: random.Random, doc: Any) -> str:
    """``doc`` written as YAML (flow or block style), or its repr where PyYAML cannot write it."""
    try:
        return yaml.safe_dump(doc, default_flow_style=rng.choice([True, False, None]), allow_unicode=True)
    except yaml.YAMLError:
        return repr(doc)


def check(case: int, call: Callable[[], Any]) -> bool:
    """``call()`` returns (True), or raises a clean one-line refusal (False); anything else fails the test,
    naming ``case``."""
    try:
        call()
    except CLEAN as exc:
        text = str(exc)
        assert "\n" not in text, f"case {case}: a refusal of more than one line: {text[:2000]!r}"
        assert 0 < len(text) <= MAX_MESSAGE, f"case {case}: a refusal of {len(text)} characters: {text[:2000]!r}"
        return False
    except Exception as exc:  # noqa: BLE001 - the point of the test: nothing else may escape
        raise AssertionError(f"case {case}: {type(exc).__name__} escaped: {str(exc)[:500]!r}") from exc
    return True


def both(outcomes: list[bool]) -> None:
    """Some cases were read and some refused: a reader that refuses everything (or nothing) is noticed, and the
    generator is known to reach past the first check of each reader."""
    assert 0 < sum(outcomes) < len(outcomes), f"{sum(outcomes)} of {len(outcomes)} cases read"


def write(folder: Path, case: int, data: bytes | str, suffix: str) -> Path:
    """A fresh file per case: readers that cache by (path, mtime) never see a stale one."""
    path = folder / f"case-{case}{suffix}"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", errors="surrogatepass"))
    return path


def cases(n: int, reader: str) -> list[tuple[int, random.Random]]:
    rng = random.Random(f"{SEED}-{reader}")
    return [(i, random.Random(rng.random())) for i in range(n)]


def test_parse_yaml_reads_or_refuses_random_text():
    outcomes = []
    for i, rng in cases(300, "yaml"):
        raw = random_bytes(rng).decode("utf-8", errors=rng.choice(["replace", "ignore"]))
        outcomes.append(check(i, lambda: parse_yaml(raw)))
    both(outcomes)


def test_load_config_reads_or_refuses_random_files_and_set_values(tmp_path):
    keys = list(Config.model_fields)
    outcomes = []
    for i, rng in cases(200, "config"):
        roll = rng.random()
        if roll < 0.25:
            path = write(tmp_path, i, random_bytes(rng), ".yaml")
            outcomes.append(check(i, lambda: load_config(path)))
        elif roll < 0.5:
            path = write(tmp_path, i, yaml_text(rng, mapping(rng, keys)), ".yaml")
            outcomes.append(check(i, lambda: load_config(path)))
        elif roll < 0.8:
            sets = [f"{rng.choice(keys)}={yaml_text(rng, value(rng)).strip()}" for _ in range(rng.randint(0, 2))]
            sets += [rng.choice(["=", "x", "nodes=", "=4", "nodes=" + rng.choice(YAML_TOKENS)])] * (rng.random() < 0.2)
            outcomes.append(check(i, lambda: load_config(None, sets)))
        else:
            values = mapping(rng, keys)
            outcomes.append(check(i, lambda: make_config(values)))
    both(outcomes)


def test_profiles_files_are_read_or_refused(tmp_path):
    device = {"flops_per_s": 1.0e9, "active_w": 2.0, "idle_w": 0.5, "memory_bytes": 4.0e9,
              "block_flops_per_s": {"cnn": {"conv1": 1.0e9}}}
    link = {"up_bps": 1.0e6, "down_bps": 1.0e6, "tx_w": 0.5, "rx_w": 0.5, "radio": "wifi", "latency_s": 0.001}
    outcomes = []
    for i, rng in cases(150, "profiles"):
        if rng.random() < 0.2:
            data: bytes | str = random_bytes(rng)
        else:
            section = rng.choice(["devices", "links"])  # one section each: a refusal in one hides the other
            doc = {section: {"toy": mapping(rng, list(SECTIONS[section]), {"devices": device, "links": link}[section])}}
            doc = mapping(rng, ["devices", "links"] + WORDS, doc) if rng.random() < 0.2 else doc
            data = yaml_text(rng, doc)
        path = write(tmp_path, i, data, ".yaml")
        outcomes.append(check(i, lambda: load_profiles(path)))
    both(outcomes)


def test_topology_files_are_read_or_refused(tmp_path):
    profiles = load_profiles()
    good = {"nodes": {"s0": {"device": "rpi4"}, "gw": {"device": "minipc", "flops_per_s": 1.0e10}}, "sites": ["ap"],
            "links": [{"between": ["s0", "ap"], "profile": "wifi5"}, {"between": ["ap", "gw"], "profile": "ethernet"},
                      {"from": "s0", "to": "gw", "profile": "wifi5", "rate": "up", "up_bps": 1.0e6}]}
    outcomes = []
    for i, rng in cases(150, "topology"):
        if rng.random() < 0.2:
            data: bytes | str = random_bytes(rng)
        else:
            doc = mapping(rng, ["nodes", "sites", "links", "description"], good)
            if rng.random() < 0.5:
                doc["nodes"] = mapping(rng, ["s0", "gw", "ap", "n0"], {n: mapping(rng, ["device", *DEVICE_FIELDS], e)
                                                                     for n, e in good["nodes"].items()})
            if rng.random() < 0.5:
                doc["links"] = [mapping(rng, ["between", "from", "to", "profile", "rate", *LINK_FIELDS], e)
                                for e in good["links"]] + [value(rng)] * (rng.random() < 0.3)
            data = yaml_text(rng, doc)
        path = write(tmp_path, i, data, ".yaml")
        outcomes.append(check(i, lambda: load_topology(path, profiles)))
    both(outcomes)


def test_dropout_traces_are_read_or_refused(tmp_path):
    cells = ["0", "1", "19", "20", "-1", "²", "٣", "1.5", " 3 ", "0x1", "9" * 40, "n0", "n1", "n9", "", '"', "a,b",
             "\x00", "round", "node", "é"]
    outcomes = []
    for i, rng in cases(200, "trace"):
        if rng.random() < 0.2:
            data: bytes | str = random_bytes(rng)
        else:
            header = "round,node" if rng.random() < 0.85 else rng.choice(["node,round", "round", "", "round,node,x"])
            rows = [",".join(rng.choice(cells) for _ in range(rng.choice([2, 2, 2, 1, 3])))
                    if rng.random() < 0.6 else f"{rng.randint(0, 19)},n{rng.randint(0, 3)}"
                    for _ in range(rng.randint(0, 6))]
            data = "\n".join([header, *rows]) + rng.choice(["", "\n", "\r\n"])
        path = write(tmp_path, i, data, ".csv")
        outcomes.append(check(i, lambda: read_trace(path, rounds=20, nodes=["n0", "n1", "n2", "n3"])))
    both(outcomes)


def test_study_params_are_read_or_refused():
    good = smoke_params(rounds=1, max_train_samples=60)["study"]
    good["groups"] = {"fl": {"nodes": [2]}, "mp": {"nodes": [2]}}  # a valid study checks its plans: keep it short
    good["findings"] = {**good["findings"], "against": ["fl", "mp"]}
    study_keys = ["train", "seeds", "workers", "kernels", "groups", "findings"]
    outcomes = []
    for i, rng in cases(60, "study"):
        block = mapping(rng, study_keys, good) if rng.random() < 0.9 else value(rng)
        if isinstance(block, dict) and rng.random() < 0.4:
            block["train"] = mapping(rng, list(Config.model_fields), good["train"])
        if isinstance(block, dict) and rng.random() < 0.3:
            block["groups"] = {rng.choice(["fl", "mp", "x"]): mapping(rng, list(Config.model_fields), {"nodes": [2]})}
        params = {"study": block} if rng.random() < 0.95 else mapping(rng, ["study", "studies"] + WORDS)
        outcomes.append(check(i, lambda: load_study(params)))
    both(outcomes)


def test_notebook_parameters_are_checked_or_refused():
    names = list(NOTEBOOK_PARAMETERS)
    outcomes = []
    for i, rng in cases(300, "notebook"):
        values = {rng.choice(names + WORDS): value(rng) for _ in range(rng.randint(0, 4))}
        outcomes.append(check(i, lambda: check_notebook_parameters(**{str(k): v for k, v in values.items()})))
    both(outcomes)


@pytest.mark.parametrize("text", ["9" * 5000, "[" + "9" * 5000 + "]", "seed: 0x" + "f" * 5000])
def test_an_integer_too_long_for_python_is_a_yaml_refusal(text):
    with pytest.raises(YamlError, match="digits"):
        parse_yaml(text)
