"""Acceptance test: the SVD primer notebook runs end to end on the smoke profile."""

import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "svd_primer.ipynb"


@pytest.mark.acceptance
@pytest.mark.timeout(300)
def test_primer_notebook_runs_on_smoke(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    # The kernel is a subprocess that inherits this environment, so it can import svutils
    # from the checkout without an installed package.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SVUTILS_CACHE_DIR", str(tmp_path / "cache"))
    executed = tmp_path / "svd_primer.ipynb"

    papermill.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={"profile": "smoke", "output_dir": str(tmp_path / "results")},
        cwd=str(REPO_ROOT),
        progress_bar=False,
    )

    folder = tmp_path / "results" / "svd_primer"
    bands = pd.read_csv(folder / "bands.csv")
    assert len(bands) == 4  # n_bands of the smoke profile
    assert bands["energy_fraction"].sum() == pytest.approx(1.0, abs=1e-9)
    assert (bands["relative_error"] ** 2).tolist() == pytest.approx(bands["energy_fraction"].tolist(), rel=1e-4)

    removal = pd.read_csv(folder / "removal_summary.csv")
    assert removal["rank"].tolist() == removal["expected_rank"].tolist()

    for name in ("spectrum", "removal_spectra", "band_errors", "conventions"):
        assert (folder / f"{name}.html").is_file(), name
        assert (folder / f"{name}.vl.json").is_file(), name
    for name in ("spectrum", "removal_spectra", "conventions", "exercise_ffn_energy"):
        assert (folder / f"{name}.csv").is_file(), name

    notebook = nbformat.read(executed, as_version=4)
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs if output.output_type == "error"]
    assert errors == []
    markdown = [
        output["data"]["text/markdown"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "text/markdown" in output.get("data", {})
    ]
    assert any("`tiny-bert`" in text for text in markdown)
