"""How far each profile number may be off: a low and a high value for every number that prices a run.

A profile number carries a status (:data:`fplstudy.facts.profiles.STATUSES`): M measured by its source, S vendor
spec, D derived by arithmetic from M/S, E estimate, U remembered from a paper and not re-read. Its range is
``[value / f, value × f]`` with the factor ``f`` of its status (:data:`FACTORS`), a band even in log space
because every cost the ledger derives is a product or a quotient of these numbers:

- **M and S, ×/÷ 1.1.** A measurement or a datasheet figure carried to another unit, firmware, supply or room:
  the sources' own repeat readings of one board differ by this much (three meters on one Raspberry Pi 4
  read 5.1, 5.5 and 6.3 W under load, chipwired.com/raspberry-pi-power-use), and a spec is a nominal point
  that units scatter around.
- **D, ×/÷ 1.5.** Arithmetic from M/S on another workload: the Raspberry Pi 4's FLOP/s is derived from
  ResNet-18 at 224×224 and applied to a small CNN, whose per-FLOP efficiency on the same CPU differs by tens
  of percent; the derivation's assumptions add to the measurement's scatter.
- **E and U, ×/÷ 2.** An estimate with no measurement behind it, or a paper's figure recalled without being
  re-read: right within a factor of two is all that can be claimed for it.

Where a source states a spread of its own, the ranges file (``profile_ranges.yaml`` at the repository root,
``--ranges`` of the ``sensitivity`` stage) gives that number's ``low`` and ``high`` with the ``source``, and
these replace the rule for it. A range must hold its value and lie in the field's physical bounds
(:data:`fplstudy.facts.profiles.BOUNDS`); a bad entry is refused in one line naming the file, the key, the value
and the fix.

Only the numbers that price a run have ranges (:data:`COST_FIELDS`): not ``memory_bytes`` (it decides whether
a plan fits, never what it costs), nor the widened bounds ``max_*``, nor the per-block mappings
``block_flops_per_s`` and ``block_call_s``. A field a profile leaves out takes its default (0 s, factor 0) and
is no profile number: it gets no range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fplstudy.config import YamlError, read_yaml_file
from fplstudy.facts.profiles import BOUNDS, FileError, Profiles, check_number

# status -> factor f of the range [value / f, value * f]; the module docstring says why each
FACTORS = {"M": 1.1, "S": 1.1, "D": 1.5, "E": 2.0, "U": 2.0}
# section -> the fields of a profile that price a run (seconds or joules)
COST_FIELDS = {"devices": ("flops_per_s", "active_w", "idle_w", "call_overhead_s", "cold_factor", "cold_s", "batch_s"),
               "links": ("up_bps", "down_bps", "tx_w", "rx_w", "latency_s")}
RANGE_KEYS = ("low", "high", "source")  # the keys of one entry of a ranges file


class RangesError(FileError):
    """A profile ranges file that cannot be used; the message names the file, the key and the value."""

    WHAT = "profile ranges file"


@dataclass(frozen=True)
class NumberRange:
    """One profile number and its range.

    Attributes:
        section: ``devices`` or ``links``.
        profile: the profile's name (``rpi4``).
        field: the field (``active_w``).
        value: the profile's value.
        status: its status letter.
        low: the lowest value it may take.
        high: the highest.
        source: where the range comes from: the rule (``rule: M x/÷ 1.1``) or an override's source.
    """

    section: str
    profile: str
    field: str
    value: float
    status: str
    low: float
    high: float
    source: str

    @property
    def key(self) -> str:
        """``rpi4.active_w``: the profile and the field (profile names are unique across sections in use)."""
        return f"{self.profile}.{self.field}"


def rule_range(value: float, status: str) -> tuple[float, float]:
    """``(value / f, value × f)`` with ``f`` the factor of ``status`` (:data:`FACTORS`)."""
    f = FACTORS[status]
    return value / f, value * f


def profile_ranges(profiles: Profiles, ranges_file: str | Path | None = None) -> dict[tuple[str, str, str], NumberRange]:
    """The range of every number of ``profiles`` that prices a run, the ranges file's entries over the rule.

    Args:
        profiles: the loaded profiles (shipped, plus a ``profiles_file``'s).
        ranges_file: YAML with ``devices:`` and/or ``links:`` sections, ``profile: {field: {low, high, source}}``;
            None = the rule alone.

    Returns:
        ``{(section, profile, field): NumberRange}``.

    Raises:
        RangesError: an unreadable file, an unknown section, profile or field, a missing source, or a range that
            does not hold its value or leaves the field's bounds, before any pricing.
    """
    out = {}
    for section, table in (("devices", profiles.devices), ("links", profiles.links)):
        for name, prof in table.items():
            for fld in COST_FIELDS[section]:
                if fld in prof.status:
                    value, status = float(getattr(prof, fld)), prof.status[fld]
                    low, high = rule_range(value, status)
                    out[(section, name, fld)] = NumberRange(section, name, fld, value, status, low, high,
                                                            f"rule: {status} x/÷ {FACTORS[status]:g}")
    if ranges_file is not None:
        for (section, name, fld), (low, high, source) in read_ranges(ranges_file, profiles, out).items():
            old = out[(section, name, fld)]
            out[(section, name, fld)] = NumberRange(section, name, fld, old.value, old.status, low, high, source)
    return out


def read_ranges(ranges_file: str | Path, profiles: Profiles, numbers: dict[tuple[str, str, str], NumberRange]
                ) -> dict[tuple[str, str, str], tuple[float, float, str]]:
    """The entries of a ranges file, each checked against the number it names (``numbers``: the rule's ranges).

    Returns:
        ``{(section, profile, field): (low, high, source)}``.

    Raises:
        RangesError: see :func:`profile_ranges`.
    """
    file = Path(ranges_file)
    try:
        data = read_yaml_file(file) or {}
    except YamlError as exc:
        raise RangesError(file, exc.key or "(file)", exc.value if exc.key else str(file), exc.reason) from None
    if not isinstance(data, dict):
        raise RangesError(file, "(top level)", type(data).__name__, "must be a mapping with devices: and/or links:")
    out = {}
    for section, entries in data.items():
        if section not in COST_FIELDS:
            raise RangesError(file, str(section), entries, "unknown section; use devices: and/or links:")
        known = profiles.devices if section == "devices" else profiles.links
        if not isinstance(entries, dict):
            raise RangesError(file, section, entries, "must map profile names to {field: {low, high, source}}")
        for name, fields in entries.items():
            if name not in known:
                raise RangesError(file, f"{section}.{name}", name, f"unknown profile; known: {', '.join(sorted(known))}")
            if not isinstance(fields, dict):
                raise RangesError(file, f"{section}.{name}", fields, "must map fields to {low, high, source}")
            for fld, entry in fields.items():
                where = f"{section}.{name}.{fld}"
                if (section, name, fld) not in numbers:
                    raise RangesError(file, where, fld, _unknown_field(section, name, fld, known[name]))
                out[(section, name, fld)] = _entry(file, where, entry, numbers[(section, name, fld)])
    return out


def _unknown_field(section: str, name: str, fld: str, prof: Any) -> str:
    priced = [f for f in COST_FIELDS[section] if f in prof.status]
    if fld in COST_FIELDS[section]:
        return f"{name} does not give {fld} (it takes its default); give a range for one of {', '.join(priced)}"
    return f"not a field that prices a run; use one of {', '.join(priced)}"


def _entry(file: Path, where: str, entry: Any, number: NumberRange) -> tuple[float, float, str]:
    """One ``{low, high, source}`` entry, checked: numbers in the field's bounds, low <= value <= high."""
    if not isinstance(entry, dict) or set(entry) != set(RANGE_KEYS):
        raise RangesError(file, where, entry, f"write {{low: …, high: …, source: …}} (the value is "
                                              f"{number.value:g}; the source says where the spread comes from)")
    bounds = BOUNDS[number.section][number.field]
    low = check_number(file, f"{where}.low", entry["low"], bounds, RangesError)
    high = check_number(file, f"{where}.high", entry["high"], bounds, RangesError)
    if low > number.value:
        raise RangesError(file, f"{where}.low", entry["low"], f"above the profile's value {number.value:g}; a range "
                                                              f"holds its value: give a low of at most {number.value:g}")
    if high < number.value:
        raise RangesError(file, f"{where}.high", entry["high"], f"below the profile's value {number.value:g}; a range "
                                                                f"holds its value: give a high of at least {number.value:g}")
    if not isinstance(entry["source"], str) or not entry["source"].strip():
        raise RangesError(file, f"{where}.source", entry["source"], "name where the spread comes from")
    return low, high, entry["source"].strip()
