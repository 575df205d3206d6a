"""Registry of the classification tasks: hub dataset ids, text columns, labels, splits and metrics."""

from __future__ import annotations

from dataclasses import dataclass

VALID_METRICS = ("accuracy", "f1", "mcc")
VALID_HUB_PATHS = ("glue", "imdb")


class UnknownTaskError(ValueError, KeyError):
    """A task name that is not in `TASKS`.

    It subclasses KeyError, so `except KeyError` around a dict-style lookup still works,
    and ValueError, because the name is a bad argument value.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class TaskSpec:
    """Description of one sequence classification task, in the schema of its hub dataset.

    Fields:
        name: short name, the key in `TASKS` and the folder name of local data.
        hub_path: dataset id on the Hugging Face hub, "glue" or "imdb".
        hub_config: hub configuration name such as "rte", or None for imdb.
        text_fields: one text column (single sentence) or two (sentence pair), in the order
            they are given to the tokenizer.
        label_names: class names, where label id i is `label_names[i]`.
        train_split: name of the split used for fine-tuning.
        eval_split: name of the split used for evaluation (GLUE test splits have no labels).
        metrics: metric names from VALID_METRICS, "accuracy" first.
        extra_splits: other labelled splits the hub dataset has, such as MNLI's
            "validation_mismatched".
    """

    name: str
    hub_path: str
    hub_config: str | None
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    train_split: str
    eval_split: str
    metrics: tuple[str, ...] = ("accuracy",)
    extra_splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"task name must be a non-empty identifier, got {self.name!r}")
        if self.hub_path not in VALID_HUB_PATHS:
            raise ValueError(
                f"task {self.name!r}: hub_path must be one of {', '.join(VALID_HUB_PATHS)}, "
                f"got {self.hub_path!r}"
            )
        if not isinstance(self.text_fields, tuple) or len(self.text_fields) not in (1, 2):
            raise ValueError(
                f"task {self.name!r}: text_fields must be a tuple of 1 or 2 column names, "
                f"got {self.text_fields!r}"
            )
        if "label" in self.text_fields or "example_id" in self.text_fields:
            raise ValueError(
                f"task {self.name!r}: text_fields {self.text_fields!r} must not use the reserved "
                "column names 'label' and 'example_id'"
            )
        if not isinstance(self.label_names, tuple) or len(self.label_names) < 2:
            raise ValueError(
                f"task {self.name!r}: label_names must be a tuple of at least 2 names, "
                f"got {self.label_names!r}"
            )
        if not self.metrics or self.metrics[0] != "accuracy":
            raise ValueError(
                f"task {self.name!r}: metrics must start with 'accuracy', got {self.metrics!r}"
            )
        unknown = [metric for metric in self.metrics if metric not in VALID_METRICS]
        if unknown:
            raise ValueError(
                f"task {self.name!r}: unknown metrics {unknown!r}. Valid metrics are "
                f"{', '.join(VALID_METRICS)}"
            )
        if ("f1" in self.metrics or "mcc" in self.metrics) and self.num_labels != 2:
            raise ValueError(
                f"task {self.name!r}: f1 and mcc are defined here for 2 labels only, "
                f"but the task has {self.num_labels}"
            )

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks (two text fields)."""
        return len(self.text_fields) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        """Names of all labelled splits: train, eval, then the extra splits."""
        return (self.train_split, self.eval_split, *self.extra_splits)


_NLI_BINARY = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("imdb", "imdb", None, ("text",), ("neg", "pos"), "train", "test"),
        TaskSpec(
            "rte", "glue", "rte", ("sentence1", "sentence2"), _NLI_BINARY, "train", "validation"
        ),
        TaskSpec(
            "qnli", "glue", "qnli", ("question", "sentence"), _NLI_BINARY, "train", "validation"
        ),
        TaskSpec(
            "qqp",
            "glue",
            "qqp",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            "train",
            "validation",
            metrics=("accuracy", "f1"),
        ),
        TaskSpec(
            "mnli",
            "glue",
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            "train",
            "validation_matched",
            extra_splits=("validation_mismatched",),
        ),
        TaskSpec(
            "sst2", "glue", "sst2", ("sentence",), ("negative", "positive"), "train", "validation"
        ),
        TaskSpec(
            "mrpc",
            "glue",
            "mrpc",
            ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"),
            "train",
            "validation",
            metrics=("accuracy", "f1"),
        ),
        TaskSpec(
            "cola",
            "glue",
            "cola",
            ("sentence",),
            ("unacceptable", "acceptable"),
            "train",
            "validation",
            metrics=("accuracy", "mcc"),
        ),
    )
}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Return the TaskSpec registered under `name` (case-insensitive). A TaskSpec passes through.

    Raises UnknownTaskError, which lists the valid names, for any other name.
    """
    if isinstance(name, TaskSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"task must be a task name (str) or TaskSpec, got {type(name).__name__}")
    spec = TASKS.get(name.strip().lower())
    if spec is None:
        raise UnknownTaskError(
            f"unknown task {name!r}. Valid tasks are {', '.join(sorted(TASKS))}"
        )
    return spec
