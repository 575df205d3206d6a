"""Band removal and adapters on the packaged all-MiniLM-L6-v2 (real pretrained weights)."""

import pytest
import torch

from svutils.models import layer_groups, load_model, num_layers, weight_matrices
from svutils.svd import SVDCache, band_bounds, exact_svd, remove_bands

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm():
    model, _ = load_model("minilm", 2)
    return model


def test_minilm_adapter_paths(minilm):
    refs = weight_matrices(minilm)
    assert len(refs) == 6 * 6
    by_kind = {ref.kind: ref for ref in refs if ref.layer == 3}
    assert by_kind["o"].path == "bert.encoder.layer.3.attention.output.dense"
    assert by_kind["ffn_out"].path == "bert.encoder.layer.3.output.dense"
    assert by_kind["o"].module is not by_kind["ffn_out"].module
    assert by_kind["ffn_in"].shape == (1536, 384)
    assert by_kind["ffn_out"].shape == (384, 1536)
    assert by_kind["q"].shape == (384, 384)


def test_minilm_layer_groups(minilm):
    assert num_layers(minilm) == 6
    assert layer_groups(6) == {"early": (0, 1), "middle": (2, 3), "late": (4, 5)}


@pytest.mark.parametrize("kind", ["q", "ffn_in", "ffn_out"])
def test_minilm_bands_sum_to_weight(minilm, kind):
    weight = weight_matrices(minilm, kind, 2)[0].weight.detach()
    svd = exact_svd(weight)
    total = sum(svd.component(start, stop) for start, stop in band_bounds(svd.rank, 10))
    error = torch.linalg.matrix_norm(total - weight) / torch.linalg.matrix_norm(weight)
    assert error < 1e-5


def test_minilm_removing_all_bands_leaves_zero(minilm):
    ref = weight_matrices(minilm, "ffn_in", 0)[0]
    norm = torch.linalg.matrix_norm(ref.weight.detach())
    with remove_bands(minilm, range(10), kinds="ffn_in", layers=0, n_bands=10):
        assert torch.linalg.matrix_norm(ref.weight.detach()) / norm < 1e-5


@pytest.mark.parametrize("band", [0, 9])
def test_minilm_removal_keeps_other_values(minilm, band):
    ref = weight_matrices(minilm, "ffn_out", 5)[0]
    original = torch.linalg.svdvals(ref.weight.detach())
    start, stop = band_bounds(len(original), 10)[band]
    expected = torch.cat([original[:start], original[stop:]])
    with remove_bands(minilm, band, kinds="ffn_out", layers=5, n_bands=10):
        after = torch.linalg.svdvals(ref.weight.detach())
    assert torch.allclose(after[: len(expected)], expected, atol=2e-5 * float(original[0]))
    assert after[len(expected):].max() < 2e-5 * float(original[0])


def test_minilm_restored_bit_for_bit(minilm):
    before = {name: tensor.clone() for name, tensor in minilm.state_dict().items()}
    cache = SVDCache()
    for band in (0, 5, 9):
        with remove_bands(minilm, band, n_bands=10, svd_cache=cache):
            pass
    with pytest.raises(ZeroDivisionError):
        with remove_bands(minilm, 3, kinds="attn", layers="late", n_bands=10, svd_cache=cache):
            1 / 0
    for name, tensor in minilm.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert len(cache) == 36
