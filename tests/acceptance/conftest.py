"""Session fixture: one smoke-profile run of every notebook and a book build, in a copy."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COPIED = ["svutils", "notebooks", "book", "_config.yml", "_toc.yml"]


def _copy_project(target: Path) -> None:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source,
                target / name,
                ignore=shutil.ignore_patterns("__pycache__", "_generated", "vega-bundle.js", ".ipynb_checkpoints"),
            )
        else:
            shutil.copy2(source, target / name)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run `python -m svutils run --profile smoke` in a copy of the project.

    Returns a dict with `root` (the copy), `html` (its _build/html), `output` (the results
    folder), `cache` (the cache folder), `completed` (the CompletedProcess).
    """
    root = tmp_path_factory.mktemp("book")
    _copy_project(root)
    cache = tmp_path_factory.mktemp("cache")
    output = root / "results" / "smoke"
    # One thread per kernel: the tiny smoke model gains nothing from more, and SVDs of small
    # matrices slow down badly when OpenMP threads compete with other processes.
    environment = dict(os.environ, SVUTILS_CACHE_DIR=str(cache), PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-m", "svutils", "run", "--profile", "smoke", "--root", str(root), "-p", "output_dir", str(output)],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return {"root": root, "html": root / "_build" / "html", "output": output, "cache": cache, "completed": completed}


@pytest.fixture(scope="session")
def built_book(smoke_run):
    """The `_build/html` folder of the smoke run; fails the test if the run failed."""
    completed = smoke_run["completed"]
    assert completed.returncode == 0, f"smoke run failed:\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
    return smoke_run["html"]
