"""A wrong parameter given to a notebook with papermill stops at the setup cell with a
message that names the parameter, the value and the fix."""

import os
from pathlib import Path

import papermill
import pytest

pytestmark = pytest.mark.acceptance

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "notebook, parameters, expected",
    [
        ("task_complexity", {"n_bands": "ten"}, "n_bands"),
        ("early_ffn", {"tasks": "rte,sentiment"}, "sentiment"),
        ("svd_primer", {"profile": "fast"}, "smoke"),
    ],
)
def test_bad_papermill_parameter_names_value(tmp_path, monkeypatch, notebook, parameters, expected):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("SVUTILS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{notebook}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"output_dir": str(tmp_path / "out"), **parameters},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(tmp_path),
        )
    message = str(raised.value.evalue)
    assert expected in message
    assert raised.value.ename.endswith("Error")
