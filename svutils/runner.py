"""Command-line runner: execute the book's notebooks with papermill, then build the book.

`python -m svutils run [--profile NAME] [--only NOTEBOOK ...] [-p NAME VALUE ...]
[--root DIR] [--no-build] [--timeout SECONDS]` validates the profile and every override
before any notebook starts. It then executes `<root>/notebooks/<name>.ipynb` into
`<root>/book/_generated/<name>.ipynb`, writes `run_info.md` and `findings.md` beside them,
and builds the book with `jupyter-book build <root>`.

Exit status: 0 when everything succeeded, 1 when a notebook, the findings or the build
failed, and 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import difflib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd

from svutils.config import (
    NOTEBOOKS,
    OVERRIDABLE_FIELDS,
    SYNTHETIC,
    ConfigError,
    ExperimentConfig,
    available_profiles,
    describe_overrides,
    load_profile,
    parse_cli_value,
)
from svutils.io import atomic_write_text, default_permissions

DEFAULT_PROFILE = "quick"
RUN_TIMES_NAME = "run_times.csv"
RUN_TIMES_COLUMNS = ("notebook", "status", "wall_s", "finished_utc", "profile")
BUILD_LOG_TAIL = 40
OVERRIDES_PARAMETER = "overrides"
"""Notebook parameter (a dict) that carries `-p` fields the notebook does not declare by name."""
PATH_VARIABLES = ("SVUTILS_DATA_DIR", "SVUTILS_CACHE_DIR")
"""Environment variables that name folders, made absolute for kernels (see `_kernel_environment`)."""
PATH_FIELDS = ("data_dir", "cache_dir", "output_dir")
"""Config fields that name folders; relative `-p` values are made absolute in `prepare_run`."""
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]
"""Silence the kernel's own log: its TCP warning and the KeyboardInterrupt line it prints
at every normal shutdown read like failures. Cell errors still reach the notebook."""
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class UsageError(Exception):
    """Invalid command-line arguments; main() prints the message and returns 2."""


@dataclass
class RunPlan:
    """Everything a run needs, validated before the first notebook starts.

    Attributes:
        profile: profile name.
        overrides: parsed `-p` values by field name, in command-line order.
        notebooks: notebook names to execute, in book order.
        root: repository root with `notebooks/` and the book's configuration.
        config: the profile's config with the overrides (no notebook section applied).
        build: whether to run `jupyter-book build` afterwards.
        timeout_s: maximum seconds per cell, or None for no limit.
        notebook_configs: each notebook's config (its profile section and the overrides
            applied), filled by `prepare_run` to catch errors before execution.
        notebook_parameter_names: names each notebook's parameters cell assigns, read once
            by `prepare_run`.
    """

    profile: str
    overrides: dict[str, Any]
    notebooks: list[str]
    root: Path
    config: ExperimentConfig
    build: bool = True
    timeout_s: int | None = None
    notebook_configs: dict[str, ExperimentConfig] = field(default_factory=dict)
    notebook_parameter_names: dict[str, set[str]] = field(default_factory=dict)

    @property
    def generated_dir(self) -> Path:
        """Folder of the executed notebooks and generated pages: `<root>/book/_generated`."""
        return self.root / "book" / "_generated"

    def source(self, notebook: str) -> Path:
        """Return the source notebook path `<root>/notebooks/<name>.ipynb`."""
        return self.root / "notebooks" / f"{notebook}.ipynb"


@dataclass
class NotebookResult:
    """Outcome of one notebook: status "ok" or "failed", wall time in seconds, the output
    notebook (None when nothing was written) and the error text of a failure."""

    notebook: str
    status: str
    wall_s: float
    output: Path | None
    error: str | None = None


# ---------------------------------------------------------------------------------------
# Arguments.


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Build the `python -m svutils` argument parser."""
    parser = _ArgumentParser(prog="python -m svutils", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    commands.required = True
    run = commands.add_parser(
        "run",
        help="execute the notebooks and build the book",
        description="Execute the notebooks with papermill, write the run record and build the book.",
    )
    run.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"profile from svutils/profiles/ (default {DEFAULT_PROFILE}): "
        + ", ".join(available_profiles()),
    )
    run.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NOTEBOOK",
        help="execute only these notebooks (default all): " + ", ".join(NOTEBOOKS),
    )
    run.add_argument(
        "-p",
        dest="parameters",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a config field for every notebook, e.g. -p n_bands 4 -p tasks rte,qnli; "
        "'null' sets an optional field to None. Fields: " + ", ".join(OVERRIDABLE_FIELDS),
    )
    run.add_argument(
        "--root",
        type=Path,
        default=None,
        help="repository root with notebooks/ and the book (default: the folder that contains svutils)",
    )
    run.add_argument("--no-build", action="store_true", help="skip `jupyter-book build`")
    run.add_argument(
        "--timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="maximum run time of one notebook cell in seconds (default: no limit)",
    )
    return parser


def _default_root() -> Path:
    return Path(__file__).resolve().parent.parent


def prepare_run(args: argparse.Namespace) -> RunPlan:
    """Validate the parsed arguments and build the RunPlan; raises UsageError or ConfigError."""
    profiles = available_profiles()
    if args.profile not in profiles:
        raise UsageError(
            f"unknown profile {args.profile!r}; valid profiles are {', '.join(profiles)} "
            "(YAML files in svutils/profiles/)"
        )
    selected = list(dict.fromkeys(args.only or NOTEBOOKS))
    unknown = [name for name in selected if name not in NOTEBOOKS]
    if unknown:
        close = difflib.get_close_matches(unknown[0].replace("-", "_"), NOTEBOOKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(
            f"unknown notebook {unknown[0]!r} in --only{hint}; valid notebooks are {', '.join(NOTEBOOKS)}"
        )
    notebooks = [name for name in NOTEBOOKS if name in selected]
    if args.timeout is not None and args.timeout < 1:
        raise UsageError(f"invalid --timeout {args.timeout}: give a number of seconds >= 1")

    overrides: dict[str, Any] = {}
    for name, text in args.parameters:
        if name in overrides:
            raise UsageError(f"-p {name} is given twice; give each field once")
        value = parse_cli_value(name, text)
        # Kernels run in book/_generated, so a relative folder is resolved against the runner's folder.
        if name in PATH_FIELDS and isinstance(value, str) and value != SYNTHETIC:
            value = absolute_path(value)
        overrides[name] = value

    root = (args.root or _default_root()).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"--root {str(root)!r} is not a folder")
    config = load_profile(args.profile, **overrides)
    plan = RunPlan(
        profile=args.profile,
        overrides=overrides,
        notebooks=notebooks,
        root=root,
        config=config,
        build=not args.no_build,
        timeout_s=args.timeout,
    )
    for notebook in notebooks:
        if not plan.source(notebook).is_file():
            raise UsageError(f"notebook {notebook!r} not found: {plan.source(notebook)} does not exist")
        declared = notebook_parameters(plan.source(notebook))
        plan.notebook_parameter_names[notebook] = declared
        undeclared = [name for name in overrides if name not in declared]
        if undeclared and OVERRIDES_PARAMETER not in declared:
            raise UsageError(
                f"notebook {notebook} does not take -p {undeclared[0]}: it has no {OVERRIDES_PARAMETER!r} "
                f"parameter, and its named parameters are {', '.join(sorted(declared))}. Drop -p "
                f"{undeclared[0]}, or add `{OVERRIDES_PARAMETER} = {{}}` to its parameters cell and pass it to load_profile"
            )
        try:
            plan.notebook_configs[notebook] = load_profile(args.profile, notebook=notebook, **overrides)
        except ConfigError as error:
            raise type(error)(f"notebook {notebook}: {error}") from None
    return plan


# ---------------------------------------------------------------------------------------
# Notebook execution.


@contextlib.contextmanager
def _kernel_environment(root: Path) -> Iterator[None]:
    """Set the environment kernels start with, and restore it afterwards.

    `root` goes first on PYTHONPATH, so kernels import svutils from it. Kernels run in
    `book/_generated`, so relative `$SVUTILS_DATA_DIR` and `$SVUTILS_CACHE_DIR` values
    are made absolute against the runner's working folder, where the user meant them.
    """
    previous = {name: os.environ.get(name) for name in ("PYTHONPATH", *PATH_VARIABLES)}
    pythonpath = previous["PYTHONPATH"]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root)] + ([pythonpath] if pythonpath else []))
    for name in PATH_VARIABLES:
        if previous[name]:
            os.environ[name] = absolute_path(previous[name])
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def absolute_path(value: str) -> str:
    """Return `value` with ~ expanded and made absolute against the current working folder."""
    return str(Path(value).expanduser().absolute())


def notebook_parameters(path: Path) -> set[str]:
    """Return the names assigned in the notebook's cell tagged `parameters`.

    Raises UsageError when the notebook has no such cell, because papermill would then
    insert the values without replacing any defaults.
    """
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell.get("source", []))
            names: set[str] = set()
            for node in ast.parse(source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names.update(target.id for target in targets if isinstance(target, ast.Name))
            return names
    raise UsageError(f"{path} has no code cell tagged 'parameters'; tag the cell that sets the notebook's defaults")


def notebook_arguments(plan: RunPlan, notebook: str) -> dict[str, Any]:
    """Return the papermill parameters for one notebook.

    Overrides the notebook declares by name are passed as themselves, and the rest go
    into its `overrides` dict, which the notebook hands to `load_profile`. So every
    config field set with `-p` reaches every notebook.
    """
    declared = plan.notebook_parameter_names.get(notebook)
    if declared is None:
        declared = notebook_parameters(plan.source(notebook))
    parameters: dict[str, Any] = {"profile": plan.profile}
    rest: dict[str, Any] = {}
    for name, value in plan.overrides.items():
        if name in declared:
            parameters[name] = value
        else:
            rest[name] = value
    if rest:
        parameters[OVERRIDES_PARAMETER] = rest
    return parameters


def _first_line(text: str) -> str:
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def execute_notebook(plan: RunPlan, notebook: str) -> NotebookResult:
    """Execute one notebook with papermill into `book/_generated/<name>.ipynb`.

    The output is written under a temporary name and renamed at the end, so the target
    is either the previous output or a complete new one. A failed notebook is renamed into
    place too (the partly executed notebook shows the error), and the result carries the
    failing cell's index, the exception name and its message.
    """
    import papermill

    target = plan.generated_dir / f"{notebook}.ipynb"
    plan.generated_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{notebook}.", suffix=".tmp.ipynb", dir=plan.generated_dir)
    os.close(handle)
    temp = Path(temp_name)
    default_permissions(temp)
    parameters = notebook_arguments(plan, notebook)
    error: str | None = None
    start = time.perf_counter()
    try:
        with _kernel_environment(plan.root):
            papermill.execute_notebook(
                str(plan.source(notebook)),
                str(temp),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(plan.generated_dir),
                progress_bar=False,
                log_output=False,
                execution_timeout=plan.timeout_s,
                extra_arguments=KERNEL_ARGUMENTS,
            )
    except papermill.PapermillExecutionError as failure:
        error = (
            f"cell {failure.cell_index} of the executed notebook (In [{failure.exec_count}]) raised "
            f"{failure.ename}: {failure.evalue}"
        )
    except KeyboardInterrupt:
        temp.unlink(missing_ok=True)
        raise
    except Exception as failure:  # kernel death, cell timeout, unreadable notebook
        message = _first_line(str(failure)) or "no message"
        error = f"execution stopped with {type(failure).__name__}: {message}"
    wall_s = time.perf_counter() - start
    if temp.is_file() and temp.stat().st_size > 0:
        os.replace(temp, target)
        output: Path | None = target
    else:
        temp.unlink(missing_ok=True)
        output = None
    status = "ok" if error is None else "failed"
    return NotebookResult(notebook, status, wall_s, output, error)


# ---------------------------------------------------------------------------------------
# Run record: run_times.csv, run_info.md and findings.md.


def update_run_times(path: Path, profile: str, results: Sequence[NotebookResult]) -> pd.DataFrame:
    """Merge this run's wall times into `path` (CSV) and return the table.

    Rows of notebooks that did not run this time are kept, so a run with --only still
    reports the times of earlier runs. Rows are in book order.
    """
    finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    new_rows = pd.DataFrame(
        [
            {
                "notebook": result.notebook,
                "status": result.status,
                "wall_s": round(result.wall_s, 1),
                "finished_utc": finished,
                "profile": profile,
            }
            for result in results
        ],
        columns=list(RUN_TIMES_COLUMNS),
    )
    if path.is_file():
        previous = pd.read_csv(path)
        missing = [column for column in RUN_TIMES_COLUMNS if column not in previous.columns]
        if missing:
            raise ValueError(
                f"{path} lacks the columns {missing}; delete the file to start a new record"
            )
        previous = previous[~previous["notebook"].isin(new_rows["notebook"])]
        table = pd.concat([previous[list(RUN_TIMES_COLUMNS)], new_rows], ignore_index=True)
    else:
        table = new_rows
    order = {name: index for index, name in enumerate(NOTEBOOKS)}
    table = table.sort_values("notebook", key=lambda names: names.map(order).fillna(len(order)))
    table = table.reset_index(drop=True)
    atomic_write_text(path, table.to_csv(index=False))
    return table


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _display_path(path: Path | str) -> str:
    """Show a path with the home folder as ~, so the book does not expose it."""
    text = str(path)
    home = str(Path.home())
    if text == home or text.startswith(home + os.sep):
        return "~" + text[len(home):]
    return text


def describe_data_source(config: ExperimentConfig, task: str) -> str:
    """Describe where a task's data comes from, for the provenance table of run_info.md."""
    from svutils.tasks import get_task

    spec = get_task(task)
    split = config.for_task(task).eval_split or spec.eval_split
    if config.data_dir == SYNTHETIC:
        return f"synthetic data from svutils.synthetic (not real text), eval split {split}"
    folder = config.data_dir or os.environ.get("SVUTILS_DATA_DIR")
    if folder:
        return f"local files in {_display_path(folder)}/{task}/, eval split {split}"
    dataset = spec.hub_path if spec.hub_config is None else f"{spec.hub_path}/{spec.hub_config}"
    return f"Hugging Face hub dataset {dataset}, eval split {split}"


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _first_config_per_task(configs: Iterable[ExperimentConfig]) -> dict[str, ExperimentConfig]:
    """Map each task to the first config that lists it.

    Notebook sections may select other tasks than the profile's defaults, so a task is
    described and checked with the first config that contains it.
    """
    config_of_task: dict[str, ExperimentConfig] = {}
    for config in configs:
        for task in config.tasks:
            config_of_task.setdefault(task, config)
    return config_of_task


def write_run_info(plan: RunPlan, times: pd.DataFrame, notes: Sequence[str] = ()) -> Path:
    """Write `book/_generated/run_info.md`: date, settings, versions, data and wall times.

    `notes` describe pages from earlier runs that differ from this one (see `earlier_pages`).
    """
    config_of_task = _first_config_per_task([plan.config, *plan.notebook_configs.values()])
    data_rows = pd.DataFrame(
        [{"task": task, "source": describe_data_source(config, task)} for task, config in config_of_task.items()]
    )
    overrides = describe_overrides(plan.overrides) or "none"
    lines = [
        "# Run information",
        "",
        f"- Date (UTC): {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
        f"- Profile: `{plan.profile}`",
        f"- Overrides: `{overrides}`",
        f"- Config fingerprint: `{plan.config.fingerprint()}`",
        f"- Python {platform.python_version()}, torch {_package_version('torch')}, "
        f"transformers {_package_version('transformers')}",
        f"- CPUs: {os.cpu_count()}; platform: {platform.platform()}",
        "",
        "## Data",
        "",
        _markdown_table(data_rows),
        "",
        "## Wall time per notebook",
        "",
        "Times in seconds. Rows of notebooks not executed in the latest run come from earlier runs",
        "(see the finished_utc column).",
        "",
        _markdown_table(times) if len(times) else "No notebook has run yet.",
        "",
    ]
    if notes:
        lines += ["## Pages from earlier runs", "", "This run did not replace these pages, and they differ from it:", ""]
        lines += [f"- {note}" for note in notes] + [""]
    path = plan.generated_dir / "run_info.md"
    atomic_write_text(path, "\n".join(lines))
    return path


PLACEHOLDER_FINDINGS = """# Findings

No results yet. Run the notebooks to produce them:

    python -m svutils run --profile {profile}
"""


def write_findings(plan: RunPlan) -> Path:
    """Write `findings.md` with `svutils.report.write_findings`, else a placeholder if absent."""
    path = plan.generated_dir / "findings.md"
    writer = _optional_function("svutils.report", "write_findings")
    if writer is not None:
        writer(plan.config, path)
    elif not path.is_file():
        atomic_write_text(path, PLACEHOLDER_FINDINGS.format(profile=plan.profile))
    return path


def _optional_function(module_name: str, function_name: str):
    """Return module_name.function_name, or None when the module or the function is absent."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        return None
    return getattr(module, function_name, None)


def check_data(plan: RunPlan) -> list[str]:
    """Load the evaluation split of every task the run needs; return one message per failure.

    This runs before the first notebook, so a missing data folder or hub access fails in
    seconds with one message per task instead of inside every notebook. Synthetic data
    is generated, so it needs no check. Loading from the hub downloads the split, which
    the notebooks would need anyway.
    """
    from svutils.data import DataError, load_split

    problems = []
    for task, config in _first_config_per_task(plan.notebook_configs.values()).items():
        if config.data_dir == SYNTHETIC:
            continue
        task_config = config.for_task(task)
        try:
            load_split(task, task_config.eval_split, data_dir=task_config.resolved_data_dir())
        except DataError as error:
            problems.append(f"task {task}: {error}")
    return problems


def earlier_pages(plan: RunPlan) -> list[str]:
    """Describe generated pages this run does not replace that differ from it.

    A page is reported when it was executed with another profile or when its last
    execution failed, because the book build includes every page in `book/_generated/`.
    """
    notes = []
    for notebook in NOTEBOOKS:
        if notebook in plan.notebooks:
            continue
        page = plan.generated_dir / f"{notebook}.ipynb"
        if not page.is_file():
            notes.append(f"{notebook}: no executed page yet; run --only {notebook} to add it")
            continue
        try:
            metadata = json.loads(page.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
        except (OSError, ValueError) as error:
            notes.append(f"{notebook}: the page {page} cannot be read ({error}); run --only {notebook} again")
            continue
        profile = metadata.get("parameters", {}).get("profile")
        if metadata.get("exception"):
            notes.append(f"{notebook}: the page shows a failed execution; run --only {notebook} again")
        elif profile != plan.profile:
            notes.append(
                f"{notebook}: the page comes from profile {profile!r}, not {plan.profile!r}; "
                f"run --only {notebook} to bring it up to date"
            )
    return notes


# ---------------------------------------------------------------------------------------
# Book build.


def build_book(root: Path) -> bool:
    """Run `jupyter-book build <root>` and print its summary, or its last lines on failure."""
    executable = shutil.which("jupyter-book")
    if executable is None:
        print("error: jupyter-book not found on PATH; install the packages of requirements.txt", file=sys.stderr)
        return False
    print(f"building the book: jupyter-book build {root}", flush=True)
    completed = subprocess.run(
        [executable, "build", str(root)], capture_output=True, text=True, cwd=root, check=False
    )
    lines = _ANSI_ESCAPE.sub("", completed.stdout + completed.stderr).splitlines()
    if completed.returncode != 0:
        print(f"error: jupyter-book build failed with exit status {completed.returncode}; last lines:", file=sys.stderr)
        for line in lines[-BUILD_LOG_TAIL:]:
            print(f"  {line}", file=sys.stderr)
        return False
    for line in lines:
        if line.strip().startswith("build succeeded") or "Finished generating HTML" in line:
            print(f"  {line.strip()}")
    print(f"book: {root / '_build' / 'html' / 'index.html'}")
    return True


# ---------------------------------------------------------------------------------------
# Entry point.


def run(plan: RunPlan) -> int:
    """Execute the planned notebooks, write the run record, build the book; return the exit status."""
    results: list[NotebookResult] = []
    total = len(plan.notebooks)
    problems = check_data(plan)
    if problems:
        print("error: the task data cannot be loaded, so no notebook was started:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"profile {plan.profile}: {total} notebook(s) -> {plan.generated_dir}", flush=True)
    for position, notebook in enumerate(plan.notebooks, start=1):
        print(f"[{position}/{total}] {notebook} ...", flush=True)
        result = execute_notebook(plan, notebook)
        results.append(result)
        if result.status == "ok":
            print(f"[{position}/{total}] {notebook} ok in {result.wall_s:.1f} s", flush=True)
        else:
            where = result.output if result.output else "no output notebook was written"
            print(
                f"[{position}/{total}] {notebook} FAILED after {result.wall_s:.1f} s: {result.error}\n"
                f"    partly executed notebook: {where}",
                file=sys.stderr,
                flush=True,
            )

    failed = [result.notebook for result in results if result.status != "ok"]
    notes = earlier_pages(plan)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    times_path = plan.config.resolved_output_dir() / RUN_TIMES_NAME
    times = update_run_times(times_path, plan.profile, results)
    info_path = write_run_info(plan, times, notes)
    print(f"run record: {info_path} (times in {times_path})")
    try:
        write_findings(plan)
    except Exception as error:  # the report is another module's code; keep the run going
        print(f"error: writing findings.md failed with {type(error).__name__}: {error}", file=sys.stderr)
        failed.append("findings")

    if plan.build and not build_book(plan.root):
        failed.append("book build")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the command and return the exit status.

    The status is 0 on success, 1 when a notebook, the findings or the build failed, and
    2 for invalid arguments, which print one `error: ...` line and no traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_request:  # --help
        return int(exit_request.code or 0)
    try:
        plan = prepare_run(args)
    except (UsageError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run(plan)
