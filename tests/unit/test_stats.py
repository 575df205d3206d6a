"""Unit tests of svutils.stats: bootstrap, McNemar, seed aggregation and the random control."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from svutils.metrics import score
from svutils.stats import (
    BootstrapResult,
    additivity,
    aggregate_seeds,
    interval_halfwidth,
    mcnemar_exact,
    metric_difference_statistic,
    paired_bootstrap,
    paired_bootstrap_metric,
    paired_interval_halfwidth,
    random_orthonormal,
    random_subspace_perturbation,
)


def _paired_correctness(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.random(n) < 0.8
    cell = np.where(rng.random(n) < 0.1, ~base, base)
    return base, cell


def _paired_losses(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.exponential(0.5, n)
    return base, base + rng.normal(0.02, 0.1, n)


def _interval(result: BootstrapResult) -> tuple[float, float, float]:
    return result.estimate, result.low, result.high


# Paired bootstrap of means.


def test_paired_bootstrap_same_seed_same_interval():
    for base, cell in (_paired_correctness(300), _paired_losses(300)):
        first = paired_bootstrap(base, cell, n_resamples=500, seed=7)
        second = paired_bootstrap(base, cell, n_resamples=500, seed=7)
        assert first == second


def test_paired_bootstrap_seed_changes_interval():
    for base, cell in (_paired_correctness(300), _paired_losses(300)):
        first = paired_bootstrap(base, cell, n_resamples=500, seed=1)
        second = paired_bootstrap(base, cell, n_resamples=500, seed=2)
        assert first.estimate == second.estimate
        assert (first.low, first.high) != (second.low, second.high)


def test_paired_bootstrap_chunk_size_invariant():
    base, cell = _paired_losses(200)
    whole = paired_bootstrap(base, cell, n_resamples=300, seed=3)
    chunked = paired_bootstrap(base, cell, n_resamples=300, seed=3, chunk_size=7)
    assert whole == chunked


def test_paired_bootstrap_matches_numpy_loop():
    # 100 distinct differences are more than the multinomial path takes, so indices are drawn.
    base, cell = _paired_losses(100)
    result = paired_bootstrap(base, cell, n_resamples=400, level=0.9, seed=11)

    rng = np.random.default_rng(11)
    differences = cell - base
    resampled = []
    for _ in range(400):
        indices = rng.integers(0, 100, size=100, dtype=np.int64)
        resampled.append(differences[indices].mean())
    low, high = np.quantile(resampled, [0.05, 0.95])

    assert result.estimate == pytest.approx(differences.mean(), rel=1e-12)
    assert result.low == pytest.approx(low, rel=1e-12)
    assert result.high == pytest.approx(high, rel=1e-12)
    assert result.std_error == pytest.approx(np.std(resampled, ddof=1), rel=1e-12)


def test_paired_bootstrap_constant_difference_zero_width():
    base = np.zeros(1000)
    cell = np.full(1000, 0.1)
    result = paired_bootstrap(base, cell)
    assert _interval(result) == (0.1, 0.1, 0.1)
    assert result.std_error == 0.0


def test_paired_bootstrap_identical_correctness_zero_width():
    base, _ = _paired_correctness(100)
    assert _interval(paired_bootstrap(base, base)) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_two_examples_hand_case():
    # Resample means of (0, 1) are 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 95% percentile interval spans [0, 1].
    result = paired_bootstrap(np.array([0.0, 0.0]), np.array([0.0, 1.0]), n_resamples=2000)
    assert result.estimate == 0.5
    assert result.low == 0.0
    assert result.high == 1.0
    assert result.std_error == pytest.approx(math.sqrt(0.125), rel=0.05)


def test_paired_bootstrap_std_error_matches_plugin():
    base, cell = _paired_correctness(1000)
    differences = cell.astype(float) - base.astype(float)
    plugin = math.sqrt(differences.var() / differences.size)
    result = paired_bootstrap(base, cell, n_resamples=20000)
    assert result.std_error == pytest.approx(plugin, rel=0.03)


def test_paired_bootstrap_multinomial_matches_index_resampling():
    base, cell = _paired_correctness(500)
    differences = cell.astype(float) - base.astype(float)
    counted = paired_bootstrap(base, cell, n_resamples=20000, seed=5)
    indexed = paired_bootstrap(
        base, cell, statistic=lambda indices: differences[indices].mean(axis=1), n_resamples=20000, seed=6
    )
    assert counted.estimate == indexed.estimate
    assert counted.std_error == pytest.approx(indexed.std_error, rel=0.03)
    assert counted.low == pytest.approx(indexed.low, abs=0.3 * counted.std_error)
    assert counted.high == pytest.approx(indexed.high, abs=0.3 * counted.std_error)


def test_paired_bootstrap_interval_contains_estimate():
    for base, cell in (_paired_correctness(400), _paired_losses(400)):
        result = paired_bootstrap(base, cell, n_resamples=1000)
        assert result.low <= result.estimate <= result.high
        assert result.n_examples == 400
        assert result.n_resamples == 1000
        assert result.level == 0.95


def test_paired_bootstrap_accepts_tensors():
    base, cell = _paired_losses(100)
    from_numpy = paired_bootstrap(base, cell, n_resamples=200)
    from_torch = paired_bootstrap(torch.from_numpy(base), torch.from_numpy(cell), n_resamples=200)
    assert from_numpy == from_torch


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="zero examples"):
        paired_bootstrap(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="same order"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(np.zeros(3), np.ones(3), level=95)
    with pytest.raises(ValueError, match="unknown statistic 'median'"):
        paired_bootstrap(np.zeros(3), np.ones(3), statistic="median")
    with pytest.raises(ValueError, match="seed"):
        paired_bootstrap(np.zeros(3), np.ones(3), seed=-1)
    with pytest.raises(ValueError, match="one value per resample"):
        paired_bootstrap(np.zeros(3), np.ones(3), statistic=lambda indices: np.zeros(1))


def test_paired_bootstrap_accuracy_speed():
    base, cell = _paired_correctness(1000)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        paired_bootstrap(base, cell, n_resamples=2000)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.05


# Paired bootstrap of metrics.


def _paired_predictions(n: int, num_labels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, n)
    pred_base = np.where(rng.random(n) < 0.75, labels, rng.integers(0, num_labels, n))
    pred_cell = np.where(rng.random(n) < 0.15, rng.integers(0, num_labels, n), pred_base)
    return pred_base, pred_cell, labels


def test_metric_bootstrap_estimate_is_score_difference():
    for num_labels, metrics in ((2, ("accuracy", "f1", "mcc")), (3, ("accuracy", "mcc"))):
        pred_base, pred_cell, labels = _paired_predictions(300, num_labels)
        for metric in metrics:
            result = paired_bootstrap_metric(metric, pred_base, pred_cell, labels, n_resamples=200)
            expected = score(metric, pred_cell, labels) - score(metric, pred_base, labels)
            assert result.estimate == pytest.approx(expected, abs=1e-12), metric


def test_metric_bootstrap_same_seed_same_interval():
    pred_base, pred_cell, labels = _paired_predictions(300, 2)
    first = paired_bootstrap_metric("f1", pred_base, pred_cell, labels, n_resamples=300, seed=4)
    second = paired_bootstrap_metric("f1", pred_base, pred_cell, labels, n_resamples=300, seed=4)
    assert first == second


def test_metric_bootstrap_accuracy_equals_mean_bootstrap():
    pred_base, pred_cell, labels = _paired_predictions(300, 3)
    by_metric = paired_bootstrap_metric("accuracy", pred_base, pred_cell, labels, n_resamples=300, seed=2)
    by_mean = paired_bootstrap(pred_base == labels, pred_cell == labels, n_resamples=300, seed=2)
    assert by_metric == by_mean


def test_metric_bootstrap_identical_predictions_zero_width():
    pred_base, _, labels = _paired_predictions(200, 2)
    for metric in ("f1", "mcc"):
        result = paired_bootstrap_metric(metric, pred_base, pred_base, labels, n_resamples=300)
        assert _interval(result) == (0.0, 0.0, 0.0)


def test_metric_statistic_matches_score_loop():
    pred_base, pred_cell, labels = _paired_predictions(40, 3)
    indices = np.random.default_rng(9).integers(0, 40, size=(25, 40))
    statistic = metric_difference_statistic("mcc", pred_base, pred_cell, labels)
    expected = [score("mcc", pred_cell[row], labels[row]) - score("mcc", pred_base[row], labels[row]) for row in indices]
    np.testing.assert_allclose(statistic(indices), expected, rtol=0, atol=1e-12)


def test_metric_bootstrap_multinomial_matches_index_resampling():
    pred_base, pred_cell, labels = _paired_predictions(400, 2)
    for metric in ("f1", "mcc"):
        counted = paired_bootstrap_metric(metric, pred_base, pred_cell, labels, n_resamples=10000, seed=1)
        statistic = metric_difference_statistic(metric, pred_base, pred_cell, labels)
        indexed = paired_bootstrap(pred_base, pred_cell, statistic=statistic, n_resamples=10000, seed=2)
        assert counted.estimate == pytest.approx(indexed.estimate, abs=1e-12), metric
        assert counted.std_error == pytest.approx(indexed.std_error, rel=0.05), metric
        assert counted.low == pytest.approx(indexed.low, abs=0.3 * counted.std_error), metric
        assert counted.high == pytest.approx(indexed.high, abs=0.3 * counted.std_error), metric


def test_metric_bootstrap_rejects_bad_input():
    pred_base, pred_cell, labels = _paired_predictions(30, 3)
    with pytest.raises(ValueError, match="accuracy, f1, mcc"):
        paired_bootstrap_metric("auc", pred_base, pred_cell, labels)
    with pytest.raises(ValueError, match="needs 2 classes"):
        paired_bootstrap_metric("f1", pred_base, pred_cell, labels)
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_metric("mcc", pred_base[:-1], pred_cell, labels)
    with pytest.raises(ValueError, match="num_labels=2"):
        paired_bootstrap_metric("mcc", pred_base, pred_cell, labels, num_labels=2)


# McNemar.


def test_mcnemar_hand_tables():
    cases = [
        # (b, c, p): b = c gives p = 1, b + c = 0 gives p = 1, (5, 0) gives 2 · 0.5⁵.
        (0, 0, 1.0),
        (3, 3, 1.0),
        (5, 0, 2 * 0.5**5),
        (0, 5, 2 * 0.5**5),
        # P(X <= 1) for X ~ Bin(6, 1/2) is 7/64, doubled.
        (1, 5, 14 / 64),
    ]
    for b, c, expected in cases:
        correct_base = np.array([True] * b + [False] * c + [True, False])
        correct_cell = np.array([False] * b + [True] * c + [True, False])
        result = mcnemar_exact(correct_base, correct_cell)
        assert (result.b, result.c) == (b, c)
        assert result.n == b + c + 2
        assert result.p_value == pytest.approx(expected, rel=1e-12), (b, c)


def test_mcnemar_matches_scipy_binomtest():
    for b in range(0, 40, 3):
        for c in range(0, 40, 5):
            if b + c == 0:
                continue
            correct_base = np.array([True] * b + [False] * c)
            correct_cell = ~correct_base
            expected = scipy_stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
            assert mcnemar_exact(correct_base, correct_cell).p_value == pytest.approx(expected, rel=1e-9), (b, c)


def test_mcnemar_accepts_zero_one_integers():
    result = mcnemar_exact(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 1]))
    assert (result.b, result.c) == (1, 2)


def test_mcnemar_rejects_bad_input():
    with pytest.raises(TypeError, match="booleans or 0/1"):
        mcnemar_exact(np.array([0.5, 1.0]), np.array([True, False]))
    with pytest.raises(TypeError, match="booleans or 0/1"):
        mcnemar_exact(np.array([2, 1]), np.array([True, False]))
    with pytest.raises(ValueError, match="same order"):
        mcnemar_exact(np.array([True]), np.array([True, False]))


# Aggregation across seeds.


def test_aggregate_seeds_t_interval():
    df = pd.DataFrame(
        {
            "task": ["rte", "rte", "rte", "qnli"],
            "seed": [0, 1, 2, 0],
            "change": [1.0, 2.0, 3.0, 5.0],
        }
    )
    table = aggregate_seeds(df, "change", ["task"], seed_column="seed").set_index("task")
    halfwidth = scipy_stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert table.loc["rte", "mean"] == 2.0
    assert table.loc["rte", "std"] == 1.0
    assert table.loc["rte", "n_seeds"] == 3
    assert table.loc["rte", "ci_low"] == pytest.approx(2.0 - halfwidth)
    assert table.loc["rte", "ci_high"] == pytest.approx(2.0 + halfwidth)
    assert pd.isna(table.loc["rte", "interval_note"])


def test_aggregate_seeds_one_seed_has_no_interval():
    df = pd.DataFrame({"task": ["qnli"], "change": [5.0]})
    row = aggregate_seeds(df, "change", "task").iloc[0]
    assert row["mean"] == 5.0
    assert row["n_seeds"] == 1
    assert math.isnan(row["std"])
    assert math.isnan(row["ci_low"])
    assert math.isnan(row["ci_high"])
    assert row["interval_note"] == "one seed: no interval across seeds"


def test_aggregate_seeds_without_groups():
    df = pd.DataFrame({"change": [1.0, 3.0]})
    table = aggregate_seeds(df, "change", [])
    assert len(table) == 1
    assert table.loc[0, "mean"] == 2.0
    assert table.loc[0, "n_seeds"] == 2


def test_aggregate_seeds_rejects_bad_input():
    df = pd.DataFrame({"task": ["rte", "rte"], "seed": [0, 0], "change": [1.0, 2.0]})
    with pytest.raises(ValueError, match="repeat a seed"):
        aggregate_seeds(df, "change", ["task"], seed_column="seed")
    with pytest.raises(KeyError, match="available columns"):
        aggregate_seeds(df, "accuracy", ["task"])
    with pytest.raises(ValueError, match="NaN"):
        aggregate_seeds(df.assign(change=[1.0, np.nan]), "change", ["task"])
    with pytest.raises(ValueError, match="no rows"):
        aggregate_seeds(df.iloc[:0], "change", ["task"])


# Additivity of group effects.


def _effects() -> tuple[pd.DataFrame, pd.DataFrame]:
    groups = pd.DataFrame(
        {
            "band": [0, 0, 0, 1, 1, 1],
            "group": ["early", "middle", "late"] * 2,
            "change": [-0.01, -0.02, -0.03, 0.0, 0.01, -0.01],
        }
    )
    joint = pd.DataFrame({"band": [0, 1], "change": [-0.10, 0.0]})
    return groups, joint


def test_additivity_hand_table():
    groups, joint = _effects()
    table = additivity(groups, joint).set_index("band")
    assert table.loc[0, "sum_of_groups"] == pytest.approx(-0.06)
    assert table.loc[0, "joint"] == pytest.approx(-0.10)
    assert table.loc[0, "difference"] == pytest.approx(-0.04)
    assert table.loc[1, "difference"] == pytest.approx(0.0)
    assert table["n_groups"].tolist() == [3, 3]


def test_additivity_by_extra_key():
    groups, joint = _effects()
    groups = pd.concat([groups.assign(matrix="q"), groups.assign(matrix="k", change=groups["change"] * 2)])
    joint = pd.concat([joint.assign(matrix="q"), joint.assign(matrix="k")])
    table = additivity(groups, joint, by=["matrix"]).set_index(["matrix", "band"])
    assert table.loc[("k", 0), "sum_of_groups"] == pytest.approx(-0.12)
    assert table.loc[("q", 0), "sum_of_groups"] == pytest.approx(-0.06)
    assert len(table) == 4


def test_additivity_rejects_incomplete_tables():
    groups, joint = _effects()
    with pytest.raises(ValueError, match="every band needs an effect for every group"):
        additivity(groups.iloc[1:], joint)
    with pytest.raises(ValueError, match="bands without a joint effect"):
        additivity(groups, joint.iloc[:1])
    with pytest.raises(ValueError, match="repeated keys"):
        additivity(pd.concat([groups, groups.iloc[:1]]), joint)
    with pytest.raises(KeyError, match="available columns"):
        additivity(groups.drop(columns="group"), joint)


# Random-subspace control.


def test_random_orthonormal_columns():
    q = random_orthonormal(50, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(q.T @ q, torch.eye(7, dtype=torch.float64), atol=1e-12, rtol=0)


def test_random_perturbation_rank_and_norm():
    generator = torch.Generator().manual_seed(0)
    perturbation = random_subspace_perturbation((64, 96), 5, 2.5, generator=generator)
    singular_values = torch.linalg.svdvals(perturbation.double())
    assert perturbation.dtype == torch.float32
    assert perturbation.shape == (64, 96)
    assert int(torch.linalg.matrix_rank(perturbation)) == 5
    assert float(torch.linalg.matrix_norm(perturbation.double())) == pytest.approx(2.5, rel=1e-5)
    torch.testing.assert_close(singular_values[:5], torch.full((5,), 2.5 / math.sqrt(5), dtype=torch.float64), rtol=1e-5, atol=0)


def test_random_perturbation_given_singular_values():
    values = torch.tensor([3.0, 1.5, 0.25, 0.01])
    perturbation = random_subspace_perturbation(
        (40, 30), 4, singular_values=values, generator=torch.Generator().manual_seed(1)
    )
    recovered = torch.linalg.svdvals(perturbation.double())[:4]
    torch.testing.assert_close(recovered, values.double(), rtol=1e-5, atol=1e-6)
    assert float(torch.linalg.svdvals(perturbation.double())[4]) < 1e-5


def test_random_perturbation_seeded():
    first = random_subspace_perturbation((20, 30), 3, 1.0, generator=torch.Generator().manual_seed(5))
    second = random_subspace_perturbation((20, 30), 3, 1.0, generator=torch.Generator().manual_seed(5))
    third = random_subspace_perturbation((20, 30), 3, 1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_random_perturbation_rank_zero_is_zero():
    perturbation = random_subspace_perturbation((5, 4), 0, 0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(perturbation, torch.zeros(5, 4))


def test_random_perturbation_rejects_bad_input():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="exceeds min"):
        random_subspace_perturbation((5, 4), 5, 1.0, generator=generator)
    with pytest.raises(ValueError, match="one value per rank"):
        random_subspace_perturbation((5, 4), 2, singular_values=[1.0], generator=generator)
    with pytest.raises(ValueError, match="differs from the norm"):
        random_subspace_perturbation((5, 4), 2, 1.0, singular_values=[1.0, 1.0], generator=generator)
    with pytest.raises(ValueError, match="frobenius_norm or singular_values"):
        random_subspace_perturbation((5, 4), 2, generator=generator)
    with pytest.raises(ValueError, match="non-negative"):
        random_subspace_perturbation((5, 4), 2, -1.0, generator=generator)
    with pytest.raises(TypeError, match="torch.Generator"):
        random_subspace_perturbation((5, 4), 2, 1.0, generator=0)


# Interval widths.


def test_interval_halfwidth_known_values():
    assert interval_halfwidth(1000) == pytest.approx(1.959964 * math.sqrt(0.25 / 1000), rel=1e-6)
    assert interval_halfwidth(1000) == pytest.approx(0.031, abs=5e-4)
    assert interval_halfwidth(100, p=0.0) == 0.0


def test_paired_interval_halfwidth_known_values():
    assert paired_interval_halfwidth(1000, 0.025) == pytest.approx(0.0098, abs=5e-5)
    # All discordant examples in one direction: variance (0.025 − 0.025²) / 1000.
    expected = 1.959964 * math.sqrt((0.025 - 0.025**2) / 1000)
    assert paired_interval_halfwidth(1000, 0.025, difference=0.025) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="exceeds discordance_rate"):
        paired_interval_halfwidth(1000, 0.01, difference=0.02)


def test_paired_interval_halfwidth_matches_bootstrap():
    base, cell = _paired_correctness(1000)
    discordance_rate = float(np.mean(base != cell))
    difference = float(np.mean(cell.astype(float) - base.astype(float)))
    result = paired_bootstrap(base, cell, n_resamples=20000)
    halfwidth = paired_interval_halfwidth(1000, discordance_rate, difference=difference)
    assert (result.high - result.low) / 2 == pytest.approx(halfwidth, rel=0.05)
