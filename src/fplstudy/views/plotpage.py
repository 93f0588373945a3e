"""The page ``dvc plots show`` writes, made to work with no network: an HTML template for DVC
(``plots.html_template`` in ``.dvc/config``) that carries Vega, Vega-Lite and Vega-Embed inline, from the
Vega project's own bundle (``vl-convert-python``), instead of DVC's default page, which loads them from a CDN
and renders every interactive plot at zero height offline."""

from __future__ import annotations

from pathlib import Path

from fplstudy.train.results import atomic_write_text

TEMPLATE = Path(".dvc") / "plots.html"  # where .dvc/config's plots.html_template points (relative to .dvc/)

_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>fplstudy: the study's plots</title>
  <!-- Vega {vega}, Vega-Lite {vega_lite}, Vega-Embed {vega_embed}, inline: this page loads nothing from the network -->
  <script>{bundle}</script>
  <style>
    body {{ font-family: sans-serif; margin: 1em; }}
    table {{ border-spacing: 15px; }}
  </style>
</head>
<body>
  <h1>fplstudy: the study's plots</h1>
  {{plot_divs}}
</body>
</html>
"""


def page_template() -> str:
    """The template's text: DVC fills ``{plot_divs}`` (and needs no ``{scripts}``: the libraries are inline)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")  # no early end of the tag
    return _PAGE.format(bundle=bundle, vega=vl_convert.get_vega_version(),
                        vega_lite=vl_convert.get_vegalite_versions()[-1], vega_embed=vl_convert.get_vega_embed_version())


def write_page_template(path: str | Path = TEMPLATE) -> Path:
    """Write :func:`page_template` to ``path`` (atomically) and return it."""
    return atomic_write_text(Path(path), page_template())
