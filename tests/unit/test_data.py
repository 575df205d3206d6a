"""Unit tests of split loading, validation, stratified subsets and tokenization."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import BertTokenizerFast

from svutils import data
from svutils.data import (
    DataError,
    DataNotFoundError,
    TokenizedSet,
    describe_source,
    load_split,
    stratified_subset,
    tokenize,
    tokenizer_fingerprint,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TASK_FILES = FIXTURES / "tasks"
FORMATS = ("jsonl", "csv", "parquet")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("SVUTILS_CACHE_DIR", str(tmp_path / "cache"))
    data.clear_cache()
    yield
    data.clear_cache()


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerFast(vocab_file=str(FIXTURES / "tiny_vocab.txt"), model_max_length=64)


def _write_jsonl(folder: Path, task: str, split: str, lines: list[str]) -> Path:
    path = folder / task / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rte_line(label=0, idx=0, **changes) -> str:
    record = {"sentence1": "a cat sleeps .", "sentence2": "a cat .", "label": label, "idx": idx}
    record.update(changes)
    return json.dumps({key: value for key, value in record.items() if value is not ...})


# --------------------------------------------------------------------------------------
# Local files


@pytest.mark.parametrize("extension", FORMATS)
def test_load_rte_each_format(extension):
    frame = load_split("rte", "train", data_dir=TASK_FILES / extension)
    assert list(frame.columns) == ["sentence1", "sentence2", "label", "example_id"]
    assert len(frame) == 48
    assert frame["label"].dtype == np.int64
    assert frame["example_id"].dtype == np.int64
    assert sorted(frame["example_id"]) == list(range(48))


def test_formats_load_identical_frames():
    frames = {ext: load_split("imdb", "train", data_dir=TASK_FILES / ext) for ext in FORMATS}
    for extension in ("csv", "parquet"):
        pd.testing.assert_frame_equal(frames[extension], frames["jsonl"], check_dtype=False)


def test_example_id_defaults_to_row_number():
    frame = load_split("imdb", "test", data_dir=TASK_FILES / "jsonl")
    assert frame["example_id"].tolist() == list(range(20))


def test_split_aliases():
    folder = TASK_FILES / "jsonl"
    assert len(load_split("rte", data_dir=folder)) == 16
    assert len(load_split("rte", "eval", data_dir=folder)) == 16
    assert len(load_split("rte", "validation", data_dir=folder)) == 16
    assert len(load_split("imdb", None, data_dir=folder)) == 20
    assert len(load_split("imdb", "train", data_dir=folder)) == 40


def test_invalid_split_name_rejected():
    with pytest.raises(ValueError, match="invalid split name"):
        load_split("rte", "../rte/train", data_dir=TASK_FILES / "jsonl")


def test_jsonl_preferred_over_csv_and_parquet(tmp_path):
    folder = tmp_path / "data" / "rte"
    folder.mkdir(parents=True)
    shutil.copy(TASK_FILES / "parquet" / "rte" / "validation.parquet", folder)
    shutil.copy(TASK_FILES / "csv" / "rte" / "validation.csv", folder)
    _write_jsonl(tmp_path / "data", "rte", "validation", [_rte_line(idx=7)])
    assert load_split("rte", data_dir=tmp_path / "data")["example_id"].tolist() == [7]
    (folder / "validation.jsonl").unlink()
    assert len(load_split("rte", data_dir=tmp_path / "data")) == 16
    (folder / "validation.csv").unlink()
    assert len(load_split("rte", data_dir=tmp_path / "data")) == 16


def test_missing_task_folder_lists_contents(tmp_path):
    (tmp_path / "imdb").mkdir()
    with pytest.raises(DataNotFoundError) as caught:
        load_split("rte", data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "rte") in message
    assert "imdb" in message


def test_missing_split_file_lists_files(tmp_path):
    _write_jsonl(tmp_path, "rte", "train", [_rte_line()])
    with pytest.raises(DataNotFoundError) as caught:
        load_split("rte", "validation", data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "rte" / "validation.jsonl") in message
    assert str(tmp_path / "rte" / "validation.parquet") in message
    assert "train.jsonl" in message


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_split("rte", data_dir=tmp_path / "absent")


def test_not_found_is_file_not_found_error():
    assert issubclass(DataNotFoundError, FileNotFoundError)
    assert issubclass(DataNotFoundError, DataError)
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------------------
# Validation errors name the file and line


def _load_error(tmp_path, lines, task="rte", split="train") -> str:
    path = _write_jsonl(tmp_path, task, split, lines)
    with pytest.raises(DataError) as caught:
        load_split(task, split, data_dir=tmp_path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_malformed_json_line(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0), _rte_line(idx=1), '{"sentence1": "x",'])
    assert "line 3" in message
    assert "malformed JSON" in message


def test_json_line_not_object(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0), "[1, 2]"])
    assert "line 2" in message
    assert "JSON object" in message


def test_missing_field(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0), _rte_line(idx=1, sentence2=...)])
    assert "line 2" in message
    assert "'sentence2'" in message


def test_blank_lines_keep_line_numbers(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0), "", _rte_line(idx=1, label=5)])
    assert "line 3" in message


@pytest.mark.parametrize("label", ["1", 1.5, True, [1]])
def test_non_integer_label(tmp_path, label):
    message = _load_error(tmp_path, [_rte_line(idx=0), _rte_line(idx=1, label=label)])
    assert "line 2" in message
    assert "integer" in message


def test_null_label(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0, label=None)])
    assert "line 1" in message
    assert "missing" in message


def test_label_out_of_range_lists_labels(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0), _rte_line(idx=1, label=2)])
    assert "line 2" in message
    assert "outside 0..1" in message
    assert "not_entailment" in message


def test_unlabeled_split_rejected(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0, label=-1)], split="test")
    assert "line 1" in message
    assert "unlabeled" in message
    assert "cannot be evaluated" in message


def test_null_text(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0), _rte_line(idx=1, sentence1=None)])
    assert "line 2" in message
    assert "'sentence1' is null" in message


def test_non_string_text(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=0, sentence1=12)])
    assert "must be a string" in message


def test_duplicate_idx(tmp_path):
    message = _load_error(tmp_path, [_rte_line(idx=4), _rte_line(idx=5), _rte_line(idx=4)])
    assert "line 3" in message
    assert "duplicate idx 4" in message
    assert "line 1" in message


def test_empty_file(tmp_path):
    message = _load_error(tmp_path, [])
    assert "no examples" in message


def test_csv_missing_column(tmp_path):
    path = tmp_path / "imdb" / "train.csv"
    path.parent.mkdir()
    path.write_text("review,label\ngood,1\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_split("imdb", "train", data_dir=tmp_path)
    message = str(caught.value)
    assert f"{path}, line 1" in message
    assert "'text'" in message


def test_csv_line_numbers_follow_multiline_fields(tmp_path):
    path = tmp_path / "imdb" / "train.csv"
    path.parent.mkdir()
    path.write_text('text,label\n"first\nreview",1\n"second\n\nreview",0\nthird,yes\n', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_split("imdb", "train", data_dir=tmp_path)
    message = str(caught.value)
    assert f"{path}, line 7" in message
    assert "'yes'" in message


def test_csv_wrong_field_count(tmp_path):
    path = tmp_path / "imdb" / "train.csv"
    path.parent.mkdir()
    path.write_text("text,label\ngood film,1\ngood, film,1\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_split("imdb", "train", data_dir=tmp_path)
    message = str(caught.value)
    assert f"{path}, line 3" in message
    assert "3 fields" in message


def test_parquet_bad_label_row(tmp_path):
    path = tmp_path / "imdb" / "train.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 7]}), path)
    with pytest.raises(DataError) as caught:
        load_split("imdb", "train", data_dir=tmp_path)
    message = str(caught.value)
    assert f"{path}, row 2" in message
    assert "label 7" in message


def test_parquet_missing_column(tmp_path):
    path = tmp_path / "imdb" / "train.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"text": ["a"]}), path)
    with pytest.raises(DataError, match="missing column"):
        load_split("imdb", "train", data_dir=tmp_path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "imdb" / "train.parquet"
    path.parent.mkdir()
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_split("imdb", "train", data_dir=tmp_path)


# --------------------------------------------------------------------------------------
# Source resolution


def test_env_var_resolution(monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(TASK_FILES / "csv"))
    assert len(load_split("rte")) == 16


def test_argument_overrides_env(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "absent"))
    assert len(load_split("rte", data_dir=TASK_FILES / "jsonl")) == 16


def test_env_var_missing_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "absent"))
    with pytest.raises(DataNotFoundError) as caught:
        load_split("rte")
    assert "$SVUTILS_DATA_DIR" in str(caught.value)


def test_hub_and_local_both_unavailable(monkeypatch):
    calls = []

    def offline(spec, split):
        calls.append((spec.hub_path, spec.hub_config, split))
        raise ConnectionError("no network")

    monkeypatch.setattr(data, "_load_from_hub", offline)
    with pytest.raises(DataNotFoundError) as caught:
        load_split("rte", "train")
    message = str(caught.value)
    assert calls == [("glue", "rte", "train")]
    assert "'glue/rte'" in message
    assert "no network" in message
    assert "SVUTILS_DATA_DIR" in message
    assert "<dir>/<task>/<split>.jsonl" in message
    assert "network access" in message


def test_hub_frame_is_validated(monkeypatch):
    hub_frame = pd.DataFrame(
        {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 1], "idx": [10, 11]}
    )
    monkeypatch.setattr(data, "_load_from_hub", lambda spec, split: hub_frame)
    frame = load_split("rte", "validation")
    assert frame["example_id"].tolist() == [10, 11]
    assert list(frame.columns) == ["sentence1", "sentence2", "label", "example_id"]


def test_hub_test_split_rejected(monkeypatch):
    hub_frame = pd.DataFrame({"text": ["a", "b"], "label": [-1, -1]})
    monkeypatch.setattr(data, "_load_from_hub", lambda spec, split: hub_frame)
    with pytest.raises(DataError) as caught:
        load_split("imdb", "unsupervised")
    message = str(caught.value)
    assert "hub dataset 'imdb' split 'unsupervised', row 0" in message
    assert "unlabeled" in message


# --------------------------------------------------------------------------------------
# In-memory cache


def test_cache_returns_copies():
    first = load_split("rte", data_dir=TASK_FILES / "jsonl")
    first.loc[:, "label"] = 1
    second = load_split("rte", data_dir=TASK_FILES / "jsonl")
    assert second["label"].sum() < len(second)


def test_cache_rereads_changed_file(tmp_path):
    path = _write_jsonl(tmp_path, "rte", "train", [_rte_line(idx=0)])
    assert len(load_split("rte", "train", data_dir=tmp_path)) == 1
    _write_jsonl(tmp_path, "rte", "train", [_rte_line(idx=0), _rte_line(idx=1)])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert len(load_split("rte", "train", data_dir=tmp_path)) == 2


# --------------------------------------------------------------------------------------
# MNLI combined validation split


def test_mnli_combined_validation():
    folder = TASK_FILES / "jsonl"
    matched = load_split("mnli", "validation_matched", data_dir=folder)
    mismatched = load_split("mnli", "validation_mismatched", data_dir=folder)
    combined = load_split("mnli", "validation", data_dir=folder)
    assert len(combined) == len(matched) + len(mismatched)
    assert combined["example_id"].tolist() == list(range(len(combined)))
    assert combined["source_split"].value_counts().to_dict() == {
        "validation_matched": len(matched),
        "validation_mismatched": len(mismatched),
    }
    assert combined["source_example_id"].tolist()[: len(matched)] == matched["example_id"].tolist()


def test_mnli_eval_is_matched_only():
    frame = load_split("mnli", data_dir=TASK_FILES / "jsonl")
    assert len(frame) == 12


def test_mnli_combined_needs_mismatched(tmp_path):
    shutil.copytree(TASK_FILES / "jsonl" / "mnli", tmp_path / "mnli")
    (tmp_path / "mnli" / "validation_mismatched.jsonl").unlink()
    with pytest.raises(DataNotFoundError) as caught:
        load_split("mnli", "validation", data_dir=tmp_path)
    message = str(caught.value)
    assert "validation_mismatched" in message
    assert "concatenation" in message


# --------------------------------------------------------------------------------------
# Source identity


def test_describe_source_follows_content(tmp_path):
    shutil.copytree(TASK_FILES / "jsonl" / "rte", tmp_path / "copy" / "rte")
    original = describe_source("rte", "train", data_dir=TASK_FILES / "jsonl")
    copied = describe_source("rte", "train", data_dir=tmp_path / "copy")
    assert original == copied
    with (tmp_path / "copy" / "rte" / "train.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(_rte_line(idx=99) + "\n")
    assert describe_source("rte", "train", data_dir=tmp_path / "copy") != original


def test_describe_source_hub():
    source = describe_source("qnli", "eval")
    assert source == {
        "kind": "hub",
        "task": "qnli",
        "split": "validation",
        "hub_path": "glue",
        "hub_config": "qnli",
    }


# --------------------------------------------------------------------------------------
# Stratified subsets


def _labelled(counts: list[int]) -> pd.DataFrame:
    labels = np.concatenate([np.full(count, label) for label, count in enumerate(counts)])
    order = np.random.default_rng(0).permutation(len(labels))
    return pd.DataFrame({"label": labels[order], "value": np.arange(len(labels))})


def test_subset_exact_size_and_balance():
    frame = _labelled([60, 30, 10])
    subset = stratified_subset(frame, 37, seed=1)
    counts = subset["label"].value_counts().sort_index().to_numpy()
    proportional = np.array([60, 30, 10]) * 37 / 100
    assert len(subset) == 37
    assert np.all(np.abs(counts - proportional) < 1)


def test_subset_largest_remainder_tie_goes_first():
    frame = _labelled([5, 3, 2])
    counts = stratified_subset(frame, 5, seed=0)["label"].value_counts().sort_index()
    assert counts.tolist() == [3, 1, 1]


def test_subset_same_seed_same_rows():
    frame = _labelled([50, 50])
    first = stratified_subset(frame, 20, seed=3)
    second = stratified_subset(frame, 20, seed=3)
    assert first.index.tolist() == second.index.tolist()


def test_subset_different_seed_different_rows():
    frame = _labelled([50, 50])
    first = stratified_subset(frame, 20, seed=3)
    second = stratified_subset(frame, 20, seed=4)
    assert first.index.tolist() != second.index.tolist()


def test_subset_keeps_original_order():
    frame = _labelled([50, 50])
    subset = stratified_subset(frame, 30, seed=0)
    assert subset.index.is_monotonic_increasing
    assert subset["value"].tolist() == frame.loc[subset.index, "value"].tolist()


def test_subset_none_returns_all():
    frame = _labelled([4, 6])
    subset = stratified_subset(frame, None, seed=0)
    pd.testing.assert_frame_equal(subset, frame)
    assert subset is not frame


def test_subset_full_size_returns_all():
    frame = _labelled([4, 6])
    assert stratified_subset(frame, 10, seed=0).index.tolist() == list(range(10))


def test_subset_too_large_names_sizes():
    with pytest.raises(ValueError) as caught:
        stratified_subset(_labelled([4, 6]), 11, seed=0)
    assert "n=11" in str(caught.value)
    assert "10 rows" in str(caught.value)


@pytest.mark.parametrize("size", [0, -3])
def test_subset_non_positive_rejected(size):
    with pytest.raises(ValueError, match="at least 1"):
        stratified_subset(_labelled([4, 6]), size, seed=0)


def test_subset_non_integer_rejected():
    with pytest.raises(TypeError, match="int or None"):
        stratified_subset(_labelled([4, 6]), 2.5, seed=0)


def test_subset_missing_label_column():
    with pytest.raises(KeyError, match="'target'"):
        stratified_subset(_labelled([4, 6]), 2, seed=0, label_column="target")


# --------------------------------------------------------------------------------------
# Tokenization


def test_tokenize_pairs(tokenizer, tmp_path):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    tokens = tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)
    first = tokens.input_ids[0]
    assert len(tokens) == len(frame)
    assert first[0] == tokenizer.cls_token_id
    assert first.count(tokenizer.sep_token_id) == 2
    assert tokens.token_type_ids is not None
    assert tokens.token_type_ids[0][-1] == 1
    assert tokens.labels.tolist() == frame["label"].tolist()
    assert tokens.example_ids.tolist() == frame["example_id"].tolist()
    assert tokens.lengths.tolist() == [len(ids) for ids in tokens.input_ids]


def test_tokenize_does_not_pad(tokenizer, tmp_path):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    tokens = tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)
    assert len(set(tokens.lengths.tolist())) > 1
    assert all(tokenizer.pad_token_id not in ids for ids in tokens.input_ids)


def test_tokenize_truncates_longest_first(tokenizer, tmp_path):
    frame = pd.DataFrame(
        {
            "sentence1": ["the cat sees the red ball in the park near the river at home ."],
            "sentence2": ["the cat ."],
            "label": [0],
        }
    )
    tokens = tokenize(frame, "rte", tokenizer, 10, cache_dir=tmp_path)
    ids = tokens.input_ids[0]
    second_segment = [token for token, kind in zip(ids, tokens.token_type_ids[0]) if kind == 1]
    expected = tokenizer("the cat .", add_special_tokens=False)["input_ids"]
    assert len(ids) == 10
    assert second_segment == expected + [tokenizer.sep_token_id]


def test_tokenize_single_text(tokenizer, tmp_path):
    frame = load_split("imdb", data_dir=TASK_FILES / "jsonl")
    tokens = tokenize(frame, "imdb", tokenizer, 8, cache_dir=tmp_path)
    assert tokens.lengths.max() == 8
    assert all(ids.count(tokenizer.sep_token_id) == 1 for ids in tokens.input_ids)


def test_tokenize_uses_disk_cache(tokenizer, tmp_path, monkeypatch):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    first = tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)
    cached_files = list((tmp_path / "tokenized").glob("*.parquet"))
    monkeypatch.setattr(data, "_encode", lambda *args, **kwargs: pytest.fail("cache missed"))
    second = tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)
    assert len(cached_files) == 1
    assert second.input_ids == first.input_ids
    assert second.token_type_ids == first.token_type_ids


def test_tokenize_cache_key_covers_inputs(tokenizer, tmp_path):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)
    tokenize(frame, "rte", tokenizer, 16, cache_dir=tmp_path)
    edited = frame.copy()
    edited.loc[edited.index[0], "sentence1"] = "a dog ."
    tokenize(edited, "rte", tokenizer, 32, cache_dir=tmp_path)
    assert len(list((tmp_path / "tokenized").glob("*.parquet"))) == 3


def test_tokenize_cache_ignores_labels(tokenizer, tmp_path):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)
    flipped = frame.assign(label=1 - frame["label"])
    tokens = tokenize(flipped, "rte", tokenizer, 32, cache_dir=tmp_path)
    assert tokens.labels.tolist() == flipped["label"].tolist()


def test_tokenize_without_cache(tokenizer, tmp_path):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path, use_cache=False)
    assert not (tmp_path / "tokenized").exists()


def test_tokenizer_fingerprint_stable(tokenizer, tmp_path):
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["a cat"], truncation=True, max_length=5)
    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = BertTokenizerFast.from_pretrained(tmp_path / "saved")
    assert tokenizer_fingerprint(tokenizer) == before
    assert tokenizer_fingerprint(reloaded) == before


def test_tokenize_rejects_bad_max_length(tokenizer, tmp_path):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    with pytest.raises(ValueError, match="at least 4"):
        tokenize(frame, "rte", tokenizer, 3, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="model_max_length=64"):
        tokenize(frame, "rte", tokenizer, 65, cache_dir=tmp_path)


def test_tokenize_missing_column(tokenizer, tmp_path):
    frame = load_split("imdb", data_dir=TASK_FILES / "jsonl")
    with pytest.raises(KeyError, match="'sentence1'"):
        tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)


# --------------------------------------------------------------------------------------
# Batches


@pytest.fixture
def rte_tokens(tokenizer, tmp_path):
    frame = load_split("rte", data_dir=TASK_FILES / "jsonl")
    return tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)


def test_batches_pad_to_batch_max(rte_tokens):
    for batch in rte_tokens.batches(5):
        lengths = rte_tokens.lengths[batch["index"].numpy()]
        assert batch["input_ids"].shape == (len(lengths), lengths.max())
        assert batch["input_ids"].dtype == torch.long
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths.tolist()
        assert batch["token_type_ids"].shape == batch["input_ids"].shape


def test_batches_index_maps_rows(rte_tokens):
    for batch in rte_tokens.batches(7):
        for row, position in enumerate(batch["index"].tolist()):
            length = rte_tokens.lengths[position]
            assert batch["input_ids"][row, :length].tolist() == rte_tokens.input_ids[position]
            assert batch["input_ids"][row, length:].eq(rte_tokens.pad_token_id).all()
            assert batch["labels"][row] == rte_tokens.labels[position]


def test_batches_cover_every_example_once(rte_tokens):
    positions = torch.cat([batch["index"] for batch in rte_tokens.batches(5)])
    assert sorted(positions.tolist()) == list(range(len(rte_tokens)))


def test_batches_sorted_longest_first(rte_tokens):
    positions = torch.cat([batch["index"] for batch in rte_tokens.batches(5)]).numpy()
    lengths = rte_tokens.lengths[positions]
    assert np.all(np.diff(lengths) <= 0)


def test_batches_order_deterministic(rte_tokens):
    first = [batch["index"].tolist() for batch in rte_tokens.batches(5)]
    second = [batch["index"].tolist() for batch in rte_tokens.batches(5)]
    assert first == second


def test_batches_unsorted_keep_set_order(rte_tokens):
    positions = torch.cat([b["index"] for b in rte_tokens.batches(5, sort_by_length=False)])
    assert positions.tolist() == list(range(len(rte_tokens)))


def test_batches_pad_to_max_length(rte_tokens):
    batch = rte_tokens.batches(4, pad_to_max_length=True)[-1]
    assert batch["input_ids"].shape[1] == 32
    assert batch["attention_mask"].shape[1] == 32


def test_batches_custom_pad_id(rte_tokens):
    batch = rte_tokens.batches(len(rte_tokens), pad_token_id=3)[0]
    assert batch["input_ids"][-1, -1].item() == 3


def test_batches_without_token_types():
    tokens = TokenizedSet([[5, 6, 7], [5, 6]], None, [0, 1], [10, 11], "imdb", 8)
    batch = tokens.batches(2)[0]
    assert "token_type_ids" not in batch
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 6, 0]]
    assert batch["index"].tolist() == [0, 1]


@pytest.mark.parametrize("size", [0, -1, 2.0, True])
def test_batches_reject_bad_batch_size(rte_tokens, size):
    with pytest.raises(ValueError, match="batch_size"):
        rte_tokens.batches(size)


def test_tokenized_set_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="one label"):
        TokenizedSet([[1, 2]], None, [0, 1], [0], "imdb", 8)


def test_tokenized_set_rejects_too_long_sequence():
    with pytest.raises(ValueError, match="max_length=2"):
        TokenizedSet([[1, 2, 3]], None, [0], [0], "imdb", 2)
