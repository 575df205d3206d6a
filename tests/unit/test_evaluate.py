"""Unit tests for the evaluator's [CLS]-only last layer and its hidden-state replay."""

import numpy as np
import pytest
import torch
from torch import nn

from svutils.data import TokenizedSet
from svutils.evaluate import Evaluator, supports_cls_only
from svutils.models import load_model
from svutils.svd import remove_bands

ARCHITECTURES = ("tiny-bert", "tiny-distilbert", "tiny-roberta")


def padded_eval_set(vocab_size, n=30, max_length=20, seed=0):
    """Sequences of mixed lengths, so batches carry padding and the mask matters."""
    rng = np.random.default_rng(seed)
    input_ids = []
    for _ in range(n):
        length = int(rng.integers(3, max_length + 1))
        input_ids.append([2, *rng.integers(5, vocab_size, size=length - 2).tolist(), 3])
    types = [[0] * len(ids) for ids in input_ids]
    labels = rng.integers(0, 2, size=n)
    return TokenizedSet(input_ids, types, labels, np.arange(n), "rte", max_length, pad_token_id=1)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request):
    model, _ = load_model(request.param, 2, seed=3)
    return model.eval()


def test_cls_only_matches_full_pass(model):
    batches = padded_eval_set(model.config.vocab_size).batches(8)
    fast = Evaluator(model, batches, cls_only=True)
    full = Evaluator(model, batches, cls_only=False)
    assert fast.cls_only and not full.cls_only
    fast_logits, full_logits = fast.baseline(), full.baseline()
    np.testing.assert_allclose(fast_logits, full_logits, rtol=0, atol=1e-5)
    assert np.array_equal(fast_logits.argmax(axis=1), full_logits.argmax(axis=1))


def test_cls_only_matches_plain_forward(model):
    """Check against the model's own forward call, not another Evaluator path."""
    eval_set = padded_eval_set(model.config.vocab_size, seed=1)
    batches = eval_set.batches(8)
    evaluator = Evaluator(model, batches)
    logits = evaluator.baseline()
    with torch.inference_mode():
        for batch in batches:
            inputs = {name: batch[name] for name in evaluator._input_names}
            expected = model(**inputs).logits.numpy()
            np.testing.assert_allclose(logits[batch["index"].numpy()], expected, rtol=0, atol=1e-5)


def test_cls_only_replay_bit_identical(model):
    batches = padded_eval_set(model.config.vocab_size, seed=2).batches(8)
    evaluator = Evaluator(model, batches)
    evaluator.baseline([1])
    with remove_bands(model, 0, kinds="ffn", layers=[1], n_bands=4):
        replayed = evaluator.logits(1)
        full = Evaluator(model, batches).logits(0)
    assert np.array_equal(replayed, full)


def test_cls_only_restores_last_layer_after_error(model):
    batches = padded_eval_set(model.config.vocab_size).batches(8)
    evaluator = Evaluator(model, batches)
    originals = list(evaluator.layers)
    # A batch with no positions makes the forward pass fail.
    batches[1]["input_ids"] = batches[1]["input_ids"][:, :0]
    with pytest.raises(Exception):
        evaluator.logits(0)
    assert all(a is b for a, b in zip(evaluator.layers, originals))


def test_cls_only_edits_reach_the_last_layer(model):
    """Removing a band from the last layer only must change logits under the [CLS]-only path."""
    batches = padded_eval_set(model.config.vocab_size).batches(8)
    evaluator = Evaluator(model, batches)
    base = evaluator.baseline([len(evaluator.layers) - 1])
    last = len(evaluator.layers) - 1
    with remove_bands(model, 0, kinds="all", layers=[last], n_bands=4):
        edited = evaluator.logits(last)
    assert not np.array_equal(edited, base)


class _MeanPoolHead(nn.Module):
    """A head that reads every position, so the [CLS]-only shortcut would be wrong."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_cls_only_rejected_for_unknown_head():
    model, _ = load_model("tiny-bert", 2, seed=0)
    wrapped = _MeanPoolHead(model)
    assert supports_cls_only(model)
    assert not supports_cls_only(wrapped)
