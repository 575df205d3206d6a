"""Unit tests for band bounds, exact SVD band removal and the restoring context manager."""

import pytest
import torch

from svutils.models import load_model, weight_matrices
from svutils.svd import SVDCache, band_bounds, exact_svd, remove_bands


@pytest.mark.parametrize("n, n_bands, sizes", [(768, 10, [77] * 8 + [76] * 2), (10, 3, [4, 3, 3]), (5, 5, [1] * 5)])
def test_band_bounds_balanced_sizes(n, n_bands, sizes):
    bounds = band_bounds(n, n_bands, "balanced")
    assert [stop - start for start, stop in bounds] == sizes
    assert bounds[0][0] == 0
    assert bounds[-1][1] == n


@pytest.mark.parametrize("n, n_bands, sizes", [(768, 10, [76] * 9 + [84]), (10, 3, [3, 3, 4]), (384, 10, [38] * 9 + [42])])
def test_band_bounds_floor_sizes(n, n_bands, sizes):
    bounds = band_bounds(n, n_bands, "floor")
    assert [stop - start for start, stop in bounds] == sizes
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(n_bands - 1))


@pytest.mark.parametrize("n_bands", [0, -1, 11])
def test_band_bounds_rejects_bad_count(n_bands):
    with pytest.raises(ValueError, match="n_bands"):
        band_bounds(10, n_bands)


def test_band_bounds_rejects_unknown_convention():
    with pytest.raises(ValueError, match="balanced"):
        band_bounds(10, 2, "ceil")


SHAPES = [(40, 40), (64, 24), (24, 64)]


def _linear_model(shape, dtype=torch.float32, seed=0):
    """A tiny BERT whose layer-0 query weight is replaced by a random matrix of `shape`."""
    torch.manual_seed(seed)
    model, _ = load_model("tiny-bert", 2, seed=seed)
    ref = weight_matrices(model, "q", 0)[0]
    out_features, in_features = shape
    linear = torch.nn.Linear(in_features, out_features).to(dtype)
    torch.nn.init.normal_(linear.weight, std=0.5)
    ref.module.weight = linear.weight
    return model


@pytest.mark.parametrize("shape", SHAPES)
def test_band_components_sum_to_matrix(shape):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    svd = exact_svd(weight)
    bounds = band_bounds(svd.rank, 7)
    total = sum(svd.component(start, stop) for start, stop in bounds)
    error = torch.linalg.matrix_norm(total - weight) / torch.linalg.matrix_norm(weight)
    assert error < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_removing_all_bands_leaves_zero(shape):
    model = _linear_model(shape)
    ref = weight_matrices(model, "q", 0)[0]
    norm = torch.linalg.matrix_norm(ref.weight.detach())
    with remove_bands(model, range(5), kinds="q", layers=0, n_bands=5):
        assert torch.linalg.matrix_norm(ref.weight.detach()) / norm < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("band", [0, 2, 4])
def test_removal_keeps_other_singular_values(shape, band):
    model = _linear_model(shape)
    ref = weight_matrices(model, "q", 0)[0]
    original = torch.linalg.svdvals(ref.weight.detach().float())
    bounds = band_bounds(len(original), 5)
    start, stop = bounds[band]
    expected = torch.cat([original[:start], original[stop:]])
    with remove_bands(model, band, kinds="q", layers=0, n_bands=5):
        after = torch.linalg.svdvals(ref.weight.detach().float())
    kept = after[: len(expected)]
    assert torch.allclose(kept, expected, atol=1e-5 * float(original[0]))
    assert after[len(expected):].abs().max() < 1e-5 * float(original[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_goes_through_float32(dtype):
    model = _linear_model((32, 48), dtype=dtype)
    ref = weight_matrices(model, "q", 0)[0]
    before = ref.weight.detach().clone()
    expected = (before.float() - exact_svd(before).component(0, 8)).to(dtype)
    with remove_bands(model, 0, kinds="q", layers=0, n_bands=4):
        assert ref.weight.dtype == dtype
        assert torch.equal(ref.weight.detach(), expected)
    assert torch.equal(ref.weight.detach(), before)


def _state(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_context_manager_restores_bit_for_bit():
    model, _ = load_model("tiny-bert", 2)
    before = _state(model)
    with remove_bands(model, 3, kinds="all", layers="all", n_bands=4) as summary:
        changed = [name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])]
        assert len(changed) == 36
        assert summary.n_removed > 0
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_context_manager_restores_after_exception():
    model, _ = load_model("tiny-bert", 2)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with remove_bands(model, 0, kinds="ffn", layers="early", n_bands=4):
            raise RuntimeError("boom")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_svd_cache_reused_across_bands():
    model, _ = load_model("tiny-bert", 2)
    cache = SVDCache()
    with remove_bands(model, 0, kinds="q", layers=0, n_bands=4, svd_cache=cache):
        pass
    first = cache.get(weight_matrices(model, "q", 0)[0])
    with remove_bands(model, 1, kinds="q", layers=0, n_bands=4, svd_cache=cache):
        pass
    assert cache.get(weight_matrices(model, "q", 0)[0]) is first


def test_svd_cache_detects_outside_change():
    model, _ = load_model("tiny-bert", 2)
    cache = SVDCache()
    ref = weight_matrices(model, "q", 0)[0]
    first = cache.get(ref)
    with torch.no_grad():
        ref.weight.mul_(2.0)
    second = cache.get(ref)
    assert second is not first
    assert torch.allclose(second.S, 2 * first.S, rtol=1e-5)


def test_energy_fraction_of_one_band():
    model, _ = load_model("tiny-bert", 2)
    ref = weight_matrices(model, "ffn_in", 1)[0]
    values = torch.linalg.svdvals(ref.weight.detach()).double()
    start, stop = band_bounds(len(values), 4)[2]
    expected = float((values[start:stop] ** 2).sum() / (values**2).sum())
    with remove_bands(model, 2, kinds="ffn_in", layers=1, n_bands=4) as summary:
        pass
    assert summary.energy_fraction == pytest.approx(expected, rel=1e-4)
    assert summary.n_removed == stop - start


@pytest.mark.parametrize("band", [-1, 4])
def test_band_outside_range_rejected(band):
    model, _ = load_model("tiny-bert", 2)
    with pytest.raises(ValueError, match="outside 0..3"):
        with remove_bands(model, band, n_bands=4):
            pass


def test_n_bands_above_rank_rejected():
    model, _ = load_model("tiny-bert", 2)
    with pytest.raises(ValueError, match="rank 64"):
        with remove_bands(model, 0, kinds="q", layers=0, n_bands=65):
            pass
    before = _state(model)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_revert_update_unchanged_model_is_noop():
    model, _ = load_model("tiny-bert", 2)
    before = _state(model)
    reference = {ref.path: ref.weight.detach().clone() for ref in weight_matrices(model)}
    with remove_bands(model, 1, n_bands=4, mode="revert_update", reference=reference):
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, before[name]), name


def test_revert_update_requires_reference():
    model, _ = load_model("tiny-bert", 2)
    with pytest.raises(KeyError, match="pretrained weight"):
        with remove_bands(model, 1, n_bands=4, mode="revert_update"):
            pass
