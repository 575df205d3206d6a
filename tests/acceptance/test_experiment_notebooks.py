"""Check what the five experiment notebooks write when the smoke run executes them.

The notebooks run once, through the runner, in the session fixture `smoke_run`
(tests/acceptance/conftest.py); these tests read the tables, charts and findings it left.
"""

from __future__ import annotations

import pytest

from svutils import report

NOTEBOOKS = ("task_complexity", "training_duration", "matrix_specific", "early_ffn", "why")

pytestmark = pytest.mark.acceptance


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_writes_tables_and_charts(notebook, smoke_run):
    folder = smoke_run["output"] / notebook
    for name in report.TABLE_NAMES[notebook]:
        assert (folder / f"{name}.csv").is_file(), f"{notebook} did not write {name}.csv"
        assert (folder / f"{name}.parquet").is_file(), f"{notebook} did not write {name}.parquet"
    assert list(folder.glob("*.vl.json")), f"{notebook} saved no chart"
    assert list(folder.glob("*.html")), f"{notebook} saved no standalone chart page"


def test_findings_cover_every_notebook(smoke_run, tmp_path):
    text = report.write_findings(smoke_run["output"], tmp_path / "findings.md").read_text()
    assert text.startswith("# Findings")
    assert "has not been run" not in text
    assert "- **rte**: " in text
    for title in report.EXPERIMENT_TITLES.values():
        assert f"## {title}" in text
