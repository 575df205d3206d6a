"""Unit tests for architecture adapters, kind aliases and layer selections."""

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from svutils.models import (
    UnsupportedArchitectureError,
    layer_groups,
    load_model,
    resolve_kinds,
    resolve_layers,
    weight_matrices,
)

EXPECTED_PATHS = {
    "tiny-bert": "bert.encoder.layer.{i}.{m}",
    "tiny-roberta": "roberta.encoder.layer.{i}.{m}",
    "tiny-distilbert": "distilbert.transformer.layer.{i}.{m}",
}
BERT_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}
DISTILBERT_MODULES = {
    "q": "attention.q_lin",
    "k": "attention.k_lin",
    "v": "attention.v_lin",
    "o": "attention.out_lin",
    "ffn_in": "ffn.lin1",
    "ffn_out": "ffn.lin2",
}


@pytest.mark.parametrize("name", list(EXPECTED_PATHS))
def test_adapter_lists_six_matrices_per_layer(name):
    model, _ = load_model(name, 2)
    refs = weight_matrices(model)
    modules = DISTILBERT_MODULES if "distil" in name else BERT_MODULES
    assert len(refs) == 36
    for ref in refs:
        assert ref.path == EXPECTED_PATHS[name].format(i=ref.layer, m=modules[ref.kind])
        assert model.get_submodule(ref.path) is ref.module


@pytest.mark.parametrize("name", list(EXPECTED_PATHS))
def test_o_and_ffn_out_are_different_modules(name):
    model, _ = load_model(name, 2)
    for layer in range(6):
        o = weight_matrices(model, "o", layer)[0]
        ffn_out = weight_matrices(model, "ffn_out", layer)[0]
        assert o.module is not ffn_out.module
        assert o.shape == (64, 64)
        assert ffn_out.shape == (64, 128)


def test_ffn_shapes_follow_intermediate_size():
    model, _ = load_model("tiny-bert", 2)
    ffn_in, ffn_out = weight_matrices(model, "ffn", 0)
    assert ffn_in.shape == (128, 64)
    assert ffn_out.shape == (64, 128)


def test_unsupported_architecture_names_class():
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match="GPT2ForSequenceClassification.*bert"):
        weight_matrices(model)


def test_kind_aliases_expand():
    assert resolve_kinds("attn") == ("q", "k", "v", "o")
    assert resolve_kinds("ffn") == ("ffn_in", "ffn_out")
    assert resolve_kinds("all") == ("q", "k", "v", "o", "ffn_in", "ffn_out")
    assert resolve_kinds(["v", "q"]) == ("q", "v")
    assert resolve_kinds("q,ffn") == ("q", "ffn_in", "ffn_out")


def test_unknown_kind_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown matrix kind 'query'.*ffn_in"):
        resolve_kinds("query")


@pytest.mark.parametrize(
    "n, expected",
    [
        (6, {"early": (0, 1), "middle": (2, 3), "late": (4, 5)}),
        (12, {"early": (0, 1, 2, 3), "middle": (4, 5, 6, 7), "late": (8, 9, 10, 11)}),
        (4, {"early": (0, 1), "middle": (2,), "late": (3,)}),
    ],
)
def test_layer_groups_are_thirds(n, expected):
    assert layer_groups(n) == expected


@pytest.mark.parametrize(
    "spec, expected",
    [("all", (0, 1, 2, 3, 4, 5)), ("early", (0, 1)), ("late", (4, 5)), ("1-3", (1, 2, 3)), ("0,5", (0, 5)), (2, (2,)), ([3, 1], (1, 3)), (range(2), (0, 1))],
)
def test_resolve_layers_accepts_forms(spec, expected):
    assert resolve_layers(spec, 6) == expected


@pytest.mark.parametrize("spec", [6, [0, 7], "4-8", -1])
def test_layers_outside_model_rejected(spec):
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.5"):
        resolve_layers(spec, 6)


def test_custom_layer_groups():
    groups = {"early": range(0, 4), "middle": range(4, 8), "late": range(8, 12)}
    assert resolve_layers("middle", 12, groups) == (4, 5, 6, 7)


def test_tiny_models_are_seeded():
    first, _ = load_model("tiny-bert", 2, seed=3)
    second, _ = load_model("tiny-bert", 2, seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
