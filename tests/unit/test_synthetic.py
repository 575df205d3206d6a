"""Tests of the synthetic smoke data: schema, balance, determinism, signal and safe writes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from svutils import synthetic
from svutils.synthetic import SPLITS, TASK_NAMES, ensure_data, generate_split

SCHEMAS = {
    "imdb": {"text", "label"},
    "rte": {"sentence1", "sentence2", "label", "idx"},
    "qnli": {"question", "sentence", "label", "idx"},
    "qqp": {"question1", "question2", "label", "idx"},
    "mnli": {"premise", "hypothesis", "label", "idx"},
    "sst2": {"sentence", "label", "idx"},
    "mrpc": {"sentence1", "sentence2", "label", "idx"},
    "cola": {"sentence", "label", "idx"},
}

WORD_CHARACTERS = set("abcdefghijklmnopqrstuvwxyz ,.?")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _content_words(text: str) -> set[str]:
    stop = {"the", "a", "near", "was", "by", "of"}
    return {word.strip(".,?") for word in text.split()} - stop - {""}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return ensure_data(tmp_path_factory.mktemp("data"), n_train=60, n_eval=30)


def test_tasks_match_registry():
    tasks = pytest.importorskip("svutils.tasks", reason="svutils.tasks is not written yet")
    assert set(TASK_NAMES) == set(tasks.TASKS)
    for name, spec in tasks.TASKS.items():
        assert SPLITS[name][0] == spec.train_split
        assert spec.eval_split in SPLITS[name]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_files_and_schema(folder, task):
    for split in SPLITS[task]:
        rows = _read_jsonl(folder / task / f"{split}.jsonl")
        expected_rows = 60 if split == "train" else 30
        assert len(rows) == expected_rows
        assert all(set(row) == SCHEMAS[task] for row in rows)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_labels_balanced(task):
    rows = generate_split(task, "train", 61)
    counts = Counter(row["label"] for row in rows)
    n_classes = 3 if task == "mnli" else 2
    assert sorted(counts) == list(range(n_classes))
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("task", ["rte", "mnli"])
def test_idx_numbered_from_zero(task):
    rows = generate_split(task, SPLITS[task][1], 10)
    assert [row["idx"] for row in rows] == list(range(10))


def test_text_is_plain_lowercase():
    for task in TASK_NAMES:
        for row in generate_split(task, "train", 20):
            for key, value in row.items():
                if isinstance(value, str):
                    assert set(value) <= WORD_CHARACTERS, (task, key, value)


def test_deterministic_from_seed():
    assert generate_split("qqp", "train", 30, seed=1) == generate_split("qqp", "train", 30, seed=1)
    assert generate_split("qqp", "train", 30, seed=1) != generate_split("qqp", "train", 30, seed=2)


def test_splits_differ():
    assert generate_split("rte", "train", 20) != generate_split("rte", "validation", 20)


def test_prefix_stable():
    assert generate_split("imdb", "train", 50)[:20] == generate_split("imdb", "train", 20)


def test_sentiment_words_predict_label():
    rows = generate_split("imdb", "train", 200)
    correct = 0
    for row in rows:
        words = [word.strip(".,") for word in row["text"].split()]
        positive = sum(word in synthetic._POSITIVE for word in words)
        negative = sum(word in synthetic._NEGATIVE for word in words)
        correct += int((positive > negative) == (row["label"] == 1))
    assert correct == len(rows)


@pytest.mark.parametrize(
    ("task", "first", "second", "positive_label"),
    [
        ("rte", "sentence1", "sentence2", 0),
        ("qnli", "question", "sentence", 0),
        ("qqp", "question1", "question2", 1),
        ("mrpc", "sentence1", "sentence2", 1),
    ],
)
def test_pair_overlap_higher_for_positive(task, first, second, positive_label):
    rows = generate_split(task, "train", 200)

    def overlap(row):
        a, b = _content_words(row[first]), _content_words(row[second])
        return len(a & b) / len(a | b)

    positive = [overlap(row) for row in rows if row["label"] == positive_label]
    negative = [overlap(row) for row in rows if row["label"] != positive_label]
    assert sum(positive) / len(positive) > 2 * sum(negative) / len(negative)


def test_mnli_contradiction_negates():
    rows = generate_split("mnli", "train", 90)
    negated = [("never" in row["hypothesis"] or "nobody" in row["hypothesis"]) for row in rows]
    assert all(flag == (row["label"] == 2) for flag, row in zip(negated, rows))


def test_cola_label_follows_word_order():
    verbs = {past for past, _ in synthetic._VERBS}
    template = [
        {"the"}, set(synthetic._ADJECTIVES), set(synthetic._PEOPLE), verbs, {"the"},
        set(synthetic._THINGS), {"near"}, {"the"}, set(synthetic._PLACES), {"."},
    ]
    for row in generate_split("cola", "train", 40):
        words = row["sentence"].split()
        in_order = len(words) == len(template) and all(
            word in allowed for word, allowed in zip(words, template)
        )
        assert in_order == (row["label"] == 1), row


def test_readme_written(folder):
    readme = (folder / "README.md").read_text()
    assert "synthetic" in readme.lower()
    assert "not real data" in readme


def test_manifest_records_parameters(folder):
    manifest = json.loads((folder / "mnli" / synthetic.MANIFEST_NAME).read_text())
    assert manifest["seed"] == 0
    assert manifest["version"] == synthetic.GENERATOR_VERSION
    assert manifest["rows"] == {"train": 60, "validation_matched": 30, "validation_mismatched": 30}


def test_second_call_keeps_files(tmp_path):
    ensure_data(tmp_path, tasks=["rte"], n_train=10, n_eval=5)
    path = tmp_path / "rte" / "train.jsonl"
    before = path.stat().st_mtime_ns
    ensure_data(tmp_path, tasks="rte", n_train=10, n_eval=5)
    assert path.stat().st_mtime_ns == before


def test_changed_parameters_regenerate(tmp_path):
    ensure_data(tmp_path, tasks=["rte"], n_train=10, n_eval=5)
    ensure_data(tmp_path, tasks=["rte"], n_train=12, n_eval=5, seed=3)
    rows = _read_jsonl(tmp_path / "rte" / "train.jsonl")
    assert rows == generate_split("rte", "train", 12, seed=3)
    assert not [entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".")]


def test_only_requested_tasks(tmp_path):
    ensure_data(tmp_path, tasks="imdb,cola", n_train=4, n_eval=4)
    assert sorted(entry.name for entry in tmp_path.iterdir() if entry.is_dir()) == ["cola", "imdb"]


def test_rejects_folder_with_real_data(tmp_path):
    (tmp_path / "rte").mkdir()
    (tmp_path / "rte" / "train.jsonl").write_text('{"sentence1": "x"}\n')
    with pytest.raises(FileExistsError) as raised:
        ensure_data(tmp_path, tasks=["rte"])
    assert "has no synthetic.json" in str(raised.value)
    assert (tmp_path / "rte" / "train.jsonl").read_text() == '{"sentence1": "x"}\n'


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"tasks": ["rtx"]}, ValueError, "invalid task 'rtx'; valid tasks are imdb, rte"),
        ({"tasks": []}, ValueError, "tasks is empty"),
        ({"n_train": 0}, ValueError, "n_train must be an int >= 1, got 0"),
        ({"n_eval": True}, TypeError, "n_eval must be an int >= 1"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
    ],
)
def test_invalid_arguments(tmp_path, arguments, error, message):
    with pytest.raises(error) as raised:
        ensure_data(tmp_path, **arguments)
    assert message in str(raised.value)


def test_invalid_split():
    with pytest.raises(ValueError) as raised:
        generate_split("imdb", "validation", 3)
    assert "valid splits are train, test" in str(raised.value)


def test_loads_with_data_module(folder):
    data = pytest.importorskip("svutils.data", reason="svutils.data is not written yet")
    for task in ("imdb", "rte", "mnli"):
        frame = data.load_split(task, "eval", data_dir=folder)
        assert len(frame) == 30
    combined = data.load_split("mnli", "validation", data_dir=folder)
    assert len(combined) == 60
