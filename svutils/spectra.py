"""Marchenko–Pastur fits, update shares per singular-value band and subspace rotation.

Marchenko–Pastur (MP) law: for an m×n matrix X with i.i.d. entries of variance σ², let
N = max(m, n) and λ = min(m, n) / N <= 1. As m, n grow, the eigenvalues x = s² / N of
XᵀX / N (s the singular values) follow the MP density on [σ²(1 − √λ)², σ²(1 + √λ)²],
so the singular values lie in [σ√N(1 − √λ), σ√N(1 + √λ)]. The upper edge separates
the random bulk of trained weights from outliers. The lower edge matters too, because
the study removes small singular values.

Band functions take the SVD W_ft = U diag(S) Vh of a fine-tuned matrix with U [m, k],
Vh [k, n] and S descending, and a band as a (start, stop) range of indices into S. They
accept torch tensors or numpy arrays and compute in torch float64.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from svutils.metrics import as_numpy

FIT_METHODS = ("quantile", "median")
"""Values of `marchenko_pastur_fit(method=...)`."""

_GRID_POINTS = 1 << 14
"""Points of the angle grid on which the MP distribution function is integrated."""

_ORTHONORMAL_TOLERANCE = 1e-3
"""Largest |UᵀU − I| entry accepted as orthonormal.

torch.linalg.svd in float32 gives about 2e-6 on a 768×3072 Gaussian matrix (torch 2.13, CPU).
"""


def _check_aspect_ratio(aspect_ratio: float) -> float:
    if not isinstance(aspect_ratio, (int, float, np.floating)) or not 0.0 < aspect_ratio <= 1.0:
        raise ValueError(f"aspect_ratio must be min(m, n) / max(m, n) in (0, 1], got {aspect_ratio!r}")
    return float(aspect_ratio)


def _check_sigma(sigma: float) -> float:
    if not isinstance(sigma, (int, float, np.floating)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive entry standard deviation, got {sigma!r}")
    return float(sigma)


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2 or not all(isinstance(size, (int, np.integer)) and size >= 1 for size in shape):
        raise ValueError(f"shape must be two positive ints (m, n), got {shape!r}")
    return int(shape[0]), int(shape[1])


def mp_edges_eigenvalue(aspect_ratio: float, sigma: float = 1.0) -> tuple[float, float]:
    """Return the MP support edges σ²(1 ∓ √λ)² of the eigenvalues x = s² / max(m, n)."""
    root = math.sqrt(_check_aspect_ratio(aspect_ratio))
    variance = _check_sigma(sigma) ** 2
    return variance * (1.0 - root) ** 2, variance * (1.0 + root) ** 2


def mp_edges(shape: Sequence[int], sigma: float) -> tuple[float, float]:
    """Return the MP edges σ√N(1 ∓ √λ) of the singular values of an [m, n] matrix."""
    rows, columns = _check_shape(shape)
    larger = max(rows, columns)
    root = math.sqrt(min(rows, columns) / larger)
    scale = _check_sigma(sigma) * math.sqrt(larger)
    return scale * (1.0 - root), scale * (1.0 + root)


def mp_density(x: Any, aspect_ratio: float, sigma: float = 1.0) -> np.ndarray:
    """Evaluate the MP density of the eigenvalues x = s² / max(m, n), 0 outside the edges.

    f(x) = √((b − x)(x − a)) / (2π σ² λ x) for a < x < b. For λ = 1 it diverges like
    1/√x as x → 0 and is inf at x = 0.
    """
    aspect_ratio = _check_aspect_ratio(aspect_ratio)
    sigma = _check_sigma(sigma)
    lower, upper = mp_edges_eigenvalue(aspect_ratio, sigma)
    x = np.asarray(x, dtype=np.float64)
    inside = (x > lower) & (x < upper)
    density = np.zeros_like(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.sqrt((upper - x) * (x - lower)) / (2.0 * math.pi * sigma**2 * aspect_ratio * x)
    density[inside] = values[inside]
    if aspect_ratio == 1.0:
        density[x == 0.0] = np.inf
    return density


def mp_singular_value_density(s: Any, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Evaluate the MP density of the singular values s of an [m, n] matrix, 0 outside the edges.

    It is the eigenvalue density f(s² / N) times the Jacobian 2s / N, with N = max(m, n),
    so it integrates to 1 over s and can be drawn over a density histogram of singular
    values. For square matrices it is the quarter-circle law, 2 / (π σ √N) at s = 0.
    """
    rows, columns = _check_shape(shape)
    sigma = _check_sigma(sigma)
    larger = max(rows, columns)
    aspect_ratio = min(rows, columns) / larger
    lower, upper = mp_edges_eigenvalue(aspect_ratio, sigma)
    s = np.asarray(s, dtype=np.float64)
    x = s**2 / larger
    inside = (x > lower) & (x < upper) & (s > 0)
    density = np.zeros_like(s)
    # f(x) · 2s / N simplifies to √((b − x)(x − a)) / (π σ² λ s), which stays finite as s → 0.
    density[inside] = np.sqrt((upper - x[inside]) * (x[inside] - lower)) / (
        math.pi * sigma**2 * aspect_ratio * s[inside]
    )
    if aspect_ratio == 1.0:
        density[s == 0.0] = 2.0 / (math.pi * sigma * math.sqrt(larger))
    return density


@functools.lru_cache(maxsize=64)
def _standard_mp_cdf_grid(aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Tabulate the σ = 1 MP distribution function as (x grid, F(x)) with F from 0 to 1.

    The substitution x = a + (b − a)(1 − cos θ)/2 turns the square-root zeros at both
    edges into a smooth integrand in θ, so the trapezoid rule is accurate. At 2^14
    points, F differs from a 2^21-point grid by about 1e-8 for λ from 0.05 to 1.
    """
    lower, upper = mp_edges_eigenvalue(aspect_ratio)
    # θ = π t² with uniform t puts more points near the lower edge. There the integrand
    # turns from 0 to its bulk value within θ ≈ 2√(a / b), which is tiny for λ just below 1.
    theta = math.pi * np.linspace(0.0, 1.0, _GRID_POINTS + 1) ** 2
    cos_theta = np.cos(theta)
    x = lower + (upper - lower) * (1.0 - cos_theta) / 2.0
    half_width_sq = ((upper - lower) / 2.0) ** 2
    if lower == 0.0:
        # With a = 0 the factor (1 − cos θ) cancels between sin²θ and x.
        integrand = half_width_sq * (1.0 + cos_theta) / (2.0 * math.pi * aspect_ratio * (upper - lower) / 2.0)
    else:
        integrand = half_width_sq * (1.0 - cos_theta) * (1.0 + cos_theta) / (2.0 * math.pi * aspect_ratio * x)
    steps = (integrand[1:] + integrand[:-1]) / 2.0 * np.diff(theta)
    cdf = np.concatenate([[0.0], np.cumsum(steps)])
    cdf /= cdf[-1]
    x.flags.writeable = False
    cdf.flags.writeable = False
    return x, cdf


def mp_cdf(x: Any, aspect_ratio: float, sigma: float = 1.0) -> np.ndarray:
    """Evaluate the MP distribution function of the eigenvalues x = s² / max(m, n)."""
    grid, cdf = _standard_mp_cdf_grid(_check_aspect_ratio(aspect_ratio))
    scaled = np.asarray(x, dtype=np.float64) / _check_sigma(sigma) ** 2
    return np.interp(scaled, grid, cdf, left=0.0, right=1.0)


def mp_quantile(q: Any, aspect_ratio: float, sigma: float = 1.0) -> np.ndarray:
    """Return the MP quantiles of the eigenvalues x = s² / max(m, n) at probabilities q in [0, 1]."""
    q = np.asarray(q, dtype=np.float64)
    if np.any((q < 0) | (q > 1)) or not np.isfinite(q).all():
        raise ValueError("q must contain probabilities in [0, 1]")
    grid, cdf = _standard_mp_cdf_grid(_check_aspect_ratio(aspect_ratio))
    return np.interp(q, cdf, grid) * _check_sigma(sigma) ** 2


@dataclass(frozen=True)
class MPFit:
    """Fitted MP bulk of a matrix's singular values, in singular-value units."""

    sigma: float
    """Entry standard deviation σ of the random bulk."""
    aspect_ratio: float
    """λ = min / max of the bulk shape: (m − K, n − K) when deflated, else (m, n)."""
    lower_edge: float
    """σ(√max − √min) of the bulk shape, its smallest singular value; 0 for square matrices."""
    upper_edge: float
    """σ(√max + √min) of the bulk shape, its largest singular value."""
    n_above: int
    """Singular values above upper_edge · (1 + edge_tolerance)."""
    n_below: int
    """Singular values below lower_edge · (1 − edge_tolerance)."""
    n_total: int
    """Number of singular values, min(m, n)."""
    method: str
    """"quantile" or "median", see `marchenko_pastur_fit`."""
    deflated: bool
    """Whether the bulk was fitted as an (m − K)×(n − K) matrix, K the values above the edge."""
    edge_tolerance: float
    """Relative widening of both edges before values count as outside."""
    n_fitted: int
    """Singular values used in the last fitting step."""
    n_iterations: int
    """Fitting steps run."""
    converged: bool
    """Whether the number of values above the upper edge stopped changing within max_iterations."""
    ks_statistic: float
    """Kolmogorov–Smirnov distance between the bulk eigenvalues s² / N and the fitted MP law.

    The empirical distribution counts the bulk values over the B positions of the fit.
    """

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict for JSON or a DataFrame row."""
        return asdict(self)


def _fit_bulk_sigma(
    bulk: np.ndarray, shape: tuple[int, int], n_positions: int, method: str, fit_range: tuple[float, float]
) -> tuple[float, int]:
    """Fit σ to the lowest singular values of an MP matrix of `shape`; return σ and the count used.

    `bulk` contains the smallest len(bulk) of `n_positions` values, ascending, and the i-th is
    matched to the MP quantile at p = (i + 0.5) / n_positions.
    """
    larger = max(shape)
    aspect_ratio = min(shape) / larger
    probabilities = (np.arange(bulk.size) + 0.5) / n_positions
    if method == "median":
        if probabilities[-1] < 0.5:
            raise ValueError(
                f"only {bulk.size} of {n_positions} values lie inside the bulk, so the median is an outlier; "
                "use deflate=True or method='quantile'"
            )
        median_reference = math.sqrt(larger * float(mp_quantile(0.5, aspect_ratio)))
        return float(np.interp(0.5, probabilities, bulk)) / median_reference, bulk.size
    used = (probabilities >= fit_range[0]) & (probabilities <= fit_range[1])
    n_fitted = int(used.sum())
    if n_fitted < 2:
        raise ValueError(
            f"only {n_fitted} of {bulk.size} bulk values fall inside fit_range {fit_range}; widen fit_range"
        )
    reference = np.sqrt(larger * mp_quantile(probabilities[used], aspect_ratio))
    return float(bulk[used] @ reference / (reference @ reference)), n_fitted


def marchenko_pastur_fit(
    singular_values: Any,
    shape: Sequence[int],
    *,
    method: str = "quantile",
    deflate: bool = False,
    edge_tolerance: float = 0.02,
    fit_range: tuple[float, float] = (0.05, 0.95),
    max_iterations: int = 50,
) -> MPFit:
    """Fit the MP bulk to all min(m, n) singular values of an [m, n] matrix.

    Model: W = X + (rank-K signal), where X has i.i.d. entries of variance σ² and the K
    signal directions stand out as values above the bulk. By default the lowest
    min(m, n) − K values are fitted as the lowest values of an m×n MP spectrum. With
    `deflate`, they are fitted as the full spectrum of an (m − K)×(n − K) matrix, which
    is what remains after projecting out the K signal directions. Deflation matters
    when K is large: for 60 strong outliers in a 400×1000 Gaussian matrix (σ = 0.02,
    outliers at 2.5 to 5 times the bulk edge, three draws), σ comes out about 8% too high
    without it and under 1% off with it.

    NOTE: trained weights are not an MP bulk plus a few spikes, and deflation can then
    keep moving the edge down. On the layer-0 query matrix of all-MiniLM-L6-v2 (384×384),
    the quantile fit finds 36 values above the edge (σ = 0.081) without deflation and
    151 with it (σ = 0.046). The median fit with deflation finds 267. Report which
    setting a figure uses.

    Fitting: the i-th smallest bulk value (0-based) is matched to the σ = 1 MP quantile
    at p = (i + 0.5) / B, where B counts the bulk values with `deflate` and all values
    without. "quantile" fits σ by least squares of s against √(N·quantile) over the
    values with p in `fit_range`, which keeps the fluctuating extremes out. "median"
    matches the value at p = 0.5 alone. K starts at the number of values above the
    median fit's upper edge (0 for "median"). After each fit, K is reset to the number
    of values above the upper edge, until K stops changing (``converged``) or
    `max_iterations` is reached.

    `edge_tolerance` widens both edges by that fraction before counting values outside.
    The default 2% is an estimate that covers the finite-size fluctuation of the extreme
    bulk values at widths of a few hundred, which shrinks like min(m, n)^(−2/3).
    """
    rows, columns = _check_shape(shape)
    if method not in FIT_METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(FIT_METHODS)}")
    if not 0.0 <= edge_tolerance < 1.0:
        raise ValueError(f"edge_tolerance must be a fraction in [0, 1), got {edge_tolerance}")
    if len(fit_range) != 2 or not 0.0 <= fit_range[0] < fit_range[1] <= 1.0:
        raise ValueError(f"fit_range must be probabilities (low, high) with 0 <= low < high <= 1, got {fit_range}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValueError(f"max_iterations must be a positive int, got {max_iterations!r}")

    values = as_numpy(singular_values, name="singular_values").astype(np.float64).ravel()
    count = min(rows, columns)
    if values.size != count:
        raise ValueError(
            f"got {values.size} singular values for shape {(rows, columns)}; pass all min(m, n) = {count} "
            "values, because the fit matches each value to its quantile position"
        )
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("singular_values must be finite and non-negative")
    if not values.any():
        raise ValueError("all singular values are 0; the matrix is zero and has no MP bulk to fit")

    ordered = np.sort(values)
    n_outliers = 0
    if method == "quantile":
        # Start from the median fit, which tolerates up to half the values being outliers,
        # while the first quantile fit would take outliers inside fit_range for bulk values.
        median_sigma, _ = _fit_bulk_sigma(ordered, (rows, columns), count, "median", fit_range)
        n_outliers = int((ordered > mp_edges((rows, columns), median_sigma)[1] * (1.0 + edge_tolerance)).sum())
        n_outliers = min(n_outliers, count - 2)
    converged = False
    for iteration in range(1, max_iterations + 1):
        n_bulk = count - n_outliers
        bulk_shape = (rows - n_outliers, columns - n_outliers) if deflate else (rows, columns)
        n_positions = n_bulk if deflate else count
        sigma, n_fitted = _fit_bulk_sigma(ordered[:n_bulk], bulk_shape, n_positions, method, fit_range)
        if sigma <= 0.0:
            raise ValueError(
                "the fitted sigma is 0 because most singular values are 0; the matrix has too low a rank "
                "for an MP fit"
            )
        lower_edge, upper_edge = mp_edges(bulk_shape, sigma)
        n_above = int((ordered > upper_edge * (1.0 + edge_tolerance)).sum())
        if n_above == n_outliers:
            converged = True
            break
        if n_above >= count - 1:
            raise ValueError(
                f"{n_above} of {count} singular values lie above the fitted upper edge {upper_edge:.4g}; "
                "the spectrum has no random bulk to fit"
            )
        n_outliers = n_above

    n_below = int((ordered < lower_edge * (1.0 - edge_tolerance)).sum())
    larger = max(bulk_shape)
    aspect_ratio = min(bulk_shape) / larger
    fitted_cdf = mp_cdf(ordered[:n_bulk] ** 2 / larger, aspect_ratio, sigma)
    empirical_high = np.arange(1, n_bulk + 1) / n_positions
    empirical_low = np.arange(n_bulk) / n_positions
    ks_statistic = float(max(np.abs(empirical_high - fitted_cdf).max(), np.abs(fitted_cdf - empirical_low).max()))
    return MPFit(
        sigma=sigma,
        aspect_ratio=aspect_ratio,
        lower_edge=lower_edge,
        upper_edge=upper_edge,
        n_above=n_above,
        n_below=n_below,
        n_total=count,
        method=method,
        deflated=bool(deflate),
        edge_tolerance=float(edge_tolerance),
        n_fitted=n_fitted,
        n_iterations=iteration,
        converged=converged,
        ks_statistic=ks_statistic,
    )


def _as_float64(value: Any, name: str, ndim: int) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(as_numpy(value, name=name))
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(tensor.shape)}")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must contain real numbers, got dtype {tensor.dtype}")
    tensor = tensor.detach().to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


def _check_orthonormal_columns(matrix: torch.Tensor, name: str) -> None:
    gram = matrix.T @ matrix
    error = float((gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).abs().max())
    if error > _ORTHONORMAL_TOLERANCE:
        raise ValueError(
            f"{name} is not orthonormal: max |{name}ᵀ{name} − I| = {error:.2e} > {_ORTHONORMAL_TOLERANCE}; "
            "pass singular vectors from torch.linalg.svd(full_matrices=False)"
        )


def _check_bounds(bounds: Sequence[tuple[int, int]], rank: int) -> list[tuple[int, int]]:
    checked = []
    for position, band in enumerate(bounds):
        if len(band) != 2 or not all(isinstance(index, (int, np.integer)) for index in band):
            raise ValueError(f"band {position} must be a (start, stop) pair of ints, got {band!r}")
        start, stop = int(band[0]), int(band[1])
        if not 0 <= start < stop <= rank:
            raise ValueError(
                f"band {position} = ({start}, {stop}) is not a non-empty range inside 0..{rank}; "
                "bands index the descending singular values"
            )
        checked.append((start, stop))
    if not checked:
        raise ValueError("bounds is empty; pass at least one (start, stop) band")
    return checked


def _check_svd_factors(U: Any, Vh: Any, delta: Any, check_orthonormal: bool) -> tuple[torch.Tensor, ...]:
    U = _as_float64(U, "U", 2)
    Vh = _as_float64(Vh, "Vh", 2)
    delta = _as_float64(delta, "delta", 2).to(U.device)
    Vh = Vh.to(U.device)
    if U.shape[1] != Vh.shape[0]:
        raise ValueError(f"U is {tuple(U.shape)} and Vh is {tuple(Vh.shape)}; expected U [m, k] and Vh [k, n]")
    if delta.shape != (U.shape[0], Vh.shape[1]):
        raise ValueError(f"delta has shape {tuple(delta.shape)}, but U and Vh give [m, n] = [{U.shape[0]}, {Vh.shape[1]}]")
    if check_orthonormal:
        _check_orthonormal_columns(U, "U")
        _check_orthonormal_columns(Vh.T, "V")
    return U, Vh, delta


def update_share(
    U: Any,
    S: Any,
    Vh: Any,
    delta: Any,
    bounds: Sequence[tuple[int, int]],
    *,
    check_orthonormal: bool = True,
) -> pd.DataFrame:
    """Measure how much of an update ΔW = W_ft − W_pre lies in each band of W_ft's SVD.

    Returns one row per band with ``band`` (position in `bounds`), ``start``, ``stop``,
    ``share_two_sided`` = ‖U_bᵀ ΔW V_b‖²_F / ‖ΔW‖²_F, ``share_left`` = ‖U_bᵀ ΔW‖²_F /
    ‖ΔW‖²_F, ``share_right`` = ‖ΔW V_b‖²_F / ‖ΔW‖²_F, ``update_norm`` = ‖ΔW‖_F and
    ``zero_update``. When ΔW = 0 all shares are 0 and ``zero_update`` is True.
    `S` is only checked to have k values. `check_orthonormal` checks UᵀU = I and VᵀV = I,
    which costs about as much as the shares themselves.
    """
    U, Vh, delta = _check_svd_factors(U, Vh, delta, check_orthonormal)
    S = _as_float64(S, "S", 1)
    if S.shape[0] != U.shape[1]:
        raise ValueError(f"S has {S.shape[0]} values but U has {U.shape[1]} columns; pass the k singular values")
    bands = _check_bounds(bounds, U.shape[1])

    norm_sq = float((delta**2).sum())
    left_projection = U.T @ delta
    right_projection = delta @ Vh.T
    core = left_projection @ Vh.T
    rows = []
    for position, (start, stop) in enumerate(bands):
        if norm_sq == 0.0:
            two_sided = left = right = 0.0
        else:
            two_sided = float((core[start:stop, start:stop] ** 2).sum()) / norm_sq
            left = float((left_projection[start:stop] ** 2).sum()) / norm_sq
            right = float((right_projection[:, start:stop] ** 2).sum()) / norm_sq
        rows.append(
            {
                "band": position,
                "start": start,
                "stop": stop,
                "share_two_sided": two_sided,
                "share_left": left,
                "share_right": right,
                "update_norm": math.sqrt(norm_sq),
                "zero_update": norm_sq == 0.0,
            }
        )
    return pd.DataFrame(rows)


def revert_band_update(
    U: Any, Vh: Any, delta: Any, band: tuple[int, int], *, check_orthonormal: bool = True
) -> torch.Tensor:
    """Return P_b = U_b U_bᵀ ΔW V_b V_bᵀ, the part of the update inside one band, as float32 [m, n].

    W_ft − P_b undoes the update within band b and keeps it elsewhere. The product is
    computed in float64 on U's device.
    """
    U, Vh, delta = _check_svd_factors(U, Vh, delta, check_orthonormal)
    start, stop = _check_bounds([band], U.shape[1])[0]
    left = U[:, start:stop]
    right = Vh[start:stop]
    return (left @ ((left.T @ delta @ right.T) @ right)).to(torch.float32)


def principal_angles(A: Any, B: Any) -> np.ndarray:
    """Return the principal angles in radians, ascending, between the column spaces of A and B.

    A and B are [d, r] with orthonormal columns. The angles are the arccos of the singular
    values of AᵀB, clipped to [0, 1] against rounding.
    """
    A, B = _check_basis_pair(A, B)
    cosines = torch.linalg.svdvals(A.T @ B).clamp(0.0, 1.0)
    return np.sort(np.arccos(cosines.cpu().numpy()))


def subspace_overlap(A: Any, B: Any) -> float:
    """Return ‖AᵀB‖²_F / r in [0, 1], the mean squared cosine of the principal angles.

    A and B are [d, r] with orthonormal columns. Identical spaces give 1 and orthogonal ones 0.
    """
    A, B = _check_basis_pair(A, B)
    return min(1.0, max(0.0, float(((A.T @ B) ** 2).sum()) / A.shape[1]))


def _check_basis_pair(A: Any, B: Any) -> tuple[torch.Tensor, torch.Tensor]:
    A = _as_float64(A, "A", 2)
    B = _as_float64(B, "B", 2).to(A.device)
    if A.shape != B.shape:
        raise ValueError(f"A is {tuple(A.shape)} but B is {tuple(B.shape)}; both bases need shape [d, r]")
    if A.shape[1] == 0 or A.shape[1] > A.shape[0]:
        raise ValueError(f"bases must have 1 <= r <= d columns, got shape {tuple(A.shape)}")
    _check_orthonormal_columns(A, "A")
    _check_orthonormal_columns(B, "B")
    return A, B


def band_rotation(
    U_pre: Any,
    Vh_pre: Any,
    U_ft: Any,
    Vh_ft: Any,
    bounds: Sequence[tuple[int, int]],
    *,
    check_orthonormal: bool = True,
) -> pd.DataFrame:
    """Measure how far each band's singular subspaces rotated during fine-tuning.

    Returns one row per band with ``band``, ``start``, ``stop``, ``overlap_left`` (the
    `subspace_overlap` of the pre-trained and fine-tuned left singular vectors of the
    band), ``overlap_right`` (the same for the right singular vectors) and
    ``overlap_mean``. Vectors inside a cluster of near-equal singular values are not
    unique, so only a band boundary that cuts such a cluster makes an overlap unstable.
    """
    U_pre = _as_float64(U_pre, "U_pre", 2)
    U_ft = _as_float64(U_ft, "U_ft", 2).to(U_pre.device)
    V_pre = _as_float64(Vh_pre, "Vh_pre", 2).to(U_pre.device).T
    V_ft = _as_float64(Vh_ft, "Vh_ft", 2).to(U_pre.device).T
    if U_pre.shape != U_ft.shape or V_pre.shape != V_ft.shape or U_pre.shape[1] != V_pre.shape[1]:
        raise ValueError(
            f"expected U_pre, U_ft [m, k] and Vh_pre, Vh_ft [k, n], got U_pre {tuple(U_pre.shape)}, "
            f"U_ft {tuple(U_ft.shape)}, Vh_pre {tuple(V_pre.T.shape)}, Vh_ft {tuple(V_ft.T.shape)}"
        )
    if check_orthonormal:
        for matrix, name in ((U_pre, "U_pre"), (U_ft, "U_ft"), (V_pre, "V_pre"), (V_ft, "V_ft")):
            _check_orthonormal_columns(matrix, name)
    bands = _check_bounds(bounds, U_pre.shape[1])

    left_cross = U_pre.T @ U_ft
    right_cross = V_pre.T @ V_ft
    rows = []
    for position, (start, stop) in enumerate(bands):
        width = stop - start
        left = float((left_cross[start:stop, start:stop] ** 2).sum()) / width
        right = float((right_cross[start:stop, start:stop] ** 2).sum()) / width
        left, right = min(1.0, left), min(1.0, right)
        rows.append(
            {
                "band": position,
                "start": start,
                "stop": stop,
                "overlap_left": left,
                "overlap_right": right,
                "overlap_mean": (left + right) / 2.0,
            }
        )
    return pd.DataFrame(rows)
