"""Tables behind the SVD primer notebook: band energies, removal effects and conventions.

The table functions take one weight matrix W (shape [m, n], as stored by `nn.Linear`)
or its thin SVD from `svutils.svd.exact_svd`, and return tidy pandas DataFrames, which
`band_spectrum_chart` plots and `write_table` saves as CSV. Norms are Frobenius norms, and
the spectral energy of a set of singular values is Σ s². Removing band b means
W_{−b} = W − U_b diag(S_b) V_bᵀ, exactly as `svutils.svd.remove_bands` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import altair as alt
import pandas as pd
import torch
from torch import nn

from svutils.charts import spectrum_chart
from svutils.io import atomic_write_text
from svutils.models import KIND_ALIASES, KINDS, MatrixRef, num_layers, resolve_layers, weight_matrices
from svutils.svd import CONVENTIONS, MatrixSVD, RemovalSummary, band_bounds, remove_bands


def select_matrix(model: nn.Module, kind: str, layer: int) -> MatrixRef:
    """Return the one weight matrix of `kind` in encoder layer `layer`.

    `kind` must be a single kind from `svutils.models.KINDS`. The aliases "attn", "ffn"
    and "all" name several matrices, so they raise ValueError. `layer` must be an int in
    0..n_layers-1 and is checked by `svutils.models.resolve_layers`.
    """
    if not isinstance(kind, str):
        raise TypeError(f"invalid kind {kind!r} of type {type(kind).__name__}: expected a str, one of {list(KINDS)}")
    if kind in KIND_ALIASES:
        raise ValueError(
            f"kind {kind!r} is a group of {list(KIND_ALIASES[kind])}; the primer studies one matrix, "
            f"so choose a single kind from {list(KINDS)}"
        )
    if kind not in KINDS:
        raise ValueError(f"unknown matrix kind {kind!r}; choose one of {list(KINDS)}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"invalid layer {layer!r} of type {type(layer).__name__}: expected an int such as 0")
    resolve_layers(layer, num_layers(model))
    return weight_matrices(model, kind, layer)[0]


def reconstruction_error(weight: torch.Tensor, svd: MatrixSVD) -> float:
    """Return the relative Frobenius error ‖W − U diag(S) Vh‖ / ‖W‖ of an SVD of W.

    For an exact float32 SVD this is round-off: about 1e-6 on the MiniLM and tiny-bert
    matrices.
    """
    original = weight.detach().to(torch.float64)
    rebuilt = (svd.U.double() * svd.S.double()) @ svd.Vh.double()
    return float(torch.linalg.matrix_norm(original - rebuilt) / torch.linalg.matrix_norm(original))


def band_table(svd: MatrixSVD, n_bands: int, convention: str = "balanced") -> pd.DataFrame:
    """Tabulate each band of one matrix: its range, energy and the error its removal causes.

    One row per band (band 0 contains the largest singular values) with columns:
    `band`, `start`, `stop` (the half-open index range [start, stop)), `size`,
    `top_singular_value` and `bottom_singular_value` (the band's largest and smallest),
    `energy_fraction` (Σ_b s² / Σ s²), `cumulative_energy_fraction` (bands 0..b),
    `relative_error` (‖W − W_{−b}‖ / ‖W‖, measured on the rebuilt matrices), and
    `optimal_error`, the smallest relative error of any matrix of rank k − size
    (Eckart–Young: the energy of the `size` smallest singular values).

    Because U and V are orthonormal, relative_error² equals energy_fraction, and the
    bottom band's relative_error equals its optimal_error. Computed in float64.
    """
    bounds = band_bounds(svd.rank, n_bands, convention)
    U, S, Vh = svd.U.double(), svd.S.double(), svd.Vh.double()
    energy = S**2
    total_energy = float(energy.sum())
    if total_energy == 0.0:
        raise ValueError("the matrix is all zeros, so its energy fractions are undefined; pass a trained or initialised matrix")
    matrix_norm = float(torch.linalg.matrix_norm((U * S) @ Vh))
    ascending_energy = torch.cumsum(energy.flip(0), dim=0)

    rows = []
    cumulative = 0.0
    for band, (start, stop) in enumerate(bounds):
        component = (U[:, start:stop] * S[start:stop]) @ Vh[start:stop]
        band_energy = float(energy[start:stop].sum())
        cumulative += band_energy
        size = stop - start
        rows.append(
            {
                "band": band,
                "start": start,
                "stop": stop,
                "size": size,
                "top_singular_value": float(S[start]),
                "bottom_singular_value": float(S[stop - 1]),
                "energy_fraction": band_energy / total_energy,
                "cumulative_energy_fraction": cumulative / total_energy,
                "relative_error": float(torch.linalg.matrix_norm(component)) / matrix_norm,
                "optimal_error": math.sqrt(float(ascending_energy[size - 1]) / total_energy),
            }
        )
    return pd.DataFrame(rows)


def spectrum_frame(singular_values: torch.Tensor, n_bands: int, convention: str = "balanced") -> pd.DataFrame:
    """Return a DataFrame with one row per singular value: `index` (0 = largest), `singular_value`, `band`."""
    values = singular_values.detach().double().cpu()
    if values.dim() != 1:
        raise ValueError(f"expected a 1-D tensor of singular values, got shape {tuple(values.shape)}")
    bands = torch.empty(len(values), dtype=torch.long)
    for band, (start, stop) in enumerate(band_bounds(len(values), n_bands, convention)):
        bands[start:stop] = band
    return pd.DataFrame({"index": range(len(values)), "singular_value": values.numpy(), "band": bands.numpy()})


def _describe(weight: torch.Tensor) -> tuple[int, float, torch.Tensor]:
    matrix = weight.detach().to(torch.float32)
    return int(torch.linalg.matrix_rank(matrix)), float(torch.linalg.matrix_norm(matrix.double())), torch.linalg.svdvals(matrix)


def removal_effects(
    model: nn.Module,
    matrix: MatrixRef,
    bands: Iterable[int],
    n_bands: int,
    convention: str = "balanced",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Remove each of `bands` in turn from one matrix with `remove_bands` and measure W_{−b}.

    Returns two DataFrames. The summary has one row for the original matrix (`band` is
    -1) and one per band, with columns `state`, `band`, `size`, `rank`, `expected_rank`
    (rank before minus the band's size), `frobenius_norm`, `relative_error`
    (‖W − W_{−b}‖ / ‖W‖) and `energy_removed_fraction` (as reported by `remove_bands`).
    The spectra table has the columns `state`, `band`, `index` and `singular_value`, from a
    fresh SVD of each edited matrix. Removed values come back as float32 round-off, not 0.

    `rank` is `torch.linalg.matrix_rank` in float32 with its default tolerance
    (σ_max · max(m, n) · eps). The weight is restored bit for bit after each band.
    """
    original = matrix.weight.detach().to(torch.float32).clone()
    rank, norm, values = _describe(original)
    states = [("original", -1, 0, rank, rank, norm, 0.0, 0.0, values)]
    for band in bands:
        with remove_bands(model, band, n_bands=n_bands, convention=convention, matrices=[matrix]) as summary:
            edited = matrix.weight.detach().to(torch.float32).clone()
        edit = summary.edits[0]
        edited_rank, edited_norm, edited_values = _describe(edited)
        error = float(torch.linalg.matrix_norm((original - edited).double())) / norm
        states.append(
            (f"band {band} removed", band, edit.n_removed, edited_rank, rank - edit.n_removed, edited_norm, error,
             edit.energy_removed / edit.energy_total, edited_values)
        )

    columns = ["state", "band", "size", "rank", "expected_rank", "frobenius_norm", "relative_error", "energy_removed_fraction"]
    summary_table = pd.DataFrame([state[:-1] for state in states], columns=columns)
    spectra = [
        pd.DataFrame({"state": state[0], "band": state[1], "index": range(len(state[-1])), "singular_value": state[-1].double().numpy()})
        for state in states
    ]
    return summary_table, pd.concat(spectra, ignore_index=True)


def convention_table(rank: int, n_bands: int, conventions: Sequence[str] = CONVENTIONS) -> pd.DataFrame:
    """Return the band ranges of every convention for `rank` singular values.

    Long format: one row per convention and band with `convention`, `band`, `start`,
    `stop` and `size`. See `svutils.svd.band_bounds` for the rules.
    """
    rows = []
    for convention in conventions:
        for band, (start, stop) in enumerate(band_bounds(rank, n_bands, convention)):
            rows.append({"convention": convention, "band": band, "start": start, "stop": stop, "size": stop - start})
    return pd.DataFrame(rows)


def edits_table(summary: RemovalSummary) -> pd.DataFrame:
    """Tabulate the matrices edited by a `remove_bands` call and the energy removed from each.

    Columns: `path`, `kind`, `layer`, `rows`, `columns`, `n_removed`, `energy_removed`,
    `energy_total`, `energy_fraction` (energy_removed / energy_total) and
    `perturbation_norm` (‖P‖ for the subtracted matrix P).
    """
    rows = [
        {
            "path": edit.path,
            "kind": edit.kind,
            "layer": edit.layer,
            "rows": edit.shape[0],
            "columns": edit.shape[1],
            "n_removed": edit.n_removed,
            "energy_removed": edit.energy_removed,
            "energy_total": edit.energy_total,
            "energy_fraction": edit.energy_removed / edit.energy_total if edit.energy_total > 0 else 0.0,
            "perturbation_norm": edit.perturbation_norm,
        }
        for edit in summary.edits
    ]
    return pd.DataFrame(rows)


def band_spectrum_chart(
    spectrum: pd.DataFrame,
    bands: pd.DataFrame,
    *,
    color: str | None = None,
    title: str | None = None,
    width: int = 480,
    height: int = 260,
) -> alt.LayerChart:
    """Plot singular values on a log scale with every other band shaded and each band numbered.

    `spectrum` has one row per value with `index` (0 = largest) and `singular_value`, plus
    the `color` column if given (as returned by `spectrum_frame` or `removal_effects`).
    `bands` has `band`, `start` and `stop` (as returned by `band_table`). Values <= 0 are
    dropped, because a log scale cannot show them.
    """
    missing = [column for column in ("band", "start", "stop") if column not in bands.columns]
    if missing:
        raise KeyError(f"bands table is missing columns {missing}; pass the output of primer.band_table")
    values = spectrum[spectrum["singular_value"] > 0]
    base = spectrum_chart(values, color=color, width=width, height=height)

    shading = bands[["band", "start", "stop"]].copy()
    shading["left"] = shading["start"] - 0.5
    shading["right"] = shading["stop"] - 0.5
    shading["middle"] = (shading["start"] + shading["stop"] - 1) / 2
    x_title = "Index (0 = largest singular value)"
    x_scale = alt.Scale(domain=[-0.5, float(shading["right"].max())], nice=False, zero=False)
    rectangles = (
        alt.Chart(shading[shading["band"] % 2 == 0])
        .mark_rect(color="#999999", opacity=0.15)
        .encode(x=alt.X("left:Q", title=x_title, scale=x_scale), x2="right:Q", tooltip=["band:O", "start:Q", "stop:Q"])
    )
    labels = (
        alt.Chart(shading)
        .mark_text(fontSize=10, color="#555555", baseline="top")
        .encode(x=alt.X("middle:Q", title=x_title), y=alt.value(4), text="band:O")
    )
    # spectrum_chart's layers share data stored on the layer chart itself, so nest the whole
    # chart instead of reusing its sub-layers, which would lose that data.
    chart = alt.layer(rectangles, labels, base).properties(width=width, height=height)
    if title is not None:
        chart = chart.properties(title=title)
    return chart


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` as CSV (no index) to `path` atomically and return the path."""
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"table path {str(path)!r} must end in .csv")
    return atomic_write_text(path, frame.to_csv(index=False))
