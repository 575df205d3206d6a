"""Paired bootstrap, McNemar tests, seed aggregation and the random-subspace control.

The ablation compares a "base" model with a "cell" on the same examples. A cell is the
same model with one band of singular values removed. The tests here are therefore
paired. A bootstrap resample draws example indices once and applies them to both
models, and McNemar's test uses only the discordant examples. Statistics run in numpy
float64. The random perturbation is built in torch float64 and returned as float32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats

from svutils.metrics import METRICS, as_class_ids, as_numpy, score_confusion

IndexStatistic = Callable[[np.ndarray], np.ndarray]
"""Callable that maps resampled example indices [B, N] to one difference per row [B]."""

_MAX_INDEX_ELEMENTS = 1 << 22
"""Largest index matrix drawn at once (32 MiB of int64), which bounds the bootstrap's memory."""

_MAX_MULTINOMIAL_CATEGORIES = 64
"""Most distinct per-example differences for which the mean bootstrap draws multinomial counts."""


def _check_level(level: float) -> float:
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a confidence level strictly between 0 and 1, e.g. 0.95, got {level!r}")
    return float(level)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _check_columns(df: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{table} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise KeyError(f"{table} has no column {missing}; available columns: {list(df.columns)}")


def _check_finite_numeric(df: pd.DataFrame, column: str, table: str) -> None:
    if not pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_bool_dtype(df[column]):
        raise TypeError(f"{table}[{column!r}] must be numeric, got dtype {df[column].dtype}")
    values = df[column].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(
            f"{table}[{column!r}] contains {int((~np.isfinite(values)).sum())} NaN or infinite values; "
            "drop or fill them before aggregating"
        )


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate of cell − base with a percentile bootstrap interval."""

    estimate: float
    """Statistic on the original examples (not the mean of the resamples)."""
    low: float
    """Lower end of the interval: the (1 − level)/2 quantile of the resampled statistics."""
    high: float
    """Upper end of the interval: the (1 + level)/2 quantile of the resampled statistics."""
    level: float
    """Confidence level of the interval, e.g. 0.95."""
    n_resamples: int
    """Number of bootstrap resamples."""
    n_examples: int
    """Number of examples N in each resample."""
    std_error: float
    """Standard deviation of the resampled statistics (bootstrap standard error)."""
    method: str = "percentile"
    """Interval method. Only percentile intervals are implemented."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict for JSON or a DataFrame row."""
        return asdict(self)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _resample_statistic(
    n_examples: int, statistic: IndexStatistic, n_resamples: int, seed: int, chunk_size: int | None
) -> np.ndarray:
    """Draw `n_resamples` index rows in chunks and return the statistic of each row."""
    if chunk_size is None:
        chunk_size = max(1, _MAX_INDEX_ELEMENTS // n_examples)
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk_size):
        rows = min(chunk_size, n_resamples - start)
        # Rows are drawn in order from one generator, so the result does not depend on chunk_size.
        indices = rng.integers(0, n_examples, size=(rows, n_examples), dtype=np.int64)
        chunk_values = np.asarray(statistic(indices), dtype=np.float64)
        if chunk_values.shape != (rows,):
            raise ValueError(
                f"statistic must return one value per resample, shape ({rows},) for indices of shape "
                f"{indices.shape}, but returned shape {chunk_values.shape}"
            )
        values[start : start + rows] = chunk_values
    return values


def _resample_category_counts(category_counts: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Draw how often each category of examples occurs in each resample, as int64 [B, K].

    Drawing N examples with replacement and counting their categories is exactly a
    Multinomial(N, count_k / N) draw, which costs O(B·K) in place of O(B·N).
    """
    n_examples = int(category_counts.sum())
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_examples, category_counts / n_examples, size=n_resamples)


def _bootstrap_result(
    estimate: float, resampled: np.ndarray, level: float, n_examples: int
) -> BootstrapResult:
    if not np.isfinite(resampled).all() or not math.isfinite(estimate):
        raise ValueError("the statistic returned NaN or infinite values; check that it is defined on every resample")
    alpha = 1.0 - level
    low, high = np.quantile(resampled, [alpha / 2, 1.0 - alpha / 2])
    return BootstrapResult(
        estimate=estimate,
        low=float(low),
        high=float(high),
        level=level,
        n_resamples=int(resampled.size),
        n_examples=n_examples,
        std_error=float(resampled.std(ddof=1)) if resampled.size > 1 else 0.0,
    )


def paired_bootstrap(
    base: Any,
    cell: Any,
    *,
    statistic: str | IndexStatistic = "mean",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    chunk_size: int | None = None,
) -> BootstrapResult:
    """Estimate a paired difference cell − base with a percentile bootstrap interval.

    `base` and `cell` are [N] per-example arrays for the same examples in the same order.
    Each resample draws N example indices with replacement and applies the same indices to
    both arrays. With ``statistic="mean"`` they must be numeric (bool `correct` gives the
    accuracy difference, float `loss` the loss difference) and the statistic is
    mean(cell) − mean(base). A callable statistic receives an int64 index matrix [B, N],
    one resample per row, and returns the B differences. It closes over its own data, so
    `base` and `cell` then only fix N. `metric_difference_statistic` builds one for F1 and MCC.

    For "mean" with at most 64 distinct differences (accuracy has 3), the resamples are
    drawn as multinomial counts per distinct value, which is the same distribution at a
    fraction of the cost. Otherwise index rows are drawn `chunk_size` at a time (by
    default, enough rows for 32 MiB of indices). The same seed gives the same interval,
    for any `chunk_size`. When all differences are equal, the interval has zero width and
    equals that difference. Raises ValueError for N = 0.
    """
    level = _check_level(level)
    n_resamples = _check_positive_int(n_resamples, "n_resamples")
    seed = _check_seed(seed)
    base = as_numpy(base, name="base")
    cell = as_numpy(cell, name="cell")
    for name, array in (("base", base), ("cell", cell)):
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D with one value per example, got shape {array.shape}")
    if base.shape != cell.shape:
        raise ValueError(
            f"base has {base.shape[0]} examples but cell has {cell.shape[0]}; a paired bootstrap needs "
            "both for the same examples in the same order"
        )
    n_examples = base.shape[0]
    if n_examples == 0:
        raise ValueError("cannot bootstrap zero examples; base and cell are empty")

    if callable(statistic):
        estimate_array = np.asarray(statistic(np.arange(n_examples, dtype=np.int64)[None, :]), dtype=np.float64)
        if estimate_array.shape != (1,):
            raise ValueError(
                f"statistic must return shape (1,) for an index matrix of shape (1, {n_examples}), "
                f"got shape {estimate_array.shape}"
            )
        resampled = _resample_statistic(n_examples, statistic, n_resamples, seed, chunk_size)
        return _bootstrap_result(float(estimate_array[0]), resampled, level, n_examples)
    if statistic != "mean":
        raise ValueError(f"unknown statistic {statistic!r}; pass 'mean' or a callable of an index matrix")

    for name, array in (("base", base), ("cell", cell)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f"{name} must be numeric or bool for statistic='mean', got dtype {array.dtype}")
    differences = cell.astype(np.float64) - base.astype(np.float64)
    if not np.isfinite(differences).all():
        raise ValueError("base or cell contains NaN or infinite values; the mean difference is undefined")
    distinct, counts = np.unique(differences, return_counts=True)
    if distinct.size == 1:
        constant = float(distinct[0])
        return BootstrapResult(constant, constant, constant, level, n_resamples, n_examples, 0.0)
    estimate = float(differences.mean())
    if distinct.size <= _MAX_MULTINOMIAL_CATEGORIES:
        resampled = _resample_category_counts(counts, n_resamples, seed) @ distinct / n_examples
    else:
        resampled = _resample_statistic(
            n_examples, lambda indices: differences[indices].mean(axis=1), n_resamples, seed, chunk_size
        )
    return _bootstrap_result(estimate, resampled, level, n_examples)


def _check_paired_predictions(
    metric: str, pred_base: Any, pred_cell: Any, labels: Any, num_labels: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics are {', '.join(METRICS)}")
    pred_base = as_class_ids(pred_base, name="pred_base")
    pred_cell = as_class_ids(pred_cell, name="pred_cell")
    labels = as_class_ids(labels, name="labels")
    if not pred_base.shape == pred_cell.shape == labels.shape:
        raise ValueError(
            f"pred_base, pred_cell and labels must have the same length, got {pred_base.shape[0]}, "
            f"{pred_cell.shape[0]} and {labels.shape[0]}"
        )
    if labels.size == 0:
        raise ValueError("cannot bootstrap zero examples; pred_base, pred_cell and labels are empty")
    largest_id = int(max(pred_base.max(), pred_cell.max(), labels.max()))
    if num_labels is None:
        num_labels = max(largest_id + 1, 2 if metric == "f1" else 1)
    if largest_id >= num_labels:
        raise ValueError(f"class id {largest_id} is out of range for num_labels={num_labels}")
    return pred_base, pred_cell, labels, int(num_labels)


def metric_difference_statistic(
    metric: str, pred_base: Any, pred_cell: Any, labels: Any, *, num_labels: int | None = None
) -> IndexStatistic:
    """Build the index statistic metric(cell) − metric(base) for `paired_bootstrap`.

    The callable maps resampled indices [B, N] to B differences by counting one confusion
    matrix per row with a single bincount, so it uses the same formulas as
    `svutils.metrics.score`. `num_labels` defaults to one more than the largest class id,
    and to 2 for "f1". `paired_bootstrap_metric` computes the same distribution faster.
    """
    pred_base, pred_cell, labels, num_labels = _check_paired_predictions(
        metric, pred_base, pred_cell, labels, num_labels
    )
    codes_base = labels * num_labels + pred_base
    codes_cell = labels * num_labels + pred_cell
    cells_per_matrix = num_labels * num_labels

    def confusion_stack(codes: np.ndarray, indices: np.ndarray) -> np.ndarray:
        rows = indices.shape[0]
        offsets = (np.arange(rows, dtype=np.int64) * cells_per_matrix)[:, None]
        counts = np.bincount((codes[indices] + offsets).ravel(), minlength=rows * cells_per_matrix)
        return counts.reshape(rows, num_labels, num_labels)

    def statistic(indices: np.ndarray) -> np.ndarray:
        cell_scores = score_confusion(metric, confusion_stack(codes_cell, indices))
        base_scores = score_confusion(metric, confusion_stack(codes_base, indices))
        return cell_scores - base_scores

    return statistic


def paired_bootstrap_metric(
    metric: str,
    pred_base: Any,
    pred_cell: Any,
    labels: Any,
    *,
    num_labels: int | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Bootstrap metric(cell) − metric(base) for "accuracy", "f1" or "mcc" on paired predictions.

    `pred_base`, `pred_cell` and `labels` are [N] class ids. An example's contribution
    depends only on its (label, base prediction, cell prediction) triple, so each resample
    is drawn as multinomial counts of the at most K³ distinct triples, and the two
    confusion matrices are sums of those counts. This is the distribution of
    `metric_difference_statistic` resampling at O(B·K³) cost. Accuracy goes through
    `paired_bootstrap` on the correctness flags. `num_labels` defaults to one more than
    the largest class id, and to 2 for "f1".
    """
    pred_base, pred_cell, labels, num_labels = _check_paired_predictions(
        metric, pred_base, pred_cell, labels, num_labels
    )
    level = _check_level(level)
    n_resamples = _check_positive_int(n_resamples, "n_resamples")
    seed = _check_seed(seed)
    if metric == "accuracy":
        return paired_bootstrap(pred_base == labels, pred_cell == labels, n_resamples=n_resamples, level=level, seed=seed)

    cells_per_matrix = num_labels * num_labels
    codes_base = labels * num_labels + pred_base
    codes_cell = labels * num_labels + pred_cell
    triples, counts = np.unique(codes_base * cells_per_matrix + codes_cell, return_counts=True)
    # Row k of each indicator matrix puts triple k into its cell of the base or cell confusion matrix.
    to_base = np.zeros((triples.size, cells_per_matrix), dtype=np.int64)
    to_cell = np.zeros((triples.size, cells_per_matrix), dtype=np.int64)
    to_base[np.arange(triples.size), triples // cells_per_matrix] = 1
    to_cell[np.arange(triples.size), triples % cells_per_matrix] = 1

    def difference(triple_counts: np.ndarray) -> np.ndarray:
        shape = (triple_counts.shape[0], num_labels, num_labels)
        base_scores = score_confusion(metric, (triple_counts @ to_base).reshape(shape))
        cell_scores = score_confusion(metric, (triple_counts @ to_cell).reshape(shape))
        return cell_scores - base_scores

    estimate = float(difference(counts[None, :])[0])
    resampled = difference(_resample_category_counts(counts, n_resamples, seed))
    return _bootstrap_result(estimate, resampled, level, int(labels.size))


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts and the exact two-sided p-value of McNemar's test."""

    b: int
    """Examples that base gets right and cell gets wrong."""
    c: int
    """Examples that base gets wrong and cell gets right."""
    p_value: float
    """min(1, 2·P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2), and 1 when b + c = 0."""
    n: int
    """Number of paired examples, concordant ones included."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict for JSON or a DataFrame row."""
        return asdict(self)


def _as_correctness(values: Any, name: str) -> np.ndarray:
    array = as_numpy(values, name=name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one correctness flag per example, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array
    if np.issubdtype(array.dtype, np.integer) and np.isin(array, (0, 1)).all():
        return array.astype(bool)
    raise TypeError(f"{name} must contain booleans or 0/1 integers, got dtype {array.dtype}")


def mcnemar_exact(correct_base: Any, correct_cell: Any) -> McNemarResult:
    """Run the exact (binomial) two-sided McNemar test on paired correctness flags.

    `correct_base` and `correct_cell` are bool [N] for the same examples. Only the
    discordant examples b and c enter the test.
    """
    correct_base = _as_correctness(correct_base, "correct_base")
    correct_cell = _as_correctness(correct_cell, "correct_cell")
    if correct_base.shape != correct_cell.shape:
        raise ValueError(
            f"correct_base has {correct_base.shape[0]} examples but correct_cell has {correct_cell.shape[0]}; "
            "pass both for the same examples in the same order"
        )
    b = int(np.count_nonzero(correct_base & ~correct_cell))
    c = int(np.count_nonzero(~correct_base & correct_cell))
    if b + c == 0:
        p_value = 1.0
    else:
        p_value = min(1.0, 2.0 * float(scipy_stats.binom.cdf(min(b, c), b + c, 0.5)))
    return McNemarResult(b=b, c=c, p_value=p_value, n=int(correct_base.shape[0]))


def aggregate_seeds(
    df: pd.DataFrame,
    value_column: str,
    group_columns: str | Sequence[str],
    *,
    level: float = 0.95,
    seed_column: str | None = None,
) -> pd.DataFrame:
    """Aggregate one value across seeds, one row per group, with a t-interval.

    Each row of `df` is one seed's value for its group. Returns the group columns and
    ``mean``, ``std`` (sample standard deviation, ddof = 1), ``n_seeds``, ``ci_low`` and
    ``ci_high`` (mean ± t_{(1+level)/2, n−1} · std / √n) and ``interval_note``. A group
    with one seed gets NaN for std and the interval, and ``interval_note`` gives the reason.
    Elsewhere the note is a missing value (check with pd.isna). With `seed_column`, a
    seed that occurs twice in one group raises ValueError. An empty `group_columns`
    aggregates the whole table into one row.
    """
    level = _check_level(level)
    group_columns = [group_columns] if isinstance(group_columns, str) else list(group_columns)
    required = [value_column, *group_columns] + ([seed_column] if seed_column is not None else [])
    _check_columns(df, required, "df")
    if df.empty:
        raise ValueError("df has no rows; there is nothing to aggregate")
    _check_finite_numeric(df, value_column, "df")
    if seed_column is not None:
        duplicated = df.duplicated([*group_columns, seed_column], keep=False)
        if duplicated.any():
            example = df.loc[duplicated, [*group_columns, seed_column]].iloc[0].to_dict()
            raise ValueError(
                f"{int(duplicated.sum())} rows repeat a seed within their group, e.g. {example}; "
                "aggregate each seed to one row first or add the distinguishing column to group_columns"
            )

    values = df[value_column].astype(np.float64)
    if group_columns:
        grouped = values.groupby([df[column] for column in group_columns], dropna=False, sort=True)
        table = grouped.agg(mean="mean", std="std", n_seeds="count").reset_index()
    else:
        table = pd.DataFrame({"mean": [values.mean()], "std": [values.std()], "n_seeds": [values.size]})

    n_seeds = table["n_seeds"].to_numpy()
    several = n_seeds >= 2
    t_quantile = np.full(n_seeds.shape, np.nan)
    t_quantile[several] = scipy_stats.t.ppf((1.0 + level) / 2.0, df=n_seeds[several] - 1)
    halfwidth = t_quantile * table["std"].to_numpy() / np.sqrt(n_seeds)
    table["ci_low"] = table["mean"] - halfwidth
    table["ci_high"] = table["mean"] + halfwidth
    table["interval_note"] = np.where(several, None, "one seed: no interval across seeds")
    return table


def additivity(
    group_effects: pd.DataFrame,
    joint_effects: pd.DataFrame,
    *,
    band_column: str = "band",
    group_column: str = "group",
    value_column: str = "change",
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """Compare the sum of per-group effects with the effect of removing a band in all groups.

    `group_effects` has one row per (`by`..., band, group), for example the accuracy change
    when band 3 is removed in the early layers only. `joint_effects` has one row per
    (`by`..., band) with the change when the band is removed in all groups at once.
    Returns one row per (`by`..., band) with ``sum_of_groups``, ``n_groups``, ``joint`` and
    ``difference`` = joint − sum_of_groups, which is 0 when the group effects add up.
    Raises ValueError on duplicate rows, on a band that lacks some group, and on a band
    found in only one of the two tables.
    """
    by = [by] if isinstance(by, str) else list(by)
    keys = [*by, band_column]
    _check_columns(group_effects, [*keys, group_column, value_column], "group_effects")
    _check_columns(joint_effects, [*keys, value_column], "joint_effects")
    _check_finite_numeric(group_effects, value_column, "group_effects")
    _check_finite_numeric(joint_effects, value_column, "joint_effects")
    for table, table_keys, name in (
        (group_effects, [*keys, group_column], "group_effects"),
        (joint_effects, keys, "joint_effects"),
    ):
        duplicated = table.duplicated(table_keys, keep=False)
        if duplicated.any():
            example = table.loc[duplicated, table_keys].iloc[0].to_dict()
            raise ValueError(f"{name} has {int(duplicated.sum())} rows with repeated keys {table_keys}, e.g. {example}")

    group_sets = group_effects.groupby(keys, dropna=False, sort=True)[group_column].agg(frozenset)
    expected_groups = group_effects.groupby(by, dropna=False)[group_column].agg(frozenset) if by else None
    for key, groups in group_sets.items():
        if by:
            by_key = key[:-1] if len(by) > 1 else key[0]
            expected = expected_groups[by_key]
        else:
            expected = frozenset(group_effects[group_column])
        if groups != expected:
            raise ValueError(
                f"band {key} has groups {sorted(map(str, groups))} but the table has {sorted(map(str, expected))}; "
                "every band needs an effect for every group"
            )

    sums = (
        group_effects.groupby(keys, dropna=False, sort=True)[value_column]
        .agg(sum_of_groups="sum", n_groups="count")
        .reset_index()
    )
    joint = joint_effects[[*keys, value_column]].rename(columns={value_column: "joint"})
    merged = sums.merge(joint, on=keys, how="outer", indicator=True, sort=True)
    unmatched = merged[merged["_merge"] != "both"]
    if not unmatched.empty:
        only_groups = unmatched.loc[unmatched["_merge"] == "left_only", keys].to_dict("records")
        only_joint = unmatched.loc[unmatched["_merge"] == "right_only", keys].to_dict("records")
        raise ValueError(
            f"bands without a joint effect: {only_groups}; bands without group effects: {only_joint}; "
            "both tables need the same bands"
        )
    merged = merged.drop(columns="_merge")
    merged["n_groups"] = merged["n_groups"].astype(np.int64)
    merged["difference"] = merged["joint"] - merged["sum_of_groups"]
    return merged[[*keys, "sum_of_groups", "n_groups", "joint", "difference"]]


def random_orthonormal(rows: int, columns: int, *, generator: torch.Generator) -> torch.Tensor:
    """Draw a Haar-random float64 [rows, columns] matrix with orthonormal columns.

    It is the Q of a QR decomposition of a standard Gaussian matrix with the signs of R's
    diagonal moved into Q, which makes the distribution uniform. Needs columns <= rows.
    The matrix is on the generator's device.
    NOTE: tested with CPU generators only; the CUDA path has not been run.
    """
    if columns > rows:
        raise ValueError(f"cannot draw {columns} orthonormal columns in dimension {rows}; need columns <= rows")
    gaussian = torch.randn(rows, columns, generator=generator, dtype=torch.float64, device=generator.device)
    q, r = torch.linalg.qr(gaussian, mode="reduced")
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def random_subspace_perturbation(
    shape: tuple[int, int],
    rank: int,
    frobenius_norm: float | None = None,
    *,
    singular_values: Any = None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Build a random rank-r matrix Q_U diag(s) Q_Vᵀ as a float32 [m, n] tensor.

    Q_U [m, r] and Q_V [n, r] are drawn with `random_orthonormal`, U first. This is the
    control for removing a band: same rank and size, random directions. Pass
    `singular_values` (r values >= 0) to reuse the removed band's values exactly, or
    `frobenius_norm` alone to get r equal values √(norm² / r). When both are given, the
    norm must equal √(Σ s²) to 1e-6 relative. Rank 0 gives zeros. The result is computed
    in float64 on the generator's device, so its norm matches to float32 rounding.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if len(shape) != 2 or not all(isinstance(size, (int, np.integer)) and size >= 1 for size in shape):
        raise ValueError(f"shape must be two positive ints (m, n), got {shape!r}")
    rows, columns = int(shape[0]), int(shape[1])
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}")
    rank = int(rank)
    if rank > min(rows, columns):
        raise ValueError(f"rank {rank} exceeds min(m, n) = {min(rows, columns)} for shape {(rows, columns)}")

    if singular_values is not None:
        values = torch.as_tensor(
            as_numpy(singular_values, name="singular_values"), dtype=torch.float64, device=generator.device
        ).flatten()
        if values.numel() != rank:
            raise ValueError(f"singular_values has {values.numel()} values but rank is {rank}; pass one value per rank")
        if not torch.isfinite(values).all() or (values < 0).any():
            raise ValueError("singular_values must be finite and non-negative")
        if frobenius_norm is not None:
            implied = float(torch.linalg.vector_norm(values))
            if not math.isclose(implied, float(frobenius_norm), rel_tol=1e-6, abs_tol=0.0):
                raise ValueError(
                    f"frobenius_norm {frobenius_norm} differs from the norm of singular_values ({implied}); "
                    "pass only one of them"
                )
    else:
        if frobenius_norm is None:
            raise ValueError("pass frobenius_norm or singular_values to set the size of the perturbation")
        if not math.isfinite(frobenius_norm) or frobenius_norm < 0:
            raise ValueError(f"frobenius_norm must be finite and non-negative, got {frobenius_norm}")
        if rank == 0 and frobenius_norm > 0:
            raise ValueError(f"a rank-0 perturbation has norm 0, but frobenius_norm is {frobenius_norm}")
        equal_value = float(frobenius_norm) / math.sqrt(rank) if rank else 0.0
        values = torch.full((rank,), equal_value, dtype=torch.float64, device=generator.device)

    if rank == 0:
        return torch.zeros(rows, columns, dtype=torch.float32, device=generator.device)
    left = random_orthonormal(rows, rank, generator=generator)
    right = random_orthonormal(columns, rank, generator=generator)
    return ((left * values) @ right.T).to(torch.float32)


def interval_halfwidth(n: int, p: float = 0.5, level: float = 0.95) -> float:
    """Return the normal-approximation half-width z·√(p(1−p)/n) of a proportion's interval.

    With n = 1,000 and p = 0.5 it is 0.031 (3.1 accuracy points) at level 0.95.
    """
    n = _check_positive_int(n, "n")
    level = _check_level(level)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a proportion in [0, 1], got {p}")
    z = scipy_stats.norm.ppf((1.0 + level) / 2.0)
    return float(z * math.sqrt(p * (1.0 - p) / n))


def paired_interval_halfwidth(n: int, discordance_rate: float, *, difference: float = 0.0, level: float = 0.95) -> float:
    """Return the normal-approximation half-width of a paired accuracy difference.

    Each example contributes d ∈ {−1, 0, 1}, so the variance of its mean is
    (discordance_rate − difference²) / n, where discordance_rate is the share of examples
    on which the two models disagree in correctness and `difference` the accuracy change.
    At n = 1,000 and a discordance rate of 2.5%, it is about 0.0098 (1 point) at 0.95.
    """
    n = _check_positive_int(n, "n")
    level = _check_level(level)
    if not 0.0 <= discordance_rate <= 1.0:
        raise ValueError(f"discordance_rate must be a proportion in [0, 1], got {discordance_rate}")
    if abs(difference) > discordance_rate:
        raise ValueError(
            f"|difference| = {abs(difference)} exceeds discordance_rate = {discordance_rate}; "
            "an accuracy change cannot exceed the share of discordant examples"
        )
    z = scipy_stats.norm.ppf((1.0 + level) / 2.0)
    return float(z * math.sqrt((discordance_rate - difference**2) / n))
