"""Unit tests of fine-tuning and its checkpoint cache, on a tiny random BERT and fixture data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, BertTokenizerFast

from svutils import data, finetune as finetune_module, models
from svutils.finetune import FinetuneConfig, FinetuneRun, evaluate_model, finetune, model_identity
from svutils.tasks import UnknownTaskError, get_task

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TASK_FILES = FIXTURES / "tasks" / "jsonl"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models run far faster on one thread than on several busy cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("SVUTILS_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A random 2-layer BERT encoder (hidden size 32) with a 60-word vocabulary."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast(vocab_file=str(FIXTURES / "tiny_vocab.txt"), model_max_length=64)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _config(base_model: Path, **changes) -> FinetuneConfig:
    values = dict(
        model=str(base_model),
        task="rte",
        data_dir=str(TASK_FILES),
        n_train=40,
        n_eval=16,
        max_length=32,
        epochs=2,
        checkpoint_epochs=(0, 1, 2),
        learning_rate=1e-3,
        batch_size=8,
        warmup_ratio=0.2,
        seed=0,
        eval_batch_size=8,
    )
    values.update(changes)
    return FinetuneConfig(**values)


@pytest.fixture(scope="module")
def trained(base_model, tmp_path_factory) -> FinetuneRun:
    cache = tmp_path_factory.mktemp("cache")
    return finetune(_config(base_model), cache_dir=cache, progress=False)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(first: Path, second: Path) -> None:
    left, right = _weights(first), _weights(second)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


def _curve_without_timings(run: FinetuneRun) -> pd.DataFrame:
    return run.curve.drop(columns=["seconds", "eval_seconds"])


class _StepCounter:
    """Stand-in for `_train_step` that counts calls and can raise on a given call."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.real = finetune_module._train_step

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        return self.real(*args, **kwargs)


# --------------------------------------------------------------------------------------
# Configuration


def test_config_defaults_checkpoint_every_epoch(base_model):
    config = _config(base_model, epochs=3, checkpoint_epochs=None)
    assert config.checkpoint_epochs == (1, 2, 3)


def test_config_always_saves_final_epoch(base_model):
    config = _config(base_model, epochs=3, checkpoint_epochs=[1, 0, 1])
    assert config.checkpoint_epochs == (0, 1, 3)


def test_config_resolves_eval_alias(base_model):
    assert _config(base_model, eval_split="eval").eval_split == "validation"


def test_config_unknown_task(base_model):
    with pytest.raises(UnknownTaskError, match="Valid tasks are"):
        _config(base_model, task="squad")


def test_config_unknown_model_needs_no_network(tmp_path):
    with pytest.raises(models.UnknownModelError) as caught:
        FinetuneConfig(model=str(tmp_path / "no-such-model"), task="rte")
    message = str(caught.value)
    assert "minilm" in message
    assert "network" in message


def test_config_model_folder_without_config(tmp_path):
    with pytest.raises(models.UnknownModelError, match="no config.json"):
        FinetuneConfig(model=str(tmp_path), task="rte")


def test_config_accepts_short_name_and_hub_id():
    assert FinetuneConfig(model="minilm").model == "minilm"
    assert FinetuneConfig(model="distilbert-base-uncased").model == "distilbert-base-uncased"


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"n_train": 0}, ValueError, "n_train must be at least 1"),
        ({"n_eval": 0}, ValueError, "n_eval must be at least 1"),
        ({"n_train": 2.5}, TypeError, "n_train"),
        ({"checkpoint_epochs": (3,)}, ValueError, "outside 0..2"),
        ({"checkpoint_epochs": (-1,)}, ValueError, "outside 0..2"),
        ({"checkpoint_epochs": "1"}, TypeError, "checkpoint_epochs"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate"),
        ({"learning_rate": -1e-5}, ValueError, "learning_rate"),
        ({"learning_rate": float("nan")}, TypeError, "learning_rate"),
        ({"warmup_ratio": 1.0}, ValueError, "warmup_ratio"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"max_length": 2}, ValueError, "max_length"),
        ({"seed": -1}, ValueError, "seed"),
        ({"max_grad_norm": 0.0}, ValueError, "max_grad_norm"),
        ({"group_by_length": 1}, TypeError, "group_by_length"),
        ({"eval_split": "../x"}, ValueError, "invalid split name"),
    ],
)
def test_config_rejects(base_model, changes, error, message):
    with pytest.raises(error, match=message):
        _config(base_model, **changes)


def test_config_round_trips_through_dict(base_model):
    config = _config(base_model)
    assert FinetuneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_is_stable(base_model):
    assert _config(base_model).fingerprint() == _config(base_model).fingerprint()


def test_fingerprint_covers_hyperparameters(base_model):
    reference = _config(base_model).fingerprint()
    assert _config(base_model, learning_rate=2e-3).fingerprint() != reference
    assert _config(base_model, seed=1).fingerprint() != reference
    assert _config(base_model, n_train=20).fingerprint() != reference


def test_fingerprint_follows_model_content(base_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(base_model, copy)
    reference = _config(copy).fingerprint()
    weights = load_file(str(copy / "model.safetensors"))
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1
    from safetensors.torch import save_file

    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert _config(copy).fingerprint() != reference


def test_fingerprint_ignores_data_location(base_model, tmp_path):
    shutil.copytree(TASK_FILES / "rte", tmp_path / "rte")
    moved = _config(base_model, data_dir=str(tmp_path)).fingerprint()
    assert moved == _config(base_model).fingerprint()


def test_model_identity_kinds(base_model):
    assert model_identity(str(base_model))["kind"] == "local"
    assert "model.safetensors" in model_identity(str(base_model))["files"]
    assert model_identity("tiny-bert")["kind"] == "tiny"
    assert model_identity("bert-base-uncased") == {"kind": "hub", "name": "bert-base-uncased"}


# --------------------------------------------------------------------------------------
# Training and the cache layout


def test_run_writes_checkpoints(trained):
    assert sorted(trained.checkpoints) == [0, 1, 2]
    for folder in trained.checkpoints.values():
        assert (folder / "model.safetensors").is_file()
        assert (folder / "config.json").is_file()
        assert (folder / "tokenizer.json").is_file()
        assert (folder / "metadata.json").is_file()
    assert (trained.root / "run.json").is_file()
    assert not (trained.root / "resume").exists()
    assert trained.root.parent.name == "checkpoints"


def test_run_curve(trained):
    curve = trained.curve
    assert curve["epoch"].tolist() == [0, 1, 2]
    assert curve["step"].tolist() == [0, 5, 10]
    assert math.isnan(curve["train_loss"].iloc[0])
    assert curve["train_loss"].iloc[1:].notna().all()
    assert curve["eval_accuracy"].between(0, 1).all()
    assert (curve["eval_loss"] > 0).all()
    assert set(curve.columns) >= {"seconds", "eval_seconds"}


def test_run_metadata(trained, base_model):
    metadata = trained.metadata
    assert metadata["base_model"]["path"] == str(base_model)
    assert metadata["n_train"] == 40
    assert metadata["n_eval"] == 16
    assert metadata["train_label_counts"] == [20, 20]
    assert metadata["steps_per_epoch"] == 5
    assert metadata["warmup_steps"] == 2
    assert set(metadata["versions"]) >= {"torch", "transformers", "svutils"}


def test_epoch_metadata(trained):
    metadata = json.loads((trained.checkpoints[1] / "metadata.json").read_text())
    assert metadata["epoch"] == 1
    assert [row["epoch"] for row in metadata["curve"]] == [0, 1]
    assert metadata["config"] == trained.config.to_dict()


def test_loaded_checkpoint_reproduces_curve(trained, tmp_path):
    model, tokenizer = trained.load(2)
    frame = data.load_split("rte", "validation", data_dir=TASK_FILES)
    frame = data.stratified_subset(frame, 16, seed=0)
    tokens = data.tokenize(frame, "rte", tokenizer, 32, cache_dir=tmp_path)
    metrics = evaluate_model(model, tokens, get_task("rte"), batch_size=8)
    final = trained.curve.iloc[-1]
    assert metrics["accuracy"] == pytest.approx(final["eval_accuracy"])
    assert metrics["loss"] == pytest.approx(final["eval_loss"], rel=1e-5)
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}


def test_load_defaults_to_last_epoch(trained):
    assert trained.checkpoint() == trained.checkpoints[2]


def test_load_unknown_epoch(trained):
    with pytest.raises(KeyError, match="Saved epochs are 0, 1, 2"):
        trained.load(5)


def test_load_pretrained_matches_base_and_epoch_zero(trained, base_model):
    model, _ = trained.load_pretrained()
    state = model.state_dict()
    base = _weights(base_model)
    epoch_zero = _weights(trained.checkpoints[0])
    assert torch.equal(state["bert.encoder.layer.0.attention.self.query.weight"],
                       base["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(state["classifier.weight"], epoch_zero["classifier.weight"])
    assert model.classifier.out_features == 2


def test_training_changes_weights(trained):
    before = _weights(trained.checkpoints[0])
    after = _weights(trained.checkpoints[2])
    name = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(before[name], after[name])


def test_cache_hit_does_not_train(trained, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training ran on a cache hit")

    monkeypatch.setattr(finetune_module, "_train_step", fail)
    monkeypatch.setattr(models, "load_model", fail)
    again = finetune(trained.config, cache_dir=trained.root.parents[1], progress=False)
    pd.testing.assert_frame_equal(again.curve, trained.curve)
    assert again.checkpoints == trained.checkpoints


def test_fresh_cache_gives_identical_run(trained, tmp_path):
    again = finetune(trained.config, cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(_curve_without_timings(again), _curve_without_timings(trained))
    _assert_same_weights(again.checkpoints[2], trained.checkpoints[2])


def test_finetune_restores_global_state(base_model, tmp_path):
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    finetune(_config(base_model, epochs=1, checkpoint_epochs=()), cache_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not torch.are_deterministic_algorithms_enabled()


def test_n_train_larger_than_data(base_model, tmp_path):
    with pytest.raises(ValueError) as caught:
        finetune(_config(base_model, n_train=49), cache_dir=tmp_path, progress=False)
    assert "n_train=49" in str(caught.value)
    assert "48 examples" in str(caught.value)


def test_n_eval_larger_than_data(base_model, tmp_path):
    with pytest.raises(ValueError, match="n_eval=17 exceeds the 16 examples"):
        finetune(_config(base_model, n_eval=17), cache_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------------------
# Interrupted runs


def test_resume_after_kill_matches_uninterrupted(trained, tmp_path, monkeypatch):
    # Five steps per epoch, so call 7 is inside epoch 2.
    killer = _StepCounter(fail_on_call=7)
    monkeypatch.setattr(finetune_module, "_train_step", killer)
    with pytest.raises(KeyboardInterrupt):
        finetune(trained.config, cache_dir=tmp_path, progress=False)
    root = tmp_path / "checkpoints" / trained.fingerprint
    assert (root / "resume").is_dir()
    assert (root / "epoch-1" / "metadata.json").is_file()
    assert not (root / "epoch-2").exists()
    assert not (root / "run.json").exists()

    counter = _StepCounter()
    monkeypatch.setattr(finetune_module, "_train_step", counter)
    resumed = finetune(trained.config, cache_dir=tmp_path, progress=False)
    assert counter.calls == 5
    assert not (root / "resume").exists()
    pd.testing.assert_frame_equal(_curve_without_timings(resumed), _curve_without_timings(trained))
    _assert_same_weights(resumed.checkpoints[2], trained.checkpoints[2])


def test_corrupt_resume_state_restarts(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(finetune_module, "_train_step", _StepCounter(fail_on_call=7))
    with pytest.raises(KeyboardInterrupt):
        finetune(trained.config, cache_dir=tmp_path, progress=False)
    root = tmp_path / "checkpoints" / trained.fingerprint
    (root / "resume" / "training_state.json").write_text("{broken", encoding="utf-8")

    counter = _StepCounter()
    monkeypatch.setattr(finetune_module, "_train_step", counter)
    restarted = finetune(trained.config, cache_dir=tmp_path, progress=False)
    assert counter.calls == 10
    _assert_same_weights(restarted.checkpoints[2], trained.checkpoints[2])


def test_half_written_checkpoint_never_loaded(trained, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(trained.root.parents[1], cache)
    root = cache / "checkpoints" / trained.fingerprint
    leftover = root / ".epoch-2.tmp-abc123"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    (root / "epoch-1" / "metadata.json").unlink()

    stale = FinetuneRun(root, trained.config, {1: root / "epoch-1"}, trained.curve, trained.metadata)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        stale.load(1)

    counter = _StepCounter()
    monkeypatch.setattr(finetune_module, "_train_step", counter)
    rebuilt = finetune(trained.config, cache_dir=cache, progress=False)
    assert counter.calls == 10
    assert not leftover.exists()
    assert (root / "epoch-1" / "metadata.json").is_file()
    assert sorted(path.name for path in root.iterdir() if path.name.startswith("epoch-")) == [
        "epoch-0",
        "epoch-1",
        "epoch-2",
    ]
    _assert_same_weights(rebuilt.checkpoints[1], trained.checkpoints[1])


def test_incomplete_epoch_without_run_file_is_retrained(trained, tmp_path, monkeypatch):
    root = tmp_path / "checkpoints" / trained.fingerprint
    (root / "epoch-2").mkdir(parents=True)
    (root / "epoch-2" / "config.json").write_text("{}", encoding="utf-8")
    counter = _StepCounter()
    monkeypatch.setattr(finetune_module, "_train_step", counter)
    run = finetune(trained.config, cache_dir=tmp_path, progress=False)
    assert counter.calls == 10
    _assert_same_weights(run.checkpoints[2], trained.checkpoints[2])


def test_single_text_task_trains(base_model, tmp_path):
    config = _config(base_model, task="imdb", n_train=20, n_eval=10, epochs=1,
                     checkpoint_epochs=(1,), batch_size=10)
    run = finetune(config, cache_dir=tmp_path, progress=False)
    assert run.curve["epoch"].tolist() == [1]
    assert run.metadata["n_eval"] == 10
    assert np.isfinite(run.curve["eval_loss"]).all()


def test_binary_f1_and_mcc():
    predictions = np.array([1, 1, 0, 0, 1, 0])
    labels = np.array([1, 0, 0, 1, 1, 0])
    # tp=2, fp=1, fn=1, tn=2
    assert finetune_module._binary_f1(predictions, labels) == pytest.approx(2 / 3)
    assert finetune_module._binary_mcc(predictions, labels) == pytest.approx(1 / 3)
    assert finetune_module._binary_mcc(np.zeros(4, int), np.array([0, 1, 0, 1])) == 0.0


# --------------------------------------------------------------------------------------
# Epoch batches


def _padded_tokens(batches, lengths) -> int:
    return sum(int(lengths[batch.numpy()].max()) * len(batch) for batch in batches)


@pytest.mark.parametrize("grouped", [False, True])
def test_epoch_batches_cover_each_example_once(grouped):
    lengths = np.random.default_rng(0).integers(5, 120, size=1003)
    batches = finetune_module.epoch_batches(
        lengths, 16, torch.Generator().manual_seed(0), group_by_length=grouped
    )
    positions = torch.cat(batches).tolist()
    assert len(batches) == math.ceil(1003 / 16)
    assert sorted(positions) == list(range(1003))


@pytest.mark.parametrize("grouped", [False, True])
def test_epoch_batches_follow_generator(grouped):
    lengths = np.random.default_rng(0).integers(5, 120, size=300)
    first = finetune_module.epoch_batches(
        lengths, 16, torch.Generator().manual_seed(4), group_by_length=grouped
    )
    second = finetune_module.epoch_batches(
        lengths, 16, torch.Generator().manual_seed(4), group_by_length=grouped
    )
    other = finetune_module.epoch_batches(
        lengths, 16, torch.Generator().manual_seed(5), group_by_length=grouped
    )
    assert [batch.tolist() for batch in first] == [batch.tolist() for batch in second]
    assert [batch.tolist() for batch in first] != [batch.tolist() for batch in other]


def test_grouped_batches_pad_less():
    lengths = np.random.default_rng(0).integers(5, 120, size=2000)
    random_batches = finetune_module.epoch_batches(
        lengths, 16, torch.Generator().manual_seed(0), group_by_length=False
    )
    grouped_batches = finetune_module.epoch_batches(
        lengths, 16, torch.Generator().manual_seed(0), group_by_length=True
    )
    assert _padded_tokens(grouped_batches, lengths) < 0.7 * _padded_tokens(random_batches, lengths)
    assert _padded_tokens(grouped_batches, lengths) < 1.1 * lengths.sum()


def test_grouped_batches_are_shuffled():
    lengths = np.arange(1, 801)
    batches = finetune_module.epoch_batches(
        lengths, 16, torch.Generator().manual_seed(0), group_by_length=True
    )
    maxima = [int(lengths[batch.numpy()].max()) for batch in batches]
    assert maxima != sorted(maxima, reverse=True)
