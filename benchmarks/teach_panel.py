"""How long one move of the teaching notebook's slider panel takes (``fplstudy.views.teach.SliderPanel``):
price the slider's plan, price the reference plans on the panel's device and link, draw the figure and
its PNG, the way a person's move triggers it.

Usage: ``python benchmarks/teach_panel.py [--repeat N]``. Drives one panel through a fixed tour of moves
(node counts 2, 4, 7, 8, the branches slider, the device and link menus to LoRa and back) ``N`` times
(default 2): the first tour meets every position and every device and link for the first time, the later
ones meet them again, as a person going back and forth does. Prints each move's time, the median and the
slowest move of each tour, and the ratio of the first tour's median to the later ones' (what the caches
of :func:`fplstudy.views.teach.price_choice` and :func:`fplstudy.views.teach.reference_walk` save).
The goal is every move under 1 s on an idle machine.
"""

from __future__ import annotations

import statistics
import sys
import time

import matplotlib

matplotlib.use("Agg")

from fplstudy.facts.profiles import load_profiles  # noqa: E402
from fplstudy.views import teach  # noqa: E402

BASE = {"rounds": 1}
TOUR = [("nodes", 2), ("nodes", 4), ("nodes", 7), ("nodes", 8), ("branches", "last"), ("link", "lora"),
        ("device", "other"), ("nodes", 7), ("nodes", 4), ("link", "wifi5"), ("device", "rpi4"), ("nodes", 8)]


def tour(panel: teach.SliderPanel, devices: list[str]) -> list[float]:
    """One pass over :data:`TOUR`; the seconds of each move."""
    times = []
    for name, value in TOUR:
        if value == "last":
            value = panel.controls[name].options[-1]
        elif value == "other":
            value = next(d for d in devices if d != panel.position()["device"])
        t0 = time.perf_counter()
        panel.controls[name].value = value
        times.append(time.perf_counter() - t0)
        print(f"  {name} = {value}: {times[-1]:.3f} s")
    return times


def main(argv: list[str]) -> None:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 2
    profiles = load_profiles()
    devices, links = sorted(profiles.devices), sorted(profiles.links)
    t0 = time.perf_counter()
    _, table = teach.walk(BASE, 4)
    panel = teach.slider_panel(BASE, table, devices, links, device="rpi4", link="wifi5")
    print(f"walk and panel built in {time.perf_counter() - t0:.2f} s (one-time: dataset, profiles, slider space)")
    medians = []
    for i in range(repeat):
        print(f"tour {i + 1}:")
        times = tour(panel, devices)
        medians.append(statistics.median(times))
        print(f"tour {i + 1}: median {medians[-1]:.3f} s, slowest {max(times):.3f} s")
    if repeat > 1:
        print(f"first tour / later tours (median): {medians[0] / statistics.median(medians[1:]):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
