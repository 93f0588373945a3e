"""Every profile is physically plausible when it loads: a radio draws at most what radios of its class can, a
device at most what one board or accelerator can, at an efficiency no chip beats. A profile outside is refused
in one line naming the profile, the field, the implied figure and the bound; a user widens a bound only with an
explicit key."""

from __future__ import annotations

import pytest

from fplstudy.facts.profiles import (
    MAX_DEVICE_W,
    MAX_FLOPS_PER_J,
    RADIO_LIMITS,
    ProfileError,
    load_profiles,
)


def _profiles(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return load_profiles(path)


def test_every_shipped_profile_is_plausible():
    profiles = load_profiles()
    for link in profiles.links.values():
        limit = RADIO_LIMITS[link.radio][0]
        assert 0 <= link.tx_w <= limit and 0 <= link.rx_w <= limit, link.name
        assert link.status["tx_w"] in "MSDEU" and link.source["tx_w"].strip(), link.name
    for dev in profiles.devices.values():
        assert dev.idle_w <= dev.active_w <= MAX_DEVICE_W, dev.name
        assert dev.flops_per_s / dev.active_w <= MAX_FLOPS_PER_J, dev.name
    # the Wi-Fi radios of the study's site draw watts, not tens of watts
    assert profiles.links["wifi5"].tx_w < 3 and profiles.links["wifi4"].tx_w < 3


def test_energy_per_bit_at_hundreds_of_mbit_is_refused_naming_the_implied_power(tmp_path):
    """3e-7 J/bit, a phone's slope at a few Mbit/s, at Wi-Fi 5's 226 Mbit/s: 67.8 W of transmit power."""
    with pytest.raises(ProfileError) as err:
        _profiles(tmp_path, "links:\n  fast: {radio: wifi, up_bps: 2.26e+8, down_bps: 2.62e+8, "
                            "tx_j_per_bit: 3.0e-7, rx_j_per_bit: 1.4e-7}\n")
    message = str(err.value)
    assert "\n" not in message
    assert "links.fast.tx_j_per_bit" in message and "67.8 W of transmit power" in message
    assert "above 5 W" in message and "max_radio_w" in message


def test_a_low_power_radio_has_its_own_bound_and_a_widened_bound_is_explicit(tmp_path):
    with pytest.raises(ProfileError, match=r"links\.loud\.tx_w.*1 W of transmit power, above 0\.5 W"):
        _profiles(tmp_path, "links:\n  loud: {radio: low_power, up_bps: 1.0e+5, down_bps: 1.0e+5, tx_w: 1.0, "
                            "rx_w: 0.01}\n")
    links = _profiles(tmp_path, "links:\n  loud: {radio: low_power, up_bps: 1.0e+5, down_bps: 1.0e+5, tx_w: 1.0, "
                                "rx_w: 0.01, max_radio_w: 2.0}\n").links
    assert links["loud"].tx_w == 1.0  # accepted because the profile says so
    with pytest.raises(ProfileError, match="radio class must be one of"):
        _profiles(tmp_path, "links:\n  odd: {radio: laser, up_bps: 1.0e+5, down_bps: 1.0e+5, tx_w: 0, rx_w: 0}\n")


def test_energy_per_bit_becomes_power_at_up_bps(tmp_path):
    link = _profiles(tmp_path, "links:\n  slow: {up_bps: 1.0e+6, down_bps: 2.0e+6, tx_j_per_bit: 1.0e-7, "
                               "rx_j_per_bit: 5.0e-8}\n").links["slow"]
    assert (link.tx_w, link.rx_w, link.radio) == (pytest.approx(0.1), pytest.approx(0.05), "wifi")
    assert link.status["tx_w"] == "D" and "up_bps" in link.source["tx_w"]
    assert link.j_per_bit(up=True) == (pytest.approx(1.0e-7), pytest.approx(5.0e-8))
    assert link.j_per_bit(up=False) == (pytest.approx(5.0e-8), pytest.approx(2.5e-8))  # twice the rate
    with pytest.raises(ProfileError, match="give tx_w or tx_j_per_bit, not both"):
        _profiles(tmp_path, "links:\n  both: {up_bps: 1.0e+6, down_bps: 1.0e+6, tx_w: 0.1, tx_j_per_bit: 1.0e-7, "
                            "rx_w: 0.0}\n")


@pytest.mark.parametrize("fields, where, says", [
    ("flops_per_s: 1.0e+10, active_w: 5000, idle_w: 10", "devices.big.active_w", "above 2000 W"),
    ("flops_per_s: 1.0e+10, active_w: 5, idle_w: 10", "devices.big.idle_w", "above active_w (5 W)"),
    ("flops_per_s: 1.0e+15, active_w: 5, idle_w: 1", "devices.big.flops_per_s", "2e+14 FLOP/J, above 1e+13"),
])
def test_an_impossible_device_is_refused_naming_the_field_and_the_bound(tmp_path, fields, where, says):
    with pytest.raises(ProfileError) as err:
        _profiles(tmp_path, f"devices:\n  big: {{{fields}}}\n")
    assert where in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


def test_a_device_widens_its_bound_on_purpose(tmp_path):
    devices = _profiles(tmp_path, "devices:\n  rack: {flops_per_s: 1.0e+15, active_w: 5000, idle_w: 500, "
                                  "max_w: 6000}\n").devices
    assert devices["rack"].active_w == 5000
