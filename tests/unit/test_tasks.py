"""Unit tests of the task registry."""

from __future__ import annotations

import pytest

from svutils.tasks import TASKS, TaskSpec, UnknownTaskError, get_task

STUDY_TASKS = ("imdb", "rte", "qnli", "qqp", "mnli")


def test_registry_has_study_and_glue_tasks():
    for name in (*STUDY_TASKS, "sst2", "mrpc", "cola"):
        assert name in TASKS


def test_registry_keys_match_names():
    for key, spec in TASKS.items():
        assert key == spec.name


@pytest.mark.parametrize(
    ("name", "fields", "labels", "eval_split"),
    [
        ("imdb", ("text",), ("neg", "pos"), "test"),
        ("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "validation"),
        ("qnli", ("question", "sentence"), ("entailment", "not_entailment"), "validation"),
        ("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "validation"),
        (
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            "validation_matched",
        ),
        ("sst2", ("sentence",), ("negative", "positive"), "validation"),
        ("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "validation"),
        ("cola", ("sentence",), ("unacceptable", "acceptable"), "validation"),
    ],
)
def test_task_schema(name, fields, labels, eval_split):
    spec = get_task(name)
    assert spec.text_fields == fields
    assert spec.label_names == labels
    assert spec.num_labels == len(labels)
    assert spec.is_pair == (len(fields) == 2)
    assert spec.train_split == "train"
    assert spec.eval_split == eval_split


def test_hub_ids():
    assert (get_task("imdb").hub_path, get_task("imdb").hub_config) == ("imdb", None)
    assert (get_task("rte").hub_path, get_task("rte").hub_config) == ("glue", "rte")
    assert (get_task("mnli").hub_path, get_task("mnli").hub_config) == ("glue", "mnli")


def test_metrics_start_with_accuracy():
    for spec in TASKS.values():
        assert spec.metrics[0] == "accuracy"
    assert get_task("qqp").metrics == ("accuracy", "f1")
    assert get_task("mrpc").metrics == ("accuracy", "f1")
    assert get_task("cola").metrics == ("accuracy", "mcc")
    assert get_task("rte").metrics == ("accuracy",)


def test_mnli_knows_mismatched_split():
    spec = get_task("mnli")
    assert "validation_mismatched" in spec.splits
    assert spec.splits[:2] == ("train", "validation_matched")


def test_get_task_is_case_insensitive():
    assert get_task("RTE") is TASKS["rte"]
    assert get_task(" qnli ") is TASKS["qnli"]


def test_get_task_passes_spec_through():
    spec = TASKS["imdb"]
    assert get_task(spec) is spec


def test_unknown_task_lists_valid_names():
    with pytest.raises(UnknownTaskError) as caught:
        get_task("glue-rte")
    message = str(caught.value)
    assert "'glue-rte'" in message
    for name in TASKS:
        assert name in message


def test_unknown_task_error_is_value_and_key_error():
    assert issubclass(UnknownTaskError, ValueError)
    assert issubclass(UnknownTaskError, KeyError)
    with pytest.raises(KeyError):
        get_task("nope")


def test_get_task_rejects_non_string():
    with pytest.raises(TypeError, match="task name"):
        get_task(3)


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        TASKS["rte"].name = "other"


def _spec(**changes):
    values = dict(
        name="toy",
        hub_path="glue",
        hub_config="toy",
        text_fields=("sentence",),
        label_names=("no", "yes"),
        train_split="train",
        eval_split="validation",
    )
    values.update(changes)
    return TaskSpec(**values)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hub_path": "squad"}, "hub_path"),
        ({"text_fields": ("a", "b", "c")}, "text_fields"),
        ({"text_fields": ["sentence"]}, "text_fields"),
        ({"text_fields": ("label",)}, "reserved"),
        ({"label_names": ("only",)}, "label_names"),
        ({"metrics": ("f1", "accuracy")}, "start with 'accuracy'"),
        ({"metrics": ("accuracy", "auc")}, "unknown metrics"),
        ({"metrics": ("accuracy", "f1"), "label_names": ("a", "b", "c")}, "2 labels"),
        ({"name": ""}, "identifier"),
    ],
)
def test_spec_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        _spec(**changes)
