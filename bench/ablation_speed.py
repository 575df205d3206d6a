"""Benchmark the svutils ablation grid against a naive per-cell loop, with an equivalence check.

The grid is the study's main one on a fine-tuned MiniLM and RTE's validation set: 6
matrix kinds × 3 layer groups × 10 bands (180 cells) plus all 36 matrices × 10 bands (10
cells). Two implementations evaluate it in the same process:

* the naive loop, written the way such studies usually are. For each cell it deep-copies
  the model, recomputes the SVD of every touched matrix (`torch.linalg.svd`, float32) and
  subtracts the band. It then evaluates every example padded to `max_length`, in set
  order, batch 64, under `torch.no_grad()`;
* `svutils.ablation.run_grid`: SVDs cached once, in-place edits that are undone,
  length-sorted dynamic padding, replay of the hidden states below the first edited
  layer, and a last layer computed for the [CLS] position alone.

The script checks that both predict the same class for every example of every cell the
naive loop ran, prints cells per second and their ratio, and compares svutils's time to a
lower bound: the matmul FLOPs its cells need (real token counts, edited layers, only the
[CLS] query, attention output and FFN in the last layer, and the classifier head) divided by this machine's measured float32 matmul throughput.

Run from the repository root, for example:

    python bench/ablation_speed.py --json bench-results.json

It exits with status 1 when a prediction differs between the two implementations.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from svutils.ablation import BASELINE, Cell, GridResult, band_cells, run_grid  # noqa: E402
from svutils.evaluate import supports_cls_only  # noqa: E402
from svutils.io import atomic_write_json, default_cache_dir, fingerprint  # noqa: E402
from svutils.metrics import per_example_outputs  # noqa: E402
from svutils.models import KINDS, encoder_layers, get_adapter, weight_matrices  # noqa: E402
from svutils.svd import SVDCache, exact_svd  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
NAIVE_BATCH_SIZE = 64
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# ---------------------------------------------------------------------------------------
# The naive loop.


@dataclass
class NaiveTiming:
    """Wall-clock seconds the naive loop spent on one cell, by step, and its CPU seconds.

    `cpu_s` is the process CPU time (all threads) of the whole cell. It depends less on
    other processes competing for the cores than wall-clock time does.
    """

    copy_s: float = 0.0
    svd_s: float = 0.0
    edit_s: float = 0.0
    eval_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.copy_s + self.svd_s + self.edit_s + self.eval_s


def naive_band_bounds(rank: int, n_bands: int) -> list[tuple[int, int]]:
    """Split `rank` descending singular values into `n_bands` [start, stop) ranges.

    Uses `numpy.array_split`, whose sizes differ by at most one with the larger bands
    first. That is svutils's "balanced" convention, computed independently of svutils.
    """
    parts = np.array_split(np.arange(rank), n_bands)
    return [(int(part[0]), int(part[-1]) + 1) for part in parts]


def naive_batches(eval_set, batch_size: int = NAIVE_BATCH_SIZE) -> list[dict[str, torch.Tensor]]:
    """Pad every example of a `TokenizedSet` to its `max_length`, in set order.

    Returns batches of `batch_size` with `input_ids`, `attention_mask`, optional
    `token_type_ids` (each [B, max_length]) and `index` [B].
    """
    return eval_set.batches(batch_size, sort_by_length=False, pad_to_max_length=True)


def _model_inputs(model: nn.Module, batch: dict) -> dict:
    accepted = set(inspect.signature(model.forward).parameters)
    return {name: batch[name] for name in MODEL_INPUTS if name in accepted and name in batch}


def naive_cell_logits(model: nn.Module, batches: Sequence[dict], cell: Cell) -> tuple[np.ndarray, NaiveTiming]:
    """Evaluate one cell the naive way and return logits [N, C] (set order) and timings.

    A deep copy of `model` gets each touched matrix W replaced by W − U_b diag(S_b) V_bᵀ,
    with the SVD recomputed in float32. `model` itself is never changed. Only mode
    "remove" with the "balanced" band convention is implemented; other cells raise
    ValueError.
    """
    if cell.is_baseline:
        raise ValueError("the naive loop evaluates ablation cells; the baseline cell removes nothing")
    if cell.mode != "remove" or cell.convention != "balanced":
        raise ValueError(
            f"the naive loop implements mode 'remove' with the 'balanced' convention only, "
            f"got mode={cell.mode!r}, convention={cell.convention!r}"
        )
    timing = NaiveTiming()
    cpu_start = time.process_time()

    tic = time.perf_counter()
    edited = copy.deepcopy(model)
    edited.eval()
    timing.copy_s = time.perf_counter() - tic

    with torch.no_grad():
        for ref in weight_matrices(edited, cell.kinds, cell.layers):
            tic = time.perf_counter()
            U, S, Vh = torch.linalg.svd(ref.weight.to(torch.float32), full_matrices=False)
            timing.svd_s += time.perf_counter() - tic

            tic = time.perf_counter()
            bounds = naive_band_bounds(S.shape[0], cell.n_bands)
            weight = ref.weight.to(torch.float32)
            for band in cell.bands:
                start, stop = bounds[band]
                weight = weight - U[:, start:stop] @ torch.diag(S[start:stop]) @ Vh[start:stop]
            ref.weight.copy_(weight.to(ref.weight.dtype))
            timing.edit_s += time.perf_counter() - tic

        tic = time.perf_counter()
        n_examples = sum(int(batch["index"].numel()) for batch in batches)
        logits = None
        for batch in batches:
            output = edited(**_model_inputs(edited, batch)).logits.to(torch.float32)
            if logits is None:
                logits = torch.empty((n_examples, output.shape[-1]), dtype=torch.float32)
            logits[batch["index"]] = output
        timing.eval_s = time.perf_counter() - tic
    timing.cpu_s = time.process_time() - cpu_start
    return logits.numpy(), timing


# ---------------------------------------------------------------------------------------
# Equivalence check.


def compare_predictions(
    naive_logits: dict[str, np.ndarray], grid: GridResult, labels: np.ndarray
) -> dict:
    """Compare the naive loop's predictions with svutils's for every cell the naive loop ran.

    Returns a JSON-able dict with these keys:
        n_cells, n_predictions: cells compared, and cells × examples.
        n_mismatches, mismatches: differing predictions, one entry per example with the
            naive logits and their margin between the top two classes.
        max_abs_loss_difference: largest per-example loss difference in nats, a measure
            of how far rounding moves the two implementations' logits apart.
        min_naive_margin: smallest top-two logit margin of any compared prediction.
    """
    mismatches = []
    max_loss_difference = 0.0
    min_margin = float("inf")
    n_predictions = 0
    for key, logits in naive_logits.items():
        if key not in grid.predictions:
            raise KeyError(f"cell {key!r} is missing from the svutils grid result; run both on the same cells")
        outputs = per_example_outputs(logits, labels)
        svutils_pred = grid.predictions[key]
        n_predictions += len(svutils_pred)
        max_loss_difference = max(max_loss_difference, float(np.max(np.abs(outputs["loss"] - grid.losses[key]))))
        ordered = np.sort(logits, axis=1)
        margins = ordered[:, -1] - ordered[:, -2] if logits.shape[1] > 1 else np.full(len(logits), np.inf)
        min_margin = min(min_margin, float(margins.min()))
        for example in np.flatnonzero(outputs["pred"] != svutils_pred):
            mismatches.append(
                {
                    "cell_key": key,
                    "example": int(example),
                    "naive_pred": int(outputs["pred"][example]),
                    "svutils_pred": int(svutils_pred[example]),
                    "naive_logits": [float(value) for value in logits[example]],
                    "naive_margin": float(margins[example]),
                }
            )
    return {
        "n_cells": len(naive_logits),
        "n_predictions": n_predictions,
        "n_mismatches": len(mismatches),
        "mismatches": mismatches,
        "max_abs_loss_difference": max_loss_difference,
        "min_naive_margin": min_margin,
    }


# ---------------------------------------------------------------------------------------
# The FLOP lower bound.


@dataclass(frozen=True)
class ModelDims:
    """Matmul sizes of one encoder: multiply-accumulates per token and per example."""

    n_layers: int
    layer_linear_macs: int  # Σ in·out over the six Linear layers of one encoder layer, per token
    attention_width: int  # width of Q and K (all heads), for the QKᵀ and AV products
    head_linear_macs: int  # Σ in·out over Linear layers after the encoder (pooler, classifier), per example
    key_value_macs: int = 0  # Σ in·out of the K and V Linear layers, which every position needs in the last layer


def model_dims(model: nn.Module) -> ModelDims:
    """Read the matmul sizes of `model` from its Linear modules.

    The head is every `nn.Linear` outside the encoder layers; heads of the supported
    architectures (BERT's pooler, DistilBERT's pre-classifier, the classifier) see one
    token per example.
    """
    layer_refs = weight_matrices(model, "all", 0)
    layer_macs = sum(ref.shape[0] * ref.shape[1] for ref in layer_refs)
    query = next(ref for ref in layer_refs if ref.kind == "q")
    layers_path = get_adapter(model).layers_path + "."
    head_macs = sum(
        module.in_features * module.out_features
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.startswith(layers_path)
    )
    key_value_macs = sum(ref.shape[0] * ref.shape[1] for ref in layer_refs if ref.kind in ("k", "v"))
    return ModelDims(len(encoder_layers(model)), layer_macs, query.shape[0], head_macs, key_value_macs)


def cell_flops(dims: ModelDims, lengths: np.ndarray, start_layer: int, *, cls_only: bool = False) -> float:
    """Count the matmul FLOPs of one evaluation from `start_layer` to the output.

    Per example of L real tokens and per layer: 2·L·(Σ in·out) for the Linear layers
    plus 2·L²·d for QKᵀ and 2·L²·d for AV (d = all-head width); then 2·(Σ in·out) for
    the head. With `cls_only`, the last layer counts K and V for all L positions and
    the other four matrices and the attention products for one query:
    2·L·(K, V in·out) + 2·(Σ in·out − K, V in·out) + 4·L·d. Padding, softmax, layer
    norms and activations are not counted.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    per_layer = 2.0 * lengths * dims.layer_linear_macs + 4.0 * lengths**2 * dims.attention_width
    n_run = dims.n_layers - start_layer
    total = n_run * per_layer.sum() + 2.0 * dims.head_linear_macs * len(lengths)
    if cls_only and n_run > 0:
        last = (
            2.0 * lengths * dims.key_value_macs
            + 2.0 * (dims.layer_linear_macs - dims.key_value_macs)
            + 4.0 * lengths * dims.attention_width
        )
        total += last.sum() - per_layer.sum()
    return float(total)


def matmul_throughput(size: int = 2048, repeats: int = 10) -> float:
    """Measure float32 `torch.matmul` throughput in FLOP/s on [size, size] matrices.

    Uses the current `torch.get_num_threads()`. One untimed warm-up call comes first and
    the fastest of `repeats` timed calls counts, so brief contention from other processes
    lowers the result less.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - tic)
    return 2.0 * size**3 / best


def svd_seconds(model: nn.Module) -> tuple[float, int]:
    """Time `svutils.svd.exact_svd` of every weight matrix; return (seconds, matrix count)."""
    refs = weight_matrices(model)
    tic = time.perf_counter()
    for ref in refs:
        exact_svd(ref.weight)
    return time.perf_counter() - tic, len(refs)


# ---------------------------------------------------------------------------------------
# Cells.


def grid_cells(model: nn.Module, n_bands: int = 10) -> list[Cell]:
    """Build the benchmark grid: each kind × each layer group × bands, then all matrices × bands."""
    per_kind = band_cells(
        model,
        kinds={kind: kind for kind in KINDS},
        layers={group: group for group in ("early", "middle", "late")},
        n_bands=n_bands,
    )
    all_matrices = band_cells(model, kinds={"all": "all"}, layers={"all": "all"}, n_bands=n_bands)
    return per_kind + all_matrices


def evenly_spaced(cells: Sequence[Cell], n: int | None) -> list[Cell]:
    """Pick `n` cells at evenly spaced positions of `cells` (all of them when n is None).

    The pick is deterministic and spans every kind and layer group of the grid order.
    """
    if n is None or n >= len(cells):
        return list(cells)
    if n < 1:
        raise ValueError(f"cell count must be at least 1, got {n}")
    positions = np.unique(np.linspace(0, len(cells) - 1, n).round().astype(int))
    return [cells[position] for position in positions]


def n_matrices(cell: Cell) -> int:
    return len(cell.kinds) * len(cell.layers)


def extrapolate_seconds(sample: Sequence[Cell], seconds: Sequence[float], cells: Sequence[Cell]) -> float:
    """Estimate the time to run all `cells` from the timed `sample`.

    Cells are grouped by how many matrices they touch (that sets the naive loop's SVD
    count), and each group's mean time is multiplied by its size in `cells`. A group
    absent from the sample gets the sample's overall mean time per cell.
    """
    frame = pd.DataFrame({"matrices": [n_matrices(cell) for cell in sample], "seconds": list(seconds)})
    means = frame.groupby("matrices")["seconds"].mean()
    overall = float(frame["seconds"].mean())
    total = 0.0
    for cell in cells:
        total += float(means.get(n_matrices(cell), overall))
    return total


# ---------------------------------------------------------------------------------------
# Model and data.


def _finetuned_model(args: argparse.Namespace):
    try:
        from svutils.finetune import FinetuneConfig, finetune
    except ImportError as error:
        raise SystemExit(
            f"svutils.finetune is not importable ({error}); pass --checkpoint with a fine-tuned model folder"
        ) from None
    config = FinetuneConfig(
        model="minilm",
        task="rte",
        data_dir=str(args.data_dir),
        n_train=args.n_train,
        n_eval=None,
        max_length=args.max_length,
        epochs=args.epochs,
        checkpoint_epochs=(args.epochs,),
        seed=args.seed,
    )
    run = finetune(config, cache_dir=args.cache_dir, progress=True)
    model, tokenizer = run.load()
    return model, tokenizer, str(run.checkpoints[args.epochs])


def load_benchmark_model(args: argparse.Namespace):
    """Return (model, tokenizer, checkpoint path): `--checkpoint`, else a short cached fine-tuning run."""
    if args.checkpoint is None:
        return _finetuned_model(args)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(args.checkpoint)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"--checkpoint {folder} has no config.json; give a folder saved with save_pretrained")
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval()
    return model, tokenizer, str(folder)


def load_eval_set(args: argparse.Namespace, tokenizer):
    """Tokenize RTE's validation split (or a stratified subset of `--n-eval` examples)."""
    from svutils.data import load_split, stratified_subset, tokenize

    frame = load_split("rte", "validation", data_dir=args.data_dir)
    frame = stratified_subset(frame, args.n_eval, seed=args.seed)
    return tokenize(frame, "rte", tokenizer, args.max_length, cache_dir=args.cache_dir)


# ---------------------------------------------------------------------------------------
# Reporting.


def machine_info() -> dict:
    """Describe the CPU, core count, library versions and torch thread settings."""
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return {
        "cpu_model": cpu_model,
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
    }


def format_report(summary: dict) -> str:
    """Render the JSON summary as a human-readable table."""
    speed = summary["speed"]
    bound = summary["lower_bound"]
    check = summary["equivalence"]
    machine = summary["machine"]
    rows = [
        ("machine", f"{machine['cpu_model']}, nproc={machine['nproc']}, torch {machine['torch']}, "
                    f"threads={machine['torch_num_threads']}"),
        ("evaluation set", f"{summary['n_eval']} examples, mean {summary['mean_tokens']:.1f} tokens "
                           f"(padded to {summary['max_length']} in the naive loop), baseline accuracy "
                           f"{summary['baseline_accuracy']:.3f}"),
        ("svutils cells", f"{speed['svutils_cells']} in {speed['svutils_seconds']:.1f} s "
                          f"= {speed['svutils_cells_per_second']:.3f} cells/s"),
        ("naive cells", f"{speed['naive_cells']} in {speed['naive_seconds']:.1f} s "
                        f"= {speed['naive_cells_per_second']:.3f} cells/s"),
        ("speed-up", f"{speed['speedup']:.2f}x (naive time for the svutils cells, estimated: "
                     f"{speed['naive_seconds_estimated']:.1f} s)"),
        ("speed-up in CPU time", f"{speed['speedup_cpu']:.2f}x (svutils {speed['svutils_cpu_seconds']:.1f} CPU s, "
                                 f"naive estimated {speed['naive_cpu_seconds_estimated']:.1f} CPU s)"),
        ("naive time by step", ", ".join(f"{name} {value:.1f} s" for name, value in speed["naive_breakdown"].items())),
        ("rounds", f"{summary['rounds']} (each repeats svutils's baseline pass); svutils batch size "
                   f"{summary['svutils_batch_size']}, naive batch size {NAIVE_BATCH_SIZE}"),
        ("svutils time by step", ", ".join(f"{name} {value:.1f} s" for name, value in speed["svutils_breakdown"].items())),
        ("matmul throughput", f"{bound['matmul_gflops']:.1f} GFLOP/s, the fastest of the rounds' "
                              f"{', '.join(f'{value:.1f}' for value in bound['matmul_gflops_per_round'])} "
                              f"(float32 {bound['matmul_size']}² matmul)"),
        ("lower bound", f"{bound['gflop']:.1f} GFLOP → {bound['seconds']:.1f} s; achieved "
                        f"{bound['fraction_of_total']:.3f} of it over the whole run, "
                        f"{bound['fraction_of_cells']:.3f} over the cells' own time"
                        + (" (last layer counted for [CLS] only)" if bound.get("cls_only_last_layer") else "")),
        ("SVD of all matrices", f"{summary['svd']['n_matrices']} matrices in {summary['svd']['seconds']:.2f} s "
                                f"(naive loop: {summary['svd']['naive_svd_count']} SVDs in "
                                f"{summary['svd']['naive_svd_seconds']:.1f} s)"),
        ("equivalence", f"{check['n_mismatches']} mismatching predictions of {check['n_predictions']} "
                        f"({check['n_cells']} cells); max |loss difference| "
                        f"{check['max_abs_loss_difference']:.2e} nats, smallest naive logit margin "
                        f"{check['min_naive_margin']:.2e}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    for mismatch in check["mismatches"]:
        lines.append(
            f"  MISMATCH cell {mismatch['cell_key']} example {mismatch['example']}: naive {mismatch['naive_pred']}, "
            f"svutils {mismatch['svutils_pred']}, naive logit margin {mismatch['naive_margin']:.3e}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Main.


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder with rte/train.jsonl and rte/validation.jsonl (default: %(default)s)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="fine-tuned model folder (save_pretrained layout); skips fine-tuning")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="svutils cache for the fine-tuned checkpoint and token ids (default: $SVUTILS_CACHE_DIR "
                             "or ~/.cache/svutils)")
    parser.add_argument("--n-train", type=int, default=500, help="training examples of the short fine-tuning run")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the short fine-tuning run")
    parser.add_argument("--n-eval", type=int, default=None,
                        help="evaluate a stratified subset of this many validation examples (default: all 277)")
    parser.add_argument("--max-length", type=int, default=128, help="truncation and naive padding length in tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of fine-tuning and of the evaluation subset")
    parser.add_argument("--cells", type=int, default=None,
                        help="time only this many evenly spaced cells, the same ones for both implementations")
    parser.add_argument("--naive-cells", type=int, default=30,
                        help="cells the naive loop runs when --cells is not given; its time for the full grid "
                             "is extrapolated (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternate the two implementations in this many rounds, so a change in machine "
                             "load affects both alike; each round repeats svutils's baseline pass "
                             "(default: %(default)s)")
    parser.add_argument("--svutils-batch-size", type=int, default=32,
                        help="run_grid's batch size; the naive loop always uses 64 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads value (default: torch's)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul timed for throughput")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON summary to this path")
    return parser.parse_args(argv)


def _validate(args: argparse.Namespace) -> None:
    for name in ("n_train", "epochs", "cells", "naive_cells", "rounds", "svutils_batch_size", "threads", "n_eval"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.matmul_size < 64:
        raise SystemExit(f"--matmul-size must be at least 64, got {args.matmul_size}")
    if args.checkpoint is None and not (args.data_dir / "rte").is_dir():
        raise SystemExit(f"--data-dir {args.data_dir} has no rte folder; point it at a folder with rte/*.jsonl")


@dataclass
class Measurements:
    """What the interleaved rounds of both implementations produced."""

    grid: GridResult
    svutils_seconds: float
    svutils_cpu_seconds: float
    baseline_seconds: float
    cell_seconds: float
    naive_logits: dict[str, np.ndarray]
    naive_timings: list[NaiveTiming]
    throughputs: list[float]


def merge_grids(results: Sequence[GridResult]) -> GridResult:
    """Combine `run_grid` results over disjoint cells of the same model and evaluation set.

    Keeps the first baseline row, so the table has one row per distinct cell.
    """
    table = pd.concat([result.table for result in results], ignore_index=True)
    table = table.drop_duplicates(subset="cell_key", keep="first").reset_index(drop=True)
    predictions: dict[str, np.ndarray] = {}
    losses: dict[str, np.ndarray] = {}
    for result in results:
        predictions.update(result.predictions)
        losses.update(result.losses)
    return GridResult(
        table=table,
        labels=results[0].labels,
        predictions=predictions,
        losses=losses,
        seconds=sum(result.seconds for result in results),
        n_computed=sum(result.n_computed for result in results),
        n_loaded=sum(result.n_loaded for result in results),
    )


def run_interleaved(
    model: nn.Module,
    eval_set,
    svutils_cells: Sequence[Cell],
    naive_sample: Sequence[Cell],
    *,
    rounds: int,
    matmul_size: int,
    batch_size: int = 64,
) -> Measurements:
    """Time both implementations in alternating rounds, so both see the same machine load.

    The svutils cells are split into `rounds` consecutive chunks. Each round measures the
    matmul throughput, runs `run_grid` on one chunk (with an SVD cache shared by all
    rounds), then the naive loop on the sampled cells of that chunk. Every round repeats
    `run_grid`'s baseline pass, and that time counts against svutils. `batch_size` is
    `run_grid`'s, and the naive loop always uses batches of 64.
    """
    sample_keys = {cell.key() for cell in naive_sample}
    chunks = [
        [svutils_cells[position] for position in positions]
        for positions in np.array_split(np.arange(len(svutils_cells)), rounds)
        if len(positions)
    ]
    batches = naive_batches(eval_set)
    svd_cache = SVDCache()
    results: list[GridResult] = []
    naive_logits: dict[str, np.ndarray] = {}
    timings: list[NaiveTiming] = []
    throughputs: list[float] = []
    svutils_seconds = svutils_cpu_seconds = 0.0
    for number, chunk in enumerate(chunks, start=1):
        throughputs.append(matmul_throughput(matmul_size))

        tic, cpu_start = time.perf_counter(), time.process_time()
        result = run_grid(
            model,
            eval_set,
            chunk,
            task="rte",
            store=None,
            svd_cache=svd_cache,
            batch_size=batch_size,
            reuse_hidden_states=True,
            progress=True,
        )
        svutils_seconds += time.perf_counter() - tic
        svutils_cpu_seconds += time.process_time() - cpu_start
        results.append(result)

        naive_chunk = [cell for cell in chunk if cell.key() in sample_keys]
        for cell in tqdm(naive_chunk, desc=f"naive loop, round {number}/{len(chunks)}", leave=False):
            logits, timing = naive_cell_logits(model, batches, cell)
            naive_logits[cell.key()] = logits
            timings.append(timing)

    baseline_seconds = cell_seconds = 0.0
    for result in results:
        table = result.table.set_index("cell_key")
        baseline_seconds += float(table.loc[BASELINE.key(), "seconds"])
        cell_seconds += float(table.drop(index=BASELINE.key())["seconds"].sum())
    return Measurements(
        grid=merge_grids(results),
        svutils_seconds=svutils_seconds,
        svutils_cpu_seconds=svutils_cpu_seconds,
        baseline_seconds=baseline_seconds,
        cell_seconds=cell_seconds,
        naive_logits=naive_logits,
        naive_timings=timings,
        throughputs=throughputs,
    )


def summarize(
    args: argparse.Namespace,
    model: nn.Module,
    eval_set,
    checkpoint: str,
    all_cells: Sequence[Cell],
    svutils_cells: Sequence[Cell],
    naive_sample: Sequence[Cell],
    measured: Measurements,
    svd_timing: tuple[float, int],
) -> dict:
    """Build the JSON summary: speeds, equivalence check, lower bound and SVD cost."""
    timings = measured.naive_timings
    naive_seconds = sum(timing.total_s for timing in timings)
    naive_estimate = extrapolate_seconds(naive_sample, [timing.total_s for timing in timings], svutils_cells)
    naive_cpu_estimate = extrapolate_seconds(naive_sample, [timing.cpu_s for timing in timings], svutils_cells)
    check = compare_predictions(measured.naive_logits, measured.grid, eval_set.labels)

    # The fastest throughput measured gives the smallest lower bound, so the achieved
    # fraction is not flattered by rounds where other processes slowed the matmul down.
    throughput = max(measured.throughputs)
    dims = model_dims(model)
    cls_only = supports_cls_only(model)
    flops = sum(cell_flops(dims, eval_set.lengths, cell.start_layer, cls_only=cls_only) for cell in svutils_cells)
    bound_seconds = flops / throughput
    baseline_row = measured.grid.table.set_index("cell_key").loc[BASELINE.key()]
    svutils_seconds = measured.svutils_seconds
    return {
        "machine": machine_info(),
        "checkpoint": checkpoint,
        "model_dims": asdict(dims),
        "n_eval": len(eval_set),
        "baseline_accuracy": float(baseline_row["accuracy"]),
        "mean_tokens": float(eval_set.lengths.mean()),
        "max_length": args.max_length,
        "n_grid_cells": len(all_cells),
        "rounds": len(measured.throughputs),
        "svutils_batch_size": args.svutils_batch_size,
        "speed": {
            "svutils_cells": len(svutils_cells),
            "svutils_seconds": svutils_seconds,
            "svutils_cells_per_second": len(svutils_cells) / svutils_seconds,
            "svutils_breakdown": {
                "baseline passes": measured.baseline_seconds,
                "cells": measured.cell_seconds,
                "batching, fingerprints and statistics": svutils_seconds
                - measured.baseline_seconds
                - measured.cell_seconds,
            },
            "naive_cells": len(naive_sample),
            "naive_seconds": naive_seconds,
            "naive_cells_per_second": len(naive_sample) / naive_seconds,
            "naive_seconds_estimated": naive_estimate,
            "naive_breakdown": {
                "deepcopy": sum(timing.copy_s for timing in timings),
                "SVD": sum(timing.svd_s for timing in timings),
                "edit": sum(timing.edit_s for timing in timings),
                "evaluation": sum(timing.eval_s for timing in timings),
            },
            "speedup": naive_estimate / svutils_seconds,
            "svutils_cpu_seconds": measured.svutils_cpu_seconds,
            "naive_cpu_seconds": sum(timing.cpu_s for timing in timings),
            "naive_cpu_seconds_estimated": naive_cpu_estimate,
            "speedup_cpu": naive_cpu_estimate / measured.svutils_cpu_seconds,
        },
        "lower_bound": {
            "matmul_size": args.matmul_size,
            "matmul_gflops": throughput / 1e9,
            "matmul_gflops_per_round": [value / 1e9 for value in measured.throughputs],
            "gflop": flops / 1e9,
            "cls_only_last_layer": cls_only,
            "seconds": bound_seconds,
            "fraction_of_total": bound_seconds / svutils_seconds,
            "fraction_of_cells": bound_seconds / measured.cell_seconds,
        },
        "svd": {
            "n_matrices": svd_timing[1],
            "seconds": svd_timing[0],
            "naive_svd_count": int(sum(n_matrices(cell) for cell in naive_sample)),
            "naive_svd_seconds": sum(timing.svd_s for timing in timings),
        },
        "equivalence": check,
        "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "cells_fingerprint": fingerprint([cell.key() for cell in svutils_cells]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _validate(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cache_dir is None:
        args.cache_dir = default_cache_dir()

    model, tokenizer, checkpoint = load_benchmark_model(args)
    eval_set = load_eval_set(args, tokenizer)
    all_cells = grid_cells(model)
    svutils_cells = evenly_spaced(all_cells, args.cells)
    naive_sample = svutils_cells if args.cells is not None else evenly_spaced(all_cells, args.naive_cells)
    print(f"{len(all_cells)} grid cells; svutils runs {len(svutils_cells)}, the naive loop {len(naive_sample)}", flush=True)

    svd_timing = svd_seconds(model)
    rounds = min(args.rounds, len(svutils_cells))
    measured = run_interleaved(
        model,
        eval_set,
        svutils_cells,
        naive_sample,
        rounds=rounds,
        matmul_size=args.matmul_size,
        batch_size=args.svutils_batch_size,
    )
    summary = summarize(
        args, model, eval_set, checkpoint, all_cells, svutils_cells, naive_sample, measured, svd_timing
    )
    print(format_report(summary))
    if args.json is not None:
        atomic_write_json(args.json, summary)
        print(f"wrote {args.json}")
    return 1 if summary["equivalence"]["n_mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
