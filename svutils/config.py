"""Experiment configuration: the ExperimentConfig dataclass, YAML profiles and CLI values.

A profile is a YAML file in `svutils/profiles/` with a `defaults:` mapping of
ExperimentConfig fields and an optional `notebooks:` mapping of notebook name to field
overrides. `load_profile` applies the profile's defaults, then the notebook's section, then
keyword overrides, and validates the result. `parse_cli_value` converts the strings of
`python -m svutils run -p NAME VALUE` into field values.

Every invalid value raises ConfigError (a ValueError) or ConfigTypeError (also a
TypeError). The message names the field, the value and a valid example.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from svutils.io import default_cache_dir, fingerprint as fingerprint_value

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Folder that contains the svutils package; the default output goes to `REPO_ROOT/results`."""

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
"""Folder of the profile YAML files (package data)."""

NOTEBOOKS: tuple[str, ...] = (
    "svd_primer",
    "task_complexity",
    "training_duration",
    "matrix_specific",
    "early_ffn",
    "why",
)
"""Notebook names in book order; profile `notebooks:` sections may use only these."""

STUDY_TASKS: tuple[str, ...] = ("imdb", "rte", "qnli", "qqp", "mnli")
"""The five tasks of the study, the default of `ExperimentConfig.tasks`."""

FALLBACK_TASKS: tuple[str, ...] = ("imdb", "rte", "qnli", "qqp", "mnli", "sst2", "mrpc", "cola")
"""Valid task names when `svutils.tasks` cannot be imported (its `TASKS` keys win otherwise)."""

KINDS: tuple[str, ...] = ("q", "k", "v", "o", "ffn_in", "ffn_out")
"""Matrix kinds, the same as `svutils.models.KINDS` (not imported here, to avoid loading torch)."""

KIND_ALIASES: dict[str, tuple[str, ...]] = {
    "attn": ("q", "k", "v", "o"),
    "ffn": ("ffn_in", "ffn_out"),
    "all": KINDS,
}
"""Group names accepted in `kinds`, expanded when the config is built."""

BAND_CONVENTIONS: tuple[str, ...] = ("balanced", "floor")
"""Valid values of `band_convention`, the rules that split singular values into bands (see svutils.svd)."""

TASK_OVERRIDE_FIELDS: tuple[str, ...] = (
    "n_train",
    "n_eval",
    "max_length",
    "epochs",
    "learning_rate",
    "batch_size",
    "eval_split",
)
"""Fields that `task_overrides` may set per task."""

SYNTHETIC = "synthetic"
"""The `data_dir` value that selects the generated smoke data of svutils.synthetic."""

CLEAR = "null"
"""Override value that sets an optional field to None.

A None override means "keep the profile's value", so clearing a field needs a value of
its own. ExperimentConfig reads the strings "null" and "none" (any case) as None in
optional fields, and "all" as None in n_train and n_eval.
"""

_CLEAR_WORDS = ("null", "none")
_SEED_LIMIT = 2**32  # numpy.random.seed accepts 0 .. 2**32 - 1
_RESULT_NEUTRAL_FIELDS = ("profile", "output_dir", "cache_dir")


class ConfigError(ValueError):
    """An invalid configuration value, profile or field name. The message names the value and the fix."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value of the wrong type, such as a string where an int is expected."""


# ---------------------------------------------------------------------------------------
# Field specifications and validation of single values.


@dataclass(frozen=True)
class FieldSpec:
    """Type and range of one ExperimentConfig field, used for validation and CLI parsing.

    Attributes:
        kind: value type: "text", "path", "choice", "int", "float", "bool", "names",
            "ints", "layer_groups" or "task_overrides".
        example: a valid value as written on the command line after `-p NAME`.
        optional: whether None (or the strings "null" and "none") is valid.
        low, high: inclusive bounds for numbers and list items; None means unbounded.
        low_exclusive: whether `low` itself is invalid (learning_rate > 0).
        high_exclusive: whether `high` itself is invalid (warmup_ratio < 1).
        choices: valid names for "choice" and "names", or a function returning them.
        aliases: names that expand into several choices (`kinds`: "attn", "ffn", "all").
        all_means_none: whether the string "all" is read as None (n_train, n_eval).
    """

    kind: str
    example: str
    optional: bool = False
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    high_exclusive: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    aliases: Mapping[str, tuple[str, ...]] | None = None
    all_means_none: bool = False

    def valid_choices(self) -> tuple[str, ...]:
        """Return the valid names of a "choice" or "names" field."""
        if callable(self.choices):
            return self.choices()
        return self.choices or ()

    def expected(self) -> str:
        """Describe the valid values in words, for error messages."""
        words = {
            "text": "a non-empty string",
            "path": "a folder path",
            "bool": "true or false",
            "layer_groups": "a mapping of group name to layer indices or a range such as '0-3'",
            "task_overrides": (
                "a mapping of task name to a mapping of "
                + ", ".join(TASK_OVERRIDE_FIELDS)
                + " to values"
            ),
        }
        if self.kind in words:
            text = words[self.kind]
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.valid_choices())
        elif self.kind == "names":
            names = list(self.valid_choices()) + list(self.aliases or ())
            text = "a non-empty list of distinct names from " + ", ".join(names)
        elif self.kind in ("int", "float"):
            text = ("an integer" if self.kind == "int" else "a number") + self._bounds_text()
        else:  # "ints"
            text = "a non-empty list of distinct integers" + self._bounds_text()
        if self.optional:
            text += " or null"
        return text

    def _bounds_text(self) -> str:
        if self.low is not None and self.high is not None:
            opening = "(" if self.low_exclusive else "["
            closing = ")" if self.high_exclusive else "]"
            return f" in {opening}{_format_number(self.low)}, {_format_number(self.high)}{closing}"
        if self.low is not None:
            return (" > " if self.low_exclusive else " >= ") + _format_number(self.low)
        if self.high is not None:
            return f" <= {_format_number(self.high)}"
        return ""


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def valid_task_names() -> tuple[str, ...]:
    """Return the valid task names: the keys of `svutils.tasks.TASKS`, else FALLBACK_TASKS."""
    try:
        from svutils import tasks as tasks_module
    except ModuleNotFoundError as error:
        if error.name != "svutils.tasks":
            raise
        return FALLBACK_TASKS
    return tuple(tasks_module.TASKS)


def _invalid(name: str, value: Any, spec: FieldSpec, problem: str | None = None) -> ConfigError:
    reason = f"{problem}; expected" if problem else "expected"
    return ConfigError(
        f"invalid {name} {value!r}: {reason} {spec.expected()}, e.g. {spec.example}"
    )


def _wrong_type(name: str, value: Any, spec: FieldSpec, hint: str = "") -> ConfigTypeError:
    return ConfigTypeError(
        f"invalid {name} {value!r} of type {type(value).__name__}: expected {spec.expected()}, "
        f"e.g. {spec.example}{hint}"
    )


def _is_clear_word(value: Any, spec: FieldSpec) -> bool:
    if not isinstance(value, str):
        return False
    word = value.strip().lower()
    return word in _CLEAR_WORDS or (spec.all_means_none and word == "all")


def _check_int(name: str, value: Any, spec: FieldSpec) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = ""
        if isinstance(value, float) and value.is_integer():
            hint = f" (write {int(value)} without a decimal point)"
        raise _wrong_type(name, value, spec, hint)
    value = int(value)
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        raise _invalid(name, value, spec)
    return value


def _check_float(name: str, value: Any, spec: FieldSpec) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = ""
        if isinstance(value, str):
            hint = " (a number, not a string; in YAML write 1.0e-3 rather than 1e-3)"
        raise _wrong_type(name, value, spec, hint)
    value = float(value)
    if not math.isfinite(value):
        raise _invalid(name, value, spec, "the value is not finite")
    too_low = spec.low is not None and (
        value <= spec.low if spec.low_exclusive else value < spec.low
    )
    too_high = spec.high is not None and (
        value >= spec.high if spec.high_exclusive else value > spec.high
    )
    if too_low or too_high:
        raise _invalid(name, value, spec)
    return value


def _split_list_text(name: str, value: str, spec: FieldSpec) -> list:
    """Read a list given as text: a JSON or YAML list, or comma-separated items."""
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = yaml.load(text, Loader=_ProfileLoader)
        except yaml.YAMLError as error:
            raise _invalid(name, value, spec, f"the list does not parse ({error.problem})") from None
        if not isinstance(parsed, list):
            raise _invalid(name, value, spec)
        return parsed
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise _invalid(name, value, spec, "the list has an empty item")
    return items


def _check_names(name: str, value: Any, spec: FieldSpec) -> list[str]:
    if isinstance(value, str):
        value = _split_list_text(name, value, spec)
    if not isinstance(value, (list, tuple)):
        raise _wrong_type(name, value, spec)
    choices = spec.valid_choices()
    aliases = spec.aliases or {}
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _wrong_type(f"item of {name}", item, spec)
        item = item.strip().lower()
        if item in aliases:
            names.extend(alias for alias in aliases[item] if alias not in names)
            continue
        if item not in choices:
            raise ConfigError(
                f"invalid {name} item {item!r}: valid names are "
                + ", ".join(list(choices) + list(aliases))
                + _suggestion(item, list(choices) + list(aliases))
            )
        if item in names:
            raise _invalid(name, value, spec, f"{item!r} is listed twice")
        names.append(item)
    if not names:
        raise _invalid(name, value, spec, "the list is empty")
    if aliases:
        names = [choice for choice in choices if choice in names]
    return names


def _check_ints(name: str, value: Any, spec: FieldSpec) -> list[int]:
    if isinstance(value, str):
        items = _split_list_text(name, value, spec)
        value = []
        for item in items:
            if isinstance(item, str):
                try:
                    item = int(item)
                except ValueError:
                    raise _invalid(name, item, spec, "the item is not an integer") from None
            value.append(item)
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _wrong_type(name, value, spec)
    item_spec = dataclasses.replace(spec, kind="int")
    numbers_seen: list[int] = []
    for item in value:
        number = _check_int(f"item of {name}", item, item_spec)
        if number in numbers_seen:
            raise _invalid(name, list(value), spec, f"{number} is listed twice")
        numbers_seen.append(number)
    if not numbers_seen:
        raise _invalid(name, value, spec, "the list is empty")
    return numbers_seen


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def _parse_layer_selection(group: str, value: Any, spec: FieldSpec) -> list[int]:
    """Read one group's layers: an int, a list of ints, or a string like "0-3" or "0-3,8"."""
    name = f"layer_groups[{group!r}]"
    if isinstance(value, bool):
        raise _wrong_type(name, value, spec)
    if isinstance(value, numbers.Integral):
        parts: list[Any] = [int(value)]
    elif isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise _wrong_type(name, value, spec)
    layers: list[int] = []
    for part in parts:
        if isinstance(part, bool):
            raise _wrong_type(name, value, spec)
        if isinstance(part, numbers.Integral):
            new = [int(part)]
        elif isinstance(part, str) and part.strip().isdigit():
            new = [int(part)]
        elif isinstance(part, str) and _RANGE.match(part):
            first, last = (int(bound) for bound in _RANGE.match(part).groups())  # type: ignore[union-attr]
            if first > last:
                raise _invalid(name, value, spec, f"the range {part!r} is empty (write low-high)")
            new = list(range(first, last + 1))
        else:
            raise _invalid(name, value, spec, f"{part!r} is not a layer index or range")
        for layer in new:
            if layer < 0:
                raise _invalid(name, value, spec, f"layer {layer} is negative")
            if layer in layers:
                raise _invalid(name, value, spec, f"layer {layer} is listed twice")
            layers.append(layer)
    if not layers:
        raise _invalid(name, value, spec, "the group has no layers")
    return sorted(layers)


def _parse_mapping_text(name: str, value: str, spec: FieldSpec) -> Any:
    try:
        return yaml.load(value, Loader=_ProfileLoader)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error)
        raise _invalid(name, value, spec, f"the mapping does not parse ({problem})") from None


def _check_layer_groups(name: str, value: Any, spec: FieldSpec) -> dict[str, list[int]]:
    if isinstance(value, str):
        value = _parse_mapping_text(name, value, spec)
    if not isinstance(value, Mapping):
        raise _wrong_type(name, value, spec)
    if not value:
        raise _invalid(name, value, spec, "the mapping is empty (use null for thirds of the model)")
    groups: dict[str, list[int]] = {}
    for group, layers in value.items():
        if not isinstance(group, str) or not group.strip():
            raise _invalid(name, value, spec, f"group name {group!r} is not a non-empty string")
        groups[group.strip()] = _parse_layer_selection(group, layers, spec)
    return groups


def _check_task_overrides(name: str, value: Any, spec: FieldSpec) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = _parse_mapping_text(name, value, spec)
    if not isinstance(value, Mapping):
        raise _wrong_type(name, value, spec)
    tasks = valid_task_names()
    overrides: dict[str, dict[str, Any]] = {}
    for task, fields_of_task in value.items():
        if not isinstance(task, str) or task.strip().lower() not in tasks:
            raise ConfigError(
                f"invalid task {task!r} in {name}: valid tasks are {', '.join(tasks)}"
                + _suggestion(str(task), tasks)
            )
        task = task.strip().lower()
        if fields_of_task is None:
            fields_of_task = {}
        if not isinstance(fields_of_task, Mapping):
            raise ConfigTypeError(
                f"invalid {name}[{task!r}] {fields_of_task!r}: expected a mapping of field to "
                f"value, e.g. {{max_length: 100}}"
            )
        checked: dict[str, Any] = {}
        for field_name, field_value in fields_of_task.items():
            if field_name not in TASK_OVERRIDE_FIELDS:
                raise ConfigError(
                    f"invalid field {field_name!r} in {name}[{task!r}]: per-task overrides may "
                    f"set only {', '.join(TASK_OVERRIDE_FIELDS)}"
                    + _suggestion(str(field_name), TASK_OVERRIDE_FIELDS)
                )
            checked[field_name] = validate_field(
                field_name, field_value, label=f"{name}[{task!r}].{field_name}"
            )
        if checked:
            overrides[task] = checked
    return overrides


def _check_value(name: str, value: Any, spec: FieldSpec) -> Any:
    if spec.optional and (value is None or _is_clear_word(value, spec)):
        return None
    if value is None and spec.kind != "task_overrides":
        raise _invalid(name, value, spec, "the field is required")

    kind = spec.kind
    if kind == "int":
        return _check_int(name, value, spec)
    if kind == "float":
        return _check_float(name, value, spec)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _wrong_type(name, value, spec)
        return value

    if kind in ("text", "choice"):
        if not isinstance(value, str):
            raise _wrong_type(name, value, spec)
        text = value.strip()
        if not text:
            raise _invalid(name, value, spec, "the string is empty")
        if kind == "choice" and text.lower() not in spec.valid_choices():
            raise _invalid(name, value, spec)
        return text.lower() if kind == "choice" else text

    if kind == "path":
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
            raise _wrong_type(name, value, spec)
        return os.fspath(value).strip()

    if kind == "names":
        return _check_names(name, value, spec)
    if kind == "ints":
        return _check_ints(name, value, spec)
    if kind == "layer_groups":
        return _check_layer_groups(name, value, spec)
    if kind == "task_overrides":
        return _check_task_overrides(name, value, spec)
    raise AssertionError(f"internal error: field {name!r} has unknown kind {kind!r}")


def _suggestion(word: str, candidates) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


# ---------------------------------------------------------------------------------------
# The configuration.


def _option(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, help: str) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ExperimentConfig:
    """All settings of one study run: model, tasks, fine-tuning, band ablation and statistics.

    Build it with `load_profile` rather than directly, so the profile's values fill in the
    fields you do not set. Every field is validated and normalized in `__post_init__`:
    lists may be given as comma-separated strings ("rte,qnli"), ints are accepted where
    floats are expected, and bools are rejected where ints are expected. Each field's
    `help` metadata describes it (`field_help()` lists them all).
    """

    model: str = _option(
        "minilm",
        help="Model: a hub id, a local folder, or a short name (minilm, tiny-bert, "
        "tiny-distilbert, tiny-roberta). svutils.models checks the name when loading.",
    )
    tasks: list[str] = _option(
        factory=lambda: list(STUDY_TASKS), help="Tasks to run, in order (imdb, rte, qnli, ...)."
    )
    seeds: list[int] = _option(
        factory=lambda: [0], help="Fine-tuning seeds; every task is fine-tuned once per seed."
    )
    n_train: int | None = _option(
        None, help="Training examples per task (a seeded sample), or None for the whole split."
    )
    n_eval: int | None = _option(
        None, help="Evaluation examples per task (a seeded sample), or None for the whole split."
    )
    max_length: int = _option(128, help="Maximum tokens per example; longer inputs are truncated.")
    epochs: int = _option(3, help="Fine-tuning epochs.")
    checkpoint_epochs: list[int] = _option(
        factory=lambda: [1, 2, 3],
        help="Epochs after which the model is kept for ablation, sorted; 0 is the pretrained "
        "model and the list must include `epochs`.",
    )
    learning_rate: float = _option(5e-5, help="Peak learning rate of AdamW.")
    batch_size: int = _option(32, help="Training batch size.")
    eval_batch_size: int = _option(32, help="Evaluation batch size (affects speed only).")
    warmup_ratio: float = _option(0.0, help="Fraction of training steps with linear warmup.")
    weight_decay: float = _option(0.0, help="AdamW weight decay.")
    n_bands: int = _option(10, help="Number of singular-value bands per matrix (10 = deciles).")
    band_convention: str = _option(
        "balanced",
        help="How singular values are split into bands: 'balanced' spreads the remainder over "
        "the bands, 'floor' gives every band floor(rank / n_bands) values (see svutils.svd).",
    )
    layer_groups: dict[str, list[int]] | None = _option(
        None,
        help="Layer groups for the ablation: a mapping of name to layer indices (a range string "
        "'0-3' is inclusive), or None for early, middle and late thirds of the model.",
    )
    kinds: list[str] = _option(
        factory=lambda: list(KINDS),
        help="Matrix kinds to ablate, from q, k, v, o, ffn_in, ffn_out (aliases attn, ffn, all).",
    )
    controls: bool = _option(
        True, help="Whether to also remove random subspaces of the same size as each band."
    )
    n_bootstrap: int = _option(1000, help="Bootstrap resamples for confidence intervals.")
    ci_level: float = _option(0.95, help="Confidence level of the bootstrap intervals.")
    collapse_threshold: float = _option(
        0.95,
        help="A model counts as collapsed when this fraction of its predictions is one class.",
    )
    data_dir: str | None = _option(
        None,
        help="Folder of <task>/<split>.jsonl files, 'synthetic' for generated smoke data, or "
        "None for $SVUTILS_DATA_DIR, else the Hugging Face hub.",
    )
    cache_dir: str | None = _option(
        None, help="Cache for fine-tuned checkpoints and results; None means $SVUTILS_CACHE_DIR "
        "or ~/.cache/svutils."
    )
    output_dir: str | None = _option(
        None, help="Folder for tables and run records; None means <repo>/results/<profile>."
    )
    profile: str | None = _option(None, help="Name of the profile the config came from.")
    task_overrides: dict[str, dict[str, Any]] = _option(
        factory=dict,
        help="Per-task field values, e.g. {imdb: {max_length: 512}}; allowed fields: "
        + ", ".join(TASK_OVERRIDE_FIELDS)
        + ". A null value inside sets the field to None for that task.",
    )
    eval_split: str | None = _option(
        None, help="Evaluation split name, or None for the task's default split."
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            object.__setattr__(self, item.name, validate_field(item.name, getattr(self, item.name)))
        self._check_checkpoints()
        for task in self.task_overrides:
            try:
                self._apply_task_overrides(task)
            except ConfigError as error:
                raise type(error)(f"task_overrides[{task!r}] makes an invalid config: {error}") from None

    def _check_checkpoints(self) -> None:
        beyond = [epoch for epoch in self.checkpoint_epochs if epoch > self.epochs]
        if beyond:
            raise ConfigError(
                f"invalid checkpoint_epochs {self.checkpoint_epochs}: epochs {beyond} are after "
                f"the last epoch ({self.epochs}); keep them in 0..{self.epochs} or raise epochs"
            )
        if self.epochs not in self.checkpoint_epochs:
            raise ConfigError(
                f"invalid checkpoint_epochs {self.checkpoint_epochs}: the list must include the "
                f"last epoch ({self.epochs}), e.g. {sorted(self.checkpoint_epochs + [self.epochs])}"
            )
        object.__setattr__(self, "checkpoint_epochs", sorted(self.checkpoint_epochs))

    def _apply_task_overrides(self, task: str) -> "ExperimentConfig":
        values = self.to_dict()
        overrides = self.task_overrides.get(task, {})
        values.update(copy.deepcopy(overrides))
        if "epochs" in overrides:
            # Checkpoints after the task's last epoch are dropped and the last epoch is added.
            last = overrides["epochs"]
            kept_epochs = {epoch for epoch in self.checkpoint_epochs if epoch <= last}
            values["checkpoint_epochs"] = sorted(kept_epochs | {last})
        values["tasks"] = [task]
        values["task_overrides"] = {}
        return ExperimentConfig(**values)

    def for_task(self, task: str) -> "ExperimentConfig":
        """Return the config of one task: tasks=[task] and that task's overrides applied.

        The result has empty `task_overrides`. If an override changes `epochs`, checkpoint
        epochs after the new last epoch are dropped and the new last epoch is added.
        Raises ConfigError when `task` is not in `tasks`.
        """
        name = task.strip().lower() if isinstance(task, str) else task
        if name not in self.tasks:
            raise ConfigError(
                f"task {task!r} is not in this config's tasks ({', '.join(self.tasks)}); add it "
                f"to tasks, e.g. -p tasks {','.join(self.tasks + [str(task)])}"
            )
        return self._apply_task_overrides(name)

    def to_dict(self) -> dict[str, Any]:
        """Return every field as plain JSON values (a deep copy)."""
        return {item.name: copy.deepcopy(getattr(self, item.name)) for item in dataclasses.fields(self)}

    def fingerprint(self) -> str:
        """Return a hex digest of the fields that can change results.

        `profile`, `output_dir` and `cache_dir` are left out, so the same experiment under
        another profile name or folder has the same fingerprint.
        """
        values = self.to_dict()
        for name in _RESULT_NEUTRAL_FIELDS:
            values.pop(name)
        return fingerprint_value(values)

    def resolved_cache_dir(self) -> Path:
        """Return the cache folder: `cache_dir`, else `svutils.io.default_cache_dir()`."""
        if self.cache_dir is None:
            return default_cache_dir()
        return Path(self.cache_dir).expanduser()

    def resolved_output_dir(self) -> Path:
        """Return the output folder: `output_dir`, else `<repo>/results/<profile or 'custom'>`."""
        if self.output_dir is None:
            return REPO_ROOT / "results" / (self.profile or "custom")
        return Path(self.output_dir).expanduser()

    def resolved_data_dir(self) -> Path | None:
        """Return the data folder, or None to read the tasks from the Hugging Face hub.

        `data_dir` "synthetic" generates the smoke data (if missing) into
        `<cache_dir>/synthetic-data`: 200 training and 120 evaluation rows per task. A
        config whose n_train or n_eval needs more rows gets
        `<cache_dir>/synthetic-data-<n_train>-<n_eval>` instead.
        None uses `$SVUTILS_DATA_DIR` when it is set. Raises FileNotFoundError when the
        folder does not exist.
        """
        if self.data_dir == SYNTHETIC:
            from svutils import synthetic

            n_train, n_eval = self._synthetic_sizes()
            name = "synthetic-data"
            if (n_train, n_eval) != (synthetic.DEFAULT_N_TRAIN, synthetic.DEFAULT_N_EVAL):
                # Larger data gets its own folder, so that configs of different sizes do not
                # regenerate one folder back and forth.
                name = f"synthetic-data-{n_train}-{n_eval}"
            folder = self.resolved_cache_dir() / name
            return synthetic.ensure_data(folder, n_train=n_train, n_eval=n_eval)
        if self.data_dir is None:
            configured = os.environ.get("SVUTILS_DATA_DIR")
            if not configured:
                return None
            folder = Path(configured).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"$SVUTILS_DATA_DIR is {configured!r}, which is not a folder; point it at a "
                    "folder of <task>/<split>.jsonl files or unset it to use the Hugging Face hub"
                )
            return folder
        folder = Path(self.data_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data_dir {self.data_dir!r} is not a folder; give a folder of "
                f"<task>/<split>.jsonl files, '{SYNTHETIC}', or null for the Hugging Face hub"
            )
        return folder

    def _synthetic_sizes(self) -> tuple[int, int]:
        from svutils import synthetic

        n_train, n_eval = synthetic.DEFAULT_N_TRAIN, synthetic.DEFAULT_N_EVAL
        for task in self.tasks:
            task_config = self._apply_task_overrides(task)
            n_train = max(n_train, task_config.n_train or 0)
            n_eval = max(n_eval, task_config.n_eval or 0)
        return n_train, n_eval

    def finetune_config(self, task: str, seed: int):
        """Build the `svutils.finetune.FinetuneConfig` for one task and seed.

        The task's overrides are applied and `data_dir` is resolved (see
        `resolved_data_dir`), so "synthetic" generates the data here if it is missing.
        `eval_split` and `cache_dir` are passed only if FinetuneConfig has those fields.
        """
        from svutils.finetune import FinetuneConfig

        seed = validate_field("seeds", [seed], label="seed")[0]
        config = self.for_task(task)
        values: dict[str, Any] = {
            "model": config.model,
            "task": config.tasks[0],
            "data_dir": config.resolved_data_dir(),
            "n_train": config.n_train,
            "n_eval": config.n_eval,
            "max_length": config.max_length,
            "epochs": config.epochs,
            "checkpoint_epochs": list(config.checkpoint_epochs),
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "warmup_ratio": config.warmup_ratio,
            "weight_decay": config.weight_decay,
            "seed": seed,
            "eval_batch_size": config.eval_batch_size,
        }
        accepted = {item.name for item in dataclasses.fields(FinetuneConfig)}
        if "eval_split" in accepted:
            values["eval_split"] = config.eval_split
        if "cache_dir" in accepted:
            values["cache_dir"] = config.resolved_cache_dir()
        return FinetuneConfig(**values)


FIELD_SPECS: dict[str, FieldSpec] = {
    "model": FieldSpec("text", "minilm"),
    "tasks": FieldSpec("names", "rte,qnli", choices=valid_task_names),
    "seeds": FieldSpec("ints", "0,1,2", low=0, high=_SEED_LIMIT - 1),
    "n_train": FieldSpec("int", "1500", optional=True, low=1, all_means_none=True),
    "n_eval": FieldSpec("int", "1000", optional=True, low=1, all_means_none=True),
    "max_length": FieldSpec("int", "128", low=8, high=4096),
    "epochs": FieldSpec("int", "3", low=1),
    "checkpoint_epochs": FieldSpec("ints", "1,2,3", low=0),
    "learning_rate": FieldSpec("float", "5e-5", low=0, low_exclusive=True),
    "batch_size": FieldSpec("int", "32", low=1),
    "eval_batch_size": FieldSpec("int", "32", low=1),
    "warmup_ratio": FieldSpec("float", "0.1", low=0, high=1, high_exclusive=True),
    "weight_decay": FieldSpec("float", "0.01", low=0),
    "n_bands": FieldSpec("int", "10", low=1),
    "band_convention": FieldSpec("choice", "balanced", choices=BAND_CONVENTIONS),
    "layer_groups": FieldSpec(
        "layer_groups", '\'{"early": "0-3", "middle": "4-7", "late": "8-11"}\'', optional=True
    ),
    "kinds": FieldSpec("names", "q,k,v", choices=KINDS, aliases=KIND_ALIASES),
    "controls": FieldSpec("bool", "false"),
    "n_bootstrap": FieldSpec("int", "1000", low=100),
    "ci_level": FieldSpec("float", "0.95", low=0.5, high=0.999),
    "collapse_threshold": FieldSpec("float", "0.95", low=0.5, high=1),
    "data_dir": FieldSpec("path", SYNTHETIC, optional=True),
    "cache_dir": FieldSpec("path", "~/.cache/svutils", optional=True),
    "output_dir": FieldSpec("path", "results/custom", optional=True),
    "profile": FieldSpec("text", "quick", optional=True),
    "task_overrides": FieldSpec("task_overrides", '\'{"imdb": {"max_length": 100}}\''),
    "eval_split": FieldSpec("text", "validation", optional=True),
}
"""Type and range of every ExperimentConfig field."""

_FIELD_NAMES = tuple(item.name for item in dataclasses.fields(ExperimentConfig))
assert set(FIELD_SPECS) == set(_FIELD_NAMES), "FIELD_SPECS must cover every ExperimentConfig field"

OVERRIDABLE_FIELDS: tuple[str, ...] = tuple(name for name in _FIELD_NAMES if name != "profile")
"""Fields that profiles, notebooks and `-p NAME VALUE` may set (all but `profile`)."""


def field_help() -> dict[str, str]:
    """Return each ExperimentConfig field's description, in declaration order."""
    return {item.name: item.metadata["help"] for item in dataclasses.fields(ExperimentConfig)}


def _unknown_field(name: Any, where: str) -> ConfigError:
    return ConfigError(
        f"unknown field {name!r} {where}; valid fields are {', '.join(OVERRIDABLE_FIELDS)}"
        + _suggestion(str(name), OVERRIDABLE_FIELDS)
    )


def validate_field(name: str, value: Any, *, label: str | None = None) -> Any:
    """Validate one field value on its own and return it normalized.

    Checks that need two fields (checkpoint_epochs against epochs) happen only when an
    ExperimentConfig is built. `label` replaces the field name in error messages.
    """
    spec = FIELD_SPECS.get(name)
    if spec is None:
        raise _unknown_field(name, "in the configuration")
    return _check_value(label or name, value, spec)


# ---------------------------------------------------------------------------------------
# Command-line values.

_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def parse_cli_value(name: str, text: str) -> Any:
    """Convert the text of `-p NAME VALUE` into a valid value of field `name`.

    Lists are comma-separated ("rte,qnli") or JSON ('[0, 1]'). Mappings are JSON or YAML
    ('{"imdb": {"max_length": 100}}'). Booleans are true/false, yes/no, on/off or 1/0.
    For optional fields "null" or "none" returns the string CLEAR ("null") rather than
    None, because a None override keeps the profile's value. Raises ConfigError naming
    the value, the field, the expected type and an example.
    """
    if name not in OVERRIDABLE_FIELDS:
        where = "(profile is chosen with --profile)" if name == "profile" else "for -p"
        raise _unknown_field(name, where)
    if not isinstance(text, str):
        raise ConfigTypeError(f"invalid -p {name} value {text!r}: expected the text of the command line")
    spec = FIELD_SPECS[name]
    if spec.optional and _is_clear_word(text, spec):
        return CLEAR
    value: Any = text
    try:
        if spec.kind == "int":
            value = int(text.strip())
        elif spec.kind == "float":
            value = float(text.strip())
        elif spec.kind == "bool":
            word = text.strip().lower()
            if word not in _TRUE_WORDS + _FALSE_WORDS:
                raise ValueError(word)
            value = word in _TRUE_WORDS
    except ValueError:
        raise ConfigError(
            f"invalid value {text!r} for -p {name}: expected {spec.expected()}, "
            f"e.g. -p {name} {spec.example}"
        ) from None
    try:
        return validate_field(name, value)
    except ConfigError as error:
        raise type(error)(f"{error} (from -p {name} {text!r})") from None


# ---------------------------------------------------------------------------------------
# Profiles.


class _ProfileLoader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 as a float (YAML 1.1 wants a dot: 1.0e-3)."""


_ProfileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def available_profiles() -> tuple[str, ...]:
    """Return the names of the profiles in PROFILES_DIR, sorted."""
    return tuple(sorted(path.stem for path in PROFILES_DIR.glob("*.yaml")))


def profile_path(name: str) -> Path:
    """Return the YAML file of profile `name`; raises ConfigError listing valid names."""
    names = available_profiles()
    if not isinstance(name, str) or name not in names:
        raise ConfigError(
            f"unknown profile {name!r}; valid profiles are {', '.join(names)} "
            f"(YAML files in svutils/profiles/, {PROFILES_DIR})" + _suggestion(str(name), names)
        )
    return PROFILES_DIR / f"{name}.yaml"


def read_profile(name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read profile `name` and return its defaults and its per-notebook overrides.

    Each value is validated on its own here, so an error names the file and section.
    """
    path = profile_path(name)
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_ProfileLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"profile {name!r} ({path}) is not valid YAML: {error}") from None
    if not isinstance(content, Mapping) or not isinstance(content.get("defaults"), Mapping):
        raise ConfigError(f"profile {name!r} ({path}) must be a mapping with a 'defaults:' mapping")
    unknown_sections = sorted(set(content) - {"defaults", "notebooks"})
    if unknown_sections:
        raise ConfigError(
            f"profile {name!r} ({path}) has unknown sections {unknown_sections}; "
            "valid sections are defaults and notebooks"
        )
    defaults = _checked_values(content["defaults"], f"in profile {name!r} ({path}) defaults")
    notebooks_section = content.get("notebooks") or {}
    if not isinstance(notebooks_section, Mapping):
        raise ConfigError(f"profile {name!r} ({path}): 'notebooks:' must map notebook names to fields")
    notebooks: dict[str, dict[str, Any]] = {}
    for notebook, values in notebooks_section.items():
        if notebook not in NOTEBOOKS:
            raise ConfigError(
                f"profile {name!r} ({path}) names unknown notebook {notebook!r}; valid notebooks "
                f"are {', '.join(NOTEBOOKS)}" + _suggestion(str(notebook), NOTEBOOKS)
            )
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"profile {name!r} ({path}): notebooks.{notebook} must be a mapping of fields to values"
            )
        notebooks[notebook] = _checked_values(
            values, f"in profile {name!r} ({path}) notebooks.{notebook}"
        )
    return defaults, notebooks


def _checked_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    checked = {}
    for name, value in values.items():
        if name not in OVERRIDABLE_FIELDS:
            raise _unknown_field(name, where)
        try:
            checked[name] = validate_field(name, value)
        except ConfigError as error:
            raise type(error)(f"{error} ({where})") from None
    return checked


def _merge(values: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Apply `overrides` to `values`; task_overrides are merged per task and field."""
    for name, value in overrides.items():
        if name == "task_overrides" and values.get(name):
            merged = copy.deepcopy(values[name])
            for task, fields_of_task in value.items():
                merged.setdefault(task, {}).update(fields_of_task)
            values[name] = merged
        else:
            values[name] = copy.deepcopy(value)


def load_profile(name: str, notebook: str | None = None, **overrides: Any) -> ExperimentConfig:
    """Build the ExperimentConfig of profile `name` for one notebook, with overrides.

    Values come from the profile's `defaults:`, then its `notebooks:` section for
    `notebook` (if any), then `overrides`. An override of None keeps the profile's value
    (notebook parameters default to None), and CLEAR ("null") sets an optional field to
    None. `task_overrides` are merged per task and field instead of replaced.
    Raises ConfigError for an unknown profile, notebook or field, or an invalid value.
    """
    defaults, notebooks = read_profile(name)
    if notebook is not None and notebook not in NOTEBOOKS:
        raise ConfigError(
            f"unknown notebook {notebook!r}; valid notebooks are {', '.join(NOTEBOOKS)}"
            + _suggestion(str(notebook), NOTEBOOKS)
        )
    if "profile" in overrides:
        raise ConfigError("profile cannot be overridden; pass the profile name as the first argument")
    explicit_overrides = {key: value for key, value in overrides.items() if value is not None}
    checked = _checked_values(explicit_overrides, "in the overrides")
    values = dict(defaults)
    if notebook is not None:
        _merge(values, notebooks.get(notebook, {}))
    _merge(values, checked)
    return ExperimentConfig(**values, profile=name)


def describe_overrides(overrides: Mapping[str, Any]) -> str:
    """Format overrides as `-p` arguments for logs, e.g. `-p n_bands 4 -p tasks rte,qnli`."""
    parts = []
    for name, value in overrides.items():
        if isinstance(value, list) and all(isinstance(item, (str, int)) for item in value):
            text = ",".join(str(item) for item in value)
        elif isinstance(value, (dict, list)):
            text = "'" + json.dumps(value) + "'"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        parts.append(f"-p {name} {text}")
    return " ".join(parts)
