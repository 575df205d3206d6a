"""Exact singular-value bands of weight matrices, and their reversible removal.

A weight matrix W = U diag(S) Vᵀ (singular values S sorted in descending order) is split
into `n_bands` contiguous bands of singular values, band 0 holding the largest. Removing
band b subtracts its rank-|b| component, W ← W − U_b diag(S_b) V_bᵀ, which leaves exactly
the other singular values and vectors in place.

All SVDs are exact (`torch.linalg.svd(..., full_matrices=False)`) and done in float32
whatever the weight's dtype. Randomized or truncated SVDs approximate the top of the
spectrum well but the bottom badly, and the bottom is what this study is about.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from svutils.models import MatrixRef, weight_matrices

CONVENTIONS = ("balanced", "floor")
"""Band-size conventions: `balanced` sizes differ by at most one; `floor` gives every
band n // n_bands values and the last band the remainder, as in the study's published code."""

MODES = ("remove", "random", "revert_update")
"""What a cell does to each matrix:
`remove` subtracts the band's own component U_b diag(S_b) V_bᵀ;
`random` subtracts a random rank-|b| matrix with the band's singular values (so the same
Frobenius norm) along random orthonormal directions, a control for perturbation size;
`revert_update` subtracts only the band's share of the fine-tuning update,
U_b U_bᵀ ΔW V_b V_bᵀ with ΔW = W_finetuned − W_pretrained."""


def band_bounds(n: int, n_bands: int, convention: str = "balanced") -> list[tuple[int, int]]:
    """Split `n` singular values (descending) into `n_bands` contiguous [start, stop) ranges.

    `balanced`: sizes differ by at most one, larger bands first (768 in 10 → 77×8, 76×2).
    `floor`: each band holds n // n_bands and the last takes the remainder (768 → 76×9, 84).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of singular values must be a positive int, got {n!r}")
    if isinstance(n_bands, bool) or not isinstance(n_bands, int):
        raise TypeError(f"n_bands must be an int, got {n_bands!r} ({type(n_bands).__name__})")
    if not 1 <= n_bands <= n:
        raise ValueError(f"n_bands={n_bands} is invalid for a matrix of rank {n}; choose 1 <= n_bands <= {n}")
    if convention == "balanced":
        base, extra = divmod(n, n_bands)
        sizes = [base + (1 if index < extra else 0) for index in range(n_bands)]
    elif convention == "floor":
        base = n // n_bands
        sizes = [base] * (n_bands - 1) + [n - base * (n_bands - 1)]
    else:
        raise ValueError(f"unknown band convention {convention!r}; choose one of {list(CONVENTIONS)}")
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


@dataclass(frozen=True)
class MatrixSVD:
    """Thin SVD of one weight matrix in float32: W ≈ U @ diag(S) @ Vh.

    Shapes: U [m, k], S [k] (descending), Vh [k, n] with k = min(m, n).
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.S.shape[0])

    def component(self, start: int, stop: int) -> torch.Tensor:
        """Return U[:, start:stop] diag(S[start:stop]) Vh[start:stop] in float32 ([m, n])."""
        return (self.U[:, start:stop] * self.S[start:stop]) @ self.Vh[start:stop]


def exact_svd(weight: torch.Tensor) -> MatrixSVD:
    """Compute the exact thin SVD of a 2-D weight in float32 (fp16 and bf16 are upcast)."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(weight.shape)}")
    U, S, Vh = torch.linalg.svd(weight.detach().to(torch.float32), full_matrices=False)
    return MatrixSVD(U, S, Vh)


class SVDCache:
    """SVDs of a model's matrices, computed once per model state and reused for every band.

    Entries are keyed by module path and remember the weight's version counter; a weight
    changed outside `remove_bands` (for example by an optimizer step) is detected through
    that counter and its SVD recomputed. `remove_bands` restores weights bit for bit and
    then re-registers the version, so its own edits do not invalidate the cache.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, int, MatrixSVD]] = {}

    def get(self, ref: MatrixRef) -> MatrixSVD:
        weight = ref.weight
        entry = self._entries.get(ref.path)
        if entry is not None and entry[0] == id(weight) and entry[1] == weight._version:
            return entry[2]
        svd = exact_svd(weight)
        self._entries[ref.path] = (id(weight), weight._version, svd)
        return svd

    def mark_restored(self, ref: MatrixRef) -> None:
        """Record that `ref`'s weight holds the same bits as when its SVD was computed."""
        entry = self._entries.get(ref.path)
        if entry is not None and entry[0] == id(ref.weight):
            self._entries[ref.path] = (entry[0], ref.weight._version, entry[2])

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class MatrixEdit:
    """What one removal did to one matrix (energies in squared singular values)."""

    path: str
    kind: str
    layer: int
    shape: tuple[int, int]
    bands: tuple[int, ...]
    n_removed: int
    energy_removed: float
    energy_total: float
    perturbation_norm: float


@dataclass
class RemovalSummary:
    """The matrices a `remove_bands` call changed; yielded by the context manager."""

    mode: str
    n_bands: int
    convention: str
    edits: list[MatrixEdit] = field(default_factory=list)

    @property
    def n_removed(self) -> int:
        """Singular values removed, summed over the touched matrices."""
        return sum(edit.n_removed for edit in self.edits)

    @property
    def energy_fraction(self) -> float:
        """Σ removed s² / Σ s² over the touched matrices (0 when nothing was touched)."""
        total = sum(edit.energy_total for edit in self.edits)
        return sum(edit.energy_removed for edit in self.edits) / total if total > 0 else 0.0


def _control_generator(seed: int, path: str, bands: Sequence[int]) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}|{path}|{tuple(bands)}".encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator


def _band_ranges(bands: Sequence[int], bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [bounds[band] for band in bands]


def band_perturbation(
    svd: MatrixSVD,
    bands: Sequence[int],
    bounds: list[tuple[int, int]],
    mode: str,
    *,
    generator: torch.Generator | None = None,
    delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the float32 matrix to subtract from W for `bands` under `mode` (see MODES)."""
    ranges = _band_ranges(bands, bounds)
    if mode == "remove":
        return sum(svd.component(start, stop) for start, stop in ranges)  # type: ignore[return-value]
    if mode == "random":
        if generator is None:
            raise ValueError("mode 'random' needs a torch.Generator")
        # One random subspace for the union of the bands, so several bands stay orthogonal.
        indices = torch.cat([torch.arange(start, stop) for start, stop in ranges])
        from svutils.stats import random_subspace_perturbation

        m, n = svd.U.shape[0], svd.Vh.shape[1]
        return random_subspace_perturbation((m, n), len(indices), None, singular_values=svd.S[indices], generator=generator)
    if mode == "revert_update":
        if delta is None:
            raise ValueError("mode 'revert_update' needs the fine-tuning update ΔW (pass reference weights)")
        indices = torch.cat([torch.arange(start, stop) for start, stop in ranges])
        U_b = svd.U[:, indices]
        V_b = svd.Vh[indices].T
        return U_b @ (U_b.T @ delta.to(torch.float32) @ V_b) @ V_b.T
    raise ValueError(f"unknown removal mode {mode!r}; choose one of {list(MODES)}")


def _normalize_bands(bands: int | Iterable[int], n_bands: int) -> tuple[int, ...]:
    if isinstance(bands, bool):
        raise TypeError(f"band must be an int or a list of ints, got {bands!r}")
    selected = (bands,) if isinstance(bands, int) else tuple(int(band) for band in bands)
    if not selected:
        raise ValueError("no band given; pass a band index in 0..n_bands-1")
    outside = [band for band in selected if not 0 <= band < n_bands]
    if outside:
        raise ValueError(f"band {outside[0]} is outside 0..{n_bands - 1} (n_bands={n_bands}); band 0 holds the largest singular values")
    return tuple(sorted(set(selected)))


@contextlib.contextmanager
def remove_bands(
    model: nn.Module,
    bands: int | Iterable[int],
    *,
    kinds: str | Iterable[str] = "all",
    layers: str | int | Iterable[int] = "all",
    n_bands: int = 10,
    convention: str = "balanced",
    mode: str = "remove",
    matrices: Sequence[MatrixRef] | None = None,
    svd_cache: SVDCache | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    layer_groups: Mapping[str, Sequence[int]] | None = None,
) -> Iterator[RemovalSummary]:
    """Remove singular-value band(s) from the model's matrices for the body of a `with`.

    Each selected matrix W (see `svutils.models.weight_matrices` for `kinds` and `layers`,
    or pass `matrices` directly) is changed in place to W − P, where P is the perturbation
    of `mode` (see MODES) computed in float32 and cast back to W's dtype. On exit, also when
    the body raises, every weight is restored bit for bit from a saved copy.

    `reference` maps module path → pretrained weight, needed by mode `revert_update`.
    `seed` drives the random directions of mode `random` (per matrix and band).
    Yields a RemovalSummary with the singular values and energy removed per matrix.
    """
    if mode not in MODES:
        raise ValueError(f"unknown removal mode {mode!r}; choose one of {list(MODES)}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown band convention {convention!r}; choose one of {list(CONVENTIONS)}")
    refs = list(matrices) if matrices is not None else weight_matrices(model, kinds, layers, layer_groups)
    selected = _normalize_bands(bands, n_bands)
    cache = svd_cache if svd_cache is not None else SVDCache()
    summary = RemovalSummary(mode=mode, n_bands=n_bands, convention=convention)
    saved: list[tuple[MatrixRef, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for ref in refs:
                svd = cache.get(ref)
                bounds = band_bounds(svd.rank, n_bands, convention)
                delta = None
                if mode == "revert_update":
                    if reference is None or ref.path not in reference:
                        raise KeyError(
                            f"mode 'revert_update' needs the pretrained weight of {ref.path!r}; pass reference="
                            "{path: tensor} for every touched matrix (see svutils.spectra or FinetuneRun.load_pretrained)"
                        )
                    delta = ref.weight.detach().to(torch.float32) - reference[ref.path].to(torch.float32)
                generator = _control_generator(seed, ref.path, selected) if mode == "random" else None
                perturbation = band_perturbation(svd, selected, bounds, mode, generator=generator, delta=delta)
                weight = ref.weight
                saved.append((ref, weight.detach().clone()))
                weight.copy_((weight.to(torch.float32) - perturbation).to(weight.dtype))
                removed = torch.cat([svd.S[start:stop] for start, stop in _band_ranges(selected, bounds)])
                summary.edits.append(
                    MatrixEdit(
                        path=ref.path,
                        kind=ref.kind,
                        layer=ref.layer,
                        shape=ref.shape,
                        bands=selected,
                        n_removed=int(removed.numel()),
                        energy_removed=float((removed.double() ** 2).sum()),
                        energy_total=float((svd.S.double() ** 2).sum()),
                        perturbation_norm=float(torch.linalg.matrix_norm(perturbation)),
                    )
                )
        yield summary
    finally:
        with torch.no_grad():
            for ref, original in reversed(saved):
                ref.weight.copy_(original)
                cache.mark_restored(ref)
