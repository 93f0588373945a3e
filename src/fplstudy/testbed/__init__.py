"""The emulated testbed (Mininet hosts, shaped links, throttled CPUs) and calibration."""
