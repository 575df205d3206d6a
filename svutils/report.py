"""Summarize experiment tables as compact pivots and generated Markdown findings.

The notebooks call these functions so that every number in their text comes from the
results. Each finding is worded only as strongly as its interval allows. An interval that
excludes zero is called a decrease or an increase, and one that includes zero is not. A
collapsed cell (the model predicts one class for almost every example) is reported as a
collapse, not as the importance of the removed band.

Accuracy changes are fractions in the tables (-0.021) and percentage points in the text
(-2.1 points). Loss changes are differences of the mean cross-entropy in nats.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from svutils import stats
from svutils.io import atomic_write_text
from svutils.models import KIND_LABELS

TABLE_NAMES: dict[str, tuple[str, ...]] = {
    "task_complexity": ("results",),
    "training_duration": ("results", "curves"),
    "matrix_specific": ("results",),
    "early_ffn": ("results", "additivity"),
    "why": ("grid", "shares", "rotation", "fits", "spectra"),
}
"""Tables each experiment notebook saves under `<output_dir>/<notebook>/` (CSV and Parquet)."""

EXPERIMENT_TITLES: dict[str, str] = {
    "task_complexity": "Task complexity",
    "training_duration": "Training duration",
    "matrix_specific": "Matrix-specific removal",
    "early_ffn": "Early-layer FFN",
    "why": "Why small singular values matter",
}
"""Section titles of the findings summary, by notebook name."""

SHARE_DEFINITION = (
    "the update share of band b in matrix W is ‖U_bᵀ ΔW V_b‖²_F / ‖ΔW‖²_F, where ΔW = "
    "W_fine-tuned − W_pretrained and U_b, V_b are the singular vectors of band b in the SVD of "
    "the fine-tuned W"
)
"""The update-share definition used by `svutils.experiments.update_tables`, as a sentence."""

MODE_LABELS: dict[str, str] = {
    "remove": "band removed",
    "random": "random subspace (control)",
    "revert_update": "band's update reverted",
}
"""Readable names of the grid's `mode` values for chart legends."""

EFFECT_COLUMNS: tuple[str, ...] = ("change", "ci_low", "ci_high", "loss_change", "loss_ci_low", "loss_ci_high")
"""Columns of a grid table that `summarize_cells` needs besides the grouping columns."""

VERDICTS: tuple[str, ...] = ("decrease", "increase", "includes zero", "collapsed", "no interval")
"""Values of the `verdict` column of `summarize_cells`."""


# ---------------------------------------------------------------------------------------
# Checks and small formatting helpers.


def _require_columns(table: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise KeyError(
            f"{name} lacks the columns {missing}; it has {list(table.columns)}. "
            "Pass a table from svutils.experiments (or svutils.ablation.run_grid)."
        )


def _require_rows(table: pd.DataFrame, name: str) -> None:
    if table.empty:
        raise ValueError(f"{name} has no rows; run the experiment first or check its filters")


def display_path(path: str | Path) -> str:
    """Return `path` relative to the repository root when it lies inside it, else unchanged.

    Pages of the book name result folders this way, so they do not show the builder's
    absolute paths.
    """
    from svutils.config import REPO_ROOT

    resolved = Path(path).expanduser().resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def saved_files_text(folder: str | Path, names: Iterable[str]) -> str:
    """Return the Markdown sentence that lists a chapter's saved tables and charts."""
    listed = ", ".join(f"`{name}`" for name in names)
    return f"Tables and charts of this chapter are in `{display_path(folder)}`: {listed}."


def cells_phrase(count: int) -> str:
    """Return "1 cell" or "N cells"."""
    return f"{count} cell" if count == 1 else f"{count} cells"


def points(value: float, *, signed: bool = True) -> str:
    """Format an accuracy fraction as percentage points, e.g. -0.0213 -> "−2.1"."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    text = f"{100 * float(value):+.1f}" if signed else f"{100 * float(value):.1f}"
    return text.replace("-", "−")


def nats(value: float) -> str:
    """Format a loss change in nats with a sign: 0.0312 -> "+0.031", 7.3e-05 -> "+7.3e-05"."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    value = float(value)
    text = f"{value:+.3f}" if value == 0 or abs(value) >= 0.001 else f"{value:+.1e}"
    return text.replace("-", "−")


def band_name(band: int, n_bands: int) -> str:
    """Name band `band` of `n_bands` for text: "band 9 (the smallest singular values)"."""
    band, n_bands = int(band), int(n_bands)
    if band == n_bands - 1:
        return f"band {band} (the smallest singular values)"
    if band == 0:
        return "band 0 (the largest singular values)"
    return f"band {band}"


def matrices_name(kind_label: str) -> str:
    """Return the readable name of a kind label ("ffn" -> "FFN (in, out)"), else the label."""
    return KIND_LABELS.get(str(kind_label), str(kind_label))


def verdict(change: float, low: float, high: float, collapsed: bool) -> str:
    """Classify one effect: "collapsed", "decrease" or "increase" (the interval excludes
    zero), "includes zero", or "no interval" when a bound is missing."""
    if bool(collapsed):
        return "collapsed"
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return "no interval"
    if float(high) < 0:
        return "decrease"
    if float(low) > 0:
        return "increase"
    return "includes zero"


# ---------------------------------------------------------------------------------------
# Tables.


def with_mode_labels(table: pd.DataFrame) -> pd.DataFrame:
    """Add a `removal` column with the readable name of each row's mode, for legends."""
    _require_columns(table, ["mode"], "table")
    return table.assign(removal=table["mode"].map(lambda mode: MODE_LABELS.get(mode, mode)))


def ablation_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Return the rows of a grid table that remove something (every mode but "baseline")."""
    _require_columns(table, ["mode"], "table")
    return table[table["mode"] != "baseline"].copy()


def summarize_cells(table: pd.DataFrame, by: Sequence[str], *, level: float = 0.95) -> pd.DataFrame:
    """Return one effect per group of `by`, pooling seeds where a group has several.

    A group with one seed keeps its bootstrap intervals (`interval` = "bootstrap"). A group
    with several seeds gets the seed mean and a t-interval across seeds from
    `stats.aggregate_seeds` (`interval` = "seeds"), and counts as collapsed when any seed
    collapsed. Columns: `by`, change, ci_low, ci_high, loss_change, loss_ci_low,
    loss_ci_high, collapsed, majority_share (max), n_seeds, interval, verdict, and the
    means of energy_fraction and update_share where the table has them.
    """
    by = list(by)
    _require_columns(table, [*by, *EFFECT_COLUMNS, "collapsed"], "table")
    rows = ablation_rows(table)
    _require_rows(rows, "table (without baseline rows)")
    if "seed" not in rows.columns:
        rows = rows.assign(seed=0)
    rows = rows.assign(collapsed=rows["collapsed"].fillna(False).astype(bool))

    grouped = rows.groupby(by, sort=False, dropna=False)
    summary = grouped.agg(
        n_seeds=("seed", "nunique"),
        n_rows=("seed", "size"),
        collapsed=("collapsed", "any"),
        **{column: (column, "mean") for column in ("energy_fraction", "update_share", "majority_share") if column in rows},
    ).reset_index()
    if "majority_share" in rows:
        summary["majority_share"] = grouped["majority_share"].max().to_numpy()
    repeated = summary[summary["n_rows"] != summary["n_seeds"]]
    if not repeated.empty:
        raise ValueError(
            f"{len(repeated)} groups repeat a seed, e.g. {repeated[by].iloc[0].to_dict()}; "
            "add the distinguishing column (such as mode, kind_label or epoch) to `by`"
        )

    single = rows.groupby(by, sort=False, dropna=False)[list(EFFECT_COLUMNS)].first().reset_index()
    summary = summary.merge(single, on=by, how="left")
    summary["interval"] = "bootstrap"
    if (summary["n_seeds"] > 1).any():
        for value, low, high in (("change", "ci_low", "ci_high"), ("loss_change", "loss_ci_low", "loss_ci_high")):
            pooled = stats.aggregate_seeds(rows, value, by, level=level, seed_column="seed")
            pooled = summary[by].merge(pooled, on=by, how="left")
            several = (summary["n_seeds"] > 1).to_numpy()
            summary.loc[several, value] = pooled.loc[several, "mean"].to_numpy()
            summary.loc[several, low] = pooled.loc[several, "ci_low"].to_numpy()
            summary.loc[several, high] = pooled.loc[several, "ci_high"].to_numpy()
        summary.loc[summary["n_seeds"] > 1, "interval"] = "seeds"
    summary["verdict"] = [
        verdict(row.change, row.ci_low, row.ci_high, row.collapsed) for row in summary.itertuples(index=False)
    ]
    return summary.drop(columns="n_rows")


def effect_pivot(summary: pd.DataFrame, *, index: str | Sequence[str], columns: str | Sequence[str], value: str = "change") -> pd.DataFrame:
    """Pivot effects into text cells "−2.1 [−3.0, −1.2]" (accuracy in points, loss in nats).

    `summary` comes from `summarize_cells`. A collapsed cell gets the suffix " collapsed",
    and an interval that excludes zero gets " *". `value` is "change" or "loss_change".
    """
    if value not in ("change", "loss_change"):
        raise ValueError(f"value must be 'change' or 'loss_change', got {value!r}")
    low, high = ("ci_low", "ci_high") if value == "change" else ("loss_ci_low", "loss_ci_high")
    index = [index] if isinstance(index, str) else list(index)
    columns = [columns] if isinstance(columns, str) else list(columns)
    _require_columns(summary, [*index, *columns, value, low, high, "collapsed"], "summary")
    formatter = points if value == "change" else nats

    def cell_text(row: pd.Series) -> str:
        text = f"{formatter(row[value])} [{formatter(row[low])}, {formatter(row[high])}]"
        if bool(row["collapsed"]):
            return text + " collapsed"
        if verdict(row[value], row[low], row[high], False) in ("decrease", "increase"):
            return text + " *"
        return text

    frame = summary.assign(cell=summary.apply(cell_text, axis=1))
    return frame.pivot(index=index, columns=columns, values="cell")


def baseline_table(table: pd.DataFrame, *, by: Sequence[str] = ("task", "seed", "epoch"), level: float = 0.95) -> pd.DataFrame:
    """Return the unablated model's accuracy next to the majority-class rate, per group.

    Columns: the `by` columns that the table has, n_eval, accuracy, majority_rate,
    accuracy_above_majority, loss and collapsed (the unablated model already predicts one
    class). Two resolutions follow: accuracy_halfwidth is the normal-approximation
    half-width of an accuracy at n_eval, and median_change_halfwidth the median bootstrap
    half-width of the accuracy changes of the group's cells.
    """
    by = [column for column in by if column in table.columns]
    _require_columns(table, ["mode", "accuracy", "loss", "majority_rate", "n_eval", "collapsed"], "table")
    base = table[table["mode"] == "baseline"]
    _require_rows(base, "table (baseline rows)")
    base = base.drop_duplicates(by) if by else base.iloc[:1]
    frame = base[[*by, "n_eval", "accuracy", "majority_rate", "loss", "collapsed"]].copy()
    frame["collapsed"] = frame["collapsed"].fillna(False).astype(bool)
    frame["accuracy_above_majority"] = frame["accuracy"] - frame["majority_rate"]
    frame["accuracy_halfwidth"] = [
        stats.interval_halfwidth(int(n), float(p), level) for n, p in zip(frame["n_eval"], frame["accuracy"])
    ]
    cells = ablation_rows(table)
    if not cells.empty and {"ci_low", "ci_high"} <= set(cells.columns):
        cells = cells.assign(halfwidth=(cells["ci_high"] - cells["ci_low"]) / 2)
        if by:
            median = cells.groupby(by)["halfwidth"].median().rename("median_change_halfwidth").reset_index()
            frame = frame.merge(median, on=by, how="left")
        else:
            frame["median_change_halfwidth"] = cells["halfwidth"].median()
    columns = [*by, "n_eval", "accuracy", "majority_rate", "accuracy_above_majority", "loss", "collapsed", "accuracy_halfwidth"]
    if "median_change_halfwidth" in frame:
        columns.append("median_change_halfwidth")
    return frame[columns].reset_index(drop=True)


def precision_text(baselines: pd.DataFrame, *, level: float = 0.95) -> str:
    """Describe, per task, the evaluation size, the baseline against the majority-class
    rate and the resolution of accuracy changes, as Markdown bullets from `baseline_table`.

    Seeds are averaged. When the table has several epochs per task, the last is described.
    """
    _require_columns(
        baselines, ["task", "n_eval", "accuracy", "majority_rate", "accuracy_above_majority", "accuracy_halfwidth"], "baselines"
    )
    _require_rows(baselines, "baselines")
    lines = []
    for task, part in baselines.groupby("task", sort=False):
        part, last = _last_epoch(part)
        when = f" at epoch {last}" if last is not None else ""
        n_eval = int(part["n_eval"].iloc[0])
        accuracy = float(part["accuracy"].mean())
        majority = float(part["majority_rate"].mean())
        above = float(part["accuracy_above_majority"].mean())
        halfwidth = float(part["accuracy_halfwidth"].mean())
        seeds = f" (mean of {len(part)} seeds)" if len(part) > 1 else ""
        sentence = (
            f"- **{task}**: {n_eval} evaluation examples. The fine-tuned model{when} reaches "
            f"{accuracy:.1%} accuracy{seeds} against a majority-class rate of {majority:.1%}, "
            f"{points(above)} points above it."
        )
        status = _baseline_status(part)
        if status == "collapsed":
            sentence += (
                " The unablated model already predicts one class, so every cell of this task is collapsed "
                "and its accuracy changes say nothing about the bands; only the loss changes are informative."
            )
        elif status == "near chance":
            sentence += " That margin is within the accuracy's own interval, so the model is near chance and its band effects say little."
        sentence += f" At this n the {level:.0%} half-width of an accuracy is {points(halfwidth, signed=False)} points"
        if "median_change_halfwidth" in part and part["median_change_halfwidth"].notna().any():
            sentence += (
                f", and the median {level:.0%} bootstrap half-width of an accuracy change in this grid is "
                f"{points(part['median_change_halfwidth'].median(), signed=False)} points"
            )
        lines.append(sentence + ".")
    return "\n".join(lines)


def near_chance_tasks(baselines: pd.DataFrame) -> list[str]:
    """Return the tasks whose unablated model is collapsed or within its own interval of chance.

    Uses the same rule as `precision_text`: accuracy above the majority rate no larger than
    the accuracy's half-width, at the last epoch and averaged over seeds.
    """
    _require_columns(baselines, ["task", "accuracy_above_majority", "accuracy_halfwidth"], "baselines")
    return [
        str(task)
        for task, part in baselines.groupby("task", sort=False)
        if _baseline_status(_last_epoch(part)[0]) is not None
    ]


def _last_epoch(part: pd.DataFrame) -> tuple[pd.DataFrame, int | None]:
    """Keep the rows of the last epoch when `part` has several; return them and that epoch (or None)."""
    if "epoch" in part and part["epoch"].nunique() > 1:
        last = int(part["epoch"].max())
        return part[part["epoch"] == last], last
    return part, None


def _baseline_status(part: pd.DataFrame) -> str | None:
    """Return "collapsed", "near chance" (seed-mean margin over the majority rate within the
    accuracy's half-width) or None for the baseline rows of one task and epoch."""
    if "collapsed" in part and part["collapsed"].astype(bool).any():
        return "collapsed"
    if float(part["accuracy_above_majority"].mean()) <= float(part["accuracy_halfwidth"].mean()):
        return "near chance"
    return None


# ---------------------------------------------------------------------------------------
# Sentences about single effects.


def _interval_words(row: Mapping, level: float) -> str:
    if row.get("interval") == "seeds":
        return f"{level:.0%} t-interval over {int(row['n_seeds'])} seeds"
    return f"{level:.0%} bootstrap interval"


def describe_effect(row: Mapping, *, level: float = 0.95, compact: bool = False) -> str:
    """Describe one summarized effect (a row of `summarize_cells`) as a clause.

    Accuracy comes first with its interval, then the loss change with its interval. A
    collapsed cell is described as a collapse, not as a measure of the band's importance.
    `compact=True` gives the short form of the findings page, e.g. "accuracy −2.1 points
    [−3.0, −1.2], excludes zero; loss +0.031 nats [+0.010, +0.052]".
    """
    change, low, high = row["change"], row["ci_low"], row["ci_high"]
    loss_interval = f"[{nats(row['loss_ci_low'])}, {nats(row['loss_ci_high'])}]"
    loss = f"the loss changes by {nats(row['loss_change'])} nats {loss_interval}"
    kind = verdict(change, low, high, row["collapsed"])
    if compact:
        compact_loss = f"loss {nats(row['loss_change'])} nats {loss_interval}"
        if kind == "collapsed":
            return f"collapsed to one class, so accuracy is not read; {compact_loss}"
        accuracy = f"accuracy {points(change)} points [{points(low)}, {points(high)}]"
        if kind in ("decrease", "increase"):
            return f"{accuracy}, excludes zero; {compact_loss}"
        return f"{accuracy}, includes zero; {compact_loss}"
    interval = f"{_interval_words(row, level)} {points(low)} to {points(high)}"
    if kind == "collapsed":
        share = row.get("majority_share")
        share_text = f" for {float(share):.0%} of the examples" if share is not None and math.isfinite(float(share)) else ""
        return (
            f"the model collapses to predicting one class{share_text}, so its accuracy change of "
            f"{points(change)} points measures the collapse rather than this band's importance; {loss}"
        )
    if kind == "decrease":
        return f"accuracy falls by {points(-change, signed=False)} points ({interval}, excludes zero) and {loss}"
    if kind == "increase":
        return f"accuracy rises by {points(change, signed=False)} points ({interval}, excludes zero) and {loss}"
    if kind == "includes zero":
        return f"accuracy changes by {points(change)} points, but the {interval} includes zero; {loss}"
    return f"accuracy changes by {points(change)} points (no interval) and {loss}"


def _bottom_band(summary: pd.DataFrame) -> int:
    if "n_bands" in summary:
        return int(summary["n_bands"].max()) - 1
    return int(summary["band"].max())


def _row_dict(frame: pd.DataFrame) -> dict | None:
    return None if frame.empty else frame.iloc[0].to_dict()


def _largest_drop(part: pd.DataFrame) -> dict | None:
    """Return the non-collapsed row with the most negative accuracy change, or None."""
    candidates = part[~part["collapsed"].astype(bool)]
    if candidates.empty:
        return None
    return candidates.loc[candidates["change"].idxmin()].to_dict()


def _collapse_note(part: pd.DataFrame, what: str) -> str:
    collapsed = part[part["collapsed"].astype(bool)]
    if collapsed.empty:
        return ""
    bands = ", ".join(str(int(band)) for band in sorted(collapsed["band"].unique()))
    return f" Removing band(s) {bands} of {what} made the model collapse to one class, so those bands' accuracy changes are not comparable with the rest."


# ---------------------------------------------------------------------------------------
# Findings per notebook.


def describe_band_effects(summary: pd.DataFrame, *, level: float = 0.95, near_chance: Iterable[str] = ()) -> str:
    """Write the task-complexity findings: per task, the smallest band's effect, the band
    with the largest drop, and the random control of the smallest band where present.

    `summary` is `summarize_cells(table, ["task", "mode", "band", "n_bands"])`.
    `near_chance` names tasks whose baseline is near chance (see `near_chance_tasks`).
    Their effects are still described, but marked and left out of the closing tally.
    """
    near_chance = {str(task) for task in near_chance}
    _require_columns(summary, ["task", "mode", "band", *EFFECT_COLUMNS, "collapsed"], "summary")
    _require_rows(summary, "summary")
    bottom = _bottom_band(summary)
    lines: list[str] = []
    by_verdict: dict[str, list[str]] = {"excludes zero": [], "includes zero": [], "collapsed": [], "near chance": []}
    for task, part in summary.groupby("task", sort=False):
        removed = part[part["mode"] == "remove"]
        row = _row_dict(removed[removed["band"] == bottom])
        if row is None:
            continue
        text = f"- **{task}**: removing {band_name(bottom, bottom + 1)} from all matrices: {describe_effect(row, level=level)}."
        kind = verdict(row["change"], row["ci_low"], row["ci_high"], row["collapsed"])
        if str(task) in near_chance:
            by_verdict["near chance"].append(str(task))
            text += " Its baseline is near chance, so this says little about the bands."
        elif kind in ("decrease", "increase"):
            by_verdict["excludes zero"].append(str(task))
        elif kind == "collapsed":
            by_verdict["collapsed"].append(str(task))
        else:
            by_verdict["includes zero"].append(str(task))
        control = _row_dict(part[(part["mode"] == "random") & (part["band"] == bottom)])
        if control is not None:
            text += f" The random subspace of the same rank and singular values: {describe_effect(control, level=level)}."
        worst = _largest_drop(removed)
        if worst is not None and int(worst["band"]) != bottom:
            text += f" The largest drop comes from {band_name(worst['band'], bottom + 1)}: {points(worst['change'])} points."
        lines.append(text + _collapse_note(removed, "all matrices"))
    if any(by_verdict.values()):
        text = (
            "\nThe smallest band's accuracy effect excludes zero for "
            + (", ".join(by_verdict["excludes zero"]) or "no task")
            + " and includes zero for "
            + (", ".join(by_verdict["includes zero"]) or "no task")
            + "."
        )
        if by_verdict["collapsed"]:
            text += " The model collapsed to one class for " + ", ".join(by_verdict["collapsed"]) + ", so those tasks are not read."
        if by_verdict["near chance"]:
            text += " The baseline is near chance for " + ", ".join(by_verdict["near chance"]) + ", so those tasks are not read."
        lines.append(text)
    return "\n".join(lines)


def describe_training_duration(summary: pd.DataFrame, *, level: float = 0.95, compact: bool = False) -> str:
    """Write whether the smallest band's effect shrinks from the first to the last epoch.

    `summary` is `summarize_cells(table, ["task", "mode", "epoch", "band", "n_bands"])`.
    The effect counts as shrinking only when the last epoch's accuracy drop is smaller and
    the two intervals do not overlap. Overlapping intervals are reported as not resolved.
    """
    _require_columns(summary, ["task", "mode", "epoch", "band", *EFFECT_COLUMNS, "collapsed"], "summary")
    _require_rows(summary, "summary")
    bottom = _bottom_band(summary)
    lines = []
    for task, part in summary.groupby("task", sort=False):
        rows = part[(part["mode"] == "remove") & (part["band"] == bottom)].sort_values("epoch")
        if rows.empty:
            continue
        per_epoch = "; ".join(
            f"epoch {int(row['epoch'])}: {describe_effect(row, level=level, compact=compact)}" for _, row in rows.iterrows()
        )
        text = f"- **{task}**, {band_name(bottom, bottom + 1)}: {per_epoch}."
        first, last = rows.iloc[0], rows.iloc[-1]
        if len(rows) < 2:
            text += " Only one checkpoint was ablated, so no trend can be read."
        elif bool(first["collapsed"]) or bool(last["collapsed"]):
            text += " A collapsed checkpoint makes the accuracy trend unreadable; compare the loss changes instead."
        else:
            overlap = first["ci_low"] <= last["ci_high"] and last["ci_low"] <= first["ci_high"]
            direction = "shrinks" if abs(last["change"]) < abs(first["change"]) else "grows"
            if overlap:
                text += (
                    f" From epoch {int(first['epoch'])} to {int(last['epoch'])} the effect {direction} in size, "
                    "but the intervals overlap, so this run does not resolve a trend."
                )
            else:
                text += (
                    f" From epoch {int(first['epoch'])} to {int(last['epoch'])} the effect {direction} in size "
                    "and the intervals do not overlap."
                )
            text += f" The loss change moves from {nats(first['loss_change'])} to {nats(last['loss_change'])} nats."
        lines.append(text)
    return "\n".join(lines)


def describe_matrix_specific(summary: pd.DataFrame, *, level: float = 0.95) -> str:
    """Write which matrix's smallest band matters most, per task.

    `summary` is `summarize_cells(table, ["task", "kind_label", "band", "n_bands"])`.
    Matrices whose removal collapsed the model are named apart and not ranked.
    """
    _require_columns(summary, ["task", "kind_label", "band", *EFFECT_COLUMNS, "collapsed"], "summary")
    _require_rows(summary, "summary")
    bottom = _bottom_band(summary)
    lines = []
    for task, part in summary.groupby("task", sort=False):
        rows = part[part["band"] == bottom]
        if rows.empty:
            continue
        worst = _largest_drop(rows)
        text = f"- **{task}**, {band_name(bottom, bottom + 1)}:"
        if worst is None:
            text += " every matrix's removal collapsed the model, so no matrix can be ranked by accuracy."
        else:
            text += f" the largest accuracy drop comes from {matrices_name(worst['kind_label'])}: {describe_effect(worst, level=level)}."
        clear = [
            matrices_name(row["kind_label"])
            for _, row in rows.iterrows()
            if verdict(row["change"], row["ci_low"], row["ci_high"], row["collapsed"]) == "decrease"
        ]
        text += " Intervals that exclude zero (a decrease): " + (", ".join(clear) if clear else "none") + "."
        collapsed = [matrices_name(label) for label in rows.loc[rows["collapsed"].astype(bool), "kind_label"]]
        if collapsed:
            text += " Collapsed to one class: " + ", ".join(collapsed) + "."
        # The loss stays readable when the model collapses, so it is ranked over all matrices.
        loss_row = rows.loc[rows["loss_change"].idxmax()]
        text += (
            f" The largest loss increase comes from {matrices_name(loss_row['kind_label'])}: "
            f"{nats(loss_row['loss_change'])} nats [{nats(loss_row['loss_ci_low'])}, {nats(loss_row['loss_ci_high'])}]."
        )
        lines.append(text)
    return "\n".join(lines)


def describe_early_ffn(summary: pd.DataFrame, additivity: pd.DataFrame | None = None, *, level: float = 0.95) -> str:
    """Write the FFN-versus-attention findings per layer group and the additivity check.

    `summary` is `summarize_cells(table, ["task", "mode", "kind_label", "layer_label",
    "band", "n_bands"])`, and `additivity` is the second table of `experiments.early_ffn`.
    """
    _require_columns(summary, ["task", "mode", "kind_label", "layer_label", "band", *EFFECT_COLUMNS, "collapsed"], "summary")
    _require_rows(summary, "summary")
    bottom = _bottom_band(summary)
    lines = []
    for task, part in summary.groupby("task", sort=False):
        rows = part[(part["mode"] == "remove") & (part["band"] == bottom)]
        lines.append(f"- **{task}**, {band_name(bottom, bottom + 1)}:")
        for kind_label, kind_rows in rows.groupby("kind_label", sort=False):
            for _, row in kind_rows.iterrows():
                lines.append(f"  - {matrices_name(kind_label)}, {row['layer_label']} layers: {describe_effect(row, level=level)}.")
        groups = rows[(rows["layer_label"] != "all")]
        ffn_groups = groups[groups["kind_label"] == "FFN"]
        worst = _largest_drop(ffn_groups) if not ffn_groups.empty else None
        if worst is not None:
            kind = verdict(worst["change"], worst["ci_low"], worst["ci_high"], False)
            qualifier = "and its interval excludes zero" if kind == "decrease" else "but its interval does not exclude a zero or positive change"
            lines.append(f"  - Among the FFN layer groups the largest drop is in the {worst['layer_label']} layers ({points(worst['change'])} points), {qualifier}.")
    if additivity is not None and not additivity.empty:
        _require_columns(additivity, ["task", "kind_label", "metric", "band", "sum_of_groups", "joint", "difference"], "additivity")
        accuracy = additivity[additivity["metric"] == "change"]
        if not accuracy.empty:
            largest = accuracy.loc[accuracy["difference"].abs().idxmax()]
            lines.append(
                f"\nAdditivity: across tasks, kinds and bands, the accuracy change of removing a band from all "
                f"groups at once differs from the sum of the group effects by at most "
                f"{points(abs(largest['difference']), signed=False)} points (largest for {largest['task']}, "
                f"{matrices_name(largest['kind_label'])}, band {int(largest['band'])}: joint {points(largest['joint'])} "
                f"against a sum of {points(largest['sum_of_groups'])}). Compare this with the intervals above: "
                "a difference inside them is not evidence of interaction between layer groups."
            )
    return "\n".join(lines)


def revert_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Pair each full band removal with reverting only the band's update share.

    `summary` is `summarize_cells(grid, ["task", "mode", "kind_label", "layer_label",
    "band", "n_bands"])` of the why grid. Returns one row per (task, kind_label,
    layer_label, band) with change_remove, change_revert, loss_change_remove,
    loss_change_revert, the collapse flags and update_share (where present).
    """
    keys = ["task", "kind_label", "layer_label", "band"]
    _require_columns(summary, [*keys, "mode", "change", "loss_change", "collapsed"], "summary")
    values = ["change", "loss_change", "collapsed", "ci_low", "ci_high"]
    remove = summary[summary["mode"] == "remove"][keys + values + (["update_share"] if "update_share" in summary else [])]
    revert = summary[summary["mode"] == "revert_update"][keys + values]
    if remove.empty or revert.empty:
        raise ValueError("summary needs both 'remove' and 'revert_update' rows; run svutils.experiments.why")
    return remove.merge(revert, on=keys, suffixes=("_remove", "_revert"))


def correlation_text(correlations: Mapping[str, tuple[float, int]], *, level: float = 0.95) -> str:
    """Describe each metric's Pearson r with the update share and its Fisher-z interval.

    `correlations` maps "accuracy" (non-collapsed cells) and "loss" (all cells) to (r, n).
    An association is stated only when the interval excludes zero.
    """
    lines = []
    for metric, (r, n) in correlations.items():
        if not math.isfinite(r):
            lines.append(f"The {metric} change has no defined correlation with the update share here (too few cells or a constant column).")
            continue
        low, high = correlation_interval(r, n, level=level)
        r_text, low_text, high_text = (f"{value:.2f}".replace("-", "−") for value in (r, low, high))
        which = " non-collapsed" if metric == "accuracy" else ""
        text = f"Across {n}{which} band removals, the {metric} change has Pearson r = {r_text} with the removed update share"
        if not math.isfinite(low):
            lines.append(text + ", from too few cells for an interval.")
        elif low > 0 or high < 0:
            direction = "negative" if r < 0 else "positive"
            lines.append(text + f" ({level:.0%} interval {low_text} to {high_text}, excludes zero): a {direction} association.")
        else:
            lines.append(text + f", but its {level:.0%} interval {low_text} to {high_text} includes zero, so this run shows no association.")
    return "\n\n".join(lines)


def describe_why(
    grid_summary: pd.DataFrame,
    *,
    correlations: Mapping[str, tuple[float, int]],
    shares: pd.DataFrame | None = None,
    level: float = 0.95,
) -> str:
    """Write whether the damage follows the update share, and what reverting the update does.

    `grid_summary` is `summarize_cells(grid, ["task", "mode", "kind_label", "layer_label",
    "band", "n_bands"])`. `correlations` maps "accuracy" and "loss" to (Pearson r, n) of
    the change against the removed update share. `shares` is the why shares table.
    """
    lines = []
    if shares is not None and not shares.empty:
        _require_columns(shares, ["band", "share_two_sided", "share_left", "share_right"], "shares")
        last = shares[shares["epoch"] == shares["epoch"].max()] if "epoch" in shares else shares
        mean = last.groupby("band")[["share_two_sided", "share_left", "share_right"]].mean()
        bottom, top = int(mean.index.max()), int(mean.index.min())
        lines.append(
            f"Definition: {SHARE_DEFINITION}. Averaged over matrices, the top band holds "
            f"{mean.loc[top, 'share_two_sided']:.1%} of the update (two-sided) and the bottom band "
            f"{mean.loc[bottom, 'share_two_sided']:.1%}. The one-sided shares ‖U_bᵀ ΔW‖²_F / ‖ΔW‖²_F and "
            f"‖ΔW V_b‖²_F / ‖ΔW‖²_F of the bottom band are {mean.loc[bottom, 'share_left']:.1%} and "
            f"{mean.loc[bottom, 'share_right']:.1%}; they count update energy that touches the band on one side only."
        )
    if correlations:
        lines.append(correlation_text(correlations, level=level))
    pairs = revert_comparison(grid_summary)
    readable = pairs[~pairs["collapsed_remove"].astype(bool) & ~pairs["collapsed_revert"].astype(bool)]
    if not readable.empty:
        total_remove = float(readable["change_remove"].sum())
        total_revert = float(readable["change_revert"].sum())
        clear_remove = int((readable["ci_high_remove"] < 0).sum())
        clear_revert = int((readable["ci_high_revert"] < 0).sum())
        text = (
            f"Over {len(readable)} non-collapsed cells, full band removal changes accuracy by {points(total_remove / len(readable))} "
            f"points on average and reverting only the band's update share by {points(total_revert / len(readable))} points. "
            f"{clear_remove} removal cells and {clear_revert} revert cells have a decrease whose interval excludes zero."
        )
        if total_remove < 0 and clear_remove > 0:
            ratio = total_revert / total_remove
            text += f" Reverting the update reproduces {ratio:.0%} of the summed removal damage."
        lines.append(text)
    n_collapsed = int(pairs["collapsed_remove"].astype(bool).sum() + pairs["collapsed_revert"].astype(bool).sum())
    if n_collapsed:
        lines.append(f"{cells_phrase(n_collapsed)} collapsed the model to one class and are left out of the accuracy averages.")
    lines.append(
        f"The loss, readable in all {len(pairs)} cell pairs, changes by {nats(pairs['loss_change_remove'].mean())} nats on "
        f"average under full band removal and by {nats(pairs['loss_change_revert'].mean())} nats when only the band's update is reverted."
    )
    return "\n\n".join(lines)


def _correlation_words(r: float, n: int, level: float) -> str:
    if not math.isfinite(r):
        return f"undefined (n = {n})"
    low, high = correlation_interval(r, n, level=level)
    if not math.isfinite(low):
        return f"{r:.2f} (n = {n}, too few cells for an interval)".replace("-", "−")
    side = "excludes zero" if low > 0 or high < 0 else "includes zero"
    return f"{r:.2f} [{low:.2f}, {high:.2f}], n = {n}, {side}".replace("-", "−")


def describe_why_by_task(table: pd.DataFrame, *, level: float = 0.95) -> str:
    """Describe, per task, the correlation of damage with update share and the revert check.

    `table` is the why grid table (`svutils.experiments.why(...).grid`) with the columns
    task, mode, update_share, change, ci_high, loss_change and collapsed, plus its baseline
    rows. Returns Markdown bullets, one per task. Accuracy statements leave out collapsed
    cells, and a task whose baseline is near chance (`near_chance_tasks`) is marked.
    """
    _require_columns(table, ["task", "mode", "update_share", "change", "ci_high", "loss_change", "collapsed"], "table")
    has_baselines = (table["mode"] == "baseline").any() and {"accuracy", "loss", "majority_rate", "n_eval"} <= set(table.columns)
    near_chance = set(near_chance_tasks(baseline_table(table))) if has_baselines else set()
    lines = []
    for task, part in table.groupby("task", sort=False):
        collapsed = part["collapsed"].fillna(False).astype(bool)
        removed, reverted = part[part["mode"] == "remove"], part[part["mode"] == "revert_update"]
        usable = removed[~collapsed.loc[removed.index]]
        usable_revert = reverted[~collapsed.loc[reverted.index]]
        accuracy_r = correlation_or_nan(usable, "update_share", "change")
        loss_r = correlation_or_nan(removed, "update_share", "loss_change")
        text = (
            f"- **{task}**: accuracy change against update share r = {_correlation_words(*accuracy_r, level)}; "
            f"loss change r = {_correlation_words(*loss_r, level)}."
        )
        if not usable.empty and not usable_revert.empty:
            text += (
                f" Mean accuracy change {points(usable['change'].mean())} points for removing a band and "
                f"{points(usable_revert['change'].mean())} for reverting its update; "
                f"{int((usable['ci_high'] < 0).sum())} of {len(usable)} removals and "
                f"{int((usable_revert['ci_high'] < 0).sum())} of {len(usable_revert)} reverts have an interval below zero."
            )
        if str(task) in near_chance:
            baseline = part[part["mode"] == "baseline"]
            margin = float((baseline["accuracy"] - baseline["majority_rate"]).mean())
            text += f" Its baseline is {points(margin)} points above the majority rate, near chance, so its accuracy changes say little."
        lines.append(text)
    return "\n".join(lines)


def correlation_interval(r: float, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Return the Fisher-z interval of a Pearson correlation r from n pairs, or NaNs for n <= 3.

    tanh(atanh(r) ± z / √(n − 3)), which assumes roughly bivariate-normal pairs.
    """
    if n <= 3 or not math.isfinite(r):
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = norm.ppf((1.0 + level) / 2.0)
    centre = math.atanh(min(max(r, -0.999999), 0.999999))
    spread = z / math.sqrt(n - 3)
    return math.tanh(centre - spread), math.tanh(centre + spread)


def correlation_or_nan(frame: pd.DataFrame, x: str, y: str) -> tuple[float, int]:
    """Return (Pearson r, n) of `y` against `x`, or (nan, n) when r is undefined."""
    from svutils.charts import pearson_correlation

    try:
        return pearson_correlation(frame, x, y)
    except ValueError:
        return float("nan"), int(frame[[x, y]].dropna().shape[0])


def spectra_counts(fits: pd.DataFrame) -> pd.DataFrame:
    """Pivot Marchenko–Pastur fits to "n_above / n_below" per (task, state, kind) × layer."""
    _require_columns(fits, ["task", "state", "kind", "layer", "n_above", "n_below"], "fits")
    frame = fits.assign(counts=fits["n_above"].astype(int).astype(str) + " / " + fits["n_below"].astype(int).astype(str))
    frame = frame.drop_duplicates(["task", "state", "kind", "layer"])
    return frame.pivot(index=["task", "state", "kind"], columns="layer", values="counts")


def spectrum_panel(
    spectra: pd.DataFrame, fits: pd.DataFrame, *, task: str, seed: int, kind: str, layer: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Select one matrix's pretrained and fine-tuned spectra and its fitted MP edges.

    Returns the rows (state, index, value > 0) and the edges for `charts.spectrum_chart`.
    The edges are the fine-tuned fit's upper and lower edge. A lower edge of 0 (square
    matrices) is left out, because the chart's log scale cannot show it.
    """
    _require_columns(spectra, ["task", "seed", "state", "kind", "layer", "index", "value"], "spectra")
    _require_columns(fits, ["task", "seed", "state", "kind", "layer", "lower_edge", "upper_edge"], "fits")
    selected = (spectra["task"] == task) & (spectra["seed"] == seed) & (spectra["kind"] == kind) & (spectra["layer"] == layer)
    frame = spectra[selected & (spectra["value"] > 0)][["state", "index", "value"]]
    if frame.empty:
        raise ValueError(
            f"no spectrum for task {task!r}, seed {seed}, kind {kind!r}, layer {layer}; "
            f"the table has tasks {sorted(spectra['task'].unique())}, kinds {sorted(spectra['kind'].unique())} "
            f"and layers {sorted(spectra['layer'].unique())}"
        )
    fit_rows = fits[(fits["task"] == task) & (fits["seed"] == seed) & (fits["kind"] == kind) & (fits["layer"] == layer)]
    edges: dict[str, float] = {}
    fitted = fit_rows[fit_rows["state"] == "fine-tuned"]
    if not fitted.empty:
        upper, lower = float(fitted["upper_edge"].iloc[0]), float(fitted["lower_edge"].iloc[0])
        if upper > 0:
            edges["MP upper edge (fine-tuned)"] = upper
        if lower > 0:
            edges["MP lower edge (fine-tuned)"] = lower
    return frame.reset_index(drop=True), edges


def describe_spectra(fits: pd.DataFrame) -> str:
    """Compare, per task, how many singular values lie outside the fitted MP bulk before
    and after fine-tuning, averaged over matrices (and seeds)."""
    _require_columns(fits, ["task", "state", "n_above", "n_below", "n_total"], "fits")
    _require_rows(fits, "fits")
    lines = []
    for task, part in fits.groupby("task", sort=False):
        means = part.groupby("state")[["n_above", "n_below", "n_total"]].mean()
        pieces = [
            f"{state} matrices have on average {means.loc[state, 'n_above']:.1f} of {means.loc[state, 'n_total']:.0f} "
            f"singular values above the fitted Marchenko–Pastur upper edge and {means.loc[state, 'n_below']:.1f} below the lower edge"
            for state in ("pretrained", "fine-tuned")
            if state in means.index
        ]
        lines.append(f"- **{task}**: " + "; ".join(pieces) + ".")
    return "\n".join(lines)


def describe_rotation(rotation: pd.DataFrame) -> str:
    """Describe the band rotation at the last epoch: the mean overlap of the top and the
    bottom band's singular subspaces before and after fine-tuning (1 = unchanged), per task."""
    _require_columns(rotation, ["task", "band", "overlap_mean"], "rotation")
    _require_rows(rotation, "rotation")
    if "epoch" in rotation:
        rotation = rotation[rotation["epoch"] == rotation["epoch"].max()]
    lines = []
    for task, part in rotation.groupby("task", sort=False):
        mean = part.groupby("band")["overlap_mean"].mean()
        top, bottom = int(mean.index.min()), int(mean.index.max())
        least = int(mean.idxmin())
        lines.append(
            f"- **{task}**: the top band's subspaces keep an overlap of {mean.loc[top]:.3f} and the bottom band's "
            f"{mean.loc[bottom]:.3f}; band {least} rotates most ({mean.loc[least]:.3f})."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The findings page of the book.


def _read_table(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _headline(summary: pd.DataFrame, level: float, near_chance: Iterable[str] = ()) -> list[str]:
    bottom = _bottom_band(summary)
    rows = summary[(summary["band"] == bottom)]
    near_chance = set(near_chance)
    lines = []
    for _, row in rows.iterrows():
        mark = " The baseline is near chance, so this is not read." if str(row["task"]) in near_chance else ""
        lines.append(f"- {row['task']}: {describe_effect(row, level=level, compact=True)}.{mark}")
    return lines


def findings_markdown(output_root: Path, *, level: float = 0.95) -> str:
    """Build the findings summary from the tables saved under `output_root/<notebook>/`."""
    output_root = Path(output_root)
    parts = ["# Findings", "", f"Generated from the tables in `{display_path(output_root)}`. Accuracy changes are in percentage points with {level:.0%} intervals; loss changes are in nats.", ""]

    complexity = _read_table(output_root / "task_complexity", "results")
    baseline_source = complexity
    if baseline_source is None:
        for notebook in ("matrix_specific", "early_ffn", "training_duration"):
            baseline_source = _read_table(output_root / notebook, "results")
            if baseline_source is not None:
                break
    parts.append("## Baselines")
    near_chance: list[str] = []
    if baseline_source is None:
        parts.append("No experiment table has been saved yet, so there are no baselines.")
    else:
        baselines = baseline_table(baseline_source, level=level)
        parts.append(precision_text(baselines, level=level))
        near_chance = near_chance_tasks(baselines)
    parts.append("")

    for notebook, title in EXPERIMENT_TITLES.items():
        parts.append(f"## {title}")
        folder = output_root / notebook
        table = _read_table(folder, TABLE_NAMES[notebook][0])
        if table is None:
            parts.append(f"The {notebook} notebook has not been run for this profile (no `{notebook}/{TABLE_NAMES[notebook][0]}.csv`).")
            parts.append("")
            continue
        n_collapsed = int(ablation_rows(table)["collapsed"].fillna(False).astype(bool).sum())
        if notebook == "task_complexity":
            summary = summarize_cells(table[table["mode"] == "remove"], ["task", "band", "n_bands"], level=level)
            parts.append("Smallest band removed from all matrices of all layers:")
            parts.extend(_headline(summary, level, near_chance))
        elif notebook == "training_duration":
            summary = summarize_cells(table, ["task", "mode", "epoch", "band", "n_bands"], level=level)
            parts.append(describe_training_duration(summary, level=level, compact=True))
        elif notebook == "matrix_specific":
            summary = summarize_cells(table, ["task", "kind_label", "band", "n_bands"], level=level)
            parts.append(describe_matrix_specific(summary, level=level))
        elif notebook == "early_ffn":
            summary = summarize_cells(table[table["mode"] == "remove"], ["task", "kind_label", "layer_label", "band", "n_bands"], level=level)
            bottom = _bottom_band(summary)
            rows = summary[(summary["band"] == bottom) & (summary["kind_label"] == "FFN")]
            parts.append("Smallest band removed from the FFN matrices of each layer group:")
            parts.extend(
                f"- {row['task']}, {row['layer_label']} layers: {describe_effect(row, level=level, compact=True)}."
                for _, row in rows.iterrows()
            )
        else:
            removed = table[table["mode"] == "remove"]
            usable = removed[~removed["collapsed"].fillna(False).astype(bool)]
            if "update_share" in usable:
                correlations = {
                    "accuracy": correlation_or_nan(usable, "update_share", "change"),
                    "loss": correlation_or_nan(removed, "update_share", "loss_change"),
                }
                parts.append(correlation_text(correlations, level=level))
                parts.append("")
                parts.append("Per task:")
                parts.append(describe_why_by_task(table, level=level))
                parts.append("")
            summary = summarize_cells(table, ["task", "mode", "kind_label", "layer_label", "band", "n_bands"], level=level)
            pairs = revert_comparison(summary)
            readable = pairs[~pairs["collapsed_remove"].astype(bool) & ~pairs["collapsed_revert"].astype(bool)]
            if not readable.empty:
                parts.append(
                    f"Mean accuracy change over {len(readable)} cells: {points(readable['change_remove'].mean())} points for "
                    f"full band removal, {points(readable['change_revert'].mean())} points for reverting only the band's update."
                )
            parts.append(
                f"Mean loss change over all {len(pairs)} cells: {nats(pairs['loss_change_remove'].mean())} nats for full band "
                f"removal, {nats(pairs['loss_change_revert'].mean())} nats for reverting only the band's update."
            )
        if n_collapsed:
            reading = "its accuracy change is" if n_collapsed == 1 else "their accuracy changes are"
            parts.append(f"\n{cells_phrase(n_collapsed)} of this experiment collapsed the model to one class; {reading} not read as band importance.")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def write_findings(output_root, path: str | Path) -> Path:
    """Write the findings summary of all experiment notebooks as Markdown to `path`.

    `output_root` is the folder of the saved tables (`<output_root>/<notebook>/*.csv`) or
    an ExperimentConfig, whose `resolved_output_dir()` and `ci_level` are used (the form
    `svutils.runner` calls). An experiment without saved tables gets a line saying that
    it has not been run. Returns `path`.
    """
    level = 0.95
    if hasattr(output_root, "resolved_output_dir"):
        level = float(getattr(output_root, "ci_level", level))
        output_root = output_root.resolved_output_dir()
    if not isinstance(output_root, (str, Path)):
        raise TypeError(f"output_root must be a folder path or an ExperimentConfig, got {type(output_root).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, findings_markdown(Path(output_root), level=level))
    return path
