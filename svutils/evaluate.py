"""Batched inference on a fixed evaluation set, with reuse of early-layer hidden states.

A cell that edits only layers k and above leaves layers 0..k-1 unchanged, so the hidden
states entering layer k are those of the unedited model. `Evaluator` records them once,
during the baseline pass, and replays them for such cells: layers 0..k-1 are swapped for
a module that returns the recorded output, and only layers k.. run. The replayed tensors
are the exact ones the baseline computed, so the predictions are bit-identical to a full
forward pass with the same batches.

The classification heads of BERT, RoBERTa and DistilBERT read only the final hidden state
of the first ([CLS]) position. In the last layer, every position still supplies keys and
values, but only the [CLS] position needs a query, an attention output and an FFN pass.
`Evaluator` therefore runs the last layer for that position alone (`cls_only`), which
skips about 80% of that layer's matrix products (an estimate for an FFN four times the
hidden size). The logits agree with a full pass up to float32 rounding (differences near
1e-7). Baseline and cells use the same path, so their comparison is exact.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from svutils.models import encoder_layers, get_adapter

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Replay(nn.Module):
    """Stand-in for an early layer: returns the recorded output of layer k-1 for the batch."""

    def __init__(self, outputs: list[object]) -> None:
        super().__init__()
        self.outputs = outputs
        self.batch = 0

    def forward(self, *args, **kwargs):  # noqa: D401 - mimics a transformer layer
        return self.outputs[self.batch]


def _query_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Keep the first query row of a 4-D attention mask [B, 1, T, T] → [B, 1, 1, T].

    2-D masks [B, T] and broadcastable [B, 1, 1, T] masks describe keys only and pass as they are.
    """
    if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
        return mask[:, :, :1, :]
    return mask


class _ClsOnlyLayer(nn.Module):
    """Wrapper that runs a transformer layer for position 0 only; subclasses define forward."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer


class _ClsOnlyBertLayer(_ClsOnlyLayer):
    """A BertLayer (also RoBERTa's) computed for position 0 only; returns ([B, 1, H],).

    The [CLS] query attends to keys and values of all positions through the layer's own
    cross-attention path, so the attention modules and their weights are the layer's own.
    """

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        layer = self.layer
        cls = hidden_states[:, :1]
        context = layer.attention.self(cls, attention_mask=_query_mask(attention_mask), encoder_hidden_states=hidden_states)[0]
        attended = layer.attention.output(context, cls)
        return (layer.output(layer.intermediate(attended), attended),)


class _ClsOnlyDistilBertLayer(_ClsOnlyLayer):
    """A DistilBERT TransformerBlock computed for position 0 only; returns ([B, 1, H],)."""

    def forward(self, x, attn_mask=None, *args, **kwargs):
        layer = self.layer
        cls = x[:, :1]
        attended = layer.attention(query=cls, key=x, value=x, mask=_query_mask(attn_mask))[0]
        attended = layer.sa_layer_norm(attended + cls)
        return (layer.output_layer_norm(layer.ffn(attended) + attended),)


_CLS_ONLY_LAYERS = {"bert": _ClsOnlyBertLayer, "distilbert": _ClsOnlyDistilBertLayer}
_CLS_HEADS = (
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "DistilBertForSequenceClassification",
)
"""Model classes whose classification head reads only the [CLS] position's final state."""


def supports_cls_only(model: nn.Module) -> bool:
    """Return True when `model`'s head reads only position 0 and its layers have a known layout."""
    return type(model).__name__ in _CLS_HEADS and get_adapter(model).layer_style in _CLS_ONLY_LAYERS


def _nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(item) for item in value)
    return 0


def _detach(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(item) for item in value)
    if isinstance(value, list):
        return [_detach(item) for item in value]
    return value


class Evaluator:
    """Compute logits of a model on fixed batches, reusing early hidden states when allowed.

    Args:
        model: a sequence-classification model with an svutils adapter.
        batches: list of dicts with `input_ids` [B, T], `attention_mask` [B, T], optional
            `token_type_ids`, and `index` [B] (positions in the evaluation set). The batch
            composition must stay fixed across calls, because replayed states are per batch.
        max_cache_bytes: memory budget for recorded hidden states; start layers whose
            recordings would exceed it fall back to full forward passes.
        cls_only: run the last layer for the [CLS] position alone when the model allows it
            (see `supports_cls_only`); ignored otherwise. Baseline and cells both use it.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[dict],
        *,
        max_cache_bytes: int = 2 * 1024**3,
        cls_only: bool = True,
    ) -> None:
        if not batches:
            raise ValueError("the evaluation set produced no batches; it needs at least one example")
        self.model = model
        self.batches = list(batches)
        self.layers = encoder_layers(model)
        self.max_cache_bytes = max_cache_bytes
        self.n_examples = int(sum(int(batch["index"].numel()) for batch in self.batches))
        accepted = set(inspect.signature(model.forward).parameters)
        self._input_names = [name for name in MODEL_INPUTS if name in accepted]
        self._recorded: dict[int, list[object]] = {}
        self.cls_only = bool(cls_only) and supports_cls_only(model)

    @property
    def cached_start_layers(self) -> tuple[int, ...]:
        """Start layers whose incoming hidden states are recorded."""
        return tuple(sorted(self._recorded))

    @contextlib.contextmanager
    def _last_layer(self) -> Iterator[None]:
        """Swap the last layer for its [CLS]-only form (when enabled) and always swap it back."""
        if not self.cls_only:
            yield
            return
        last = len(self.layers) - 1
        original = self.layers[last]
        self.layers[last] = _CLS_ONLY_LAYERS[get_adapter(self.model).layer_style](original)
        try:
            yield
        finally:
            self.layers[last] = original

    def _inputs(self, batch: dict) -> dict:
        return {name: batch[name] for name in self._input_names if name in batch}

    def _scatter(self, chunks: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        first = chunks[0][1]
        logits = torch.empty((self.n_examples, first.shape[-1]), dtype=torch.float32)
        for index, values in chunks:
            logits[index] = values.to(torch.float32)
        return logits.numpy()

    @torch.inference_mode()
    def baseline(self, record_start_layers: Iterable[int] = ()) -> np.ndarray:
        """Run the unedited model and record the inputs of the given start layers.

        Returns logits [N, C] in evaluation-set order. Layer 0 needs no recording.
        """
        wanted = sorted({int(layer) for layer in record_start_layers if 0 < int(layer) < len(self.layers)})
        recordings: dict[int, list[object]] = {layer: [] for layer in wanted}
        sizes = {layer: 0 for layer in wanted}
        handles = []
        for layer in wanted:
            def hook(module, args, output, layer=layer):
                if layer in recordings:
                    recordings[layer].append(_detach(output))
                    sizes[layer] += _nbytes(output)
            handles.append(self.layers[layer - 1].register_forward_hook(hook))
        chunks = []
        self.model.eval()
        try:
            with self._last_layer():
                for batch in self.batches:
                    out = self.model(**self._inputs(batch))
                    chunks.append((batch["index"], out.logits))
                    # Keep the cheapest-to-hold recordings within the memory budget.
                    total = sum(sizes[layer] for layer in recordings)
                    while total > self.max_cache_bytes and recordings:
                        dropped = min(recordings)  # early layers save the least compute
                        total -= sizes.pop(dropped)
                        recordings.pop(dropped)
        finally:
            for handle in handles:
                handle.remove()
        self._recorded.update(recordings)
        return self._scatter(chunks)

    @torch.inference_mode()
    def logits(self, start_layer: int = 0) -> np.ndarray:
        """Run the model as it is now; layers below `start_layer` replay recorded states.

        The caller guarantees that layers 0..start_layer-1 are unedited since `baseline`.
        Without a recording for `start_layer` this is a full forward pass. Returns [N, C].
        """
        start = start_layer if start_layer in self._recorded else 0
        replay = _Replay(self._recorded[start]) if start > 0 else None
        originals = [self.layers[j] for j in range(start)]
        for j in range(start):
            self.layers[j] = replay
        chunks = []
        try:
            with self._last_layer():
                for position, batch in enumerate(self.batches):
                    if replay is not None:
                        replay.batch = position
                    out = self.model(**self._inputs(batch))
                    chunks.append((batch["index"], out.logits))
        finally:
            for j, module in enumerate(originals):
                self.layers[j] = module
        return self._scatter(chunks)
