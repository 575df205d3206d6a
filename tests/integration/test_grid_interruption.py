"""A grid killed with SIGKILL mid-way and rerun ends with the table of an uninterrupted run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

JOB = Path(__file__).resolve().parents[1] / "helpers" / "grid_job.py"
ROOT = Path(__file__).resolve().parents[2]
N_CELLS = 2 * 6 * 4


def _run(store, output):
    return subprocess.run(
        [sys.executable, str(JOB), str(store), str(output)], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )


def test_killed_grid_resumes_to_same_table(tmp_path):
    reference = _run(tmp_path / "reference-store", tmp_path / "reference.csv")
    assert reference.returncode == 0, reference.stderr[-2000:]

    store = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, str(JOB), str(store), str(tmp_path / "partial.csv")], cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(store.rglob("*.json"))) >= 12:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the grid finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before_kill = len(list(store.rglob("*.json")))
    assert 0 < finished_before_kill < N_CELLS + 1
    assert not (tmp_path / "partial.csv").exists()

    resumed = _run(store, tmp_path / "resumed.csv")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    computed = int(resumed.stdout.split("computed=")[1].split()[0])
    assert computed == N_CELLS - (finished_before_kill - 1)
    assert len(list(store.rglob("*.json"))) == N_CELLS + 1
    assert not [path for path in store.rglob("*") if ".tmp" in path.name]

    expected = pd.read_csv(tmp_path / "reference.csv")
    actual = pd.read_csv(tmp_path / "resumed.csv")
    pd.testing.assert_frame_equal(actual, expected)
