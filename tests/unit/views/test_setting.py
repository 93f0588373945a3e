"""Every figure of the trade-offs notebook carries the line of what it was measured on."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fplstudy.study.params import load_study, smoke_params  # noqa: E402
from fplstudy.views.figures import publish, setting  # noqa: E402


def test_the_setting_names_dataset_model_devices_link_and_seeds():
    assert setting(load_study(smoke_params())) == "digits, cnn; data owners rpi4, servers minipc, link wifi5; 3 seeds"


def test_a_swept_link_shows_every_link():
    params = smoke_params()
    params["study"]["groups"] = {"fl": {"nodes": [2], "partition": ["iid"], "link": ["wifi5", "lora"]}}
    assert "link lora, wifi5;" in setting(load_study(params))


def _figure():
    """A line and its legend under the axes, as legend_below puts the study figures' legends."""
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    ax.plot([0, 1], [0, 1], label="a line")
    fig.legend(loc="outside lower center")
    return fig


def test_the_setting_is_a_strip_under_the_saved_figure(tmp_path):
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    publish(_figure(), plain, "a line")
    assert publish(_figure(), marked, "a line", setting="digits, cnn; 3 seeds") == f"wrote {marked}"
    top, whole = Image.open(plain), Image.open(marked)
    # the figure is untouched, pixel for pixel, and the strip under it holds ink (the line's grey text)
    assert whole.width == top.width and whole.height > top.height
    assert np.array_equal(np.asarray(whole)[:top.height], np.asarray(top))
    strip = np.asarray(whole.convert("L"))[top.height:]
    assert (strip < 160).any() and (strip > 250).mean() > 0.8
    plt.close("all")
