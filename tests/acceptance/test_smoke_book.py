"""The smoke profile runs every notebook, saves every table and builds the book."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from svutils.runner import NOTEBOOKS

pytestmark = pytest.mark.acceptance


def test_smoke_run_succeeds(smoke_run):
    completed = smoke_run["completed"]
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "book:" in completed.stdout


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_executed_without_errors(smoke_run, notebook):
    executed = smoke_run["root"] / "book" / "_generated" / f"{notebook}.ipynb"
    assert executed.is_file()
    cells = json.loads(executed.read_text())["cells"]
    errors = [output for cell in cells for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert errors == []


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_saved_tables(smoke_run, notebook):
    folder = smoke_run["output"] / notebook
    tables = list(folder.glob("*.csv"))
    assert tables, f"no CSV tables in {folder}"
    for table in tables:
        assert len(pd.read_csv(table)) > 0, table


@pytest.mark.parametrize("page", ["index.html", "book/intro.html", "book/method.html", "book/reproducibility.html"])
def test_book_pages_exist(built_book, page):
    assert (built_book / page).is_file()


def test_findings_generated(smoke_run):
    findings = smoke_run["root"] / "book" / "_generated" / "findings.md"
    assert findings.is_file()
    assert "has not been run" not in findings.read_text()


def _cache_files(cache):
    return sorted(str(path.relative_to(cache)) for path in cache.rglob("*") if path.is_file() and ".lock" not in path.name)


def test_rerun_computes_nothing_new(smoke_run):
    root = smoke_run["root"]
    cache = smoke_run["cache"]
    before = _cache_files(cache)
    environment = dict(os.environ, SVUTILS_CACHE_DIR=str(cache), PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-m", "svutils", "run", "--profile", "smoke", "--root", str(root), "--no-build",
         "--only", "task_complexity", "early_ffn", "-p", "output_dir", str(smoke_run["output"])],
        cwd=root, env=environment, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert _cache_files(cache) == before
