"""Unit tests of svutils.report on small hand-made grid tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from svutils import report


def grid_row(task="qnli", mode="remove", band=0, change=0.0, low=-0.01, high=0.01, *, seed=0, collapsed=False, **extra):
    """Build one grid-table row with the columns that svutils.ablation.run_grid writes."""
    row = {
        "task": task,
        "seed": seed,
        "epoch": 3,
        "checkpoint": "epoch 3",
        "mode": mode,
        "kind_label": "all",
        "layer_label": "all",
        "band": band,
        "n_bands": 4,
        "n_eval": 400,
        "accuracy": 0.8 + change,
        "majority_rate": 0.5,
        "change": change,
        "ci_low": low,
        "ci_high": high,
        "loss": 0.4,
        "loss_change": -change,
        "loss_ci_low": -high,
        "loss_ci_high": -low,
        "collapsed": collapsed,
        "majority_share": 0.99 if collapsed else 0.55,
        "energy_fraction": 0.1,
    }
    row.update(extra)
    return row


def baseline_row(task="qnli", seed=0, accuracy=0.8, collapsed=False):
    """Build the baseline row of a grid table."""
    return grid_row(task, "baseline", -1, 0.0, 0.0, 0.0, seed=seed, collapsed=collapsed, n_bands=1, accuracy=accuracy)


@pytest.fixture
def grid() -> pd.DataFrame:
    """Two tasks: QNLI's smallest band lowers accuracy with an interval that excludes zero,
    RTE's interval includes zero, and RTE's band 0 collapses the model."""
    rows = [
        baseline_row("qnli"),
        grid_row("qnli", band=0, change=-0.05, low=-0.08, high=-0.02),
        grid_row("qnli", band=3, change=-0.03, low=-0.05, high=-0.01),
        grid_row("qnli", "random", band=3, change=-0.002, low=-0.01, high=0.006),
        baseline_row("rte", accuracy=0.6),
        grid_row("rte", band=0, change=-0.1, low=-0.12, high=-0.08, collapsed=True),
        grid_row("rte", band=3, change=-0.004, low=-0.02, high=0.012),
        grid_row("rte", "random", band=3, change=0.001, low=-0.01, high=0.012),
    ]
    return pd.DataFrame(rows)


def test_verdict_interval_below_zero():
    assert report.verdict(-0.03, -0.05, -0.01, False) == "decrease"


def test_verdict_interval_above_zero():
    assert report.verdict(0.03, 0.01, 0.05, False) == "increase"


def test_verdict_interval_includes_zero():
    assert report.verdict(-0.01, -0.03, 0.01, False) == "includes zero"


def test_verdict_collapse_overrides_interval():
    assert report.verdict(-0.1, -0.12, -0.08, True) == "collapsed"


def test_verdict_missing_bound():
    assert report.verdict(-0.1, math.nan, -0.08, False) == "no interval"


def test_points_formats_signed_points():
    assert report.points(-0.0213) == "−2.1"
    assert report.points(0.05) == "+5.0"
    assert report.points(0.05, signed=False) == "5.0"
    assert report.points(math.nan) == "n/a"


def test_nats_small_values_use_exponent():
    assert report.nats(0.0312) == "+0.031"
    assert report.nats(-7.3e-5) == "−7.3e−05"
    assert report.nats(0.0) == "+0.000"


def test_summarize_single_seed_keeps_bootstrap(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    row = summary[(summary["task"] == "qnli") & (summary["mode"] == "remove") & (summary["band"] == 3)].iloc[0]
    assert len(summary) == 6
    assert row["ci_low"] == pytest.approx(-0.05)
    assert row["interval"] == "bootstrap"
    assert row["verdict"] == "decrease"


def test_summarize_marks_collapsed_cell(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    row = summary[(summary["task"] == "rte") & (summary["band"] == 0)].iloc[0]
    assert bool(row["collapsed"])
    assert row["verdict"] == "collapsed"


def test_summarize_pools_seeds_with_t_interval():
    rows = [grid_row(band=3, change=value, seed=seed) for seed, value in enumerate([-0.02, -0.03, -0.04])]
    rows.append(grid_row(band=3, change=-0.03, seed=3, collapsed=True))
    summary = report.summarize_cells(pd.DataFrame(rows), ["task", "band"])
    row = summary.iloc[0]
    assert row["n_seeds"] == 4
    assert row["interval"] == "seeds"
    assert row["change"] == pytest.approx(-0.03)
    assert row["ci_low"] < -0.03 < row["ci_high"]
    assert bool(row["collapsed"])


def test_summarize_repeated_seed_raises(grid):
    with pytest.raises(ValueError, match="repeat a seed"):
        report.summarize_cells(grid, ["task", "band"])


def test_summarize_missing_column_raises(grid):
    with pytest.raises(KeyError, match="loss_change"):
        report.summarize_cells(grid.drop(columns="loss_change"), ["task", "band"])


def test_summarize_only_baseline_raises(grid):
    with pytest.raises(ValueError, match="no rows"):
        report.summarize_cells(grid[grid["mode"] == "baseline"], ["task"])


def test_effect_pivot_marks_cells(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    pivot = report.effect_pivot(summary[summary["mode"] == "remove"], index="band", columns="task")
    assert pivot.loc[3, "qnli"] == "−3.0 [−5.0, −1.0] *"
    assert pivot.loc[3, "rte"] == "−0.4 [−2.0, +1.2]"
    assert pivot.loc[0, "rte"].endswith(" collapsed")


def test_effect_pivot_invalid_value_raises(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    with pytest.raises(ValueError, match="'accuracy'"):
        report.effect_pivot(summary, index="band", columns="task", value="accuracy")


def test_baseline_table_accuracy_above_majority(grid):
    baselines = report.baseline_table(grid)
    qnli = baselines[baselines["task"] == "qnli"].iloc[0]
    assert len(baselines) == 2
    assert qnli["accuracy_above_majority"] == pytest.approx(0.3)
    assert qnli["accuracy_halfwidth"] == pytest.approx(1.959964 * math.sqrt(0.8 * 0.2 / 400), rel=1e-5)
    assert qnli["median_change_halfwidth"] == pytest.approx(0.02)


def test_precision_text_flags_collapsed_baseline():
    table = pd.DataFrame([baseline_row("rte", accuracy=0.5, collapsed=True), grid_row("rte", band=3, collapsed=True)])
    text = report.precision_text(report.baseline_table(table))
    assert "400 evaluation examples" in text
    assert "already predicts one class" in text


def test_precision_text_flags_near_chance():
    table = pd.DataFrame([baseline_row("rte", accuracy=0.52), grid_row("rte", band=3)])
    text = report.precision_text(report.baseline_table(table))
    assert "near chance" in text


def test_describe_effect_decrease_states_interval(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    row = summary[(summary["task"] == "qnli") & (summary["mode"] == "remove") & (summary["band"] == 3)].iloc[0]
    text = report.describe_effect(row.to_dict())
    assert text.startswith("accuracy falls by 3.0 points")
    assert "excludes zero" in text
    assert "loss changes by +0.030 nats" in text


def test_describe_effect_collapse_not_importance(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    row = summary[(summary["task"] == "rte") & (summary["band"] == 0)].iloc[0]
    text = report.describe_effect(row.to_dict())
    assert "collapses to predicting one class for 99%" in text
    assert "rather than this band's importance" in text
    assert "falls" not in text


def test_describe_effect_compact_collapsed(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    row = summary[(summary["task"] == "rte") & (summary["band"] == 0)].iloc[0]
    text = report.describe_effect(row.to_dict(), compact=True)
    assert text.startswith("collapsed to one class, so accuracy is not read; loss +0.100 nats")


def test_describe_band_effects_splits_tasks(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    text = report.describe_band_effects(summary)
    assert "excludes zero for qnli and includes zero for rte" in text
    assert "random subspace" in text
    assert "Removing band(s) 0 of all matrices made the model collapse" in text


def test_describe_band_effects_marks_near_chance(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "band", "n_bands"])
    text = report.describe_band_effects(summary, near_chance=["rte"])
    rte_line = next(line for line in text.splitlines() if line.startswith("- **rte**"))
    assert "Its baseline is near chance" in rte_line
    assert "includes zero for no task" in text
    assert "The baseline is near chance for rte, so those tasks are not read." in text


def test_near_chance_tasks_uses_halfwidth(grid):
    rows = [row for row in grid.to_dict("records") if row["mode"] != "baseline"]
    rows.append(baseline_row("qnli", accuracy=0.8))
    rows.append(baseline_row("rte", accuracy=0.52))
    baselines = report.baseline_table(pd.DataFrame(rows))
    assert report.near_chance_tasks(baselines) == ["rte"]


def test_describe_training_duration_overlap_not_resolved():
    rows = [
        grid_row(band=3, change=-0.04, low=-0.06, high=-0.02, epoch=1),
        grid_row(band=3, change=-0.03, low=-0.05, high=-0.01, epoch=3),
    ]
    summary = report.summarize_cells(pd.DataFrame(rows), ["task", "mode", "epoch", "band", "n_bands"])
    text = report.describe_training_duration(summary)
    assert "shrinks" in text
    assert "does not resolve a trend" in text


def test_describe_training_duration_separate_intervals():
    rows = [
        grid_row(band=3, change=-0.08, low=-0.10, high=-0.06, epoch=1),
        grid_row(band=3, change=-0.01, low=-0.02, high=0.0, epoch=3),
    ]
    summary = report.summarize_cells(pd.DataFrame(rows), ["task", "mode", "epoch", "band", "n_bands"])
    text = report.describe_training_duration(summary)
    assert "shrinks in size and the intervals do not overlap" in text


def test_describe_matrix_specific_ranks_non_collapsed():
    rows = [
        grid_row(band=3, change=-0.2, low=-0.25, high=-0.15, collapsed=True, kind_label="Q"),
        grid_row(band=3, change=-0.03, low=-0.05, high=-0.01, kind_label="FFN"),
        grid_row(band=3, change=-0.01, low=-0.03, high=0.01, kind_label="V"),
    ]
    summary = report.summarize_cells(pd.DataFrame(rows), ["task", "kind_label", "band", "n_bands"])
    text = report.describe_matrix_specific(summary)
    assert "largest accuracy drop comes from FFN" in text
    assert "(a decrease): FFN." in text
    assert "Collapsed to one class: Q." in text
    assert "largest loss increase comes from Q: +0.200 nats" in text


def test_describe_early_ffn_additivity():
    rows = []
    for group, change in (("early", -0.03), ("middle", -0.01), ("late", 0.0), ("all", -0.05)):
        rows.append(grid_row(band=3, change=change, low=change - 0.01, high=change + 0.01, kind_label="FFN", layer_label=group))
    additivity = pd.DataFrame(
        [{"task": "qnli", "kind_label": "FFN", "metric": "change", "band": 3, "sum_of_groups": -0.04, "joint": -0.05, "difference": -0.01}]
    )
    summary = report.summarize_cells(pd.DataFrame(rows), ["task", "mode", "kind_label", "layer_label", "band", "n_bands"])
    text = report.describe_early_ffn(summary, additivity)
    assert "largest drop is in the early layers" in text
    assert "and its interval excludes zero" in text
    assert "by at most 1.0 points" in text


def why_grid() -> pd.DataFrame:
    rows = []
    for band, change, share in ((0, -0.06, 0.5), (1, -0.02, 0.3), (2, -0.01, 0.2)):
        rows.append(grid_row(band=band, change=change, low=change - 0.005, high=change + 0.005, kind_label="FFN", layer_label="early", update_share=share))
        rows.append(grid_row(mode="revert_update", band=band, change=change / 2, low=change / 2 - 0.005, high=change / 2 + 0.005, kind_label="FFN", layer_label="early", update_share=share))
    return pd.DataFrame(rows)


def test_revert_comparison_pairs_modes():
    summary = report.summarize_cells(why_grid(), ["task", "mode", "kind_label", "layer_label", "band", "n_bands"])
    pairs = report.revert_comparison(summary)
    assert len(pairs) == 3
    assert pairs.loc[pairs["band"] == 0, "change_revert"].iloc[0] == pytest.approx(-0.03)


def test_revert_comparison_without_revert_raises(grid):
    summary = report.summarize_cells(grid, ["task", "mode", "kind_label", "layer_label", "band", "n_bands"])
    with pytest.raises(ValueError, match="revert_update"):
        report.revert_comparison(summary)


def test_describe_why_reports_share_and_revert():
    grid = why_grid()
    summary = report.summarize_cells(grid, ["task", "mode", "kind_label", "layer_label", "band", "n_bands"])
    shares = pd.DataFrame(
        [{"band": band, "share_two_sided": share, "share_left": share + 0.1, "share_right": share + 0.05, "epoch": 3} for band, share in ((0, 0.6), (1, 0.3), (2, 0.1))]
    )
    correlations = {"accuracy": report.correlation_or_nan(grid[grid["mode"] == "remove"], "update_share", "change")}
    text = report.describe_why(summary, correlations=correlations, shares=shares)
    assert "‖U_bᵀ ΔW V_b‖²_F / ‖ΔW‖²_F" in text
    assert "bottom band 10.0%" in text
    assert "Across 3 non-collapsed band removals, the accuracy change has Pearson r = −0.99" in text
    assert "from too few cells for an interval" in text
    assert "loss, readable in all 3 cell pairs" in text
    assert "reproduces 50% of the summed removal damage" in text


def test_correlation_interval_excludes_zero():
    low, high = report.correlation_interval(0.9, 30)
    assert 0.79 < low < 0.81
    assert 0.94 < high < 0.96


def test_correlation_interval_too_few_pairs():
    low, high = report.correlation_interval(0.9, 3)
    assert math.isnan(low)
    assert math.isnan(high)


def test_correlation_text_states_direction():
    text = report.correlation_text({"accuracy": (-0.9, 30), "loss": (0.1, 30)})
    assert "Pearson r = −0.90" in text
    assert "excludes zero): a negative association" in text
    assert "loss change has Pearson r = 0.10" in text
    assert "includes zero, so this run shows no association" in text


def test_correlation_or_nan_constant_column():
    frame = pd.DataFrame({"x": [0.1, 0.2, 0.3], "y": [0.0, 0.0, 0.0]})
    r, n = report.correlation_or_nan(frame, "x", "y")
    assert math.isnan(r)
    assert n == 3


def test_spectrum_panel_drops_zero_lower_edge():
    spectra = pd.DataFrame(
        {"task": "rte", "seed": 0, "state": ["pretrained", "fine-tuned"], "kind": "q", "layer": 0, "index": 0, "value": [2.0, 2.1]}
    )
    fits = pd.DataFrame([{"task": "rte", "seed": 0, "state": "fine-tuned", "kind": "q", "layer": 0, "lower_edge": 0.0, "upper_edge": 1.5}])
    frame, edges = report.spectrum_panel(spectra, fits, task="rte", seed=0, kind="q", layer=0)
    assert len(frame) == 2
    assert edges == {"MP upper edge (fine-tuned)": 1.5}


def test_spectrum_panel_unknown_matrix_raises():
    spectra = pd.DataFrame({"task": ["rte"], "seed": [0], "state": ["pretrained"], "kind": ["q"], "layer": [0], "index": [0], "value": [1.0]})
    fits = pd.DataFrame(columns=["task", "seed", "state", "kind", "layer", "lower_edge", "upper_edge"])
    with pytest.raises(ValueError, match="kind 'ffn_in'"):
        report.spectrum_panel(spectra, fits, task="rte", seed=0, kind="ffn_in", layer=0)


def test_write_findings_missing_tables(tmp_path):
    path = report.write_findings(tmp_path / "results", tmp_path / "findings.md")
    text = path.read_text()
    assert text.startswith("# Findings")
    assert "No experiment table has been saved yet" in text
    assert "The why notebook has not been run" in text


def test_write_findings_reads_saved_tables(tmp_path, grid):
    folder = tmp_path / "results" / "task_complexity"
    folder.mkdir(parents=True)
    grid.to_csv(folder / "results.csv", index=False)
    text = report.write_findings(tmp_path / "results", tmp_path / "findings.md").read_text()
    assert "- **qnli**: 400 evaluation examples" in text
    assert "- qnli: accuracy −3.0 points [−5.0, −1.0], excludes zero; loss +0.030 nats" in text
    assert "1 cell of this experiment collapsed the model to one class; its accuracy change is not" in text
    assert "The matrix_specific notebook has not been run" in text


def test_write_findings_accepts_config(tmp_path):
    from svutils.config import load_profile

    config = load_profile("smoke", output_dir=str(tmp_path / "out"))
    path = report.write_findings(config, tmp_path / "book" / "findings.md")
    assert path.is_file()
    assert str(tmp_path / "out") in path.read_text()


def test_write_findings_invalid_root_raises(tmp_path):
    with pytest.raises(TypeError, match="output_root"):
        report.write_findings(42, tmp_path / "findings.md")


def test_describe_why_by_task_one_line_each():
    rows = list(why_grid().to_dict("records"))
    for record in why_grid().to_dict("records"):
        rows.append({**record, "task": "rte"})
    rows.append({**baseline_row("rte", accuracy=0.505), "update_share": float("nan")})
    rows.append({**baseline_row("qnli", accuracy=0.8), "update_share": float("nan")})
    text = report.describe_why_by_task(pd.DataFrame(rows))
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("- **qnli**: accuracy change against update share r = −0.99")
    assert "n = 3, too few cells for an interval" in lines[0]
    assert "−3.0 points for removing a band and −1.5 for reverting its update" in lines[0]
    assert "3 of 3 removals and 2 of 3 reverts have an interval below zero" in lines[0]
    assert "near chance" not in lines[0]
    assert lines[1].startswith("- **rte**:")
    assert "near chance" in lines[1]


def test_describe_why_by_task_missing_share_raises(grid):
    with pytest.raises(KeyError, match="update_share"):
        report.describe_why_by_task(grid)


def test_display_path_inside_repository():
    from svutils.config import REPO_ROOT

    assert report.display_path(REPO_ROOT / "results" / "quick") == "results/quick"


def test_display_path_outside_repository(tmp_path):
    assert report.display_path(tmp_path) == str(tmp_path)


def test_saved_files_text_lists_names():
    from svutils.config import REPO_ROOT

    text = report.saved_files_text(REPO_ROOT / "results" / "quick" / "why", ["grid.csv", "shares.csv"])
    assert text == "Tables and charts of this chapter are in `results/quick/why`: `grid.csv`, `shares.csv`."


def test_cells_phrase_singular_and_plural():
    assert report.cells_phrase(1) == "1 cell"
    assert report.cells_phrase(5) == "5 cells"


def test_write_findings_marks_near_chance_task(tmp_path, grid):
    table = grid.copy()
    table.loc[(table["task"] == "rte") & (table["mode"] == "baseline"), "accuracy"] = 0.52
    folder = tmp_path / "results" / "task_complexity"
    folder.mkdir(parents=True)
    table.to_csv(folder / "results.csv", index=False)
    text = report.write_findings(tmp_path / "results", tmp_path / "findings.md").read_text()
    rte_line = next(line for line in text.splitlines() if line.startswith("- rte:"))
    assert rte_line.endswith("The baseline is near chance, so this is not read.")
    qnli_line = next(line for line in text.splitlines() if line.startswith("- qnli:"))
    assert "near chance" not in qnli_line
