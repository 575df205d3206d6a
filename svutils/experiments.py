"""The five experiments as functions of an ExperimentConfig, returning tidy tables.

Each notebook calls one function here and only draws and describes its result. Every
function fine-tunes through the checkpoint cache (`svutils.finetune.finetune`) and
ablates through the results store, so notebooks that need the same model or the same
cell share the work, and a rerun with nothing changed only reads files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from svutils import spectra, stats
from svutils.ablation import Cell, GridResult, band_cells, run_grid
from svutils.config import ExperimentConfig
from svutils.data import TokenizedSet, load_split, stratified_subset, tokenize
from svutils.finetune import FinetuneRun, finetune
from svutils.io import atomic_write_bytes
from svutils.models import KIND_LABELS, layer_groups, num_layers, weight_matrices
from svutils.store import ResultsStore
from svutils.svd import SVDCache, band_bounds

logger = logging.getLogger(__name__)

MATRIX_GROUPS: dict[str, str] = {"Q": "q", "K": "k", "V": "v", "O": "o", "FFN": "ffn"}
"""Kind selections of the matrix-specific experiment: each attention matrix, and the FFN pair."""


@dataclass
class Checkpoint:
    """One fine-tuned model state with everything needed to ablate it."""

    task: str
    seed: int
    epoch: int
    run: FinetuneRun
    model: nn.Module
    tokenizer: object
    eval_set: TokenizedSet


def finetuned_run(config: ExperimentConfig, task: str, seed: int, *, progress: bool = True) -> FinetuneRun:
    """Fine-tune (or load from the cache) the model of `config` on `task` with `seed`."""
    return finetune(config.finetune_config(task, seed), cache_dir=config.resolved_cache_dir(), progress=progress)


def evaluation_set(config: ExperimentConfig, task: str, seed: int, tokenizer) -> TokenizedSet:
    """Return the tokenized evaluation subset used for ablation: the same seeded stratified
    sample of the evaluation split that fine-tuning reports its curve on."""
    task_config = config.for_task(task)
    frame = load_split(task, task_config.eval_split, data_dir=task_config.resolved_data_dir())
    frame = stratified_subset(frame, task_config.n_eval, seed=seed)
    return tokenize(frame, task, tokenizer, task_config.max_length, cache_dir=config.resolved_cache_dir())


def checkpoints(
    config: ExperimentConfig,
    *,
    tasks: Sequence[str] | None = None,
    epochs: Sequence[int] | None = None,
    progress: bool = True,
) -> Iterable[Checkpoint]:
    """Yield each (task, seed, epoch) model, fine-tuning first where the cache lacks it.

    `epochs` defaults to the last epoch of each task's run. Models are loaded one at a time.
    """
    for task in tasks or config.tasks:
        for seed in config.seeds:
            run = finetuned_run(config, task, seed, progress=progress)
            for epoch in epochs or [max(run.checkpoints)]:
                model, tokenizer = run.load(epoch)
                yield Checkpoint(task, seed, epoch, run, model, tokenizer, evaluation_set(config, task, seed, tokenizer))


def resolved_layer_groups(config: ExperimentConfig, model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Return the config's layer groups, or thirds of the model when it sets none."""
    if config.layer_groups:
        n_layers = num_layers(model)
        groups = {name: tuple(layers) for name, layers in config.layer_groups.items()}
        outside = {name: [i for i in layers if not 0 <= i < n_layers] for name, layers in groups.items()}
        outside = {name: bad for name, bad in outside.items() if bad}
        if outside:
            raise ValueError(
                f"layer_groups {outside} name layers outside the model; valid layers are 0..{n_layers - 1}. "
                "Fix -p layer_groups or leave it unset for thirds of the model."
            )
        return groups
    return layer_groups(num_layers(model))


def ablate(
    config: ExperimentConfig,
    checkpoint: Checkpoint,
    cells: Sequence[Cell],
    *,
    reference: Mapping[str, torch.Tensor] | None = None,
    svd_cache: SVDCache | None = None,
    progress: bool = True,
) -> GridResult:
    """Run `cells` on one checkpoint through the shared results store."""
    result = run_grid(
        checkpoint.model,
        checkpoint.eval_set,
        cells,
        task=checkpoint.task,
        model_name=config.model,
        checkpoint=f"epoch {checkpoint.epoch}",
        store=ResultsStore(config.resolved_cache_dir() / "results"),
        svd_cache=svd_cache,
        reference=reference,
        batch_size=config.eval_batch_size,
        n_bootstrap=config.n_bootstrap,
        ci_level=config.ci_level,
        bootstrap_seed=checkpoint.seed,
        collapse_threshold=config.collapse_threshold,
        progress=progress,
        extra_columns={"seed": checkpoint.seed, "epoch": checkpoint.epoch},
    )
    return result


def _modes(config: ExperimentConfig, controls: bool = True) -> tuple[str, ...]:
    return ("remove", "random") if (config.controls and controls) else ("remove",)


def task_complexity(config: ExperimentConfig, *, progress: bool = True) -> pd.DataFrame:
    """Remove each band from all selected matrices of all layers, per task and seed.

    Returns the grid table of every task's last checkpoint, with the random-subspace
    control rows when `config.controls` is set.
    """
    tables = []
    for point in checkpoints(config, progress=progress):
        cells = band_cells(
            point.model,
            kinds={"all": config.kinds},
            layers={"all": "all"},
            n_bands=config.n_bands,
            convention=config.band_convention,
            modes=_modes(config),
            seed=point.seed,
        )
        tables.append(ablate(config, point, cells, progress=progress).table)
    return pd.concat(tables, ignore_index=True)


def training_duration(config: ExperimentConfig, *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Repeat the all-matrix band removal at every checkpoint epoch of each run.

    The random control is left out here: the task-complexity grid already pairs it with
    the last checkpoint, and leaving it out halves the cost of this experiment.

    Returns (ablation table with an `epoch` column, training curves with task and seed).
    """
    tables, curves = [], []
    for task in config.tasks:
        task_config = config.for_task(task)
        for point in checkpoints(config, tasks=[task], epochs=task_config.checkpoint_epochs, progress=progress):
            cells = band_cells(
                point.model,
                kinds={"all": config.kinds},
                layers={"all": "all"},
                n_bands=config.n_bands,
                convention=config.band_convention,
                modes=("remove",),
            )
            tables.append(ablate(config, point, cells, progress=progress).table)
            if point.epoch == task_config.checkpoint_epochs[-1]:
                curves.append(point.run.curve.assign(task=task, seed=point.seed))
    return pd.concat(tables, ignore_index=True), pd.concat(curves, ignore_index=True)


def matrix_specific(config: ExperimentConfig, *, progress: bool = True) -> pd.DataFrame:
    """Remove each band from Q, K, V, O and the FFN pair separately, in all layers."""
    tables = []
    for point in checkpoints(config, progress=progress):
        cells = band_cells(
            point.model,
            kinds=MATRIX_GROUPS,
            layers={"all": "all"},
            n_bands=config.n_bands,
            convention=config.band_convention,
            modes=("remove",),
        )
        tables.append(ablate(config, point, cells, progress=progress).table)
    return pd.concat(tables, ignore_index=True)


def early_ffn(config: ExperimentConfig, *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Remove each band from the FFN matrices of each layer group, with attention as contrast.

    Cells: FFN × {each layer group, all layers} × bands, attention × {each layer group} ×
    bands, and the random control for the FFN layer-group cells when `config.controls` is
    set. Returns (table, additivity table): the additivity table compares, per band, the
    sum of the FFN layer-group effects with the effect of removing the band from the FFN
    matrices of all groups at once.
    """
    tables, additivity_tables = [], []
    for point in checkpoints(config, progress=progress):
        groups = resolved_layer_groups(config, point.model)
        layer_map = {name: list(layers) for name, layers in groups.items()}
        layer_map["all"] = [layer for layers in groups.values() for layer in layers]
        common = dict(n_bands=config.n_bands, convention=config.band_convention, layer_groups=groups, seed=point.seed)
        group_map = {name: list(layers) for name, layers in groups.items()}
        cells = band_cells(point.model, kinds={"FFN": "ffn"}, layers=layer_map, modes=("remove",), **common)
        cells += band_cells(point.model, kinds={"attention": "attn"}, layers=group_map, modes=("remove",), **common)
        if config.controls:
            cells += band_cells(point.model, kinds={"FFN": "ffn"}, layers=group_map, modes=("random",), **common)
        table = ablate(config, point, cells, progress=progress).table
        tables.append(table)
        removed = table[table["mode"] == "remove"]
        for kind_label, part in removed.groupby("kind_label"):
            group_rows = part[part["layer_label"].isin(list(groups))]
            joint_rows = part[part["layer_label"] == "all"]
            if joint_rows.empty:
                continue
            for metric in ("change", "loss_change"):
                frame = stats.additivity(
                    group_rows[["band", "layer_label", metric]],
                    joint_rows[["band", metric]],
                    band_column="band",
                    group_column="layer_label",
                    value_column=metric,
                )
                additivity_tables.append(
                    frame.assign(task=point.task, seed=point.seed, kind_label=kind_label, metric=metric)
                )
    return pd.concat(tables, ignore_index=True), pd.concat(additivity_tables, ignore_index=True)


# ---------------------------------------------------------------------------------------
# The "why" experiment: spectra, update shares, rotation and reverting the update.


def _weights(model: nn.Module) -> dict[str, tuple[str, int, torch.Tensor]]:
    return {ref.path: (ref.kind, ref.layer, ref.weight.detach().to(torch.float32).clone()) for ref in weight_matrices(model)}


def spectra_table(model: nn.Module, *, state: str, svd_cache: SVDCache | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (singular values, Marchenko–Pastur fits) of every matrix of `model`.

    The first table has one row per singular value (state, kind, layer, index, value); the
    second one row per matrix with the fitted σ, both edges and the counts outside them.
    """
    cache = svd_cache or SVDCache()
    values, fits = [], []
    for ref in weight_matrices(model):
        S = cache.get(ref).S.double().numpy()
        values.append(pd.DataFrame({"state": state, "kind": ref.kind, "layer": ref.layer, "index": np.arange(len(S)), "value": S}))
        fit = spectra.marchenko_pastur_fit(S, ref.shape)
        fits.append({"state": state, "kind": ref.kind, "layer": ref.layer, "rows": ref.shape[0], "columns": ref.shape[1], **fit.to_dict()})
    return pd.concat(values, ignore_index=True), pd.DataFrame(fits)


def update_tables(
    pretrained: nn.Module,
    finetuned: nn.Module,
    *,
    n_bands: int,
    convention: str,
    svd_cache: SVDCache | None = None,
    pretrained_cache: SVDCache | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (update share per band, band rotation) for every matrix.

    Share of band b in matrix W: ‖U_bᵀ ΔW V_b‖²_F / ‖ΔW‖²_F with U, V from the fine-tuned
    SVD and ΔW = W_finetuned − W_pretrained; one-sided shares ‖U_bᵀ ΔW‖²_F / ‖ΔW‖²_F and
    ‖ΔW V_b‖²_F / ‖ΔW‖²_F come alongside. Rotation: overlap in [0, 1] of each band's
    left and right singular subspaces before and after fine-tuning (1 = unchanged).
    """
    cache = svd_cache or SVDCache()
    before = {ref.path: ref for ref in weight_matrices(pretrained)}
    share_rows, rotation_rows = [], []
    pre_cache = pretrained_cache if pretrained_cache is not None else SVDCache()
    for ref in weight_matrices(finetuned):
        svd = cache.get(ref)
        pre_ref = before[ref.path]
        delta = ref.weight.detach().to(torch.float32) - pre_ref.weight.detach().to(torch.float32)
        bounds = band_bounds(svd.rank, n_bands, convention)
        shares = spectra.update_share(svd.U, svd.S, svd.Vh, delta, bounds).assign(kind=ref.kind, layer=ref.layer)
        share_rows.append(shares)
        pre_svd = pre_cache.get(pre_ref)
        rotation = spectra.band_rotation(pre_svd.U, pre_svd.Vh, svd.U, svd.Vh, bounds)
        rotation_rows.append(rotation.assign(kind=ref.kind, layer=ref.layer))
    return pd.concat(share_rows, ignore_index=True), pd.concat(rotation_rows, ignore_index=True)


def cell_update_share(shares: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """For each row of a grid table, the share of the touched matrices' update energy
    that lies in the removed band: Σ share·‖ΔW‖² / Σ ‖ΔW‖² over the cell's matrices."""
    energy = shares.assign(weighted=shares["share_two_sided"] * shares["update_norm"] ** 2, total=shares["update_norm"] ** 2)
    values = []
    for _, row in table.iterrows():
        if row["mode"] == "baseline":
            values.append(np.nan)
            continue
        kinds = str(row["kinds"]).split(",")
        layers = [int(layer) for layer in str(row["layers"]).split(",")]
        part = energy[energy["kind"].isin(kinds) & energy["layer"].isin(layers)]
        total = part.drop_duplicates(["kind", "layer"])["total"].sum()
        inside = part[part["band"] == int(row["band"])]["weighted"].sum()
        values.append(inside / total if total > 0 else 0.0)
    return pd.Series(values, index=table.index, name="update_share")


@dataclass
class WhyResult:
    """Tables of the "why" experiment; every one carries task and seed columns."""

    spectra: pd.DataFrame
    fits: pd.DataFrame
    shares: pd.DataFrame
    rotation: pd.DataFrame
    grid: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def why(config: ExperimentConfig, *, progress: bool = True) -> WhyResult:
    """Measure where the fine-tuning update lives and whether removing it explains the damage.

    For each task and seed: spectra and Marchenko–Pastur fits of the pretrained and the
    final model; update share and band rotation per matrix, band and checkpoint epoch; and
    a grid on the final model with, per layer group × band (all matrix kinds at once),
    the full band removal and the removal of only the band's share of the update
    (mode "revert_update"), each row with the update share it removes.
    """
    spectra_parts, fit_parts, share_parts, rotation_parts, grid_parts = [], [], [], [], []
    for task in config.tasks:
        task_config = config.for_task(task)
        for seed in config.seeds:
            run = finetuned_run(config, task, seed, progress=progress)
            pretrained, _ = run.load_pretrained()
            pretrained_cache = SVDCache()
            values, fits = spectra_table(pretrained, state="pretrained", svd_cache=pretrained_cache)
            spectra_parts.append(values.assign(task=task, seed=seed))
            fit_parts.append(fits.assign(task=task, seed=seed))
            epochs = [epoch for epoch in task_config.checkpoint_epochs if epoch > 0]
            for epoch in tqdm(epochs, desc=f"{task} update shares", disable=not progress, leave=False):
                model, tokenizer = run.load(epoch)
                cache = SVDCache()
                shares, rotation = update_tables(
                    pretrained, model, n_bands=config.n_bands, convention=config.band_convention,
                    svd_cache=cache, pretrained_cache=pretrained_cache,
                )
                share_parts.append(shares.assign(task=task, seed=seed, epoch=epoch))
                rotation_parts.append(rotation.assign(task=task, seed=seed, epoch=epoch))
                if epoch != epochs[-1]:
                    continue
                values, fits = spectra_table(model, state="fine-tuned", svd_cache=cache)
                spectra_parts.append(values.assign(task=task, seed=seed))
                fit_parts.append(fits.assign(task=task, seed=seed))
                point = Checkpoint(task, seed, epoch, run, model, tokenizer, evaluation_set(config, task, seed, tokenizer))
                groups = resolved_layer_groups(config, model)
                cells = band_cells(
                    model,
                    kinds={"all": config.kinds},
                    layers={name: list(layers) for name, layers in groups.items()},
                    n_bands=config.n_bands,
                    convention=config.band_convention,
                    modes=("remove", "revert_update"),
                    layer_groups=groups,
                    seed=seed,
                )
                reference = {path: weight for path, (_, _, weight) in _weights(pretrained).items()}
                table = ablate(config, point, cells, reference=reference, svd_cache=cache, progress=progress).table
                table["update_share"] = cell_update_share(shares, table)
                grid_parts.append(table)
    return WhyResult(
        spectra=pd.concat(spectra_parts, ignore_index=True),
        fits=pd.concat(fit_parts, ignore_index=True),
        shares=pd.concat(share_parts, ignore_index=True),
        rotation=pd.concat(rotation_parts, ignore_index=True),
        grid=pd.concat(grid_parts, ignore_index=True),
    )


# ---------------------------------------------------------------------------------------
# Saving.


def save_table(table: pd.DataFrame, folder: str | Path, name: str) -> dict[str, Path]:
    """Write a tidy table as CSV and Parquet, atomically, into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / f"{name}.csv", "parquet": folder / f"{name}.parquet"}
    atomic_write_bytes(paths["csv"], table.to_csv(index=False).encode())
    atomic_write_bytes(paths["parquet"], table.to_parquet(index=False))
    return paths


def with_labels(table: pd.DataFrame) -> pd.DataFrame:
    """Add a readable `matrices` column (e.g. "FFN (in, out)") for charts."""
    labels = table["kind_label"].map(lambda label: KIND_LABELS.get(label, label))
    return table.assign(matrices=labels)
