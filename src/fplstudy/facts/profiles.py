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
  side — a trunk stage or the aggregator — to an edge node, which use *down*), ``tx_w`` / ``rx_w`` (the
  radio's power while sending / receiving, W, on top of the board's idle power: a message's radio energy is
  that power times its airtime, bits / rate, at each end), ``radio`` (its class: ``wired``, ``wifi``,
  ``cellular`` or ``low_power``; a user's new link without one is taken as ``wifi``), ``latency_s``
  (0..86400, optional, added to every message), ``max_radio_w`` (optional, below). A user's file may give
  ``tx_j_per_bit`` / ``rx_j_per_bit`` instead of the powers, read as power at the profile's ``up_bps``
  (status D); energy per bit is otherwise derived (:meth:`LinkProfile.j_per_bit`).

**Plausibility.** Loading refuses a profile no hardware matches, in one line naming the profile, the field,
the implied figure and the bound (:func:`check_link`, :func:`check_device`): a radio drawing more than its
class allows (:data:`RADIO_LIMITS`: 2 W wired, 5 W Wi-Fi or cellular, 0.5 W low-power radios), a device above
:data:`MAX_DEVICE_W` or more efficient than :data:`MAX_FLOPS_PER_J`, or idling above its active power. A
profile widens a bound only on purpose, with ``max_radio_w`` (link) or ``max_w`` / ``max_flops_per_j``
(device).

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

from fplstudy.config import Config, ConfigError, YamlError, read_yaml_file, short_key, short_repr

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
LINK_FIELDS = {"up_bps": True, "down_bps": True, "tx_w": True, "rx_w": True, "latency_s": False, "max_radio_w": False}
DEVICE_FIELDS.update({"max_w": False, "max_flops_per_j": False})
# Energy per bit, as older profiles and papers give it: read from a user's file and turned into the radio's power
# at the profile's up_bps (tx_w = tx_j_per_bit x up_bps), the rate the figure is taken to be measured at.
PER_BIT = {"tx_j_per_bit": "tx_w", "rx_j_per_bit": "rx_w"}
# radio class -> (the most a radio of the class draws while sending or receiving, W; why). A link profile names
# its class (``radio``); its tx_w and rx_w must lie below the bound unless it widens it with ``max_radio_w``.
RADIO_LIMITS: dict[str, tuple[float, str]] = {
    "wired": (2.0, "an Ethernet PHY draws well under a watt per port"),
    "wifi": (5.0, "Wi-Fi NICs and phone radios draw about 1-2 W while sending"),
    "cellular": (5.0, "an LTE or 5G handset radio draws a few W at full uplink power"),
    "low_power": (0.5, "BLE, Zigbee and LoRa radios draw tens of mW, about 0.4 W at LoRa's +20 dBm"),
}
# The physical bounds of a device unless its profile widens them (``max_w``, ``max_flops_per_j``): one board or
# accelerator draws at most MAX_DEVICE_W, and no chip trains at more than MAX_FLOPS_PER_J (about 10x today's
# best accelerators at low precision).
MAX_DEVICE_W = 2000.0
MAX_FLOPS_PER_J = 1.0e13
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
        "max_w": (0.0, 1e6, "W, a widened bound on active_w"),
        "max_flops_per_j": (0.0, 1e18, "FLOP/J, a widened bound on flops_per_s / active_w"),
    },
    "links": {
        "up_bps": (1.0, 1e13, "bit/s, from the slowest LoRa setting to a 10 Tbit/s link"),
        "down_bps": (1.0, 1e13, "bit/s, from the slowest LoRa setting to a 10 Tbit/s link"),
        "tx_w": (0.0, 1e4, "W of radio power while sending"),
        "rx_w": (0.0, 1e4, "W of radio power while receiving"),
        "latency_s": (0.0, 86_400.0, "s per message, up to a day"),
        "max_radio_w": (0.0, 1e4, "W, a widened bound on tx_w and rx_w"),
        "tx_j_per_bit": (0.0, 1.0, "J/bit at up_bps"),
        "rx_j_per_bit": (0.0, 1.0, "J/bit at up_bps"),
    },
}


class FileError(ConfigError):
    """A data file that cannot be used; the message names the file, the key and the value. Subclasses say
    what the file is, what its keys are called and which config key names the file (None: none does)."""

    WHAT, KEY, CONFIG_KEY = "file", "key", None

    def __init__(self, file: str | Path, key: str, value: Any, allowed: str):
        self.file = str(file)
        ValueError.__init__(self, f"{self.WHAT} '{short_key(str(file))}', {self.KEY} '{short_key(key)}': got "
                                  f"{short_repr(value)}; {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class ProfileError(FileError):
    """A profile file that cannot be used; the message names the file, the key and the value."""

    WHAT, CONFIG_KEY = "profile file", "profiles_file"


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
    max_w: float | None = None
    max_flops_per_j: float | None = None
    description: str = ""
    status: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    source: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class LinkProfile:
    """A link: rates up and down, the radio's power while sending and while receiving (on top of its node's
    board, see :func:`fplstudy.costs.pricing.price_message`), fixed per-message latency.

    A message's radio energy is that power times its airtime (bits / rate) at each end; energy per bit is
    derived (:meth:`j_per_bit`), never given: a constant J/bit measured at a few Mbit/s implies an impossible
    power at hundreds."""

    name: str
    up_bps: float
    down_bps: float
    tx_w: float
    rx_w: float
    latency_s: float = 0.0
    radio: str = "wifi"
    max_radio_w: float | None = None
    description: str = ""
    status: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    source: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def j_per_bit(self, up: bool = True) -> tuple[float, float]:
        """``(tx J/bit, rx J/bit)`` of a message sent at ``up_bps`` (``up``) or ``down_bps``: power / rate."""
        rate = self.up_bps if up else self.down_bps
        return self.tx_w / rate, self.rx_w / rate


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
        if section == "links" and key == "radio":
            if not isinstance(raw, str) or raw not in RADIO_LIMITS:
                raise ProfileError(file, where, raw, f"radio class must be one of {', '.join(RADIO_LIMITS)} (it sets "
                                                     "the bound on tx_w and rx_w)")
            out["radio"] = raw
            continue
        if section == "links" and key in PER_BIT:
            if require_sources:
                raise ProfileError(file, where, raw, f"a shipped profile gives {PER_BIT[key]} (the radio's power, W)")
            per_bit = out.setdefault("_per_bit", {})
            per_bit[key] = check_number(file, where, raw["value"] if isinstance(raw, dict) and "value" in raw
                                        else raw, BOUNDS[section][key])
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
    if section == "links":
        _per_bit_to_power(file, name, out, set(entry))
        if "radio" not in out and require_sources:
            raise ProfileError(file, f"links.{name}.radio", None, f"missing; name the radio class, one of "
                                                                  f"{', '.join(RADIO_LIMITS)} (it bounds tx_w and rx_w)")
        out.setdefault("radio", "wifi")  # a user's new link without a class: the bound of a Wi-Fi radio
    for key, required in fields_spec.items():
        if required and key not in out:
            raise ProfileError(file, f"{section}.{name}.{key}", None,
                               "missing; every profile needs " + ", ".join(k for k, r in fields_spec.items() if r))
    (check_link if section == "links" else check_device)(file, name, out)
    return out


def _per_bit_to_power(file: Path, name: str, out: dict, given: set) -> None:
    """Energy per bit from a user's file as the radio's power at the profile's ``up_bps`` (status D)."""
    per_bit = out.pop("_per_bit", {})
    for key, value in per_bit.items():
        power = PER_BIT[key]
        if power in given:
            raise ProfileError(file, f"links.{name}.{key}", value, f"give {power} or {key}, not both")
        if "up_bps" not in out:
            raise ProfileError(file, f"links.{name}.{key}", value, "needs up_bps, the rate it is read at")
        out[power] = value * out["up_bps"]
        out["status"][power] = "D"
        out["source"][power] = f"{key} {value:g} x up_bps {out['up_bps']:g} (user file)"
        out.setdefault("_from", {})[power] = (key, value)


def check_link(file: str | Path, name: str, fields: dict) -> None:
    """Refuse a link whose radio would draw more than a radio of its class can (:data:`RADIO_LIMITS`, or the
    profile's own ``max_radio_w``), naming the profile, the field, the implied power and the bound."""
    limit, why = RADIO_LIMITS[fields.get("radio", "wifi")]
    if fields.get("max_radio_w") is not None:
        limit, why = fields["max_radio_w"], "the profile's own max_radio_w"
    given = fields.pop("_from", {})
    for key, what in (("tx_w", "transmit"), ("rx_w", "receive")):
        if fields.get(key) is not None and fields[key] > limit:
            field_name, raw = given.get(key, (key, fields[key]))
            implied = (f"at up_bps {fields['up_bps']:.3g} bit/s this is {fields[key]:.3g} W of {what} power"
                       if key in given else f"{fields[key]:.3g} W of {what} power")
            raise ProfileError(file, f"links.{name}.{field_name}", raw,
                               f"{implied}, above {limit:g} W ({fields.get('radio', 'wifi')} radio: {why}); give the "
                               f"radio's power while it {'sends' if key == 'tx_w' else 'receives'} (W, from a datasheet or a "
                               "measurement), or widen the bound on purpose with max_radio_w")


def check_device(file: str | Path, name: str, fields: dict) -> None:
    """Refuse a device whose power or efficiency no hardware reaches: ``active_w`` above :data:`MAX_DEVICE_W`
    (or its ``max_w``), ``idle_w`` above ``active_w``, ``flops_per_s / active_w`` above :data:`MAX_FLOPS_PER_J`
    (or its ``max_flops_per_j``); the message names the profile, the field, the implied figure and the bound."""
    if "active_w" not in fields:
        return
    max_w = fields.get("max_w") or MAX_DEVICE_W
    if fields["active_w"] > max_w:
        raise ProfileError(file, f"devices.{name}.active_w", fields["active_w"],
                           f"above {max_w:g} W, more than one board or accelerator draws; fix it, or widen the bound "
                           "on purpose with max_w")
    if fields.get("idle_w", 0.0) > fields["active_w"]:
        raise ProfileError(file, f"devices.{name}.idle_w", fields["idle_w"],
                           f"above active_w ({fields['active_w']:g} W): a device draws more while computing than "
                           "while waiting")
    bound = fields.get("max_flops_per_j") or MAX_FLOPS_PER_J
    if fields["active_w"] > 0 and fields.get("flops_per_s", 0.0) / fields["active_w"] > bound:
        raise ProfileError(file, f"devices.{name}.flops_per_s", fields["flops_per_s"],
                           f"at active_w {fields['active_w']:g} W this is {fields['flops_per_s'] / fields['active_w']:.3g} "
                           f"FLOP/J, above {bound:g} FLOP/J (about 10x the best accelerators); fix it, or widen the "
                           "bound on purpose with max_flops_per_j")


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
    return _load_cached(str(path), file_mtime(path))


def file_mtime(path: Path) -> float | None:
    """``path``'s modification time, or None where it is no readable file (a missing file, a folder, a name too
    long for the file system or holding a NUL byte: the reader then refuses it in one line)."""
    try:
        return path.stat().st_mtime if path.is_file() else None
    except (OSError, ValueError):
        return None


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
