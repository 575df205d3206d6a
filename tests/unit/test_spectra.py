"""Unit tests of svutils.spectra on Gaussian matrices and constructed updates."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate

from svutils.spectra import (
    band_rotation,
    marchenko_pastur_fit,
    mp_cdf,
    mp_density,
    mp_edges,
    mp_quantile,
    mp_singular_value_density,
    principal_angles,
    revert_band_update,
    subspace_overlap,
    update_share,
)

SIGMA = 0.02
SHAPES = [(400, 1000), (768, 768), (1000, 300)]


@functools.lru_cache(maxsize=None)
def _gaussian_singular_values(shape: tuple[int, int], seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).normal(0.0, SIGMA, size=shape)
    values = np.linalg.svd(matrix, compute_uv=False)
    values.flags.writeable = False
    return values


def _spiked_singular_values(shape: tuple[int, int], strengths: np.ndarray, seed: int) -> np.ndarray:
    """Singular values of Gaussian noise plus a rank-len(strengths) spike, in units of the bulk edge."""
    rng = np.random.default_rng(seed)
    rows, columns = shape
    rank = strengths.size
    left = np.linalg.qr(rng.normal(size=(rows, rank)))[0]
    right = np.linalg.qr(rng.normal(size=(columns, rank)))[0]
    edge = mp_edges(shape, SIGMA)[1]
    matrix = rng.normal(0.0, SIGMA, size=shape) + (left * strengths * edge) @ right.T
    return np.linalg.svd(matrix, compute_uv=False)


def _svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.linalg.svd(matrix, full_matrices=False)


# Marchenko–Pastur law.


def test_mp_density_integrates_to_one():
    for aspect_ratio in (0.05, 0.3, 0.75, 1.0):
        lower, upper = 0.0, (1 + math.sqrt(aspect_ratio)) ** 2
        if aspect_ratio < 1:
            lower = (1 - math.sqrt(aspect_ratio)) ** 2
        total, _ = integrate.quad(lambda x: float(mp_density(x, aspect_ratio)), lower, upper, limit=200)
        assert total == pytest.approx(1.0, abs=1e-6), aspect_ratio


def test_mp_density_zero_outside_edges():
    density = mp_density(np.array([0.01, 5.0]), 0.25)
    assert density.tolist() == [0.0, 0.0]


def test_mp_singular_value_density_integrates_to_one():
    shape = (300, 1200)
    lower, upper = mp_edges(shape, SIGMA)
    total, _ = integrate.quad(lambda s: float(mp_singular_value_density(s, shape, SIGMA)), lower, upper, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_mp_singular_value_density_square_quarter_circle():
    shape = (384, 384)
    lower, upper = mp_edges(shape, SIGMA)
    total, _ = integrate.quad(lambda s: float(mp_singular_value_density(s, shape, SIGMA)), lower, upper, limit=200)
    at_zero = mp_singular_value_density(np.array([0.0, 1e-9]), shape, SIGMA)
    assert total == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(at_zero, 2 / (math.pi * SIGMA * math.sqrt(384)), rtol=1e-6)


def test_mp_quantile_inverts_cdf():
    probabilities = np.linspace(0.01, 0.99, 25)
    for aspect_ratio in (0.25, 1.0):
        quantiles = mp_quantile(probabilities, aspect_ratio, sigma=0.5)
        np.testing.assert_allclose(mp_cdf(quantiles, aspect_ratio, sigma=0.5), probabilities, atol=1e-6)


def test_mp_cdf_matches_quadrature():
    aspect_ratio = 0.4
    lower = (1 - math.sqrt(aspect_ratio)) ** 2
    for x in (0.3, 1.0, 2.0):
        expected, _ = integrate.quad(lambda t: float(mp_density(t, aspect_ratio)), lower, x, limit=200)
        assert float(mp_cdf(x, aspect_ratio)) == pytest.approx(expected, abs=1e-6), x


def test_mp_edges_square_lower_is_zero():
    lower, upper = mp_edges((384, 384), 1.0)
    assert lower == 0.0
    assert upper == pytest.approx(2 * math.sqrt(384))


def test_mp_edges_orientation_free():
    assert mp_edges((300, 1200), SIGMA) == mp_edges((1200, 300), SIGMA)


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_mp_fit_recovers_sigma(shape, deflate):
    fit = marchenko_pastur_fit(_gaussian_singular_values(shape, seed=0), shape, deflate=deflate)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.03)
    assert fit.n_above + fit.n_below <= 0.01 * fit.n_total
    assert fit.n_total == min(shape)
    assert fit.aspect_ratio == pytest.approx(min(shape) / max(shape))
    assert fit.converged
    assert fit.ks_statistic < 0.05


def test_mp_fit_median_method_recovers_sigma():
    shape = (400, 1000)
    fit = marchenko_pastur_fit(_gaussian_singular_values(shape, seed=0), shape, method="median")
    assert fit.sigma == pytest.approx(SIGMA, rel=0.03)
    assert fit.method == "median"


def test_mp_fit_square_lower_edge_zero():
    shape = (768, 768)
    fit = marchenko_pastur_fit(_gaussian_singular_values(shape, seed=0), shape)
    assert fit.lower_edge == 0.0
    assert fit.n_below == 0


def test_mp_fit_edges_in_singular_value_units():
    shape = (1000, 300)
    singular_values = _gaussian_singular_values(shape, seed=0)
    fit = marchenko_pastur_fit(singular_values, shape)
    assert (fit.lower_edge, fit.upper_edge) == pytest.approx(mp_edges(shape, fit.sigma))
    assert fit.upper_edge == pytest.approx(singular_values.max(), rel=0.03)
    assert fit.lower_edge == pytest.approx(singular_values.min(), rel=0.05)


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_mp_fit_rank_three_spike(shape, deflate):
    singular_values = _spiked_singular_values(shape, np.array([3.0, 4.0, 6.0]), seed=4)
    fit = marchenko_pastur_fit(singular_values, shape, deflate=deflate)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.03)
    assert fit.n_above >= 3
    assert fit.n_above <= 4


def test_mp_fit_many_outliers_deflated():
    shape = (400, 1000)
    singular_values = _spiked_singular_values(shape, np.linspace(2.5, 5.0, 60), seed=5)
    fit = marchenko_pastur_fit(singular_values, shape, deflate=True)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.03)
    assert fit.n_above == 60
    assert fit.deflated
    assert fit.aspect_ratio == pytest.approx(340 / 940)


def test_mp_fit_reports_no_convergence():
    shape = (400, 1000)
    singular_values = _spiked_singular_values(shape, np.linspace(2.5, 5.0, 60), seed=5)
    fit = marchenko_pastur_fit(singular_values, shape, method="median", deflate=True, max_iterations=1)
    assert not fit.converged
    assert fit.n_iterations == 1
    assert fit.n_above == 60


def test_mp_fit_accepts_tensor():
    shape = (200, 300)
    singular_values = _gaussian_singular_values(shape, seed=6)
    from_numpy = marchenko_pastur_fit(singular_values, shape)
    from_torch = marchenko_pastur_fit(torch.tensor(singular_values, dtype=torch.float32), shape)
    assert from_torch.sigma == pytest.approx(from_numpy.sigma, rel=1e-6)


def test_mp_fit_rejects_bad_input():
    singular_values = _gaussian_singular_values((50, 80), seed=7)
    with pytest.raises(ValueError, match="min\\(m, n\\) = 50"):
        marchenko_pastur_fit(singular_values[:-1], (50, 80))
    with pytest.raises(ValueError, match="quantile, median"):
        marchenko_pastur_fit(singular_values, (50, 80), method="ks")
    with pytest.raises(ValueError, match="non-negative"):
        marchenko_pastur_fit(-singular_values, (50, 80))
    with pytest.raises(ValueError, match="zero"):
        marchenko_pastur_fit(np.zeros(50), (50, 80))
    with pytest.raises(ValueError, match="fit_range"):
        marchenko_pastur_fit(singular_values, (50, 80), fit_range=(0.9, 0.1))


# Update shares per band.


def _factors(rows: int = 48, columns: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=generator)
    U, S, Vh = _svd(weight)
    bounds = [(0, 16), (16, 32), (32, min(rows, columns))]
    return U, S, Vh, bounds, generator


def test_update_share_in_band_update():
    U, S, Vh, bounds, generator = _factors()
    start, stop = bounds[1]
    core = torch.randn(stop - start, stop - start, generator=generator)
    delta = U[:, start:stop] @ core @ Vh[start:stop]
    table = update_share(U, S, Vh, delta, bounds)
    assert table["share_two_sided"].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-5)
    assert table["share_left"].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-5)
    assert table["share_right"].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-5)
    assert table["update_norm"].iloc[0] == pytest.approx(float(torch.linalg.matrix_norm(delta.double())), rel=1e-6)
    assert not table["zero_update"].any()


def test_update_share_left_shares_sum_to_one():
    # With m <= n, U is square, so the left shares of bands that cover all k columns sum to 1.
    U, S, Vh, bounds, generator = _factors(rows=48, columns=64)
    delta = torch.randn(48, 64, generator=generator)
    table = update_share(U, S, Vh, delta, bounds)
    assert table["share_left"].sum() == pytest.approx(1.0, abs=1e-5)
    assert table["share_right"].sum() < 1.0
    assert (table["share_two_sided"] <= table[["share_left", "share_right"]].min(axis=1) + 1e-12).all()


def test_update_share_zero_update():
    U, S, Vh, bounds, _ = _factors()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = update_share(U, S, Vh, torch.zeros(48, 64), bounds)
    for column in ("share_two_sided", "share_left", "share_right", "update_norm"):
        assert table[column].tolist() == [0.0, 0.0, 0.0], column
    assert table["zero_update"].all()


def test_update_share_accepts_numpy():
    U, S, Vh, bounds, generator = _factors()
    delta = torch.randn(48, 64, generator=generator)
    from_torch = update_share(U, S, Vh, delta, bounds)
    from_numpy = update_share(U.numpy(), S.numpy(), Vh.numpy(), delta.numpy(), bounds)
    assert from_torch.equals(from_numpy)


def test_update_share_rejects_bad_input():
    U, S, Vh, bounds, _ = _factors()
    delta = torch.zeros(48, 64)
    with pytest.raises(ValueError, match="not a non-empty range"):
        update_share(U, S, Vh, delta, [(10, 5)])
    with pytest.raises(ValueError, match="not a non-empty range"):
        update_share(U, S, Vh, delta, [(40, 49)])
    with pytest.raises(ValueError, match="delta has shape"):
        update_share(U, S, Vh, delta.T, bounds)
    with pytest.raises(ValueError, match="not orthonormal"):
        update_share(U * 2, S, Vh, delta, bounds)
    with pytest.raises(ValueError, match="S has 47 values"):
        update_share(U, S[:-1], Vh, delta, bounds)


def test_revert_band_update_zero_delta():
    U, _, Vh, bounds, _ = _factors()
    projection = revert_band_update(U, Vh, torch.zeros(48, 64), bounds[0])
    assert projection.dtype == torch.float32
    assert torch.equal(projection, torch.zeros(48, 64))


def test_revert_band_update_returns_in_band_part():
    U, _, Vh, bounds, generator = _factors()
    inside = U[:, 0:16] @ torch.randn(16, 16, generator=generator) @ Vh[0:16]
    outside = U[:, 32:48] @ torch.randn(16, 16, generator=generator) @ Vh[32:48]
    projection = revert_band_update(U, Vh, inside + outside, bounds[0])
    torch.testing.assert_close(projection, inside, atol=1e-5, rtol=1e-5)


# Subspace overlap and rotation.


def test_subspace_overlap_identical_is_one():
    basis = torch.linalg.qr(torch.randn(30, 5, generator=torch.Generator().manual_seed(0)))[0]
    assert subspace_overlap(basis, basis) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(principal_angles(basis, basis), 0.0, atol=1e-3)


def test_subspace_overlap_orthogonal_is_zero():
    identity = torch.eye(6)
    assert subspace_overlap(identity[:, :3], identity[:, 3:]) == 0.0
    np.testing.assert_allclose(principal_angles(identity[:, :3], identity[:, 3:]), math.pi / 2)


def test_subspace_overlap_known_angle():
    angle = 0.3
    first = np.array([[1.0], [0.0], [0.0]])
    second = np.array([[math.cos(angle)], [math.sin(angle)], [0.0]])
    assert subspace_overlap(first, second) == pytest.approx(math.cos(angle) ** 2)
    assert principal_angles(first, second) == pytest.approx([angle])


def test_subspace_overlap_rejects_bad_input():
    identity = torch.eye(6)
    with pytest.raises(ValueError, match="both bases need shape"):
        subspace_overlap(identity[:, :3], identity[:, :2])
    with pytest.raises(ValueError, match="not orthonormal"):
        subspace_overlap(identity[:, :3] * 2, identity[:, :3])


def test_band_rotation_identical_bases():
    U, _, Vh, bounds, _ = _factors()
    table = band_rotation(U, Vh, U, Vh, bounds)
    for column in ("overlap_left", "overlap_right", "overlap_mean"):
        assert table[column].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5), column


def test_band_rotation_swapped_bands():
    U, _, Vh, bounds, _ = _factors()
    swapped = torch.cat([U[:, 16:32], U[:, 0:16], U[:, 32:]], dim=1)
    table = band_rotation(U, Vh, swapped, Vh, bounds)
    assert table["overlap_left"].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-5)
    assert table["overlap_right"].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert table["overlap_mean"].tolist() == pytest.approx([0.5, 0.5, 1.0], abs=1e-5)


def test_band_rotation_small_perturbation_stays_close():
    U, S, Vh, bounds, generator = _factors()
    weight = U @ torch.diag(S) @ Vh
    U_ft, _, Vh_ft = _svd(weight + 1e-3 * torch.randn(48, 64, generator=generator))
    table = band_rotation(U, Vh, U_ft, Vh_ft, bounds)
    assert (table["overlap_mean"] > 0.99).all()
    assert (table["overlap_mean"] <= 1.0).all()
