"""Unit tests for the ablation grid, hidden-state reuse and the results store."""

import json

import numpy as np
import pytest
import torch

from svutils.ablation import BASELINE, Cell, band_cells, run_grid
from svutils.data import TokenizedSet
from svutils.evaluate import Evaluator
from svutils.models import load_model
from svutils.store import ResultsStore, model_fingerprint
from svutils.svd import remove_bands


def random_eval_set(n=40, max_length=24, seed=0, num_labels=2):
    rng = np.random.default_rng(seed)
    input_ids, types = [], []
    for _ in range(n):
        length = int(rng.integers(4, max_length + 1))
        ids = [101, *rng.integers(1000, 5000, size=length - 2).tolist(), 102]
        input_ids.append(ids)
        types.append([0] * length)
    labels = rng.integers(0, num_labels, size=n)
    return TokenizedSet(input_ids, types, labels, np.arange(n), "rte", max_length)


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_model("tiny-bert", 2, seed=1)
    return model


def _state(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_band_cells_cross_product(tiny):
    cells = band_cells(tiny, kinds={"Q": "q", "FFN": "ffn"}, layers={"early": "early", "late": "late"}, n_bands=4)
    assert len(cells) == 2 * 2 * 4
    ffn_late = [cell for cell in cells if cell.kind_label == "FFN" and cell.layer_label == "late"]
    assert ffn_late[0].kinds == ("ffn_in", "ffn_out")
    assert ffn_late[0].layers == (4, 5)
    assert ffn_late[0].start_layer == 4


def test_cell_rejects_band_outside_range():
    with pytest.raises(ValueError, match="outside 0..3"):
        Cell(kinds=("q",), layers=(0,), bands=(4,), n_bands=4)


def test_cell_key_ignores_labels():
    first = Cell(kinds=("q",), layers=(0,), bands=(1,), n_bands=4, kind_label="Q")
    second = Cell(kinds=("q",), layers=(0,), bands=(1,), n_bands=4, kind_label="query")
    assert first.key() == second.key()
    assert first.key() != Cell(kinds=("q",), layers=(0,), bands=(2,), n_bands=4).key()


def test_replayed_states_give_identical_logits(tiny):
    eval_set = random_eval_set()
    batches = eval_set.batches(8)
    evaluator = Evaluator(tiny, batches)
    base = evaluator.baseline([2, 4])
    assert evaluator.cached_start_layers == (2, 4)
    with remove_bands(tiny, 1, kinds="all", layers=[4, 5], n_bands=4):
        replayed = evaluator.logits(4)
        full = Evaluator(tiny, batches).logits(0)
    assert np.array_equal(replayed, full)
    assert not np.array_equal(replayed, base)


def test_replay_restores_layers(tiny):
    evaluator = Evaluator(tiny, random_eval_set().batches(8))
    originals = list(evaluator.layers)
    evaluator.baseline([3])
    evaluator.logits(3)
    assert all(a is b for a, b in zip(evaluator.layers, originals))


def test_grid_matches_manual_loop(tiny):
    eval_set = random_eval_set()
    cells = band_cells(tiny, kinds={"FFN": "ffn"}, layers={"late": "late", "all": "all"}, n_bands=4)
    result = run_grid(tiny, eval_set, cells, task="rte", n_bootstrap=200, progress=False)
    batches = eval_set.batches(64)
    for cell in cells:
        with remove_bands(tiny, cell.bands, kinds=cell.kinds, layers=cell.layers, n_bands=4):
            expected = Evaluator(tiny, batches).logits(0).argmax(axis=1)
        assert np.array_equal(result.predictions[cell.key()], expected), cell


def test_grid_leaves_model_untouched(tiny):
    before = _state(tiny)
    run_grid(tiny, random_eval_set(), band_cells(tiny, n_bands=4), task="rte", n_bootstrap=100, progress=False)
    for name, tensor in tiny.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_grid_table_columns(tiny):
    cells = band_cells(tiny, n_bands=4, modes=("remove", "random"))
    result = run_grid(tiny, random_eval_set(), cells, task="rte", n_bootstrap=100, progress=False, model_name="tiny")
    table = result.table
    assert len(table) == 1 + 8
    for column in ["task", "model", "band", "n_removed", "energy_fraction", "accuracy", "baseline_accuracy", "change",
                   "ci_low", "ci_high", "mcnemar_p", "loss_change", "loss_ci_low", "collapsed", "majority_rate",
                   "band_convention", "n_eval"]:
        assert column in table.columns, column
    baseline = table[table["mode"] == "baseline"].iloc[0]
    assert baseline["change"] == 0.0
    removed = table[table["mode"] == "remove"]
    random = table[table["mode"] == "random"]
    assert list(removed["n_removed"]) == list(random["n_removed"])
    assert (removed["energy_fraction"].sum()) == pytest.approx(1.0, rel=1e-6)


def test_store_resumes_without_recompute(tiny, tmp_path):
    eval_set = random_eval_set()
    cells = band_cells(tiny, n_bands=4)
    first = run_grid(tiny, eval_set, cells, task="rte", store=tmp_path, n_bootstrap=100, progress=False)
    assert first.n_computed == 4
    second = run_grid(tiny, eval_set, cells, task="rte", store=tmp_path, n_bootstrap=100, progress=False)
    assert second.n_computed == 0
    assert first.table.drop(columns="seconds").equals(second.table.drop(columns="seconds"))


def test_store_recomputes_corrupt_record(tiny, tmp_path):
    eval_set = random_eval_set()
    cells = band_cells(tiny, n_bands=4)
    first = run_grid(tiny, eval_set, cells, task="rte", store=tmp_path, n_bootstrap=100, progress=False)
    records = sorted(path for path in tmp_path.rglob("*.json") if path.stem != "baseline")
    records[0].write_text(records[0].read_text()[:50])
    record = json.loads(records[1].read_text())
    record["payload"]["pred"][0] = 1 - record["payload"]["pred"][0]
    records[1].write_text(json.dumps(record))
    second = run_grid(tiny, eval_set, cells, task="rte", store=tmp_path, n_bootstrap=100, progress=False)
    assert second.n_computed == 2
    assert first.table.drop(columns="seconds").equals(second.table.drop(columns="seconds"))


def test_store_rejects_wrong_length(tmp_path):
    store = ResultsStore(tmp_path)
    store.save("m", "e", "cell", {"pred": [0, 1], "loss": [0.1, 0.2]})
    assert store.load("m", "e", "cell", n_examples=3) is None
    assert not (tmp_path / "m" / "e" / "cell.json").exists()


def test_model_fingerprint_tracks_weights(tiny):
    before = model_fingerprint(tiny)
    with remove_bands(tiny, 0, kinds="q", layers=0, n_bands=4):
        assert model_fingerprint(tiny) != before
    assert model_fingerprint(tiny) == before


def test_baseline_cell_key():
    assert BASELINE.key() == "baseline"
    assert BASELINE.is_baseline
