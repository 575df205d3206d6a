"""Execute the five experiment notebooks on the smoke profile and check what they write.

The notebooks share one cache folder, so checkpoints and ablation cells are computed once
for the module. On a loaded 2-core machine the module took 3 minutes from a cold cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

from svutils import report  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("task_complexity", "training_duration", "matrix_specific", "early_ffn", "why")

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory) -> dict[str, Path]:
    """Folders shared by the module: one cache, one output folder, one executed-notebook folder."""
    root = tmp_path_factory.mktemp("experiment_notebooks")
    return {"cache": root / "cache", "output": root / "results", "executed": root / "executed"}


@pytest.fixture(scope="module", autouse=True)
def kernel_environment():
    """Put the repository on the kernel's PYTHONPATH and give torch one thread.

    On a loaded 2-core machine, torch's default two threads made a 64 x 64 SVD take about
    0.4 s instead of 4 ms, and the why notebook's warm run 136 s instead of 14 s.
    """
    previous = {name: os.environ.get(name) for name in ("PYTHONPATH", "OMP_NUM_THREADS")}
    path = previous["PYTHONPATH"]
    os.environ["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.mark.timeout(600)
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_on_smoke(notebook, run_folders):
    run_folders["executed"].mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(REPO_ROOT / "notebooks" / f"{notebook}.ipynb"),
        str(run_folders["executed"] / f"{notebook}.ipynb"),
        parameters={
            "profile": "smoke",
            "output_dir": str(run_folders["output"]),
            "cache_dir": str(run_folders["cache"]),
        },
        cwd=str(REPO_ROOT / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
    )
    folder = run_folders["output"] / notebook
    for name in report.TABLE_NAMES[notebook]:
        assert (folder / f"{name}.csv").is_file(), f"{notebook} did not write {name}.csv"
        assert (folder / f"{name}.parquet").is_file(), f"{notebook} did not write {name}.parquet"
    assert list(folder.glob("*.vl.json")), f"{notebook} saved no chart"


def test_findings_cover_every_notebook(run_folders, tmp_path):
    missing = [name for name in NOTEBOOKS if not (run_folders["output"] / name / f"{report.TABLE_NAMES[name][0]}.csv").is_file()]
    if missing:
        pytest.skip(f"notebooks {missing} did not write their tables in this session")
    text = report.write_findings(run_folders["output"], tmp_path / "findings.md").read_text()
    assert text.startswith("# Findings")
    assert "has not been run" not in text
    assert "- **rte**: " in text
    for title in report.EXPERIMENT_TITLES.values():
        assert f"## {title}" in text
