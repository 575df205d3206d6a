"""Load labelled task splits from local files or the Hugging Face hub, subsample and tokenize them.

Where a split comes from, first match wins:

1. the `data_dir` argument,
2. the `SVUTILS_DATA_DIR` environment variable,
3. the Hugging Face hub, through `datasets.load_dataset(hub_path, hub_config, split=...)`.

A local data folder is laid out as `<dir>/<task>/<split>.jsonl`, `.csv` or `.parquet`
(the first that exists, in that order), with the column names and label ids of the hub
dataset. A local folder that lacks the file is an error, not a reason to try the hub.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from svutils.io import atomic_write_bytes, default_cache_dir, fingerprint
from svutils.tasks import TaskSpec, get_task

DATA_DIR_ENV = "SVUTILS_DATA_DIR"
LOCAL_FORMATS = ("jsonl", "csv", "parquet")

# Splits that are the concatenation of other splits. MNLI's "validation" pools the matched
# and mismatched validation sets, so that one evaluation covers the genres of both.
COMBINED_SPLITS: dict[tuple[str, str], tuple[str, ...]] = {
    ("mnli", "validation"): ("validation_matched", "validation_mismatched"),
}

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")
_HASH_CHUNK_BYTES = 1 << 20


class DataError(ValueError):
    """Invalid or unavailable task data. The message names the file and line where known."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A split that no configured source (local folder or hub) could provide."""


# --------------------------------------------------------------------------------------
# Split names and data folders


def resolve_split(task: str | TaskSpec, split: str | None = None) -> str:
    """Return the concrete split name for `split`.

    None and "eval" mean the task's evaluation split and "train" its training split.
    Any other name (such as "validation_mismatched") is returned unchanged.
    """
    spec = get_task(task)
    if split is None or split == "eval":
        return spec.eval_split
    if split == "train":
        return spec.train_split
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise ValueError(
            f"invalid split name {split!r}. Use 'train', 'eval' or a split name made of "
            f"letters, digits and underscores (task {spec.name!r} has {', '.join(spec.splits)})"
        )
    return split


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the local data folder: `data_dir`, else `$SVUTILS_DATA_DIR`, else None (the hub).

    Raises DataNotFoundError if the chosen folder does not exist.
    """
    if data_dir is not None:
        origin = "the data_dir argument"
        folder = Path(data_dir).expanduser()
    elif os.environ.get(DATA_DIR_ENV):
        origin = f"${DATA_DIR_ENV}"
        folder = Path(os.environ[DATA_DIR_ENV]).expanduser()
    else:
        return None
    if not folder.is_dir():
        raise DataNotFoundError(
            f"data folder {folder} (from {origin}) does not exist or is not a folder. "
            f"Point it at a folder laid out as <dir>/<task>/<split>.jsonl"
        )
    return folder


def _component_splits(spec: TaskSpec, split: str) -> tuple[str, ...]:
    return COMBINED_SPLITS.get((spec.name, split), (split,))


def _list_folder(folder: Path) -> str:
    names = sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []
    return ", ".join(names) if names else "nothing"


def _find_local_file(data_dir: Path, spec: TaskSpec, split: str) -> Path:
    task_dir = data_dir / spec.name
    if not task_dir.is_dir():
        raise DataNotFoundError(
            f"no folder for task {spec.name!r} in data folder {data_dir}: tried {task_dir}. "
            f"The data folder contains: {_list_folder(data_dir)}. Expected layout: "
            f"<dir>/<task>/<split>.jsonl (or .csv or .parquet)"
        )
    candidates = [task_dir / f"{split}.{extension}" for extension in LOCAL_FORMATS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataNotFoundError(
        f"no file for split {split!r} of task {spec.name!r}: tried "
        f"{', '.join(str(candidate) for candidate in candidates)}. "
        f"{task_dir} contains: {_list_folder(task_dir)}"
    )


def _find_local_files(data_dir: Path, spec: TaskSpec, split: str) -> list[Path]:
    components = _component_splits(spec, split)
    if len(components) == 1:
        return [_find_local_file(data_dir, spec, split)]
    paths = []
    for component in components:
        try:
            paths.append(_find_local_file(data_dir, spec, component))
        except DataNotFoundError as error:
            raise DataNotFoundError(
                f"split {split!r} of task {spec.name!r} is the concatenation of "
                f"{' and '.join(components)}, but one of them is missing: {error}. "
                f"Load a single split instead (the task's eval split is {spec.eval_split!r})"
            ) from error
    return paths


# --------------------------------------------------------------------------------------
# Parsing and validation


def _describe_value(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _check_label(value: Any, spec: TaskSpec, where: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise DataError(f"{where}: label is missing (null), but every example needs one")
        raise DataError(
            f"{where}: label must be an integer class id, got {_describe_value(value)}"
        )
    label = int(value)
    if label == -1:
        raise DataError(
            f"{where}: label is -1, which marks an unlabeled example (hub test splits have "
            f"no labels). Unlabeled splits cannot be evaluated, so use the train or "
            f"{spec.eval_split} split"
        )
    if not 0 <= label < spec.num_labels:
        names = ", ".join(f"{index} {name}" for index, name in enumerate(spec.label_names))
        raise DataError(
            f"{where}: label {label} is outside 0..{spec.num_labels - 1} for task "
            f"{spec.name!r} (labels: {names})"
        )
    return label


def _check_text(value: Any, column: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise DataError(f"{where}: field {column!r} is null, but every example needs its text")
    raise DataError(f"{where}: field {column!r} must be a string, got {_describe_value(value)}")


def _check_idx(value: Any, where: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{where}: field 'idx' must be an integer, got {_describe_value(value)}")
    return int(value)


def _build_frame(
    records: Sequence[dict[str, Any]],
    locate: Callable[[int], str],
    spec: TaskSpec,
    source: str,
) -> pd.DataFrame:
    """Validate parsed records and return the canonical frame.

    `locate(i)` names record i for error messages, such as "train.jsonl, line 7".
    """
    if not records:
        raise DataError(f"{source} contains no examples")
    columns: dict[str, list[Any]] = {name: [] for name in spec.text_fields}
    labels: list[int] = []
    ids: list[int] | None = [] if "idx" in records[0] else None
    first_seen: dict[int, int] = {}
    for position, record in enumerate(records):
        where = locate(position)
        missing = [name for name in (*spec.text_fields, "label") if name not in record]
        if missing:
            raise DataError(
                f"{where}: missing field(s) {', '.join(map(repr, missing))}. Task "
                f"{spec.name!r} needs {', '.join(map(repr, (*spec.text_fields, 'label')))}"
            )
        for name in spec.text_fields:
            columns[name].append(_check_text(record[name], name, where))
        labels.append(_check_label(record["label"], spec, where))
        if ids is not None:
            if "idx" not in record:
                raise DataError(
                    f"{where}: missing field 'idx', which earlier examples have. "
                    f"Give every example an idx or none"
                )
            example_id = _check_idx(record["idx"], where)
            if example_id in first_seen:
                raise DataError(
                    f"{where}: duplicate idx {example_id}, first used at "
                    f"{locate(first_seen[example_id])}. idx values must be unique"
                )
            first_seen[example_id] = position
            ids.append(example_id)
    frame = pd.DataFrame(columns)
    frame["label"] = np.asarray(labels, dtype=np.int64)
    frame["example_id"] = (
        np.asarray(ids, dtype=np.int64) if ids is not None else np.arange(len(frame), dtype=np.int64)
    )
    return frame


def _read_jsonl(path: Path, spec: TaskSpec) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    line_numbers: list[int] = []
    with path.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}, line {line_number}: malformed JSON ({error.msg} at column "
                    f"{error.colno}). Each line must be one JSON object"
                ) from error
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}, line {line_number}: expected a JSON object, got "
                    f"{type(record).__name__}"
                )
            records.append(record)
            line_numbers.append(line_number)
    return _build_frame(records, lambda i: f"{path}, line {line_numbers[i]}", spec, str(path))


def _parse_csv_integer(value: Any) -> Any:
    if isinstance(value, str) and _INTEGER_TEXT.match(value.strip()):
        return int(value)
    return value


def _read_csv(path: Path, spec: TaskSpec) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    line_numbers: list[int] = []
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path} is empty. Expected a header line and examples") from None
        missing = [name for name in (*spec.text_fields, "label") if name not in header]
        if missing:
            raise DataError(
                f"{path}, line 1: header lacks column(s) {', '.join(map(repr, missing))}. "
                f"It has {', '.join(map(repr, header))}"
            )
        # A quoted field may span several lines, so a record starts one line after the
        # line where the previous record ended.
        previous_end = reader.line_num
        for row in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}, line {start}: {len(row)} fields, but the header has "
                    f"{len(header)}. Quote fields that contain commas"
                )
            record: dict[str, Any] = dict(zip(header, row))
            record["label"] = _parse_csv_integer(record["label"])
            if "idx" in record:
                record["idx"] = _parse_csv_integer(record["idx"])
            records.append(record)
            line_numbers.append(start)
    return _build_frame(records, lambda i: f"{path}, line {line_numbers[i]}", spec, str(path))


def _records_from_frame(frame: pd.DataFrame, spec: TaskSpec, where: str) -> list[dict[str, Any]]:
    missing = [name for name in (*spec.text_fields, "label") if name not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))}. It has "
            f"{', '.join(map(repr, map(str, frame.columns)))}"
        )
    keep = [*spec.text_fields, "label"] + (["idx"] if "idx" in frame.columns else [])
    return frame[keep].to_dict("records")


def _read_parquet(path: Path, spec: TaskSpec) -> pd.DataFrame:
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable Parquet file ({error})") from error
    records = _records_from_frame(frame, spec, str(path))
    return _build_frame(records, lambda i: f"{path}, row {i} (0-based)", spec, str(path))


_READERS = {".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


@functools.lru_cache(maxsize=32)
def _load_local_cached(path: str, mtime_ns: int, size: int, spec: TaskSpec) -> pd.DataFrame:
    # mtime_ns and size are part of the key, so an edited file is parsed again.
    del mtime_ns, size
    file = Path(path)
    return _READERS[file.suffix](file, spec)


def _load_local(path: Path, spec: TaskSpec) -> pd.DataFrame:
    stat = path.stat()
    return _load_local_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, spec)


def _load_from_hub(spec: TaskSpec, split: str) -> pd.DataFrame:
    """Download (or read from the hub cache) one split and return it as a pandas frame."""
    import datasets

    datasets.logging.set_verbosity_error()
    dataset = datasets.load_dataset(spec.hub_path, spec.hub_config, split=split)
    return dataset.to_pandas()


@functools.lru_cache(maxsize=16)
def _load_hub_cached(spec: TaskSpec, split: str) -> pd.DataFrame:
    hub_id = spec.hub_path if spec.hub_config is None else f"{spec.hub_path}/{spec.hub_config}"
    try:
        frame = _load_from_hub(spec, split)
    except Exception as error:  # noqa: BLE001 - datasets raises many unrelated types offline
        raise DataNotFoundError(
            f"cannot load split {split!r} of task {spec.name!r}. No local data folder is "
            f"configured (neither the data_dir argument nor ${DATA_DIR_ENV} is set), and "
            f"loading {hub_id!r} split {split!r} from the Hugging Face hub failed with "
            f"{type(error).__name__}: {error}. Set ${DATA_DIR_ENV} to a folder laid out as "
            f"<dir>/<task>/<split>.jsonl, or run once with network access so that the hub "
            f"cache fills"
        ) from error
    where = f"hub dataset {hub_id!r} split {split!r}"
    records = _records_from_frame(frame, spec, where)
    return _build_frame(records, lambda i: f"{where}, row {i} (0-based)", spec, where)


def _concatenate(parts: list[pd.DataFrame], names: Iterable[str]) -> pd.DataFrame:
    tagged = []
    for part, name in zip(parts, names):
        part = part.rename(columns={"example_id": "source_example_id"})
        part["source_split"] = name
        tagged.append(part)
    combined = pd.concat(tagged, ignore_index=True)
    combined["example_id"] = np.arange(len(combined), dtype=np.int64)
    return combined


def load_split(
    task: str | TaskSpec,
    split: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Load one labelled split of a task as a DataFrame.

    Columns: the task's text fields (str), `label` (int64, 0..num_labels-1) and `example_id`
    (int64, the hub `idx` when the data has one, else the 0-based row number). The combined
    MNLI "validation" split renumbers `example_id` from 0 and adds `source_split` and
    `source_example_id`, because the matched and mismatched idx values overlap.

    `split` None or "eval" means the task's eval split, and "train" its train split.
    Parsed splits are cached in memory (keyed by path, size and mtime), and each call
    returns a fresh copy that the caller may modify.

    Raises DataError with the file and line (or row) of the first invalid example, and
    DataNotFoundError when the local file is missing or the hub cannot be reached.
    """
    spec = get_task(task)
    split = resolve_split(spec, split)
    folder = resolve_data_dir(data_dir)
    components = _component_splits(spec, split)
    if folder is not None:
        parts = [_load_local(path, spec) for path in _find_local_files(folder, spec, split)]
    else:
        parts = [_load_hub_cached(spec, component) for component in components]
    if len(parts) == 1:
        return parts[0].copy()
    return _concatenate(parts, components)


def clear_cache() -> None:
    """Drop the in-memory cache of parsed splits (for example after editing files in place
    within the same second on a file system with coarse timestamps)."""
    _load_local_cached.cache_clear()
    _load_hub_cached.cache_clear()


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    del mtime_ns, size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file's content.

    Results are cached in memory by path, size and mtime, so hashing the same large file
    (a model's weights, a data split) again in one process costs one `stat` call.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _file_sha256(str(resolved), stat.st_mtime_ns, stat.st_size)


def describe_source(
    task: str | TaskSpec,
    split: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Return a JSON-ready identity of the data behind `load_split(task, split, data_dir=...)`.

    For local data it lists each file's name, size and SHA-256, so the identity follows the
    content and not the folder's location. For the hub it is the dataset id, config and
    split. Caches use it in their keys.
    """
    spec = get_task(task)
    split = resolve_split(spec, split)
    folder = resolve_data_dir(data_dir)
    if folder is None:
        return {
            "kind": "hub",
            "task": spec.name,
            "split": split,
            "hub_path": spec.hub_path,
            "hub_config": spec.hub_config,
        }
    files = []
    for path in _find_local_files(folder, spec, split):
        files.append(
            {
                "name": f"{spec.name}/{path.name}",
                "bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        )
    return {"kind": "local", "task": spec.name, "split": split, "files": files}


# --------------------------------------------------------------------------------------
# Stratified subsets


def _largest_remainder(counts: np.ndarray, n: int) -> np.ndarray:
    """Split `n` over classes in proportion to `counts`, rounding by largest remainder.

    Ties in the remainder go to the class that comes first.
    """
    quotas = counts * n / counts.sum()
    allocation = np.floor(quotas).astype(np.int64)
    shortfall = n - int(allocation.sum())
    order = np.argsort(-(quotas - allocation), kind="stable")
    allocation[order[:shortfall]] += 1
    return allocation


def stratified_subset(
    df: pd.DataFrame,
    n: int | None,
    *,
    seed: int,
    label_column: str = "label",
) -> pd.DataFrame:
    """Draw exactly `n` rows with each label in proportion to its share of `df`.

    Class sizes are rounded by largest remainder, so each differs by less than one from
    its proportional share. Rows are drawn without replacement with
    `numpy.random.default_rng(seed)`, so the same seed gives the same rows. The result
    keeps the original index and order. `n=None` returns a copy of all rows. `n` larger
    than `len(df)` or below 1 raises ValueError.
    """
    if label_column not in df.columns:
        raise KeyError(
            f"label column {label_column!r} not found. Columns are {', '.join(map(str, df.columns))}"
        )
    if n is None:
        return df.copy()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"subset size n must be an int or None, got {_describe_value(n)}")
    if n < 1:
        raise ValueError(f"subset size n must be at least 1, got {n}. Use n=None for all rows")
    if n > len(df):
        raise ValueError(
            f"subset size n={n} exceeds the {len(df)} rows available. Use n <= {len(df)} "
            f"or n=None for all rows"
        )
    labels = df[label_column].to_numpy()
    if pd.isna(labels).any():
        raise ValueError(f"column {label_column!r} contains missing values. Drop them first")
    classes, inverse = np.unique(labels, return_inverse=True)
    allocation = _largest_remainder(np.bincount(inverse, minlength=len(classes)), n)
    rng = np.random.default_rng(seed)
    chosen = []
    for class_index, count in enumerate(allocation):
        members = np.flatnonzero(inverse == class_index)
        chosen.append(rng.choice(members, size=int(count), replace=False))
    positions = np.sort(np.concatenate(chosen))
    return df.iloc[positions].copy()


# --------------------------------------------------------------------------------------
# Tokenization


@dataclass
class TokenizedSet:
    """Token ids of one task split, unpadded, in the row order of the source frame.

    Fields:
        input_ids: one list of token ids per example, truncated to `max_length`.
        token_type_ids: segment ids in the same shape, or None when the tokenizer's
            model does not take them.
        labels: int64 array of class ids, shape [N].
        example_ids: int64 array of the frame's `example_id` values (or row numbers), shape [N].
        task: task name.
        max_length: truncation length in tokens, special tokens included.
        pad_token_id: the tokenizer's padding id, the default for `batches`.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    example_ids: np.ndarray
    task: str
    max_length: int
    pad_token_id: int = 0
    _lengths: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.example_ids = np.asarray(self.example_ids, dtype=np.int64)
        count = len(self.input_ids)
        if self.labels.shape != (count,) or self.example_ids.shape != (count,):
            raise ValueError(
                f"TokenizedSet needs one label and one example id per sequence: got "
                f"{count} sequences, labels of shape {self.labels.shape} and example_ids of "
                f"shape {self.example_ids.shape}"
            )
        if self.token_type_ids is not None and len(self.token_type_ids) != count:
            raise ValueError(
                f"token_type_ids has {len(self.token_type_ids)} rows for {count} sequences"
            )
        self._lengths = np.fromiter((len(ids) for ids in self.input_ids), np.int64, count)
        if count and self._lengths.min() < 1:
            raise ValueError("TokenizedSet contains an empty token sequence")
        if count and self._lengths.max() > self.max_length:
            raise ValueError(
                f"a sequence has {self._lengths.max()} tokens, more than max_length="
                f"{self.max_length}"
            )

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each example (int64, shape [N])."""
        return self._lengths

    def collate(
        self,
        positions: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        pad_token_id: int | None = None,
        pad_to_max_length: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Pad the examples at `positions` into one batch of LongTensors.

        Keys: `input_ids` and `attention_mask` of shape [B, T], `token_type_ids` [B, T]
        when the set has them, `labels` [B] and `index` [B] (the positions, so results can
        be scattered back to set order). T is the longest sequence in the batch, or
        `max_length` when `pad_to_max_length` is True. Padding is on the right.
        """
        index = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        if index.ndim != 1 or len(index) == 0:
            raise ValueError("positions must be a non-empty 1-D sequence of example positions")
        pad = self.pad_token_id if pad_token_id is None else pad_token_id
        width = self.max_length if pad_to_max_length else int(self._lengths[index.numpy()].max())
        input_ids = torch.full((len(index), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(index), width), dtype=torch.long)
        token_type_ids = (
            torch.zeros((len(index), width), dtype=torch.long)
            if self.token_type_ids is not None
            else None
        )
        for row, position in enumerate(index.tolist()):
            ids = self.input_ids[position]
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            if token_type_ids is not None:
                types = self.token_type_ids[position]
                token_type_ids[row, : len(types)] = torch.as_tensor(types, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        batch["labels"] = torch.as_tensor(self.labels[index.numpy()], dtype=torch.long)
        batch["index"] = index
        return batch

    def batches(
        self,
        batch_size: int,
        *,
        sort_by_length: bool = True,
        pad_token_id: int | None = None,
        pad_to_max_length: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """Split the whole set into padded batches for evaluation (see `collate` for keys).

        With `sort_by_length`, examples go longest first (a stable sort, so ties keep set
        order and the batches are the same on every call), which keeps padding small.
        Otherwise batches follow set order. `pad_token_id` None uses the tokenizer's id
        recorded at tokenization.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if sort_by_length:
            order = np.argsort(-self._lengths, kind="stable")
        else:
            order = np.arange(len(self), dtype=np.int64)
        return [
            self.collate(
                order[start : start + batch_size],
                pad_token_id=pad_token_id,
                pad_to_max_length=pad_to_max_length,
            )
            for start in range(0, len(order), batch_size)
        ]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Return a hash of everything in a tokenizer that changes its output ids.

    For fast tokenizers this is the serialized backend (vocabulary, normalizer,
    pre-tokenizer, post-processor) without its mutable truncation and padding settings,
    plus the special tokens. The name or path is left out, so the same tokenizer saved
    into a checkpoint folder hashes the same as the original.
    """
    if getattr(tokenizer, "is_fast", False):
        backend = json.loads(tokenizer.backend_tokenizer.to_str())
        backend.pop("truncation", None)
        backend.pop("padding", None)
    else:
        backend = {"vocab": sorted(tokenizer.get_vocab().items())}
    return fingerprint(
        {
            "class": type(tokenizer).__name__,
            "backend": backend,
            "special_tokens": tokenizer.special_tokens_map,
            "model_input_names": list(tokenizer.model_input_names),
        }
    )


def _texts_sha256(df: pd.DataFrame, columns: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for column in columns:
        digest.update(column.encode("utf-8") + b"\0")
        for text in df[column]:
            encoded = text.encode("utf-8")
            # A length prefix keeps ("ab", "c") and ("a", "bc") apart.
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


def _write_token_cache(path: Path, input_ids: list[list[int]], types: list[list[int]] | None) -> None:
    arrays = {"input_ids": pa.array(input_ids, type=pa.list_(pa.int32()))}
    if types is not None:
        arrays["token_type_ids"] = pa.array(types, type=pa.list_(pa.int8()))
    buffer = io.BytesIO()
    pq.write_table(pa.table(arrays), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _list_column(table: pa.Table, name: str) -> list[list[int]]:
    column = table.column(name).combine_chunks()
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy().astype(np.int64)
    return [chunk.tolist() for chunk in np.split(values, offsets[1:-1])]


def _read_token_cache(
    path: Path, count: int, with_types: bool
) -> tuple[list[list[int]], list[list[int]] | None] | None:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError):
        return None
    if table.num_rows != count or ("token_type_ids" in table.column_names) != with_types:
        return None
    input_ids = _list_column(table, "input_ids")
    types = _list_column(table, "token_type_ids") if with_types else None
    return input_ids, types


def tokenize(
    df: pd.DataFrame,
    task: str | TaskSpec,
    tokenizer: Any,
    max_length: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> TokenizedSet:
    """Tokenize the task's text fields of `df` without padding.

    Pairs are truncated with the "longest_first" strategy. `df` needs the task's text
    fields and `label`. `example_id` is optional and defaults to the row number.

    Token ids are cached as Parquet under `<cache_dir>/tokenized/<key>.parquet`, where
    `cache_dir` defaults to `default_cache_dir()`. The key covers the tokenizer content
    (`tokenizer_fingerprint`), the task, `max_length` and a hash of the texts. Labels are
    not cached: they always come from `df`.
    """
    spec = get_task(task)
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise TypeError(f"max_length must be an int, got {_describe_value(max_length)}")
    minimum = 4 if spec.is_pair else 3
    if max_length < minimum:
        raise ValueError(
            f"max_length={max_length} leaves no room for text after the special tokens. "
            f"use at least {minimum} for task {spec.name!r}"
        )
    model_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_limit, int) and model_limit < 1_000_000 and max_length > model_limit:
        raise ValueError(
            f"max_length={max_length} exceeds the tokenizer's model_max_length="
            f"{model_limit}. Use max_length <= {model_limit}"
        )
    missing = [name for name in (*spec.text_fields, "label") if name not in df.columns]
    if missing:
        raise KeyError(
            f"frame lacks column(s) {', '.join(map(repr, missing))} needed by task "
            f"{spec.name!r}. Columns are {', '.join(map(str, df.columns))}"
        )
    if len(df) == 0:
        raise ValueError("cannot tokenize an empty frame")

    with_types = "token_type_ids" in tokenizer.model_input_names
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    example_ids = (
        df["example_id"].to_numpy() if "example_id" in df.columns else np.arange(len(df))
    )
    key = fingerprint(
        {
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "task": spec.name,
            "text_fields": list(spec.text_fields),
            "max_length": max_length,
            "texts": _texts_sha256(df, spec.text_fields),
        },
        length=32,
    )
    cache_path = Path(cache_dir or default_cache_dir()) / "tokenized" / f"{key}.parquet"

    cached = _read_token_cache(cache_path, len(df), with_types) if use_cache and cache_path.exists() else None
    if cached is not None:
        input_ids, types = cached
    else:
        input_ids, types = _encode(df, spec, tokenizer, max_length, with_types, progress)
        if use_cache:
            _write_token_cache(cache_path, input_ids, types)
    return TokenizedSet(
        input_ids=input_ids,
        token_type_ids=types,
        labels=df["label"].to_numpy(),
        example_ids=example_ids,
        task=spec.name,
        max_length=max_length,
        pad_token_id=int(pad_token_id),
    )


def _encode(
    df: pd.DataFrame,
    spec: TaskSpec,
    tokenizer: Any,
    max_length: int,
    with_types: bool,
    progress: bool,
    chunk_size: int = 1000,
) -> tuple[list[list[int]], list[list[int]] | None]:
    first = df[spec.text_fields[0]].tolist()
    second = df[spec.text_fields[1]].tolist() if spec.is_pair else None
    input_ids: list[list[int]] = []
    types: list[list[int]] | None = [] if with_types else None
    starts = range(0, len(first), chunk_size)
    for start in tqdm(starts, desc=f"tokenize {spec.name}", disable=not progress, leave=False):
        stop = start + chunk_size
        encoded = tokenizer(
            first[start:stop],
            second[start:stop] if second is not None else None,
            truncation="longest_first" if spec.is_pair else True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=with_types,
        )
        input_ids.extend(list(ids) for ids in encoded["input_ids"])
        if types is not None:
            types.extend(list(ids) for ids in encoded["token_type_ids"])
    return input_ids, types
