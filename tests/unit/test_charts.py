"""Unit tests for svutils.charts: the offline renderer, the chart helpers and save_chart.

Specs are validated by Altair against the Vega-Lite schema (`to_dict`) and compiled to
Vega by vl-convert, the same engine that bundles the browser libraries.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import altair as alt
import numpy as np
import pandas as pd
import pytest
import vl_convert

from svutils import charts

URL_PATTERN = re.compile(r"(?:https?:)?//[^\s\"'<>)]+")


@pytest.fixture
def restore_renderer():
    active = alt.renderers.active
    yield
    alt.renderers.enable(active)


@pytest.fixture
def effects() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for task in ("rte", "imdb"):
        for matrix in ("attn", "ffn"):
            for band in range(10):
                change = float(rng.normal(0.0, 0.02))
                rows.append(
                    {
                        "task": task,
                        "matrix": matrix,
                        "band": band,
                        "change": change,
                        "ci_low": change - 0.01,
                        "ci_high": change + 0.01,
                        "collapsed": task == "rte" and band == 9,
                    }
                )
    return pd.DataFrame(rows)


def compiled(chart) -> dict:
    """Return the Vega spec of `chart`, which proves the Vega-Lite spec compiles."""
    return vl_convert.vegalite_to_vega(chart.to_dict())


def layer_marks(spec: dict) -> list[str]:
    inner = spec.get("spec", spec)
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in inner["layer"]]


# ---------------------------------------------------------------------------------------
# Offline renderer
# ---------------------------------------------------------------------------------------


def test_renderer_html_has_no_remote_url(effects) -> None:
    spec = charts.band_effect_chart(effects, color="matrix").to_dict()
    html = charts.offline_renderer(spec)["text/html"]
    urls = set(URL_PATTERN.findall(html))
    assert urls <= {spec["$schema"]}, urls - {spec["$schema"]}


def test_renderer_html_loads_no_script_file(effects) -> None:
    html = charts.offline_renderer(charts.band_effect_chart(effects).to_dict())["text/html"]
    assert "src=" not in html


def test_renderer_html_avoids_requirejs(effects) -> None:
    html = charts.offline_renderer(charts.band_effect_chart(effects).to_dict())["text/html"]
    assert "require" not in html


def test_renderer_html_calls_global_embed(effects) -> None:
    html = charts.offline_renderer(charts.band_effect_chart(effects).to_dict())["text/html"]
    assert "window.vegaEmbed(target, spec, embedOptions)" in html


def test_renderer_html_waits_for_bundle(effects) -> None:
    html = charts.offline_renderer(charts.band_effect_chart(effects).to_dict())["text/html"]
    assert f'addEventListener("{charts.VEGA_READY_EVENT}"' in html


def test_renderer_bundle_carries_spec(effects) -> None:
    spec = charts.band_effect_chart(effects).to_dict()
    bundle = charts.offline_renderer(spec)
    assert bundle["application/vnd.vegalite.v5+json"] == spec


def test_renderer_bundle_has_plain_text(effects) -> None:
    bundle = charts.offline_renderer(charts.band_effect_chart(effects).to_dict())
    assert bundle["text/plain"]


def test_renderer_spec_survives_html_round_trip(effects) -> None:
    spec = charts.band_effect_chart(effects, color="matrix").to_dict()
    html = charts.chart_html(spec)
    embedded = re.search(r"var spec = (.*);\n", html).group(1)
    assert json.loads(embedded.replace("<\\/", "</")) == spec


def test_renderer_escapes_script_end_tag() -> None:
    chart = alt.Chart(pd.DataFrame({"a": [1, 2]}), title="</script><script>alert(1)</script>").mark_point().encode(x="a")
    html = charts.chart_html(chart.to_dict())
    assert html.lower().count("</script") == 1


def test_chart_html_ids_are_unique(effects) -> None:
    spec = charts.band_effect_chart(effects).to_dict()
    first = re.search(r'id="([^"]+)"', charts.chart_html(spec)).group(1)
    second = re.search(r'id="([^"]+)"', charts.chart_html(spec)).group(1)
    assert first != second


def test_chart_html_rejects_non_dict() -> None:
    with pytest.raises(TypeError, match="to_dict"):
        charts.chart_html("not a spec")


def test_enable_offline_activates_renderer(restore_renderer) -> None:
    charts.enable_offline()
    assert alt.renderers.active == charts.RENDERER_NAME


def test_enabled_renderer_renders_charts(restore_renderer, effects) -> None:
    charts.enable_offline()
    bundle = charts.band_effect_chart(effects)._repr_mimebundle_()
    assert charts.CHART_CSS_CLASS in bundle["text/html"]


def test_enable_offline_passes_embed_options(restore_renderer, effects) -> None:
    charts.enable_offline({"renderer": "canvas"})
    bundle = charts.band_effect_chart(effects)._repr_mimebundle_()
    assert '"renderer": "canvas"' in bundle["text/html"]


def test_default_embed_options_hide_editor_link(effects) -> None:
    html = charts.chart_html(charts.band_effect_chart(effects).to_dict())
    assert '"editor": false' in html


# ---------------------------------------------------------------------------------------
# Vega bundle and save_chart
# ---------------------------------------------------------------------------------------


def test_vega_bundle_defines_globals() -> None:
    source = charts.vega_bundle_source()
    assert re.search(r"window\.vegaEmbed\s*=", source)
    assert charts.VEGA_READY_EVENT in source


def test_vega_bundle_has_no_import_statements() -> None:
    source = charts.vega_bundle_source()
    assert re.search(r"^\s*import\s", source, re.MULTILINE) is None


def test_vega_bundle_wraps_top_level_names() -> None:
    source = charts.vega_bundle_source()
    assert source.startswith("(function () {\n")
    assert source.endswith("\n})();\n")


def test_write_vega_bundle_writes_file(tmp_path) -> None:
    path = charts.write_vega_bundle(tmp_path / "static" / charts.VEGA_BUNDLE_FILENAME)
    assert path.read_text(encoding="utf-8") == charts.vega_bundle_source()


def test_write_vega_bundle_readable_by_all(tmp_path) -> None:
    path = charts.write_vega_bundle(tmp_path / charts.VEGA_BUNDLE_FILENAME)
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_vega_bundle_rejects_suffix(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"\.js"):
        charts.write_vega_bundle(tmp_path / "bundle.txt")


def test_save_chart_writes_both_files(tmp_path, effects) -> None:
    html_path, json_path = charts.save_chart(charts.band_effect_chart(effects), tmp_path / "figures" / "band_effect")
    assert html_path == tmp_path / "figures" / "band_effect.html"
    assert json_path == tmp_path / "figures" / "band_effect.vl.json"
    assert html_path.is_file()
    assert json_path.is_file()


def test_save_chart_json_is_spec(tmp_path, effects) -> None:
    chart = charts.band_effect_chart(effects)
    _, json_path = charts.save_chart(chart, tmp_path / "band_effect")
    assert json.loads(json_path.read_text(encoding="utf-8")) == chart.to_dict()


def test_save_chart_html_inlines_bundle(tmp_path, effects) -> None:
    html_path, _ = charts.save_chart(charts.band_effect_chart(effects, title="Band effects"), tmp_path / "band_effect")
    html = html_path.read_text(encoding="utf-8")
    assert re.search(r"window\.vegaEmbed\s*=", html)
    assert "<title>Band effects</title>" in html


def test_save_chart_html_loads_nothing_remote(tmp_path, effects) -> None:
    html_path, _ = charts.save_chart(charts.band_effect_chart(effects), tmp_path / "band_effect")
    html = html_path.read_text(encoding="utf-8")
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert re.search(r"<link[^>]*\bhref=\"(?:https?:)?//", html) is None


def test_save_chart_leaves_no_temporaries(tmp_path, effects) -> None:
    charts.save_chart(charts.band_effect_chart(effects), tmp_path / "band_effect")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["band_effect.html", "band_effect.vl.json"]


def test_save_chart_rejects_suffix(tmp_path, effects) -> None:
    with pytest.raises(ValueError, match="without a suffix"):
        charts.save_chart(charts.band_effect_chart(effects), tmp_path / "band_effect.html")


def test_save_chart_rejects_non_chart(tmp_path) -> None:
    with pytest.raises(TypeError, match="Altair"):
        charts.save_chart({"mark": "point"}, tmp_path / "chart")


# ---------------------------------------------------------------------------------------
# band_effect_chart
# ---------------------------------------------------------------------------------------


def test_band_chart_compiles(effects) -> None:
    assert compiled(charts.band_effect_chart(effects, color="matrix", column="task"))["marks"]


def test_band_chart_draws_interval_points_and_zero(effects) -> None:
    assert layer_marks(charts.band_effect_chart(effects).to_dict()) == ["rule", "rule", "point"]


def test_band_chart_without_interval_columns(effects) -> None:
    chart = charts.band_effect_chart(effects.drop(columns=["ci_low", "ci_high"]))
    assert layer_marks(chart.to_dict()) == ["rule", "point"]


def test_band_chart_without_collapse_column(effects) -> None:
    spec = charts.band_effect_chart(effects.drop(columns=["collapsed"])).to_dict()
    assert "shape" not in spec["layer"][-1]["encoding"]


def test_band_chart_marks_collapsed_cells(effects) -> None:
    spec = charts.band_effect_chart(effects).to_dict()
    shape = spec["layer"][-1]["encoding"]["shape"]
    assert shape["scale"]["range"] == ["circle", "cross"]
    assert shape["legend"]["title"] == "Model state"


def test_band_chart_collapsed_rows_labelled(effects) -> None:
    spec = charts.band_effect_chart(effects).to_dict()
    rows = next(iter(spec["datasets"].values()))
    states = {(row["band"], row["model_state"]) for row in rows if row["collapsed"]}
    assert states == {(9, "collapsed")}


def test_band_chart_missing_collapse_value(effects) -> None:
    frame = effects.astype({"collapsed": object})
    frame.loc[0, "collapsed"] = None
    rows = next(iter(charts.band_effect_chart(frame).to_dict()["datasets"].values()))
    assert rows[0]["model_state"] == "not collapsed"


def test_band_chart_axis_names_band_zero(effects) -> None:
    spec = charts.band_effect_chart(effects).to_dict()
    assert spec["layer"][-1]["encoding"]["x"]["title"] == "Band (0 = largest singular values)"


def test_band_chart_tooltip_lists_numbers(effects) -> None:
    spec = charts.band_effect_chart(effects, color="matrix").to_dict()
    fields = [item["field"] for item in spec["layer"][-1]["encoding"]["tooltip"]]
    assert fields == ["band", "change", "ci_low", "ci_high", "matrix", "collapsed"]


def test_band_chart_facets_by_column_and_row(effects) -> None:
    spec = charts.band_effect_chart(effects, column="task", row="matrix").to_dict()
    assert spec["facet"]["column"]["field"] == "task"
    assert spec["facet"]["row"]["field"] == "matrix"


def test_band_chart_keeps_text_order(effects) -> None:
    spec = charts.band_effect_chart(effects, column="task").to_dict()
    assert spec["facet"]["sort"] == ["rte", "imdb"]


def test_band_chart_wraps_column_facets(effects) -> None:
    spec = charts.band_effect_chart(effects, column="task", facet_columns=2).to_dict()
    assert spec["facet"]["field"] == "task"
    assert spec["columns"] == 2
    assert compiled(charts.band_effect_chart(effects, column="task"))["marks"]


def test_band_chart_invalid_facet_columns(effects) -> None:
    with pytest.raises(ValueError, match="facet_columns"):
        charts.band_effect_chart(effects, column="task", facet_columns=0)


def test_band_chart_sets_titles(effects) -> None:
    spec = charts.band_effect_chart(effects, title="Effect", y_title="Accuracy change").to_dict()
    assert spec["title"] == "Effect"
    assert spec["layer"][-1]["encoding"]["y"]["title"] == "Accuracy change"


def test_band_chart_missing_named_column(effects) -> None:
    with pytest.raises(KeyError, match="'lower'.*Available columns"):
        charts.band_effect_chart(effects, y_low="lower", y_high="ci_high")


def test_band_chart_missing_y(effects) -> None:
    with pytest.raises(charts.MissingColumnError, match="'accuracy'"):
        charts.band_effect_chart(effects, y="accuracy")


def test_band_chart_needs_both_bounds(effects) -> None:
    with pytest.raises(ValueError, match="both bounds"):
        charts.band_effect_chart(effects.drop(columns=["ci_high"]))


def test_band_chart_rejects_negative_band(effects) -> None:
    bad = effects.assign(band=effects["band"] - 1)
    with pytest.raises(ValueError, match="integers >= 0"):
        charts.band_effect_chart(bad)


def test_band_chart_rejects_float_band(effects) -> None:
    with pytest.raises(ValueError, match="integers"):
        charts.band_effect_chart(effects.assign(band=effects["band"] + 0.5))


def test_band_chart_rejects_dotted_column(effects) -> None:
    with pytest.raises(ValueError, match="nested field access"):
        charts.band_effect_chart(effects.rename(columns={"change": "acc.change"}), y="acc.change")


def test_band_chart_rejects_text_y(effects) -> None:
    with pytest.raises(TypeError, match="numeric"):
        charts.band_effect_chart(effects.assign(change="big"))


def test_band_chart_rejects_empty_frame(effects) -> None:
    with pytest.raises(ValueError, match="empty"):
        charts.band_effect_chart(effects.iloc[:0])


def test_band_chart_rejects_non_frame() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        charts.band_effect_chart({"band": [0], "change": [0.1]})


def test_band_chart_rejects_reserved_name(effects) -> None:
    with pytest.raises(ValueError, match="reserved"):
        charts.band_effect_chart(effects.assign(model_state="x"), color="model_state")


def test_band_chart_accepts_categorical_colour(effects) -> None:
    frame = effects.assign(matrix=pd.Categorical(effects["matrix"], categories=["ffn", "attn"]))
    spec = charts.band_effect_chart(frame, color="matrix").to_dict()
    assert spec["layer"][-1]["encoding"]["fill"]["sort"] == ["ffn", "attn"]


# ---------------------------------------------------------------------------------------
# heatmap
# ---------------------------------------------------------------------------------------


@pytest.fixture
def grid() -> pd.DataFrame:
    kinds = ["q", "k", "v", "o", "ffn_in", "ffn_out"]
    groups = ["early", "middle", "late"]
    rows = [
        {"kind": kind, "layers": group, "task": task, "change": 0.01 * i - 0.05}
        for task in ("rte", "qnli")
        for i, (kind, group) in enumerate((kind, group) for kind in kinds for group in groups)
    ]
    return pd.DataFrame(rows)


def test_heatmap_compiles(grid) -> None:
    assert compiled(charts.heatmap(grid, x="kind", y="layers", color="change", facet="task"))["marks"]


def test_heatmap_keeps_first_appearance_order(grid) -> None:
    spec = charts.heatmap(grid, x="kind", y="layers", color="change").to_dict()
    assert spec["layer"][0]["encoding"]["x"]["sort"] == ["q", "k", "v", "o", "ffn_in", "ffn_out"]
    assert spec["layer"][0]["encoding"]["y"]["sort"] == ["early", "middle", "late"]


def test_heatmap_centres_diverging_scale(grid) -> None:
    spec = charts.heatmap(grid, x="kind", y="layers", color="change").to_dict()
    assert spec["layer"][0]["encoding"]["color"]["scale"]["domainMid"] == 0


def test_heatmap_sequential_scale(grid) -> None:
    spec = charts.heatmap(grid, x="kind", y="layers", color="change", diverging=False).to_dict()
    assert spec["layer"][0]["encoding"]["color"]["scale"]["scheme"] == "viridis"


def test_heatmap_annotates_values(grid) -> None:
    spec = charts.heatmap(grid, x="kind", y="layers", color="change", annotate=True, value_format=".2f").to_dict()
    assert layer_marks(spec) == ["rect", "text"]
    assert spec["layer"][1]["encoding"]["text"]["format"] == ".2f"


def test_heatmap_facets_in_columns(grid) -> None:
    spec = charts.heatmap(grid, x="kind", y="layers", color="change", facet="task", facet_columns=2).to_dict()
    assert spec["facet"]["field"] == "task"
    assert spec["columns"] == 2


def test_heatmap_rejects_text_colour(grid) -> None:
    with pytest.raises(TypeError, match="numeric"):
        charts.heatmap(grid, x="kind", y="layers", color="task")


def test_heatmap_rejects_zero_columns(grid) -> None:
    with pytest.raises(ValueError, match="facet_columns"):
        charts.heatmap(grid, x="kind", y="layers", color="change", facet="task", facet_columns=0)


# ---------------------------------------------------------------------------------------
# scatter_with_fit and pearson_correlation
# ---------------------------------------------------------------------------------------


@pytest.fixture
def points() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    return pd.DataFrame({"x": x, "y": 2.0 * x + rng.normal(scale=0.5, size=40), "task": ["a", "b"] * 20})


def test_pearson_matches_numpy(points) -> None:
    r, n = charts.pearson_correlation(points, "x", "y")
    assert r == pytest.approx(np.corrcoef(points["x"], points["y"])[0, 1], abs=1e-12)
    assert n == 40


def test_pearson_drops_missing_rows(points) -> None:
    frame = points.copy()
    frame.loc[0, "x"] = np.nan
    frame.loc[1, "y"] = np.inf
    r, n = charts.pearson_correlation(frame, "x", "y")
    assert n == 38
    assert r == pytest.approx(np.corrcoef(points["x"][2:], points["y"][2:])[0, 1], abs=1e-12)


def test_pearson_of_known_values() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 3.0, 2.0]})
    assert charts.pearson_correlation(frame, "x", "y")[0] == pytest.approx(0.5)


def test_pearson_needs_three_rows() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        charts.pearson_correlation(pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]}), "x", "y")


def test_pearson_rejects_constant_column() -> None:
    with pytest.raises(ValueError, match="constant"):
        charts.pearson_correlation(pd.DataFrame({"x": [1.0, 1.0, 1.0], "y": [3.0, 4.0, 5.0]}), "x", "y")


def test_scatter_returns_correlation(points) -> None:
    _, r = charts.scatter_with_fit(points, x="x", y="y")
    assert r == pytest.approx(np.corrcoef(points["x"], points["y"])[0, 1], abs=1e-12)


def test_scatter_subtitle_states_correlation(points) -> None:
    chart, r = charts.scatter_with_fit(points, x="x", y="y")
    assert f"Pearson r = {r:.3f} (n = 40)" in chart.to_dict()["title"]["subtitle"]


def test_scatter_draws_least_squares_line(points) -> None:
    spec = charts.scatter_with_fit(points, x="x", y="y", color="task")[0].to_dict()
    regression = spec["layer"][1]["transform"][0]
    assert regression == {"regression": "y", "on": "x", "method": "linear"}


def test_scatter_line_ignores_colour(points) -> None:
    spec = charts.scatter_with_fit(points, x="x", y="y", color="task")[0].to_dict()
    assert "color" not in spec["layer"][1]["encoding"]


def test_scatter_labels_points(points) -> None:
    spec = charts.scatter_with_fit(points, x="x", y="y", label="task")[0].to_dict()
    assert layer_marks(spec) == ["point", "line", "text"]


def test_scatter_compiles(points) -> None:
    assert compiled(charts.scatter_with_fit(points, x="x", y="y", color="task", label="task")[0])["marks"]


# ---------------------------------------------------------------------------------------
# spectrum_chart
# ---------------------------------------------------------------------------------------


@pytest.fixture
def spectrum() -> pd.DataFrame:
    values = np.linspace(3.0, 0.05, 64)
    frames = [
        pd.DataFrame({"index": np.arange(64), "singular_value": values * scale, "checkpoint": name})
        for name, scale in (("pretrained", 1.0), ("fine-tuned", 1.1))
    ]
    return pd.concat(frames)


def test_spectrum_uses_log_scale(spectrum) -> None:
    spec = charts.spectrum_chart(spectrum, color="checkpoint").to_dict()
    assert spec["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"


def test_spectrum_draws_edges(spectrum) -> None:
    spec = charts.spectrum_chart(spectrum, edges={"MP upper edge": 2.5, "MP lower edge": 0.1}).to_dict()
    assert layer_marks(spec) == ["line", "point", "rule", "text"]
    edge_rows = spec["datasets"][spec["layer"][2]["data"]["name"]]
    assert edge_rows == [{"edge": "MP upper edge", "edge_value": 2.5}, {"edge": "MP lower edge", "edge_value": 0.1}]


def test_spectrum_without_edges(spectrum) -> None:
    assert layer_marks(charts.spectrum_chart(spectrum).to_dict()) == ["line", "point"]


def test_spectrum_compiles(spectrum) -> None:
    assert compiled(charts.spectrum_chart(spectrum, color="checkpoint", edges={"edge": 1.0}))["marks"]


def test_spectrum_rejects_zero_on_log_scale(spectrum) -> None:
    with pytest.raises(ValueError, match="log scale"):
        charts.spectrum_chart(spectrum.assign(singular_value=0.0))


def test_spectrum_allows_zero_on_linear_scale(spectrum) -> None:
    spec = charts.spectrum_chart(spectrum.assign(singular_value=0.0), log_y=False).to_dict()
    assert spec["layer"][0]["encoding"]["y"]["scale"] == {"zero": False}


def test_spectrum_rejects_infinite_edge(spectrum) -> None:
    with pytest.raises(ValueError, match="finite"):
        charts.spectrum_chart(spectrum, edges={"upper": float("inf")})


def test_spectrum_rejects_negative_edge(spectrum) -> None:
    with pytest.raises(ValueError, match="edges"):
        charts.spectrum_chart(spectrum, edges={"lower": -1.0})


# ---------------------------------------------------------------------------------------
# Sphinx hooks
# ---------------------------------------------------------------------------------------


def launch_context(url: str) -> dict:
    return {"header_buttons": [{"label": "launch-buttons", "buttons": [{"type": "link", "url": url}]}]}


def test_launch_links_point_at_sources() -> None:
    context = launch_context("https://colab.research.google.com/github/o/r/blob/main/book/_generated/why.ipynb")
    charts._point_launch_buttons_at_sources(None, "book/_generated/why", "page.html", context, None)
    assert context["header_buttons"][0]["buttons"][0]["url"].endswith("/blob/main/notebooks/why.ipynb")


def test_launch_links_of_other_pages_unchanged() -> None:
    url = "https://colab.research.google.com/github/o/r/blob/main/book/method.ipynb"
    context = launch_context(url)
    charts._point_launch_buttons_at_sources(None, "book/method", "page.html", context, None)
    assert context["header_buttons"][0]["buttons"][0]["url"] == url


def test_duplicate_inline_scripts_dropped() -> None:
    def script(filename, body):
        return SimpleNamespace(filename=filename, priority=500, attributes={"body": body})

    context = {"script_files": [script(None, "const A = 1"), script("x.js", ""), script("", "const A = 1"), script("", "let B")]}
    charts._drop_duplicate_inline_scripts(None, "page", "page.html", context, None)
    assert [item.attributes["body"] for item in context["script_files"]] == ["const A = 1", "", "let B"]
