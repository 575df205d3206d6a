"""Tests of the benchmark's naive loop, equivalence check and FLOP count on a tiny random BERT."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from svutils.ablation import Cell, run_grid
from svutils.data import TokenizedSet
from svutils.models import load_model
from svutils.svd import band_bounds

BENCH_PATH = Path(__file__).resolve().parents[2] / "bench" / "ablation_speed.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("ablation_speed", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules, so register first.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Multi-threaded LAPACK SVDs of small matrices slow down by 10x or more when other
    # processes compete for the cores, and one thread is fast enough for a tiny model.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_model():
    model, _ = load_model("tiny-bert", 2, seed=0)
    # A larger classifier gives logit margins far above float32 rounding, so an argmax
    # flip would point at a real difference between the implementations.
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
    return model


@pytest.fixture(scope="module")
def eval_set():
    rng = np.random.default_rng(0)
    max_length = 24
    lengths = rng.integers(4, max_length + 1, size=40)
    input_ids = [[101, *rng.integers(1000, 30000, size=length - 2).tolist(), 102] for length in lengths]
    token_type_ids = [[0] * (length // 2) + [1] * (length - length // 2) for length in lengths]
    return TokenizedSet(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        labels=rng.integers(0, 2, size=len(lengths)),
        example_ids=np.arange(len(lengths)),
        task="rte",
        max_length=max_length,
    )


@pytest.fixture(scope="module")
def grid_and_naive(tiny_model, eval_set):
    cells = bench.evenly_spaced(bench.grid_cells(tiny_model), 14)
    grid = run_grid(tiny_model, eval_set, cells, task="rte", n_bootstrap=50, progress=False)
    batches = bench.naive_batches(eval_set)
    naive = {cell.key(): bench.naive_cell_logits(tiny_model, batches, cell)[0] for cell in cells}
    return cells, grid, naive


def _full_logits(model, eval_set) -> np.ndarray:
    batches = bench.naive_batches(eval_set)
    logits = np.empty((len(eval_set), 2), dtype=np.float32)
    with torch.no_grad():
        for batch in batches:
            inputs = {name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")}
            logits[batch["index"].numpy()] = model(**inputs).logits.numpy()
    return logits


def test_naive_band_bounds_match_balanced():
    for rank, n_bands in [(384, 10), (1536, 10), (64, 10), (7, 3), (10, 10), (5, 1)]:
        assert bench.naive_band_bounds(rank, n_bands) == band_bounds(rank, n_bands, "balanced"), (rank, n_bands)


def test_naive_batches_pad_to_max_length(eval_set):
    batches = bench.naive_batches(eval_set, batch_size=16)
    assert [int(batch["index"].numel()) for batch in batches] == [16, 16, 8]
    assert all(batch["input_ids"].shape[1] == eval_set.max_length for batch in batches)
    assert torch.equal(torch.cat([batch["index"] for batch in batches]), torch.arange(len(eval_set)))


def test_grid_covers_kinds_groups_and_all(tiny_model):
    cells = bench.grid_cells(tiny_model)
    assert len(cells) == 190
    assert len({cell.key() for cell in cells}) == 190
    assert sum(bench.n_matrices(cell) == 36 for cell in cells) == 10
    assert sum(bench.n_matrices(cell) == 2 for cell in cells) == 180


def test_naive_agrees_with_run_grid(grid_and_naive, eval_set):
    cells, grid, naive = grid_and_naive
    check = bench.compare_predictions(naive, grid, eval_set.labels)
    assert check["n_cells"] == len(cells)
    assert check["n_predictions"] == len(cells) * len(eval_set)
    assert check["n_mismatches"] == 0, check["mismatches"]
    assert check["max_abs_loss_difference"] < 1e-4


def test_naive_removal_changes_logits(tiny_model, eval_set):
    cell = Cell(kinds=("q", "k", "v", "o", "ffn_in", "ffn_out"), layers=tuple(range(6)), bands=(0,), n_bands=10)
    edited, _ = bench.naive_cell_logits(tiny_model, bench.naive_batches(eval_set), cell)
    unedited = _full_logits(tiny_model, eval_set)
    assert np.abs(edited - unedited).max() > 1e-2


def test_naive_leaves_model_unchanged(tiny_model, eval_set):
    before = {name: tensor.clone() for name, tensor in tiny_model.state_dict().items()}
    cell = Cell(kinds=("ffn_in",), layers=(4, 5), bands=(9,), n_bands=10)
    bench.naive_cell_logits(tiny_model, bench.naive_batches(eval_set), cell)
    after = tiny_model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_naive_rejects_random_mode(tiny_model, eval_set):
    cell = Cell(kinds=("q",), layers=(0,), bands=(1,), n_bands=10, mode="random")
    with pytest.raises(ValueError, match="mode 'remove'"):
        bench.naive_cell_logits(tiny_model, bench.naive_batches(eval_set), cell)


def test_compare_predictions_reports_flip(grid_and_naive, eval_set):
    cells, grid, naive = grid_and_naive
    key = cells[3].key()
    flipped = dict(grid.predictions)
    flipped[key] = grid.predictions[key].copy()
    flipped[key][5] = 1 - flipped[key][5]
    tampered = dataclasses.replace(grid, predictions=flipped)
    check = bench.compare_predictions(naive, tampered, eval_set.labels)
    assert check["n_mismatches"] == 1
    mismatch = check["mismatches"][0]
    assert (mismatch["cell_key"], mismatch["example"]) == (key, 5)
    assert mismatch["naive_margin"] == pytest.approx(abs(naive[key][5, 0] - naive[key][5, 1]))


def test_compare_predictions_missing_cell(grid_and_naive, eval_set):
    _, grid, naive = grid_and_naive
    extra = dict(naive)
    extra["not-a-cell"] = next(iter(naive.values()))
    with pytest.raises(KeyError, match="not-a-cell"):
        bench.compare_predictions(extra, grid, eval_set.labels)


def test_cell_flops_hand_count():
    dims = bench.ModelDims(n_layers=2, layer_linear_macs=10, attention_width=4, head_linear_macs=3)
    # Per layer: L=1 gives 2·10 + 4·4 = 36, L=2 gives 40 + 64 = 104. One layer runs from
    # start layer 1, and the head adds 2·3 per example.
    assert bench.cell_flops(dims, np.array([1, 2]), start_layer=1) == 140 + 12
    assert bench.cell_flops(dims, np.array([1, 2]), start_layer=0) == 280 + 12


def test_cell_flops_cls_only_hand_count():
    dims = bench.ModelDims(n_layers=2, layer_linear_macs=10, attention_width=4, head_linear_macs=3, key_value_macs=4)
    # Last layer, [CLS] only: L=1 gives 2·1·4 + 2·6 + 4·1·4 = 36, L=2 gives 16 + 12 + 32 = 60.
    # From start layer 0 the first layer adds 36 + 104 as before.
    assert bench.cell_flops(dims, np.array([1, 2]), start_layer=1, cls_only=True) == 96 + 12
    assert bench.cell_flops(dims, np.array([1, 2]), start_layer=0, cls_only=True) == 140 + 96 + 12


def test_model_dims_tiny_bert(tiny_model):
    dims = bench.model_dims(tiny_model)
    assert dims.n_layers == 6
    assert dims.layer_linear_macs == 4 * 64 * 64 + 2 * 64 * 128
    assert dims.attention_width == 64
    assert dims.head_linear_macs == 64 * 64 + 64 * 2
    assert dims.key_value_macs == 2 * 64 * 64


def test_evenly_spaced_spans_grid(tiny_model):
    cells = bench.grid_cells(tiny_model)
    picked = bench.evenly_spaced(cells, 30)
    assert len(picked) == 30
    assert picked[0] == cells[0]
    assert picked[-1] == cells[-1]
    assert bench.evenly_spaced(cells, None) == cells


def test_extrapolate_seconds_by_matrix_count(tiny_model):
    cells = bench.grid_cells(tiny_model)
    sample = [cells[0], cells[-1]]  # 2 matrices and 36 matrices
    assert bench.extrapolate_seconds(sample, [1.0, 10.0], cells) == pytest.approx(180 * 1.0 + 10 * 10.0)


def test_merge_grids_matches_single_run(grid_and_naive, tiny_model, eval_set):
    cells, grid, _ = grid_and_naive
    halves = [
        run_grid(tiny_model, eval_set, part, task="rte", n_bootstrap=50, progress=False)
        for part in (cells[:5], cells[5:])
    ]
    merged = bench.merge_grids(halves)
    assert set(merged.predictions) == set(grid.predictions)
    assert all(np.array_equal(merged.predictions[key], grid.predictions[key]) for key in grid.predictions)
    assert len(merged.table) == len(cells) + 1
    assert (merged.table["cell_key"] == "baseline").sum() == 1
