"""Device and link profiles: the numbers that turn FLOPs and bytes into seconds and joules.

Profiles are data files. fplstudy ships ``profiles/devices.yaml`` and ``profiles/links.yaml`` (every
number with a ``source`` and a ``status``: M measured by the source, S vendor spec, D derived by arithmetic
from M/S, E estimate, U remembered from a paper and not re-read). The shipped numbers were gathered in the
team's notes *Sourced figures for device and link profiles*, which are not part of this repository; each
number's own ``source`` names where it comes from. A user adds profiles, or overrides single
numbers of shipped ones, with ``profiles_file`` in the config: a YAML file with a ``devices:`` and/or
``links:`` section of the same shape. A user number may be written plainly (``flops_per_s: 2.0e+10``)
or as ``{value: …, status: …, source: …}``; a new profile must give every required number.

Fields (units in the names; every number must lie in the physically plausible range of
:data:`BOUNDS`, so that every cost derived from it stays finite):

- device: ``flops_per_s`` (1e3..1e18, sustained training FLOP/s), ``active_w`` (0..1e5, while
  computing), ``idle_w`` (0..1e5, while waiting), ``memory_bytes`` (1e3..1e15, optional),
  ``call_overhead_s`` (0..3600, optional, default 0: seconds every compute call — one chunk's forward or
  backward — costs beyond its FLOPs, the framework's per-call work that FLOP/s measured on a whole model
  hides; ``fplstudy calibrate`` measures it), ``cold_factor`` (0..100, optional, default 0: how much longer a
  compute call takes when it starts cold — its node received a message (it waited) since its previous call of
  the same phase, or it is the node's first of that phase in the round — than in a tight loop (measured on the emulated testbed: such calls run
  slower than the same calls back to back); the call takes ``1 + cold_factor`` times its seconds), ``cold_s``
  (0..3600, optional, default 0: seconds such a call takes beyond that, whatever its size; ``fplstudy calibrate
  --cold-wait`` measures both, a line through short calls and a long one), ``batch_s`` (0..3600, optional, default 0: the seconds of a batch's work outside
  the model's blocks on the node that feeds it in — gathering its samples, the optimizer step, zeroing the
  gradients — priced on the call that opens the batch there, its first micro-batch's forward of the model's
  first block; ``fplstudy calibrate`` measures it), ``block_flops_per_s`` (optional: per model, per block, the
  block's sustained training FLOP/s, each 1e3..1e18, e.g. ``{cnn: {conv1: 1.2e+10, conv2: 4.5e+10}}``, plain or
  as ``{value: {…}, status: …, source: …}``; written by ``fplstudy calibrate``). With it, a compute call of the
  named model costs Σ over its blocks of block FLOPs / block rate (:func:`fplstudy.costs.pricing.price_compute`);
  blocks it does not name, a block fed a ``concat`` view, and the junction adapter (the block ``adapter``) at
  another junction than the model's default (where ``fplstudy calibrate`` times it) use ``flops_per_s``.
  ``block_call_s`` (optional, same shape, each 0..3600 s: the seconds a call of the block costs whatever its
  batch, so that a small batch runs below the block's rate; ``fplstudy calibrate --fit-batch`` fits it from two
  batch sizes) adds its block's seconds to every call of the block; a block it does not name adds none.
  A user file that gives either mapping for an existing profile replaces that profile's whole mapping.
- link: ``up_bps`` / ``down_bps`` (1..1e13; *up* is every message except those sent from the server
  side — a trunk stage or the aggregator — to an edge node, which use *down*), ``tx_j_per_bit`` /
  ``rx_j_per_bit`` (0..1, radio energy at the sender / receiver), ``latency_s`` (0..86400, optional,
  added to every message).

A plan's nodes name their device profile (:attr:`fplstudy.plans.plan.Node.device`); every link of the plan
uses the profile ``config.link``. :func:`check_profiles` refuses a plan whose profiles are missing or
broken before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fplstudy.config import Config, ConfigError, YamlError, read_yaml_file, short_repr

PROFILES_DIR = Path(__file__).with_name("profiles")  # the shipped device and link profiles
STATUSES = ("M", "S", "D", "E", "U")

# field -> required
DEVICE_FIELDS = {"flops_per_s": True, "active_w": True, "idle_w": True, "memory_bytes": False,
                 "call_overhead_s": False, "cold_factor": False, "cold_s": False, "batch_s": False, "block_flops_per_s": False,
                 "block_call_s": False}
# the device fields that are mappings (model -> block -> number), not numbers, and the field whose bounds and
# unit their numbers take
BLOCK_MAPS = {"block_flops_per_s": ("flops_per_s", "FLOP/s", "{cnn: {conv1: 1.2e+10, conv2: 4.5e+10}}"),
              "block_call_s": ("call_overhead_s", "seconds per call", "{cnn: {conv1: 2.0e-4, fc1: 5.0e-5}}")}
LINK_FIELDS = {"up_bps": True, "down_bps": True, "tx_j_per_bit": True, "rx_j_per_bit": True, "latency_s": False}
SECTIONS = {"devices": DEVICE_FIELDS, "links": LINK_FIELDS}

# field -> (lowest, highest, unit and why): physically plausible ranges. With them every time and
# energy the ledger derives stays finite (no division by ~0, no overflow to inf). Every number of a
# ``block_flops_per_s`` (``block_call_s``) mapping lies in the range of ``flops_per_s`` (``call_overhead_s``).
BOUNDS: dict[str, dict[str, tuple[float, float, str]]] = {
    "devices": {
        "flops_per_s": (1e3, 1e18, "FLOP/s, from a microcontroller to an exascale machine"),
        "active_w": (0.0, 1e5, "W, up to a rack of accelerators"),
        "idle_w": (0.0, 1e5, "W, up to a rack of accelerators"),
        "memory_bytes": (1e3, 1e15, "bytes, from a microcontroller's RAM to a petabyte"),
        "call_overhead_s": (0.0, 3600.0, "s per compute call, up to an hour"),
        "cold_factor": (0.0, 100.0, "times a call's seconds, up to 100 (a call 101x slower cold than warm)"),
        "cold_s": (0.0, 3600.0, "s per compute call, up to an hour"),
        "batch_s": (0.0, 3600.0, "s per batch, up to an hour"),
    },
    "links": {
        "up_bps": (1.0, 1e13, "bit/s, from the slowest LoRa setting to a 10 Tbit/s link"),
        "down_bps": (1.0, 1e13, "bit/s, from the slowest LoRa setting to a 10 Tbit/s link"),
        "tx_j_per_bit": (0.0, 1.0, "J/bit; LoRa, the costliest radio, spends about 1e-3"),
        "rx_j_per_bit": (0.0, 1.0, "J/bit; LoRa, the costliest radio, spends about 1e-3"),
        "latency_s": (0.0, 86_400.0, "s per message, up to a day"),
    },
}


class FileError(ConfigError):
    """A data file that cannot be used; the message names the file, the key and the value. Subclasses say
    what the file is and what its keys are called."""

    WHAT, KEY = "file", "key"

    def __init__(self, file: str | Path, key: str, value: Any, allowed: str):
        self.file = str(file)
        ValueError.__init__(self, f"{self.WHAT} '{file}', {self.KEY} '{key}': got {short_repr(value)}; {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class ProfileError(FileError):
    """A profile file that cannot be used; the message names the file, the key and the value."""

    WHAT = "profile file"


@dataclass(frozen=True)
class DeviceProfile:
    """A node's hardware: sustained training FLOP/s, power while computing and while waiting.

    ``block_flops_per_s`` maps a model's name to its blocks' own training FLOP/s (``{}``: none, every block at
    ``flops_per_s``), ``block_call_s`` to its blocks' fixed seconds per call (``{}``: none); they take no part in
    the hash (mappings), but in equality.
    """

    name: str
    flops_per_s: float
    active_w: float
    idle_w: float
    memory_bytes: float | None = None
    call_overhead_s: float = 0.0
    cold_factor: float = 0.0
    cold_s: float = 0.0
    batch_s: float = 0.0
    block_flops_per_s: dict[str, dict[str, float]] = field(default_factory=dict, hash=False)
    block_call_s: dict[str, dict[str, float]] = field(default_factory=dict, hash=False)
    description: str = ""
    status: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    source: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class LinkProfile:
    """A link: rates up and down, radio energy per bit at each end, fixed per-message latency."""

    name: str
    up_bps: float
    down_bps: float
    tx_j_per_bit: float
    rx_j_per_bit: float
    latency_s: float = 0.0
    description: str = ""
    status: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    source: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Profiles:
    """Every known device and link profile (shipped plus a user's file)."""

    devices: dict[str, DeviceProfile]
    links: dict[str, LinkProfile]

    def device(self, name: str) -> DeviceProfile:
        if name not in self.devices:
            raise ConfigError("device", name, f"unknown device profile; known: {', '.join(sorted(self.devices))}")
        return self.devices[name]

    def link(self, name: str) -> LinkProfile:
        if name not in self.links:
            raise ConfigError("link", name, f"unknown link profile; known: {', '.join(sorted(self.links))}")
        return self.links[name]


def check_number(file: str | Path, key: str, raw: Any, bounds: tuple[float, float, str],
                 error: type[FileError] = ProfileError) -> float:
    """A profile number read from a data file (``raw``) as a float in ``bounds`` (``(low, high, what)``, one
    of :data:`BOUNDS`' entries), or ``error`` naming the file, the key and the value."""
    value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1.6e10 (no dot/sign in the exponent) as a string
        try:
            value = float(value)
        except ValueError:
            raise error(file, key, raw, "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(file, key, raw, "must be a finite number")
    lo, hi, why = bounds
    if not lo <= value <= hi:
        raise error(file, key, raw, f"must be a number in [{lo:g}, {hi:g}] ({why}); the times and "
                                    f"energies derived from it must stay finite")
    return float(value)


def _block_map(file: Path, where: str, key: str, raw: Any) -> dict[str, dict[str, float]]:
    """Validate a ``block_flops_per_s`` or ``block_call_s`` mapping (``key``): model name -> block name -> number,
    each in the bounds of the field it refines (:data:`BLOCK_MAPS`)."""
    bounds, unit, example = BLOCK_MAPS[key]
    example = "e.g. " + example
    if not isinstance(raw, dict) or not raw:
        raise ProfileError(file, where, raw, f"must map model names to {{block: {unit}}}, {example}")
    out: dict[str, dict[str, float]] = {}
    for model, rates in raw.items():
        at = f"{where}.{model}"
        if not isinstance(model, str) or not model.strip():
            raise ProfileError(file, at, model, f"a model name must be a non-empty string, {example}")
        if not isinstance(rates, dict) or not rates:
            raise ProfileError(file, at, rates, f"must map block names of {model} to {unit}, {example}")
        out[model] = {}
        for block, rate in rates.items():
            if not isinstance(block, str) or not block.strip():
                raise ProfileError(file, f"{at}.{block}", block, f"a block name must be a non-empty string, {example}")
            out[model][block] = check_number(file, f"{at}.{block}", rate, BOUNDS["devices"][bounds])
    return out


def _read_entry(file: Path, section: str, name: str, entry: Any, base: dict | None,
                require_sources: bool) -> dict:
    """Validate one profile mapping; merge it over ``base`` (an existing profile's fields)."""
    fields_spec = SECTIONS[section]
    if not isinstance(entry, dict):
        raise ProfileError(file, f"{section}.{name}", entry, "must be a mapping of profile fields")
    out = dict(base) if base else {"status": {}, "source": {}, "description": ""}
    out["status"], out["source"] = dict(out["status"]), dict(out["source"])
    for key, raw in entry.items():
        where = f"{section}.{name}.{key}"
        if key == "description":
            out["description"] = str(raw)
            continue
        if key not in fields_spec:
            raise ProfileError(file, where, raw, f"unknown field; known fields: description, {', '.join(fields_spec)}")
        status, source = "U", "user file"
        wrapped = isinstance(raw, dict) and "value" in raw and set(raw) <= {"value", "status", "source"}
        if key in BLOCK_MAPS and isinstance(raw, dict) and not wrapped:  # the plain form of a mapping field
            if require_sources:
                raise ProfileError(file, where, raw, "a shipped profile gives {value, status, source} for every number")
            out[key] = _block_map(file, where, key, raw)
            out["status"][key], out["source"][key] = status, source
            continue
        if isinstance(raw, dict):
            if not wrapped:
                raise ProfileError(file, where, raw, "write a number or {value: …, status: …, source: …}")
            status, source = raw.get("status", status), raw.get("source", source)
            raw = raw["value"]
            if status not in STATUSES:
                raise ProfileError(file, where + ".status", status, f"status must be one of {', '.join(STATUSES)}")
        elif require_sources:
            raise ProfileError(file, where, raw, "a shipped profile gives {value, status, source} for every number")
        if require_sources and not str(source).strip():
            raise ProfileError(file, where + ".source", source, "every shipped number needs a source")
        out[key] = _block_map(file, where, key, raw) if key in BLOCK_MAPS else check_number(file, where, raw,
                                                                                       BOUNDS[section][key])
        out["status"][key], out["source"][key] = str(status), str(source)
    for key, required in fields_spec.items():
        if required and key not in out:
            raise ProfileError(file, f"{section}.{name}.{key}", None,
                               "missing; every profile needs " + ", ".join(k for k, r in fields_spec.items() if r))
    return out


def _read_file(file: Path, merged: dict[str, dict[str, dict]], require_sources: bool) -> None:
    try:
        data = read_yaml_file(file)
    except YamlError as exc:
        if exc.key is not None:
            raise ProfileError(file, exc.key, exc.value, exc.reason) from None
        raise ProfileError(file, "profiles_file", str(file), exc.reason) from None
    data = data or {}
    if not isinstance(data, dict):
        raise ProfileError(file, "(top level)", type(data).__name__, "must be a mapping with devices: and/or links:")
    for section, entries in data.items():
        if section not in SECTIONS:
            raise ProfileError(file, str(section), entries, "unknown section; use devices: and/or links:")
        if not isinstance(entries, dict):
            raise ProfileError(file, section, entries, "must map profile names to their fields")
        for name, entry in entries.items():
            merged[section][str(name)] = _read_entry(file, section, str(name), entry,
                                                     merged[section].get(str(name)), require_sources)


@lru_cache(maxsize=32)
def _load_cached(profiles_file: str | None, mtime: float | None) -> Profiles:
    merged: dict[str, dict[str, dict]] = {"devices": {}, "links": {}}
    for shipped in ("devices.yaml", "links.yaml"):
        _read_file(PROFILES_DIR / shipped, merged, require_sources=True)
    if profiles_file is not None:
        _read_file(Path(profiles_file), merged, require_sources=False)
    devices = {n: DeviceProfile(name=n, **f) for n, f in merged["devices"].items()}
    links = {n: LinkProfile(name=n, **f) for n, f in merged["links"].items()}
    return Profiles(devices, links)


def load_profiles(profiles_file: str | Path | None = None) -> Profiles:
    """The shipped profiles, with a user's file of extra or overriding profiles applied on top.

    Args:
        profiles_file: YAML file with ``devices:`` and/or ``links:`` sections, or None.

    Returns:
        The merged :class:`Profiles`.

    Raises:
        ProfileError: (a :class:`~fplstudy.config.ConfigError`) naming the file, the key and the value
            of a missing, negative, non-numeric or unknown entry.
    """
    if profiles_file is None:
        return _load_cached(None, None)
    path = Path(profiles_file)
    mtime = path.stat().st_mtime if path.is_file() else None
    return _load_cached(str(path), mtime)


def _config_of(plan_or_cfg) -> Config:
    return plan_or_cfg if isinstance(plan_or_cfg, Config) else plan_or_cfg.config


def device_key(plan, node: str) -> str:
    """The config key that chose ``node``'s device profile (for error messages)."""
    cfg = plan.config
    if plan.node(node).point:
        return f"topology ({plan.node(node).point})"
    if cfg.node_devices and node in cfg.node_devices:
        return f"node_devices.{node}"
    return "server_device" if plan.node(node).on_server(plan.junction_at) else "device"


def check_profiles(plan_or_cfg) -> Profiles:
    """Refuse a plan (or config) whose device or link profiles are unknown or broken.

    With a :class:`~fplstudy.plans.plan.Plan`, every node's device profile is checked; with a bare
    :class:`~fplstudy.config.Config`, the profiles it names (``device``, ``server_device``, every
    ``node_devices`` value, ``link``) are. A plan on a topology (config key ``topology``) gets back the
    profiles with its nodes' overridden devices added (:meth:`fplstudy.facts.topology.Topology.with_devices`).

    Args:
        plan_or_cfg: a Plan or a Config.

    Returns:
        The loaded :class:`Profiles` (pass them on to the ledger).

    Raises:
        ConfigError: naming the key, the unknown profile and the known names; or
            :class:`ProfileError` naming the file, key and value of a broken profile file.
    """
    cfg = _config_of(plan_or_cfg)
    profiles = load_profiles(cfg.profiles_file)
    if not isinstance(plan_or_cfg, Config) and plan_or_cfg.site is not None:  # its nodes' devices, overrides included
        profiles = plan_or_cfg.site.with_devices(profiles)
    known_dev = ", ".join(sorted(profiles.devices))
    wanted: list[tuple[str, str]] = []
    if isinstance(plan_or_cfg, Config):
        wanted = [("device", cfg.device), ("server_device", cfg.server_device)]
        wanted += [(f"node_devices.{k}", v) for k, v in (cfg.node_devices or {}).items()]
    else:
        wanted = [(device_key(plan_or_cfg, n.name), n.device) for n in plan_or_cfg.nodes]
    for key, name in wanted:
        if not name:
            raise ConfigError(key, name, f"this role has no device profile; name one of: {known_dev}")
        if name not in profiles.devices:
            raise ConfigError(key, name, f"unknown device profile; known: {known_dev}"
                                         + ("" if cfg.profiles_file else "; add your own with profiles_file"))
    if not cfg.link or cfg.link not in profiles.links:
        raise ConfigError("link", cfg.link, f"unknown link profile; known: {', '.join(sorted(profiles.links))}"
                                            + ("" if cfg.profiles_file else "; add your own with profiles_file"))
    if not isinstance(plan_or_cfg, Config):
        check_block_rates(plan_or_cfg, profiles)
    return profiles


def check_block_rates(plan, profiles: Profiles) -> None:
    """Refuse ``block_flops_per_s`` or ``block_call_s`` of the plan's devices that name an unknown model, or a
    block the plan's model does not have (a typo would otherwise price that block at ``flops_per_s``, or
    without its fixed seconds, without a word).

    Raises:
        ProfileError: naming the file, the key (``devices.<profile>.<field>.<model>[.<block>]``), the value and
            the known names.
    """
    named = sorted({(n.device, f) for n in plan.nodes for f in BLOCK_MAPS if getattr(profiles.devices[n.device], f)})
    if not named:
        return
    from fplstudy.facts.models import (
        MODELS,  # here, not at the top: loading profiles needs no torch (a plan has it)
    )

    file = plan.config.profiles_file or PROFILES_DIR / "devices.yaml"
    for name, fld in named:
        for model, rates in getattr(profiles.devices[name], fld).items():
            key = f"devices.{name}.{fld}.{model}"
            if model not in MODELS:
                raise ProfileError(file, key, model, f"unknown model; known: {', '.join(MODELS)}")
            unknown = [b for b in rates if model == plan.model and b not in plan.block_names + ("adapter",)]
            if unknown:
                raise ProfileError(file, f"{key}.{unknown[0]}", unknown[0],
                                   f"not a block of {model}; its blocks: {', '.join(plan.block_names)}, and adapter "
                                   "(the junction adapter at the default junction; concat views take flops_per_s); "
                                   "fix or drop the name")
