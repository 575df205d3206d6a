"""Tests of the `python -m svutils run` runner: argument validation and notebook execution."""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from svutils import runner
from svutils.config import load_profile

PARAMETER_NAMES = ("profile", "n_bands", "tasks", "n_eval", "task_overrides", "output_dir")


def _write_notebook(path: Path, cells: list[str]) -> None:
    """Write a notebook whose first cell is the papermill parameters cell."""
    parameters = "\n".join(f"{name} = None" for name in PARAMETER_NAMES)
    notebook = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    notebook.cells = [first] + [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


PASSING_CELLS = [
    "import json, os",
    "json.dump({'parameters': {name: globals()[name] for name in "
    + repr(PARAMETER_NAMES)
    + "}, 'cwd': os.getcwd(), 'pythonpath': os.environ.get('PYTHONPATH', '')}, "
    "open('parameters.json', 'w'))",
]
FAILING_CELLS = [
    "x = 1",
    "raise ValueError('bad n_bands 0: expected an integer >= 1')",
    "open('after_failure.txt', 'w').write('should not run')",
]
SLOW_CELLS = ["import time", "time.sleep(60)"]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A repository root with three small notebooks under registry names."""
    _write_notebook(tmp_path / "notebooks" / "svd_primer.ipynb", PASSING_CELLS)
    _write_notebook(tmp_path / "notebooks" / "task_complexity.ipynb", FAILING_CELLS)
    _write_notebook(tmp_path / "notebooks" / "training_duration.ipynb", SLOW_CELLS)
    return tmp_path


@pytest.fixture()
def no_optional_writers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide svutils.report and svutils.charts, so the tests do not depend on them."""
    monkeypatch.setattr(runner, "_optional_function", lambda module, function: None)


def _run(root: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--profile",
        "smoke",
        "--root",
        str(root),
        "--no-build",
        "-p",
        "output_dir",
        str(root / "results"),
        *extra,
    ]


# ---------------------------------------------------------------------------------------
# Argument validation: exit status 2 and one error line, before anything runs.


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--profile", "nope"], "unknown profile 'nope'; valid profiles are original, paper, quick, smoke"),
        (["--only", "svd_primer", "intro"], "unknown notebook 'intro' in --only; valid notebooks are svd_primer"),
        (["-p", "n_band", "4"], "unknown field 'n_band' for -p; valid fields are model"),
        (["-p", "n_bands", "four"], "invalid value 'four' for -p n_bands: expected an integer >= 1, e.g. -p n_bands 10"),
        (["-p", "n_bands", "0"], "invalid n_bands 0: expected an integer >= 1"),
        (["-p", "controls", "maybe"], "invalid value 'maybe' for -p controls: expected true or false"),
        (["-p", "tasks", "rte,qnlx"], "invalid tasks item 'qnlx'"),
        (["-p", "epochs", "5"], "the list must include the last epoch (5)"),
        (["-p", "n_bands", "4", "-p", "n_bands", "5"], "-p n_bands is given twice"),
        (["--timeout", "0"], "invalid --timeout 0"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_main_rejects_invalid_arguments(root, capsys, arguments, expected):
    status = runner.main(["run", "--root", str(root), "--no-build", *arguments])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("error: ")
    assert expected in captured.err
    assert "Traceback" not in captured.err
    assert captured.err.count("\n") == 1
    assert not (root / "book").exists()


def test_main_suggests_close_field(root, capsys):
    runner.main(["run", "--root", str(root), "--no-build", "-p", "n_band", "4"])
    assert "did you mean 'n_bands'?" in capsys.readouterr().err


def test_main_rejects_missing_notebook_source(root, capsys):
    status = runner.main(_run(root, "--only", "why"))
    captured = capsys.readouterr()
    assert status == 2
    assert "notebook 'why' not found" in captured.err


def test_main_without_command_fails(capsys):
    assert runner.main([]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_main_help_returns_zero(capsys):
    assert runner.main(["run", "--help"]) == 0
    assert "--profile" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# Execution of real notebooks with papermill (each starts a python3 kernel).


@dataclass
class FinishedRun:
    """A run of the passing and the failing notebook, shared by the tests below."""

    root: Path
    status: int
    out: str
    err: str

    @property
    def generated(self) -> Path:
        return self.root / "book" / "_generated"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> FinishedRun:
    root = tmp_path_factory.mktemp("root")
    _write_notebook(root / "notebooks" / "svd_primer.ipynb", PASSING_CELLS)
    _write_notebook(root / "notebooks" / "task_complexity.ipynb", FAILING_CELLS)
    arguments = _run(
        root,
        "--only",
        "svd_primer",
        "task_complexity",
        "-p",
        "n_bands",
        "4",
        "-p",
        "tasks",
        "rte,qnli",
        "-p",
        "n_eval",
        "null",
        "-p",
        "task_overrides",
        '{"imdb": {"max_length": 100}}',
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "_optional_function", lambda module, function: None)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = runner.main(arguments)
    return FinishedRun(root, status, out.getvalue(), err.getvalue())


def test_run_exit_status_after_failure(finished_run):
    assert finished_run.status == 1
    assert "failed: task_complexity" in finished_run.err


def test_run_passes_parameters_as_values(finished_run):
    record = json.loads((finished_run.generated / "parameters.json").read_text())
    assert (finished_run.generated / "svd_primer.ipynb").is_file()
    assert record["parameters"] == {
        "profile": "smoke",
        "n_bands": 4,
        "tasks": ["rte", "qnli"],
        "n_eval": "null",
        "task_overrides": {"imdb": {"max_length": 100}},
        "output_dir": str(finished_run.root / "results"),
    }


def test_run_kernel_cwd_and_pythonpath(finished_run):
    record = json.loads((finished_run.generated / "parameters.json").read_text())
    assert Path(record["cwd"]).resolve() == finished_run.generated.resolve()
    assert record["pythonpath"].split(os.pathsep)[0] == str(finished_run.root.resolve())


def test_run_reports_failing_cell(finished_run):
    err = finished_run.err
    assert "task_complexity FAILED" in err
    assert "raised ValueError: bad n_bands 0: expected an integer >= 1" in err
    assert "cell 3 of the executed notebook (In [4])" in err
    assert "Traceback" not in err


def test_run_keeps_partial_notebook(finished_run):
    partial = finished_run.generated / "task_complexity.ipynb"
    assert f"partly executed notebook: {partial}" in finished_run.err
    assert partial.is_file()
    assert not (finished_run.generated / "after_failure.txt").exists()


def test_run_leaves_no_temporaries(finished_run):
    assert not list(finished_run.generated.glob(".*tmp*"))


def test_run_writes_run_times(finished_run):
    times = pd.read_csv(finished_run.root / "results" / "run_times.csv")
    assert list(times["notebook"]) == ["svd_primer", "task_complexity"]
    assert list(times["status"]) == ["ok", "failed"]
    assert (times["wall_s"] > 0).all()


def test_run_writes_run_info(finished_run):
    info = (finished_run.generated / "run_info.md").read_text()
    assert "- Profile: `smoke`" in info
    assert "-p n_bands 4 -p tasks rte,qnli -p n_eval null" in info
    assert "| svd_primer | ok |" in info
    assert "| rte | synthetic data from svutils.synthetic (not real text), eval split validation |" in info
    assert "transformers " in info


def test_run_writes_placeholder_findings(finished_run):
    findings = (finished_run.generated / "findings.md").read_text()
    assert "No results yet" in findings
    assert "python -m svutils run --profile smoke" in findings


def test_run_keeps_times_of_notebooks_not_rerun(root, capsys, no_optional_writers):
    earlier = "notebook,status,wall_s,finished_utc,profile\ntask_complexity,failed,3.5,2020-01-01T00:00:00+00:00,smoke\n"
    (root / "results").mkdir()
    (root / "results" / "run_times.csv").write_text(earlier)
    status = runner.main(_run(root, "--only", "svd_primer"))
    times = pd.read_csv(root / "results" / "run_times.csv")
    kept_row = times[times["notebook"] == "task_complexity"].iloc[0]

    assert status == 0
    assert list(times["notebook"]) == ["svd_primer", "task_complexity"]
    assert kept_row["finished_utc"] == "2020-01-01T00:00:00+00:00"
    assert kept_row["wall_s"] == 3.5


def test_run_timeout_stops_slow_cell(root, capsys, no_optional_writers):
    status = runner.main(_run(root, "--only", "training_duration", "--timeout", "2"))
    captured = capsys.readouterr()
    times = pd.read_csv(root / "results" / "run_times.csv")

    assert status == 1
    assert "training_duration FAILED" in captured.err
    assert "CellTimeoutError: A cell timed out" in captured.err
    assert times.loc[0, "wall_s"] < 50


# ---------------------------------------------------------------------------------------
# Optional writers from other modules.


def test_findings_uses_report_writer(root, monkeypatch):
    calls = []

    def fake_writer(config, path):
        calls.append((config.profile, path))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Findings\n")

    monkeypatch.setattr(
        runner, "_optional_function", lambda module, function: fake_writer if function == "write_findings" else None
    )
    plan = runner.RunPlan("smoke", {}, [], root, load_profile("smoke"))
    path = runner.write_findings(plan)
    assert calls == [("smoke", root / "book" / "_generated" / "findings.md")]
    assert path.read_text() == "# Findings\n"


def test_findings_placeholder_keeps_existing(root, no_optional_writers):
    plan = runner.RunPlan("smoke", {}, [], root, load_profile("smoke"))
    existing = root / "book" / "_generated" / "findings.md"
    existing.parent.mkdir(parents=True)
    existing.write_text("earlier findings\n")
    runner.write_findings(plan)
    assert existing.read_text() == "earlier findings\n"


def test_optional_function_absent_module():
    assert runner._optional_function("svutils.no_such_module", "anything") is None


def test_optional_function_absent_attribute():
    assert runner._optional_function("svutils.io", "no_such_function") is None


def test_data_source_describes_hub_and_local(monkeypatch):
    monkeypatch.delenv("SVUTILS_DATA_DIR", raising=False)
    hub = load_profile("quick")
    local = load_profile("quick", data_dir="/data/tasks")
    mnli_validation = load_profile("original")
    assert runner.describe_data_source(hub, "rte") == "Hugging Face hub dataset glue/rte, eval split validation"
    assert runner.describe_data_source(hub, "imdb") == "Hugging Face hub dataset imdb, eval split test"
    assert runner.describe_data_source(local, "qnli") == "local files in /data/tasks/qnli/, eval split validation"
    assert runner.describe_data_source(mnli_validation, "mnli").endswith("eval split validation")


# ---------------------------------------------------------------------------------------
# Overrides for fields a notebook does not name, data checks and pages of earlier runs.


@pytest.fixture()
def root_with_overrides(tmp_path: Path) -> Path:
    """A root whose notebook declares `overrides = {}` besides the named parameters."""
    path = tmp_path / "notebooks" / "svd_primer.ipynb"
    _write_notebook(path, PASSING_CELLS)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].source += "\noverrides = {}"
    nbformat.write(notebook, path)
    return tmp_path


def _plan(root: Path, *extra: str) -> runner.RunPlan:
    arguments = runner.build_parser().parse_args(_run(root, "--only", "svd_primer", *extra))
    return runner.prepare_run(arguments)


def test_notebook_parameters_reads_tagged_cell(root_with_overrides):
    names = runner.notebook_parameters(root_with_overrides / "notebooks" / "svd_primer.ipynb")
    assert names == {*PARAMETER_NAMES, "overrides"}


def test_notebook_parameters_requires_tag(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("profile = 'quick'")]
    nbformat.write(notebook, tmp_path / "untagged.ipynb")
    with pytest.raises(runner.UsageError, match="no code cell tagged 'parameters'"):
        runner.notebook_parameters(tmp_path / "untagged.ipynb")


def test_notebook_arguments_split_named_and_other(root_with_overrides):
    plan = _plan(root_with_overrides, "-p", "n_bands", "4", "-p", "learning_rate", "0.001", "-p", "warmup_ratio", "0.2")
    arguments = runner.notebook_arguments(plan, "svd_primer")
    assert arguments["n_bands"] == 4
    assert arguments["overrides"] == {"learning_rate": 0.001, "warmup_ratio": 0.2}
    assert "learning_rate" not in arguments


def test_notebook_arguments_without_other_fields(root_with_overrides):
    arguments = runner.notebook_arguments(_plan(root_with_overrides, "-p", "n_bands", "4"), "svd_primer")
    assert "overrides" not in arguments


def test_main_rejects_field_notebook_ignores(root, capsys):
    status = runner.main(_run(root, "--only", "svd_primer", "-p", "learning_rate", "0.05"))
    err = capsys.readouterr().err
    assert status == 2
    assert "notebook svd_primer does not take -p learning_rate" in err
    assert "its named parameters are" in err


def test_main_suggests_close_notebook(root, capsys):
    assert runner.main(_run(root, "--only", "early-ffn")) == 2
    assert "did you mean 'early_ffn'?" in capsys.readouterr().err


def test_check_data_names_missing_task(root_with_overrides, tmp_path):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    plan = _plan(root_with_overrides, "-p", "data_dir", str(empty), "-p", "tasks", "rte")
    problems = runner.check_data(plan)
    assert len(problems) == 1
    assert problems[0].startswith("task rte: ")
    assert str(empty) in problems[0]


def test_check_data_skips_synthetic(root_with_overrides):
    assert runner.check_data(_plan(root_with_overrides)) == []


def test_run_stops_before_notebooks_without_data(root_with_overrides, tmp_path, capsys):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    status = runner.main(_run(root_with_overrides, "--only", "svd_primer", "-p", "data_dir", str(empty), "-p", "tasks", "rte"))
    err = capsys.readouterr().err
    assert status == 1
    assert "no notebook was started" in err
    assert not (root_with_overrides / "book" / "_generated" / "svd_primer.ipynb").exists()


def _write_page(folder: Path, name: str, profile: str, exception: bool = False) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {"parameters": {"profile": profile}, "exception": exception}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / f"{name}.ipynb")


def test_earlier_pages_flags_other_profile_and_failure(root_with_overrides):
    plan = _plan(root_with_overrides)
    _write_page(plan.generated_dir, "task_complexity", "quick")
    _write_page(plan.generated_dir, "training_duration", "smoke", exception=True)
    _write_page(plan.generated_dir, "matrix_specific", "smoke")
    notes = runner.earlier_pages(plan)
    assert any(note.startswith("task_complexity: the page comes from profile 'quick', not 'smoke'") for note in notes)
    assert any(note.startswith("training_duration: the page shows a failed execution") for note in notes)
    assert not any(note.startswith("matrix_specific") for note in notes)
    assert any(note.startswith("why: no executed page yet") for note in notes)


def test_prepare_run_makes_path_fields_absolute(root_with_overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    plan = _plan(root_with_overrides, "-p", "data_dir", "data", "-p", "cache_dir", "cache")
    assert plan.overrides["data_dir"] == str(tmp_path / "data")
    assert plan.overrides["cache_dir"] == str(tmp_path / "cache")


def test_prepare_run_keeps_synthetic_data_dir(root_with_overrides):
    assert _plan(root_with_overrides, "-p", "data_dir", "synthetic").overrides["data_dir"] == "synthetic"


def test_kernel_environment_absolute_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SVUTILS_DATA_DIR", "data")
    monkeypatch.delenv("SVUTILS_CACHE_DIR", raising=False)
    with runner._kernel_environment(tmp_path / "root"):
        assert os.environ["SVUTILS_DATA_DIR"] == str(tmp_path / "data")
        assert "SVUTILS_CACHE_DIR" not in os.environ
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "root")
    assert os.environ["SVUTILS_DATA_DIR"] == "data"
