"""Unit tests for the SVD primer tables on random matrices and a tiny random BERT."""

import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from svutils import primer
from svutils.models import load_model, weight_matrices
from svutils.svd import band_bounds, exact_svd, remove_bands

SHAPES = [(48, 20), (20, 48), (30, 30)]


def _random_svd(shape, seed=0):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return weight, exact_svd(weight)


@pytest.fixture(scope="module")
def tiny_model():
    model, _ = load_model("tiny-bert", 2, seed=0)
    return model


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("convention", ["balanced", "floor"])
def test_band_table_energy_sums_to_one(shape, convention):
    _, svd = _random_svd(shape)
    table = primer.band_table(svd, 6, convention)
    assert table["energy_fraction"].sum() == pytest.approx(1.0, abs=1e-12)
    assert table["cumulative_energy_fraction"].iloc[-1] == pytest.approx(1.0, abs=1e-12)
    assert table["cumulative_energy_fraction"].is_monotonic_increasing


@pytest.mark.parametrize("shape", SHAPES)
def test_band_table_error_squared_is_energy(shape):
    _, svd = _random_svd(shape, seed=1)
    table = primer.band_table(svd, 5)
    squared = table["relative_error"] ** 2
    assert squared.tolist() == pytest.approx(table["energy_fraction"].tolist(), rel=1e-5)


def test_band_table_bottom_band_is_optimal():
    _, svd = _random_svd((40, 25), seed=2)
    table = primer.band_table(svd, 5)
    bottom = table.iloc[-1]
    assert bottom["relative_error"] == pytest.approx(bottom["optimal_error"], rel=1e-6)
    assert (table["relative_error"] >= table["optimal_error"] * (1 - 1e-6)).all()
    assert table["relative_error"].is_monotonic_decreasing


def test_band_table_ranges_match_band_bounds():
    _, svd = _random_svd((40, 23), seed=3)
    table = primer.band_table(svd, 4, "floor")
    bounds = band_bounds(23, 4, "floor")
    assert list(zip(table["start"], table["stop"])) == bounds
    assert table["size"].tolist() == [stop - start for start, stop in bounds]
    assert table["band"].tolist() == [0, 1, 2, 3]


def test_band_table_singular_values_per_band():
    _, svd = _random_svd((40, 23), seed=4)
    table = primer.band_table(svd, 4)
    values = svd.S.double()
    for row in table.itertuples():
        assert row.top_singular_value == pytest.approx(float(values[row.start]))
        assert row.bottom_singular_value == pytest.approx(float(values[row.stop - 1]))
    assert (table["top_singular_value"] >= table["bottom_singular_value"]).all()


def test_band_table_rejects_unknown_convention():
    _, svd = _random_svd((10, 10))
    with pytest.raises(ValueError, match="balanced"):
        primer.band_table(svd, 3, "ceil")


def test_band_table_rejects_too_many_bands():
    _, svd = _random_svd((10, 6))
    with pytest.raises(ValueError, match="n_bands=7"):
        primer.band_table(svd, 7)


def test_band_table_rejects_zero_matrix():
    svd = exact_svd(torch.zeros(6, 4))
    with pytest.raises(ValueError, match="all zeros"):
        primer.band_table(svd, 2)


def test_reconstruction_error_is_round_off():
    weight, svd = _random_svd((64, 32), seed=5)
    error = primer.reconstruction_error(weight, svd)
    assert 0.0 <= error < 1e-5


def test_reconstruction_error_detects_wrong_svd():
    weight, _ = _random_svd((16, 8), seed=6)
    _, other = _random_svd((16, 8), seed=7)
    assert primer.reconstruction_error(weight, other) > 0.5


def test_spectrum_frame_labels_bands():
    values = torch.linspace(10.0, 1.0, 23)
    frame = primer.spectrum_frame(values, 4, "floor")
    sizes = frame.groupby("band").size().tolist()
    assert sizes == [5, 5, 5, 8]
    assert frame["index"].tolist() == list(range(23))
    assert frame["singular_value"].iloc[0] == pytest.approx(10.0)


def test_spectrum_frame_rejects_matrix():
    with pytest.raises(ValueError, match="1-D"):
        primer.spectrum_frame(torch.ones(3, 3), 2)


def test_convention_table_sizes_sum_to_rank():
    table = primer.convention_table(384, 10)
    totals = table.groupby("convention")["size"].sum()
    assert totals["balanced"] == 384
    assert totals["floor"] == 384
    assert sorted(table["convention"].unique()) == ["balanced", "floor"]


def test_convention_table_sizes_per_rule():
    table = primer.convention_table(384, 10)
    balanced = table[table["convention"] == "balanced"]["size"].tolist()
    floor = table[table["convention"] == "floor"]["size"].tolist()
    assert balanced == [39] * 4 + [38] * 6
    assert floor == [38] * 9 + [42]


def test_select_matrix_returns_kind_and_layer(tiny_model):
    ref = primer.select_matrix(tiny_model, "ffn_in", 2)
    assert ref.kind == "ffn_in"
    assert ref.layer == 2
    assert ref.shape == (128, 64)


@pytest.mark.parametrize("kind", ["ffn", "attn", "all"])
def test_select_matrix_rejects_alias(tiny_model, kind):
    with pytest.raises(ValueError, match="single kind"):
        primer.select_matrix(tiny_model, kind, 0)


def test_select_matrix_rejects_unknown_kind(tiny_model):
    with pytest.raises(ValueError, match="ffn_in"):
        primer.select_matrix(tiny_model, "query", 0)


@pytest.mark.parametrize("layer", [6, -1])
def test_select_matrix_rejects_layer_outside(tiny_model, layer):
    with pytest.raises(ValueError, match="0..5"):
        primer.select_matrix(tiny_model, "q", layer)


@pytest.mark.parametrize("layer", [True, "0", 1.0])
def test_select_matrix_rejects_non_int_layer(tiny_model, layer):
    with pytest.raises(TypeError, match="invalid layer"):
        primer.select_matrix(tiny_model, "q", layer)


def test_removal_effects_rank_drops_by_size(tiny_model):
    ref = primer.select_matrix(tiny_model, "ffn_in", 0)
    summary, _ = primer.removal_effects(tiny_model, ref, [0, 3], 4)
    assert summary["state"].tolist() == ["original", "band 0 removed", "band 3 removed"]
    assert summary["rank"].tolist() == summary["expected_rank"].tolist()
    assert summary["rank"].tolist() == [64, 48, 48]


def test_removal_effects_error_matches_band_table(tiny_model):
    ref = primer.select_matrix(tiny_model, "ffn_in", 0)
    table = primer.band_table(exact_svd(ref.weight), 4, "floor")
    summary, _ = primer.removal_effects(tiny_model, ref, [0, 1, 2, 3], 4, "floor")
    removed = summary[summary["band"] >= 0]
    assert removed["relative_error"].tolist() == pytest.approx(table["relative_error"].tolist(), rel=1e-4)
    assert removed["energy_removed_fraction"].tolist() == pytest.approx(table["energy_fraction"].tolist(), rel=1e-5)


def test_removal_effects_norm_follows_energy(tiny_model):
    ref = primer.select_matrix(tiny_model, "v", 1)
    summary, _ = primer.removal_effects(tiny_model, ref, [1], 4)
    original, removed = summary.iloc[0], summary.iloc[1]
    expected = original["frobenius_norm"] * math.sqrt(1 - removed["energy_removed_fraction"])
    assert removed["frobenius_norm"] == pytest.approx(expected, rel=1e-5)


def test_removal_effects_keeps_other_values(tiny_model):
    ref = primer.select_matrix(tiny_model, "ffn_in", 0)
    svd = exact_svd(ref.weight)
    start, stop = band_bounds(svd.rank, 4)[3]
    _, spectra = primer.removal_effects(tiny_model, ref, [3], 4)
    after = spectra[spectra["band"] == 3]["singular_value"].to_numpy()
    assert after[:start].tolist() == pytest.approx(svd.S[:start].double().tolist(), rel=1e-4)
    assert after[start:stop].max() < 1e-5 * float(svd.S[0])


def test_removal_effects_restores_weight(tiny_model):
    ref = primer.select_matrix(tiny_model, "ffn_out", 5)
    before = ref.weight.detach().clone()
    primer.removal_effects(tiny_model, ref, [0, 1], 2)
    assert torch.equal(ref.weight.detach(), before)


def test_removal_effects_rejects_band_outside(tiny_model):
    ref = primer.select_matrix(tiny_model, "q", 0)
    with pytest.raises(ValueError, match="outside 0..3"):
        primer.removal_effects(tiny_model, ref, [4], 4)


def test_edits_table_matches_summary(tiny_model):
    with remove_bands(tiny_model, [2, 3], kinds="ffn", layers="all", n_bands=4) as summary:
        table = primer.edits_table(summary)
    assert len(table) == 12
    assert sorted(table["kind"].unique()) == ["ffn_in", "ffn_out"]
    total = table["energy_removed"].sum() / table["energy_total"].sum()
    assert total == pytest.approx(summary.energy_fraction)
    assert (table["n_removed"] == 32).all()


def test_edits_table_fraction_per_matrix(tiny_model):
    refs = weight_matrices(tiny_model, "k", 3)
    table_from_svd = primer.band_table(exact_svd(refs[0].weight), 4)
    with remove_bands(tiny_model, 3, matrices=refs, n_bands=4) as summary:
        table = primer.edits_table(summary)
    assert table["energy_fraction"].iloc[0] == pytest.approx(table_from_svd["energy_fraction"].iloc[3], rel=1e-5)


def test_band_spectrum_chart_shades_even_bands():
    _, svd = _random_svd((30, 12), seed=8)
    chart = primer.band_spectrum_chart(primer.spectrum_frame(svd.S, 4), primer.band_table(svd, 4), title="spectrum")
    spec = chart.to_dict()
    shaded = spec["datasets"][spec["layer"][0]["data"]["name"]]
    assert spec["layer"][0]["mark"]["type"] == "rect"
    assert [row["band"] for row in shaded] == [0, 2]
    assert spec["title"] == "spectrum"


def test_band_spectrum_chart_drops_zero_values():
    values = torch.tensor([3.0, 2.0, 1.0, 0.0])
    spectrum = primer.spectrum_frame(values, 2)
    bands = pd.DataFrame({"band": [0, 1], "start": [0, 2], "stop": [2, 4]})
    spec = primer.band_spectrum_chart(spectrum, bands).to_dict()
    plotted = spec["datasets"][spec["layer"][2]["data"]["name"]]
    assert [row["singular_value"] for row in plotted] == [3.0, 2.0, 1.0]


def test_band_spectrum_chart_rejects_bands_without_ranges():
    spectrum = primer.spectrum_frame(torch.tensor([2.0, 1.0]), 2)
    with pytest.raises(KeyError, match="band_table"):
        primer.band_spectrum_chart(spectrum, pd.DataFrame({"band": [0, 1]}))


def test_write_table_round_trip(tmp_path):
    frame = pd.DataFrame({"band": [0, 1], "energy_fraction": [0.75, 0.25]})
    path = primer.write_table(frame, tmp_path / "nested" / "bands.csv")
    assert path.exists()
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)


def test_write_table_rejects_other_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv"):
        primer.write_table(pd.DataFrame({"a": [1]}), tmp_path / "bands.parquet")


NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "svd_primer.ipynb"
NOTEBOOK_PARAMETERS = {
    "profile": "quick",
    "model": None,
    "layer": 0,
    "kind": "ffn_in",
    "n_bands": None,
    "band_convention": None,
    "output_dir": None,
    "overrides": {},
}


def _notebook_cells(tag):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]


def test_notebook_parameters_cell_defaults():
    cells = _notebook_cells("parameters")
    assert len(cells) == 1
    values = {}
    exec(cells[0].source, {}, values)
    assert values == NOTEBOOK_PARAMETERS


def test_notebook_parameters_have_comments():
    source = _notebook_cells("parameters")[0].source
    for name in NOTEBOOK_PARAMETERS:
        line = next(line for line in source.splitlines() if line.startswith(f"{name} ="))
        assert "#" in line, name


def test_notebook_solution_is_hidden():
    hidden = _notebook_cells("hide-input")
    assert len(hidden) == 1
    assert "remove_bands" in hidden[0].source
    assert "hide-output" in hidden[0].metadata["tags"]


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] for cell in code_cells)
    assert all(cell.execution_count is None for cell in code_cells)
