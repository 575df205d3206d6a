"""Altair chart helpers and an offline Vega renderer for the notebooks and the book.

Altair's default renderer loads Vega, Vega-Lite and vega-embed from a CDN, so charts in an
offline copy of the book stay blank. Here the three libraries come from one local bundle
that vl-convert-python builds (`vl_convert.javascript_bundle`), and the chart outputs only
call the global `vegaEmbed` function that this bundle defines:

- `enable_offline()` registers and enables the `svutils_offline` Altair renderer. Its
  `text/html` output is a `<div>` plus an inline script that calls `vegaEmbed` (no
  requirejs, no remote URL). The same output also carries the Vega-Lite spec under
  `application/vnd.vegalite.v5+json`, so JupyterLab still draws the chart itself.
- `write_vega_bundle(path)` writes the bundle file. As a Sphinx extension (`setup` below,
  listed under `sphinx.local_extensions` in `_config.yml`) this module writes it into every
  HTML build as `_static/svutils-vega.js` and loads it on each page, so the bundle is
  never committed.
- `save_chart(chart, path)` writes a standalone `.html` (bundle inline) and a `.vl.json`.

The chart helpers take tidy pandas DataFrames, one row per plotted value, and return
Altair charts. Column names must not contain `.`, `[`, `]` or `\\`, because Vega-Lite reads
those characters as nested field access.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from svutils.io import atomic_write_text

RENDERER_NAME = "svutils_offline"
VEGA_BUNDLE_FILENAME = "svutils-vega.js"
VEGA_READY_EVENT = "svutils:vega-ready"
CHART_CSS_CLASS = "svutils-chart"
VEGALITE_MIME_TYPE = "application/vnd.vegalite.v5+json"

# Options passed to vegaEmbed. The SVG renderer keeps text crisp when zoomed, and the
# action menu keeps only the image export: "Open in Vega Editor" would leave the page.
DEFAULT_EMBED_OPTIONS: dict[str, Any] = {
    "renderer": "svg",
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
}

# The bundle publishes the libraries as globals and then fires VEGA_READY_EVENT for the
# charts whose inline scripts ran before it.
_BUNDLE_SNIPPET = (
    "window.vegaEmbed = vegaEmbed;\n"
    "window.vegaLite = vegaLite;\n"
    "window.vega = vega;\n"
    f'window.dispatchEvent(new Event("{VEGA_READY_EVENT}"));\n'
)

_CHART_TEMPLATE = """\
<div id="{element_id}" class="{css_class}">Loading chart: this page needs {bundle}.</div>
<script type="text/javascript">
(function () {{
  var spec = {spec_json};
  var embedOptions = {options_json};
  var target = document.getElementById("{element_id}");
  function render() {{
    target.textContent = "";
    window.vegaEmbed(target, spec, embedOptions).catch(function (error) {{
      target.textContent = "Chart failed to render: " + error;
      console.error(error);
    }});
  }}
  if (typeof window.vegaEmbed === "function") {{
    render();
  }} else {{
    window.addEventListener("{ready_event}", render, {{ once: true }});
  }}
}})();
</script>
"""

_STANDALONE_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script>
{bundle}
</script>
</head>
<body>
{chart}
</body>
</html>
"""

_FORBIDDEN_FIELD_CHARACTERS = (".", "[", "]", "\\")
_TOOLTIP_NUMBER_FORMAT = ".4g"
_DEFAULT_MARK_COLOR = "#4c78a8"  # the first colour of Vega's default "tableau10" scheme
_EDGE_COLOR = "#d62728"


class MissingColumnError(KeyError):
    """A chart helper was given a column name that the DataFrame lacks."""

    def __str__(self) -> str:
        return str(self.args[0])


# ---------------------------------------------------------------------------------------
# Offline rendering
# ---------------------------------------------------------------------------------------


def _vega_lite_version_for_vl_convert() -> str:
    # vl-convert names Vega-Lite versions like "v6_4", and Altair's schema is "v6.4.1".
    return "_".join(alt.SCHEMA_VERSION.split(".")[:2])


@functools.lru_cache(maxsize=1)
def vega_bundle_source() -> str:
    """Return the JavaScript of vega, vega-lite and vega-embed as one classic script (~0.9 MB).

    The Vega-Lite version matches the one Altair writes specs for. The first call in a
    process takes a few seconds because vl-convert bundles the sources, and later calls
    reuse the result. vl-convert's output declares short top-level names such as `t`, so
    it is wrapped in a function that keeps them from clashing with other scripts. A
    classic script also loads from `file://` pages, where Chromium blocks module scripts.
    """
    import vl_convert

    source = vl_convert.javascript_bundle(
        snippet=_BUNDLE_SNIPPET, vl_version=_vega_lite_version_for_vl_convert()
    )
    return f"(function () {{\n{source}\n}})();\n"


def write_vega_bundle(path: str | os.PathLike) -> Path:
    """Write the Vega bundle (see `vega_bundle_source`) to `path` atomically.

    The book build calls this through the Sphinx extension in this module, which writes
    `_static/svutils-vega.js` into the HTML output. Call it yourself only to serve charts
    from another page. Returns the path written.
    """
    path = Path(path)
    if path.suffix != ".js":
        raise ValueError(
            f"Vega bundle path {str(path)!r} must end in .js, for example {VEGA_BUNDLE_FILENAME!r}."
        )
    written = atomic_write_text(path, vega_bundle_source())
    # The atomic write creates the file with mode 0600, but a web server that serves the
    # book may run as another user.
    written.chmod(0o644)
    return written


def _script_safe_json(value: Any) -> str:
    # "</" would end the surrounding <script> element early, so escape it.
    text = json.dumps(value, allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def chart_html(
    spec: Mapping[str, Any],
    *,
    embed_options: Mapping[str, Any] | None = None,
    element_id: str | None = None,
) -> str:
    """Return an HTML fragment that draws the Vega-Lite `spec` with the local bundle.

    The fragment is a `<div class="svutils-chart">` and an inline script that calls the
    global `vegaEmbed`, or waits for the bundle's ready event when the bundle has not run
    yet. It references no remote URL, but it needs `svutils-vega.js` on the same page: the
    book loads it on every page, and `save_chart` inlines it.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a Vega-Lite dict (chart.to_dict()), got {type(spec).__name__}.")
    options = dict(DEFAULT_EMBED_OPTIONS if embed_options is None else embed_options)
    if element_id is None:
        element_id = f"svutils-chart-{uuid.uuid4().hex}"
    return _CHART_TEMPLATE.format(
        element_id=html.escape(element_id, quote=True),
        css_class=CHART_CSS_CLASS,
        bundle=VEGA_BUNDLE_FILENAME,
        spec_json=_script_safe_json(dict(spec)),
        options_json=_script_safe_json(options),
        ready_event=VEGA_READY_EVENT,
    )


def offline_renderer(spec: dict, **metadata: Any) -> dict[str, Any]:
    """Return the mimebundle of the `svutils_offline` renderer for one Vega-Lite spec.

    Keys: `text/html` (from `chart_html`), `application/vnd.vegalite.v5+json` (the spec,
    for JupyterLab) and `text/plain`. `metadata["embed_options"]`, if given, replaces
    `DEFAULT_EMBED_OPTIONS`.
    """
    # NOTE: Altair 6 writes Vega-Lite 6 specs, but the key names v5 because that is the
    # Vega-Lite MIME type JupyterLab 4 renders. Its Vega-Lite 5 compiler draws the charts
    # made here, and it may log a version warning.
    embed_options = metadata.get("embed_options")
    return {
        "text/html": chart_html(spec, embed_options=embed_options),
        VEGALITE_MIME_TYPE: spec,
        "text/plain": "<Vega-Lite chart: open it in JupyterLab or in the built book>",
    }


def enable_offline(embed_options: Mapping[str, Any] | None = None) -> None:
    """Register the `svutils_offline` Altair renderer and make it the active one.

    Call it once at the top of each notebook. `embed_options` replaces
    `DEFAULT_EMBED_OPTIONS` (vega-embed options such as `renderer` or `actions`).
    """
    if RENDERER_NAME not in alt.renderers.names():
        alt.renderers.register(RENDERER_NAME, offline_renderer)
    if embed_options is None:
        alt.renderers.enable(RENDERER_NAME)
    else:
        alt.renderers.enable(RENDERER_NAME, embed_options=dict(embed_options))


def save_chart(chart: alt.TopLevelMixin, path_without_suffix: str | os.PathLike) -> tuple[Path, Path]:
    """Write `<path>.html` (standalone, Vega bundle inline) and `<path>.vl.json` atomically.

    The HTML opens offline in any browser. The JSON is the Vega-Lite spec with its data
    inline. Returns `(html_path, json_path)`. Pass the path without a suffix:
    `results/figures/band_effect`, not `band_effect.html`.
    """
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"chart must be an Altair top-level chart, got {type(chart).__name__}.")
    base = Path(path_without_suffix)
    if base.name.endswith((".html", ".json")):
        raise ValueError(
            f"Pass the path without a suffix, got {str(base)!r}: save_chart adds .html and .vl.json itself."
        )
    spec = chart.to_dict()
    title = _spec_title(spec) or base.name
    document = _STANDALONE_TEMPLATE.format(
        title=html.escape(title),
        bundle=vega_bundle_source(),
        chart=chart_html(spec, element_id="svutils-chart"),
    )
    html_path = atomic_write_text(base.with_name(base.name + ".html"), document)
    json_path = atomic_write_text(
        base.with_name(base.name + ".vl.json"), json.dumps(spec, indent=2, allow_nan=False) + "\n"
    )
    return html_path, json_path


def _spec_title(spec: Mapping[str, Any]) -> str | None:
    title = spec.get("title")
    if isinstance(title, Mapping):
        title = title.get("text")
    if isinstance(title, list):
        title = " ".join(str(part) for part in title)
    return None if title is None else str(title)


# ---------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------


def _require_dataframe(df: Any, function: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{function} expects a pandas DataFrame, got {type(df).__name__}.")
    if df.empty:
        raise ValueError(f"{function} got an empty DataFrame: there is nothing to plot.")


def _require_columns(df: pd.DataFrame, columns: Sequence[str], function: str) -> None:
    for column in columns:
        if not isinstance(column, str):
            raise TypeError(f"{function}: column names must be strings, got {column!r}.")
        if column not in df.columns:
            raise MissingColumnError(
                f"{function}: column {column!r} is not in the DataFrame. "
                f"Available columns: {', '.join(map(str, df.columns))}."
            )
        bad = [character for character in _FORBIDDEN_FIELD_CHARACTERS if character in column]
        if bad:
            raise ValueError(
                f"{function}: column {column!r} contains {' '.join(bad)}, which Vega-Lite reads as "
                "nested field access. Rename the column, for example with df.rename(columns=...)."
            )


def _require_numeric(df: pd.DataFrame, column: str, function: str) -> None:
    if not pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_bool_dtype(df[column]):
        raise TypeError(f"{function}: column {column!r} must be numeric, got dtype {df[column].dtype}.")


def _optional_column(df: pd.DataFrame, column: str | None, default: str, function: str) -> str | None:
    """Return `column` if `df` has it, None if it is the missing default, else raise."""
    if column is None:
        return None
    if column not in df.columns and column == default:
        return None
    _require_columns(df, [column], function)
    return column


def _json_values(values: Sequence[Any]) -> list[Any]:
    return [value.item() if isinstance(value, np.generic) else value for value in values]


def _category_order(series: pd.Series) -> list[Any]:
    """Order categories: a Categorical keeps its categories, numbers sort, text keeps first appearance."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.dropna().unique())
        return _json_values([value for value in series.cat.categories if value in present])
    unique = pd.unique(series.dropna())
    if pd.api.types.is_numeric_dtype(series):
        unique = np.sort(unique)
    return _json_values(list(unique))


def _encoding_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "nominal"
    if pd.api.types.is_numeric_dtype(series):
        return "quantitative"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "temporal"
    return "nominal"


def _tooltips(
    df: pd.DataFrame, columns: Sequence[str | None], ordinal: Sequence[str] = ()
) -> list[alt.Tooltip]:
    tooltips = []
    seen = set()
    for column in columns:
        if column is None or column in seen:
            continue
        seen.add(column)
        kind = "ordinal" if column in ordinal else _encoding_type(df[column])
        if kind == "quantitative":
            tooltips.append(alt.Tooltip(field=column, type=kind, format=_TOOLTIP_NUMBER_FORMAT))
        else:
            tooltips.append(alt.Tooltip(field=column, type=kind))
    return tooltips


def _plain_frame(df: pd.DataFrame, columns: Sequence[str | None]) -> pd.DataFrame:
    # Keep only the plotted columns, so the inline data stays small, and turn
    # Categorical columns into plain values, which serialize to JSON.
    used = list(dict.fromkeys(column for column in columns if column is not None))
    frame = df[used].copy()
    for column in used:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    return frame


# ---------------------------------------------------------------------------------------
# Chart helpers
# ---------------------------------------------------------------------------------------


def _band_points(
    x_encoding: alt.X,
    y_encoding: alt.Y,
    tooltip: list[alt.Tooltip],
    extra: dict[str, Any],
    color: str | None,
    color_order: list[Any] | None,
    state: str | None,
) -> alt.Chart:
    """Return the point layer of `band_effect_chart`. `state` names the collapse label column."""
    # Unfilled points draw `color` as their outline, and the fill repeats it. Collapsed
    # cells get a transparent fill, so they show as hollow crosses.
    encoding: dict[str, Any] = dict(x=x_encoding, y=y_encoding, tooltip=tooltip, **extra)
    # Legends go below the panels, so three wrapped panels fit the width of a book page.
    if color is not None:
        encoding["fill"] = alt.Fill(
            field=color, type="nominal", sort=color_order, legend=alt.Legend(orient="bottom", direction="horizontal")
        )
    else:
        encoding["fill"] = alt.value(_DEFAULT_MARK_COLOR)
    if state is not None:
        encoding["shape"] = alt.Shape(
            field=state,
            type="nominal",
            scale=alt.Scale(domain=["not collapsed", "collapsed"], range=["circle", "cross"]),
            legend=alt.Legend(title="Model state", orient="bottom", direction="horizontal"),
        )
        is_collapsed = alt.datum[state] == "collapsed"
        encoding["fillOpacity"] = alt.when(is_collapsed).then(alt.value(0)).otherwise(alt.value(1))
        encoding["size"] = alt.when(is_collapsed).then(alt.value(120)).otherwise(alt.value(60))
    return alt.Chart().mark_point(filled=False, size=60, strokeWidth=1.5, opacity=1).encode(**encoding)


def band_effect_chart(
    df: pd.DataFrame,
    *,
    y: str = "change",
    y_low: str | None = "ci_low",
    y_high: str | None = "ci_high",
    color: str | None = None,
    column: str | None = None,
    row: str | None = None,
    collapsed: str | None = "collapsed",
    band: str = "band",
    title: str | None = None,
    y_title: str | None = None,
    width: int = 220,
    height: int = 160,
    facet_columns: int = 3,
) -> alt.LayerChart | alt.FacetChart:
    """Plot the effect of removing each singular-value band, with intervals and collapses.

    One row of `df` is one cell. Its columns are `band` (int, 0 = the band of the largest
    singular values) and `y` (numeric, the effect, such as the change of accuracy).
    Optional columns are `y_low` and `y_high` (interval bounds in the unit of `y`),
    `collapsed` (bool, True when the model predicted a single class) and the grouping
    columns `color`, `column` and `row`. A missing `ci_low`, `ci_high` or `collapsed`
    column skips its layer, but any other named column must exist. The chart draws points
    and a dashed line at 0. Collapsed cells show as hollow crosses with their own legend
    entry, and tooltips list every plotted column. With `column` alone, the panels wrap
    after `facet_columns` panels, so five tasks fit the width of a book page.
    """
    function = "band_effect_chart"
    _require_dataframe(df, function)
    if isinstance(facet_columns, bool) or not isinstance(facet_columns, int) or facet_columns < 1:
        raise ValueError(f"{function}: facet_columns must be a positive int, got {facet_columns!r}.")
    _require_columns(df, [band, y] + [name for name in (color, column, row) if name is not None], function)
    _require_numeric(df, y, function)
    if not pd.api.types.is_integer_dtype(df[band]) or (df[band] < 0).any():
        raise ValueError(
            f"{function}: column {band!r} must hold band indices as integers >= 0, got dtype {df[band].dtype}."
        )

    low = _optional_column(df, y_low, "ci_low", function)
    high = _optional_column(df, y_high, "ci_high", function)
    if (low is None) != (high is None):
        raise ValueError(
            f"{function}: interval needs both bounds, got y_low={low!r} and y_high={high!r}. "
            "Pass both column names, or y_low=None and y_high=None for points only."
        )
    for bound in (low, high):
        if bound is not None:
            _require_numeric(df, bound, function)
    collapse = _optional_column(df, collapsed, "collapsed", function)

    data = _plain_frame(df, [band, y, low, high, collapse, color, column, row])
    state = "model_state"
    if collapse is not None:
        if state in data.columns:
            raise ValueError(f"{function}: column name {state!r} is reserved by this chart, so rename that column.")
        # Only True (or 1) counts as collapsed, so missing values count as not collapsed.
        data[state] = np.where(data[collapse].eq(True), "collapsed", "not collapsed")

    x_encoding = alt.X(
        field=band,
        type="ordinal",
        title="Band (0 = largest singular values)",
        axis=alt.Axis(labelAngle=0),
    )
    y_encoding = alt.Y(field=y, type="quantitative", title=y_title or y)
    color_order = _category_order(df[color]) if color is not None else None
    extra: dict[str, Any] = {}
    if color is not None:
        # The legend comes from the `fill` channel of the points, because a legend for the
        # outline colour would repeat it with black symbols.
        extra["color"] = alt.Color(field=color, type="nominal", sort=color_order, legend=None)
        extra["xOffset"] = alt.XOffset(field=color, type="nominal", sort=color_order)
    tooltip = _tooltips(data, [band, y, low, high, color, column, row, collapse], ordinal=[band])

    layers = [
        alt.Chart().mark_rule(color="#888888", strokeDash=[4, 4]).encode(y=alt.datum(0)),
    ]
    if low is not None:
        layers.append(
            alt.Chart()
            .mark_rule(strokeWidth=1.5, color=_DEFAULT_MARK_COLOR)
            .encode(
                x=x_encoding,
                y=alt.Y(field=low, type="quantitative", title=y_title or y),
                y2=alt.Y2(field=high),
                tooltip=tooltip,
                **extra,
            )
        )
    state_column = state if collapse is not None else None
    layers.append(_band_points(x_encoding, y_encoding, tooltip, extra, color, color_order, state_column))

    chart: Any = alt.layer(*layers, data=data).properties(width=width, height=height)
    if column is not None and row is None:
        wrapped = alt.Facet(field=column, type="nominal", sort=_category_order(df[column]))
        chart = chart.facet(facet=wrapped, columns=facet_columns)
    elif column is not None or row is not None:
        facets: dict[str, Any] = {}
        if column is not None:
            facets["column"] = alt.Column(field=column, type="nominal", sort=_category_order(df[column]))
        if row is not None:
            facets["row"] = alt.Row(field=row, type="nominal", sort=_category_order(df[row]))
        chart = chart.facet(**facets)
    if title is not None:
        chart = chart.properties(title=title)
    return chart


def heatmap(
    df: pd.DataFrame,
    *,
    x: str,
    y: str,
    color: str,
    facet: str | None = None,
    facet_columns: int = 3,
    title: str | None = None,
    color_title: str | None = None,
    diverging: bool = True,
    annotate: bool = False,
    value_format: str = ".3f",
    width: int = 240,
    height: int = 160,
) -> alt.LayerChart | alt.FacetChart:
    """Plot `color` (numeric) on an `x` by `y` grid, optionally one panel per `facet` value.

    `x` and `y` are categorical axes: a pandas Categorical keeps its category order,
    numbers sort ascending, and text keeps its order of first appearance (so q, k, v, o stay
    in that order). `diverging=True` centres a red-blue scale on 0, which suits changes,
    and `False` uses viridis. `annotate=True` prints each value with `value_format`.
    """
    function = "heatmap"
    _require_dataframe(df, function)
    _require_columns(df, [x, y, color] + ([facet] if facet is not None else []), function)
    _require_numeric(df, color, function)
    if facet_columns < 1:
        raise ValueError(f"{function}: facet_columns must be >= 1, got {facet_columns}.")

    data = _plain_frame(df, [x, y, color, facet])
    scale = alt.Scale(scheme="redblue", domainMid=0) if diverging else alt.Scale(scheme="viridis")
    tooltip = _tooltips(data, [x, y, color, facet], ordinal=[x, y])
    base = alt.Chart().encode(
        x=alt.X(field=x, type="ordinal", sort=_category_order(df[x]), axis=alt.Axis(labelAngle=0)),
        y=alt.Y(field=y, type="ordinal", sort=_category_order(df[y])),
    )
    layers = [
        base.mark_rect().encode(
            color=alt.Color(field=color, type="quantitative", scale=scale, title=color_title or color),
            tooltip=tooltip,
        )
    ]
    if annotate:
        layers.append(
            base.mark_text(fontSize=10).encode(
                text=alt.Text(field=color, type="quantitative", format=value_format), tooltip=tooltip
            )
        )
    chart: Any = alt.layer(*layers, data=data).properties(width=width, height=height)
    if facet is not None:
        panel = alt.Facet(field=facet, type="nominal", sort=_category_order(df[facet]))
        chart = chart.facet(facet=panel, columns=facet_columns)
    if title is not None:
        chart = chart.properties(title=title)
    return chart


def pearson_correlation(df: pd.DataFrame, x: str, y: str) -> tuple[float, int]:
    """Return Pearson's r between columns `x` and `y`, and the number of rows used.

    Rows where either value is missing or infinite are dropped. Raises ValueError when
    fewer than 3 rows remain or a column is constant, because r is then undefined or
    trivially +-1.
    """
    function = "pearson_correlation"
    _require_dataframe(df, function)
    _require_columns(df, [x, y], function)
    _require_numeric(df, x, function)
    _require_numeric(df, y, function)
    pairs = df[[x, y]].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
    if len(pairs) < 3:
        raise ValueError(f"{function}: need at least 3 rows with finite {x!r} and {y!r}, got {len(pairs)}.")
    for name in (x, y):
        if pairs[name].nunique() < 2:
            raise ValueError(f"{function}: column {name!r} is constant, so the correlation is undefined.")
    return float(pairs[x].corr(pairs[y], method="pearson")), len(pairs)


def scatter_with_fit(
    df: pd.DataFrame,
    *,
    x: str,
    y: str,
    color: str | None = None,
    label: str | None = None,
    title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    width: int = 320,
    height: int = 240,
) -> tuple[alt.LayerChart, float]:
    """Plot `y` against `x` with one least-squares line over all points.

    Returns `(chart, r)`, where r is Pearson's correlation from `pearson_correlation`,
    computed in pandas rather than in the browser. The chart subtitle also states r and n.
    `color` colours the points by group, but the fit line ignores the groups. `label`
    writes that column's text next to each point (e.g. the task name).
    """
    function = "scatter_with_fit"
    _require_dataframe(df, function)
    _require_columns(df, [x, y] + [name for name in (color, label) if name is not None], function)
    r, n = pearson_correlation(df, x, y)

    data = _plain_frame(df, [x, y, color, label])
    x_encoding = alt.X(field=x, type="quantitative", title=x_title or x, scale=alt.Scale(zero=False))
    y_encoding = alt.Y(field=y, type="quantitative", title=y_title or y, scale=alt.Scale(zero=False))
    tooltip = _tooltips(data, [label, color, x, y])
    point_encoding: dict[str, Any] = dict(x=x_encoding, y=y_encoding, tooltip=tooltip)
    if color is not None:
        point_encoding["color"] = alt.Color(field=color, type="nominal", sort=_category_order(df[color]))

    layers: list[Any] = [
        alt.Chart().mark_point(filled=True, size=60).encode(**point_encoding),
        alt.Chart()
        .transform_regression(x, y, method="linear")
        .mark_line(color="#444444", strokeDash=[6, 3])
        .encode(x=x_encoding, y=y_encoding),
    ]
    if label is not None:
        labels = alt.Chart().mark_text(align="left", dx=6, dy=-6, fontSize=10)
        layers.append(labels.encode(x=x_encoding, y=y_encoding, text=alt.Text(field=label)))
    subtitle = f"Pearson r = {r:.3f} (n = {n}); dashed line: least-squares fit"
    chart = alt.layer(*layers, data=data).properties(
        width=width, height=height, title=alt.TitleParams(text=title or f"{y} against {x}", subtitle=subtitle)
    )
    return chart, r


def spectrum_chart(
    df: pd.DataFrame,
    *,
    index: str = "index",
    value: str = "singular_value",
    color: str | None = None,
    edges: Mapping[str, float] | None = None,
    log_y: bool = True,
    title: str | None = None,
    x_title: str = "Index (0 = largest singular value)",
    y_title: str = "Singular value",
    width: int = 420,
    height: int = 240,
) -> alt.LayerChart:
    """Plot singular values against their index, one line per `color` group.

    `df` has one row per singular value: `index` (int, 0 = largest) and `value` (> 0 on
    the default log scale). `edges` maps a label to a value drawn as a horizontal dashed
    rule, e.g. `{"MP upper edge": 1.9, "MP lower edge": 0.1}` for Marchenko-Pastur edges.
    """
    function = "spectrum_chart"
    _require_dataframe(df, function)
    _require_columns(df, [index, value] + ([color] if color is not None else []), function)
    _require_numeric(df, index, function)
    _require_numeric(df, value, function)
    edges = dict(edges or {})
    for name, edge in edges.items():
        if not isinstance(edge, (int, float, np.number)) or not math.isfinite(float(edge)):
            raise ValueError(f"{function}: edge {name!r} must be a finite number, got {edge!r}.")
    if log_y:
        nonpositive = int((df[value] <= 0).sum())
        if nonpositive:
            raise ValueError(
                f"{function}: {nonpositive} values in {value!r} are <= 0 and cannot be shown on a log scale. "
                "Drop them first or pass log_y=False."
            )
        bad_edges = [name for name, edge in edges.items() if float(edge) <= 0]
        if bad_edges:
            raise ValueError(f"{function}: edges {bad_edges} are <= 0 and cannot be shown on a log scale.")

    data = _plain_frame(df, [index, value, color])
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    encoding: dict[str, Any] = dict(
        x=alt.X(field=index, type="quantitative", title=x_title),
        y=alt.Y(field=value, type="quantitative", title=y_title, scale=y_scale),
    )
    if color is not None:
        encoding["color"] = alt.Color(field=color, type="nominal", sort=_category_order(df[color]))
    tooltip = _tooltips(data, [color, index, value])
    layers: list[Any] = [
        alt.Chart(data).mark_line(strokeWidth=1.5).encode(**encoding),
        alt.Chart(data).mark_point(size=12, filled=True, opacity=0.5).encode(tooltip=tooltip, **encoding),
    ]
    if edges:
        edge_frame = pd.DataFrame(
            {"edge": list(edges), "edge_value": [float(edge) for edge in edges.values()]}
        )
        edge_y = alt.Y(field="edge_value", type="quantitative", scale=y_scale)
        edge_tooltip = [
            alt.Tooltip(field="edge", type="nominal"),
            alt.Tooltip(field="edge_value", type="quantitative", format=_TOOLTIP_NUMBER_FORMAT),
        ]
        layers.append(
            alt.Chart(edge_frame)
            .mark_rule(color=_EDGE_COLOR, strokeDash=[5, 4], strokeWidth=1.5)
            .encode(y=edge_y, tooltip=edge_tooltip)
        )
        # Label each rule at the right end of the plot, just above the line.
        layers.append(
            alt.Chart(edge_frame)
            .mark_text(align="right", dx=-4, dy=-6, fontSize=10, color=_EDGE_COLOR)
            .encode(y=edge_y, x=alt.value(width), text=alt.Text(field="edge"), tooltip=edge_tooltip)
        )
    chart = alt.layer(*layers).properties(width=width, height=height)
    if title is not None:
        chart = chart.properties(title=title)
    return chart


# ---------------------------------------------------------------------------------------
# Sphinx extension for the book
# ---------------------------------------------------------------------------------------

# The runner executes notebooks/<name>.ipynb into book/_generated/<name>.ipynb, which git
# ignores. Launch buttons must open the committed source notebook instead.
GENERATED_NOTEBOOK_DIR = "book/_generated/"
SOURCE_NOTEBOOK_DIR = "notebooks/"


def _add_vega_bundle(app: Any) -> None:
    if getattr(app.builder, "format", None) != "html":
        return
    write_vega_bundle(Path(app.outdir) / "_static" / VEGA_BUNDLE_FILENAME)
    # Deferred, it runs after the page is parsed, so it never delays the text.
    app.add_js_file(VEGA_BUNDLE_FILENAME, loading_method="defer")


def _point_launch_buttons_at_sources(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    if not pagename.startswith(GENERATED_NOTEBOOK_DIR):
        return
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if "url" in button:
                button["url"] = button["url"].replace(GENERATED_NOTEBOOK_DIR, SOURCE_NOTEBOOK_DIR)


def _drop_duplicate_inline_scripts(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    # Sphinx 7.4 registers an inline script (app.add_js_file(None, body=...)) added after
    # the builder started once with filename None and again with "", so it appears twice
    # on every page. sphinx-thebe's inline script declares a `const`, and the second copy
    # is a SyntaxError in the browser console.
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        filename = getattr(script, "filename", script) or ""
        attributes = getattr(script, "attributes", {})
        key = (filename, getattr(script, "priority", None), tuple(sorted(attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    if "script_files" in context:
        context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point for the book: local Vega bundle, launch links, script cleanup.

    The bundle goes to `<html output>/_static/svutils-vega.js` and is loaded on every
    page. Launch buttons (Colab, Binder) of pages under `book/_generated/` are pointed at
    `notebooks/`, where the source notebooks are committed. Inline scripts that Sphinx
    lists twice are listed once.
    """
    from svutils import __version__

    app.connect("builder-inited", _add_vega_bundle)
    # sphinx-book-theme adds the launch buttons at priority 501, so rewrite them after.
    app.connect("html-page-context", _point_launch_buttons_at_sources, priority=900)
    app.connect("html-page-context", _drop_duplicate_inline_scripts, priority=900)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
