"""Fine-tuning killed with SIGKILL and rerun never loads a half-written checkpoint and
ends with the same weights and curve as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from svutils.synthetic import ensure_data

JOB = Path(__file__).resolve().parents[1] / "helpers" / "finetune_job.py"
ROOT = Path(__file__).resolve().parents[2]


def _environment():
    return {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home())}


def _run(data, cache, output):
    return subprocess.run(
        [sys.executable, str(JOB), str(data), str(cache), str(output)],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=900,
    )


def _complete_epochs(cache):
    return sorted(path.name for path in cache.glob("checkpoints/*/epoch-*") if (path / "metadata.json").is_file())


def test_killed_finetune_resumes_to_same_model(tmp_path):
    data = ensure_data(tmp_path / "data", tasks=["rte"])
    reference = _run(data, tmp_path / "reference-cache", tmp_path / "reference.json")
    assert reference.returncode == 0, reference.stderr[-3000:]

    cache = tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, str(JOB), str(data), str(cache), str(tmp_path / "partial.json")],
        cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None and not _complete_epochs(cache):
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "partial.json").exists()
    assert not list(cache.glob("checkpoints/*/run.json")), "a killed run must not look finished"

    resumed = _run(data, cache, tmp_path / "resumed.json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "reference.json").read_text())
    actual = json.loads((tmp_path / "resumed.json").read_text())
    assert actual["curve"] == expected["curve"]
    assert actual["weights"] == expected["weights"]
    assert _complete_epochs(cache) == ["epoch-1", "epoch-2", "epoch-3", "epoch-4"]
    assert not [path for path in cache.rglob("*") if ".tmp" in path.name]
