"""The ablation grid: evaluate a model with one band removed per cell, and tabulate.

A cell names matrix kinds, layers, one band (or several), the band convention and a mode
(see `svutils.svd.MODES`). `run_grid` evaluates the unedited baseline and every cell on
the same batches, keeps every example's prediction and loss, and returns a tidy table
with changes, paired bootstrap intervals, McNemar p-values and collapse indicators.

Speed without changing a prediction: SVDs are computed once per model state
(`SVDCache`), edits are in place and undone bit for bit (`remove_bands`), batches are
length-sorted with dynamic padding, hidden states entering the first edited layer are
replayed from the baseline pass (`Evaluator`), and inference runs under
`torch.inference_mode`. The model is never deep-copied.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from svutils import metrics as metric_lib
from svutils import stats
from svutils.evaluate import Evaluator
from svutils.io import atomic_write_bytes, fingerprint
from svutils.models import KINDS, num_layers, resolve_kinds, resolve_layers
from svutils.store import ResultsStore, array_fingerprint, model_fingerprint
from svutils.svd import CONVENTIONS, MODES, SVDCache, remove_bands

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One ablation: which matrices, which band(s), how.

    Attributes:
        kinds: canonical matrix kinds (subset of `svutils.models.KINDS`).
        layers: layer indices.
        bands: band indices (0 = largest singular values); empty for the baseline.
        n_bands: number of bands the spectrum is split into.
        convention: band-size convention, "balanced" or "floor".
        mode: "remove", "random" (control) or "revert_update".
        seed: seed of the random directions (mode "random" only).
        kind_label: display name of the kind selection ("all", "ffn", "q", ...).
        layer_label: display name of the layer selection ("all", "early", ...).
    """

    kinds: tuple[str, ...]
    layers: tuple[int, ...]
    bands: tuple[int, ...]
    n_bands: int
    convention: str = "balanced"
    mode: str = "remove"
    seed: int = 0
    kind_label: str = ""
    layer_label: str = ""

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in KINDS]
        if unknown:
            raise ValueError(f"unknown matrix kinds {unknown}; valid kinds are {list(KINDS)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {list(MODES)}")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"unknown band convention {self.convention!r}; choose one of {list(CONVENTIONS)}")
        outside = [band for band in self.bands if not 0 <= band < self.n_bands]
        if outside:
            raise ValueError(f"band {outside[0]} is outside 0..{self.n_bands - 1} (n_bands={self.n_bands})")

    @property
    def is_baseline(self) -> bool:
        return not self.bands

    @property
    def start_layer(self) -> int:
        """First edited layer: the layers below it run exactly as in the baseline."""
        return min(self.layers) if self.layers and not self.is_baseline else 0

    def key(self) -> str:
        """Fingerprint of everything that determines this cell's predictions."""
        if self.is_baseline:
            return "baseline"
        spec = {
            "kinds": list(self.kinds),
            "layers": list(self.layers),
            "bands": list(self.bands),
            "n_bands": self.n_bands,
            "convention": self.convention,
            "mode": self.mode,
        }
        if self.mode == "random":
            spec["seed"] = self.seed
        return fingerprint(spec)


BASELINE = Cell(kinds=(), layers=(), bands=(), n_bands=1, kind_label="none", layer_label="none")


def band_cells(
    model: nn.Module,
    *,
    kinds: Mapping[str, str | Sequence[str]] | str = "all",
    layers: Mapping[str, str | Sequence[int]] | str = "all",
    n_bands: int = 10,
    convention: str = "balanced",
    modes: Sequence[str] = ("remove",),
    bands: Iterable[int] | None = None,
    seed: int = 0,
    layer_groups: Mapping[str, Sequence[int]] | None = None,
) -> list[Cell]:
    """Build the cross product kinds × layers × bands × modes as a list of cells.

    `kinds` and `layers` are either one selection or a mapping display label → selection,
    e.g. `kinds={"Q": "q", "FFN": "ffn"}`, `layers={"early": "early", "late": "late"}`.
    """
    n_model_layers = num_layers(model)
    kind_map = {kinds: kinds} if isinstance(kinds, str) else dict(kinds)
    layer_map = {layers: layers} if isinstance(layers, str) else dict(layers)
    band_list = list(range(n_bands)) if bands is None else list(bands)
    cells = []
    for mode in modes:
        for kind_label, kind_spec in kind_map.items():
            for layer_label, layer_spec in layer_map.items():
                for band in band_list:
                    cells.append(
                        Cell(
                            kinds=resolve_kinds(kind_spec),
                            layers=resolve_layers(layer_spec, n_model_layers, layer_groups),
                            bands=(int(band),),
                            n_bands=n_bands,
                            convention=convention,
                            mode=mode,
                            seed=seed,
                            kind_label=str(kind_label),
                            layer_label=str(layer_label),
                        )
                    )
    return cells


@dataclass
class GridResult:
    """Output of `run_grid`.

    Attributes:
        table: one row per cell (see `run_grid` for the columns).
        labels: true labels [N] in evaluation-set order.
        predictions: cell key → predicted class ids [N] ("baseline" included).
        losses: cell key → per-example cross-entropy [N] in nats.
        seconds: wall time of the run, cached cells included at their load cost.
    """

    table: pd.DataFrame
    labels: np.ndarray
    predictions: dict[str, np.ndarray]
    losses: dict[str, np.ndarray]
    seconds: float = 0.0
    n_computed: int = 0
    n_loaded: int = 0

    def examples(self) -> pd.DataFrame:
        """Per-example long table: cell_key, example, label, pred, correct, loss."""
        frames = []
        for key, pred in self.predictions.items():
            frames.append(
                pd.DataFrame(
                    {
                        "cell_key": key,
                        "example": np.arange(len(pred)),
                        "label": self.labels,
                        "pred": pred,
                        "correct": pred == self.labels,
                        "loss": self.losses[key],
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def save(self, folder: str | Path, name: str = "grid") -> dict[str, Path]:
        """Write the table (CSV and Parquet) and the per-example table (Parquet) atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "csv": folder / f"{name}.csv",
            "parquet": folder / f"{name}.parquet",
            "examples": folder / f"{name}_examples.parquet",
        }
        atomic_write_bytes(paths["csv"], self.table.to_csv(index=False).encode())
        atomic_write_bytes(paths["parquet"], self.table.to_parquet(index=False))
        atomic_write_bytes(paths["examples"], self.examples().to_parquet(index=False))
        return paths


def _evaluation_batches(eval_set, batch_size: int) -> list[dict]:
    if hasattr(eval_set, "batches"):
        return eval_set.batches(batch_size, sort_by_length=True)
    return list(eval_set)


def _labels_of(eval_set, batches: Sequence[dict]) -> np.ndarray:
    if hasattr(eval_set, "labels"):
        return np.asarray(eval_set.labels, dtype=np.int64)
    n = sum(int(batch["index"].numel()) for batch in batches)
    labels = np.empty(n, dtype=np.int64)
    for batch in batches:
        labels[batch["index"].numpy()] = batch["labels"].numpy()
    return labels


def _payload(cell: Cell, logits: np.ndarray, labels: np.ndarray, summary, seconds: float) -> dict:
    outputs = metric_lib.per_example_outputs(logits, labels)
    return {
        "cell": asdict(cell),
        "pred": outputs["pred"].astype(int).tolist(),
        "loss": [float(value) for value in outputs["loss"].astype(np.float32)],
        "n_removed": summary.n_removed if summary is not None else 0,
        "energy_fraction": summary.energy_fraction if summary is not None else 0.0,
        "n_matrices": len(summary.edits) if summary is not None else 0,
        "seconds": seconds,
    }


def _row(
    cell: Cell,
    payload: dict,
    base: dict,
    labels: np.ndarray,
    *,
    metric_names: Sequence[str],
    num_labels: int,
    n_bootstrap: int,
    ci_level: float,
    bootstrap_seed: int,
    collapse_threshold: float,
    context: Mapping[str, object],
) -> dict:
    pred = np.asarray(payload["pred"], dtype=np.int64)
    loss = np.asarray(payload["loss"], dtype=np.float64)
    base_pred = np.asarray(base["pred"], dtype=np.int64)
    base_loss = np.asarray(base["loss"], dtype=np.float64)
    correct = pred == labels
    base_correct = base_pred == labels
    row: dict[str, object] = dict(context)
    row.update(
        {
            "mode": cell.mode if not cell.is_baseline else "baseline",
            "kinds": ",".join(cell.kinds),
            "kind_label": cell.kind_label,
            "layers": ",".join(str(layer) for layer in cell.layers),
            "layer_label": cell.layer_label,
            "band": cell.bands[0] if len(cell.bands) == 1 else (",".join(map(str, cell.bands)) if cell.bands else -1),
            "n_bands": cell.n_bands,
            "band_convention": cell.convention,
            "n_removed": payload["n_removed"],
            "energy_fraction": payload["energy_fraction"],
            "n_matrices": payload["n_matrices"],
            "n_eval": len(labels),
        }
    )
    for name in metric_names:
        value = metric_lib.score(name, pred, labels)
        base_value = metric_lib.score(name, base_pred, labels)
        row[name] = value
        row[f"baseline_{name}"] = base_value
        row[f"{name}_change"] = value - base_value
        if name == "accuracy":
            interval = stats.paired_bootstrap(
                base_correct.astype(np.float64), correct.astype(np.float64),
                n_resamples=n_bootstrap, level=ci_level, seed=bootstrap_seed,
            )
        else:
            interval = stats.paired_bootstrap_metric(
                name, base_pred, pred, labels, n_resamples=n_bootstrap, level=ci_level, seed=bootstrap_seed
            )
        row[f"{name}_ci_low"] = interval.low
        row[f"{name}_ci_high"] = interval.high
    row["change"] = row["accuracy_change"]
    row["ci_low"] = row["accuracy_ci_low"]
    row["ci_high"] = row["accuracy_ci_high"]
    row["mcnemar_p"] = stats.mcnemar_exact(base_correct, correct).p_value
    row["loss"] = float(loss.mean())
    row["baseline_loss"] = float(base_loss.mean())
    row["loss_change"] = row["loss"] - row["baseline_loss"]
    loss_interval = stats.paired_bootstrap(base_loss, loss, n_resamples=n_bootstrap, level=ci_level, seed=bootstrap_seed)
    row["loss_ci_low"] = loss_interval.low
    row["loss_ci_high"] = loss_interval.high
    collapse = metric_lib.collapse_stats(pred, num_labels, threshold=collapse_threshold)
    row["majority_share"] = collapse["majority_share"]
    row["pred_entropy"] = collapse["pred_entropy"]
    row["collapsed"] = bool(collapse["collapsed"])
    majority = metric_lib.majority_rate(labels, num_labels)
    row["majority_rate"] = majority
    row["accuracy_above_majority"] = row["accuracy"] - majority
    row["ci_level"] = ci_level
    row["cell_key"] = cell.key()
    row["seconds"] = payload["seconds"]
    return row


def run_grid(
    model: nn.Module,
    eval_set,
    cells: Sequence[Cell],
    *,
    task,
    model_name: str = "",
    checkpoint: str = "",
    store: ResultsStore | str | Path | None = None,
    svd_cache: SVDCache | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 32,
    reuse_hidden_states: bool = True,
    cls_only: bool = True,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
    bootstrap_seed: int = 0,
    collapse_threshold: float = 0.95,
    progress: bool = True,
    extra_columns: Mapping[str, object] | None = None,
) -> GridResult:
    """Evaluate the baseline and every cell; return one table row per cell.

    Args:
        model: fine-tuned sequence-classification model (edited in place, always restored).
        eval_set: a `svutils.data.TokenizedSet` (or a list of batches with `index`, `labels`).
        cells: cells to evaluate, e.g. from `band_cells`; a baseline is always added.
        task: task name or `svutils.tasks.TaskSpec` (gives num_labels and the metrics).
        store: results store (or its folder); finished cells are saved at once and reused.
        reference: module path → pretrained weight, for mode "revert_update".
        reuse_hidden_states: replay the recorded input of each cell's first edited layer.
        cls_only: compute the last layer for the [CLS] position alone (see `svutils.evaluate`).
            Its logits differ from a full pass by float32 rounding only, so it is part of
            the results-store key and stored cells of the two paths never mix.

    Columns: task, model, checkpoint, mode, kinds, kind_label, layers, layer_label, band,
    n_bands, band_convention, n_removed, energy_fraction (Σ removed s² / Σ s² over the
    touched matrices), n_eval, for each task metric m: m, baseline_m, m_change, m_ci_low,
    m_ci_high; change/ci_low/ci_high (= accuracy's), mcnemar_p, loss, baseline_loss,
    loss_change, loss_ci_low, loss_ci_high, majority_share, pred_entropy, collapsed,
    majority_rate, accuracy_above_majority, ci_level, cell_key, seconds.
    """
    from svutils.tasks import get_task

    spec = get_task(task)
    started = time.perf_counter()
    if isinstance(store, (str, Path)):
        store = ResultsStore(store)
    cache = svd_cache if svd_cache is not None else SVDCache()
    batches = _evaluation_batches(eval_set, batch_size)
    labels = _labels_of(eval_set, batches)
    if len(labels) == 0:
        raise ValueError("the evaluation set is empty; choose n_eval >= 1")
    unique_cells = list({cell.key(): cell for cell in cells if not cell.is_baseline}.values())
    model_key = model_fingerprint(model)
    evaluator = Evaluator(model, batches, cls_only=cls_only)
    path_tag = np.array([1 if evaluator.cls_only else 0], dtype=np.int64)
    eval_key = array_fingerprint(labels, [batch["input_ids"].numpy() for batch in batches], path_tag)
    if store is not None:
        store.clean(model_key, eval_key)

    payloads: dict[str, dict] = {}
    n_loaded = 0

    def load(cell: Cell) -> dict | None:
        return store.load(model_key, eval_key, cell.key(), n_examples=len(labels)) if store is not None else None

    base = load(BASELINE)
    stored = {cell.key(): load(cell) for cell in unique_cells}
    missing = [cell for cell in unique_cells if stored[cell.key()] is None]
    needs_baseline_pass = base is None or (reuse_hidden_states and missing)
    if needs_baseline_pass:
        tic = time.perf_counter()
        starts = {cell.start_layer for cell in missing} if reuse_hidden_states else set()
        base_logits = evaluator.baseline(starts)
        if base is None:
            base = _payload(BASELINE, base_logits, labels, None, time.perf_counter() - tic)
            if store is not None:
                store.save(model_key, eval_key, BASELINE.key(), base)
        else:
            n_loaded += 1
    else:
        n_loaded += 1
    payloads[BASELINE.key()] = base

    iterator = tqdm(unique_cells, desc=f"{spec.name} {checkpoint}".strip(), disable=not progress, leave=False)
    n_computed = 0
    for cell in iterator:
        payload = stored[cell.key()]
        if payload is None:
            tic = time.perf_counter()
            with remove_bands(
                model,
                cell.bands,
                kinds=cell.kinds,
                layers=cell.layers,
                n_bands=cell.n_bands,
                convention=cell.convention,
                mode=cell.mode,
                svd_cache=cache,
                reference=reference,
                seed=cell.seed,
            ) as summary:
                logits = evaluator.logits(cell.start_layer if reuse_hidden_states else 0)
            payload = _payload(cell, logits, labels, summary, time.perf_counter() - tic)
            if store is not None:
                store.save(model_key, eval_key, cell.key(), payload)
            n_computed += 1
        else:
            n_loaded += 1
        payloads[cell.key()] = payload

    context = {"task": spec.name, "model": model_name, "checkpoint": checkpoint}
    if extra_columns:
        context.update(extra_columns)
    rows = [
        _row(
            cell,
            payloads[cell.key()],
            base,
            labels,
            metric_names=spec.metrics,
            num_labels=spec.num_labels,
            n_bootstrap=n_bootstrap,
            ci_level=ci_level,
            bootstrap_seed=bootstrap_seed,
            collapse_threshold=collapse_threshold,
            context=context,
        )
        for cell in [BASELINE, *unique_cells]
    ]
    table = pd.DataFrame(rows)
    return GridResult(
        table=table,
        labels=labels,
        predictions={key: np.asarray(p["pred"], dtype=np.int64) for key, p in payloads.items()},
        losses={key: np.asarray(p["loss"], dtype=np.float64) for key, p in payloads.items()},
        seconds=time.perf_counter() - started,
        n_computed=n_computed,
        n_loaded=n_loaded,
    )
