"""Atomic file writes and content fingerprints shared by the caches and stores.

A crash or SIGKILL at any moment must never leave a file or folder that looks complete but
is not, so every writer here writes to a temporary name in the same folder, flushes it to
disk and renames it into place: a rename within one file system is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    # os.umask can only be read by setting it, so set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_permissions(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Give `path` the mode a plain `open()` or `mkdir()` would, 0o666 or 0o777 minus the umask.

    `tempfile.mkstemp` and `mkdtemp` create owner-only entries (0o600, 0o700), which would
    make results and caches unreadable for other users after the atomic rename.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_current_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        default_permissions(tmp_name)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays, paths, tuples and sets into plain JSON values."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def canonical_json(value: Any) -> str:
    """Serialize `value` as JSON with sorted keys and no spaces, so equal values hash equally."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


def atomic_write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2) -> Path:
    """Write `value` as JSON to `path` atomically."""
    text = json.dumps(to_jsonable(value), indent=indent, sort_keys=True, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def fingerprint(value: Any, length: int = 16) -> str:
    """Return a hex SHA-256 prefix of the canonical JSON of `value` (a cache key)."""
    digest = hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
    return digest[:length]


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that is renamed to `path` only when the body succeeds.

    The temporary folder lives beside `path`, so the rename is atomic. If `path` already
    exists it is replaced. If the body raises or the process dies, `path` is untouched and
    the temporary folder (named `.<name>.tmp-*`) is removed or left for a later cleanup.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        default_permissions(tmp, directory=True)
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete leftovers of interrupted atomic writes (`.*.tmp*` entries) in `folder`.

    Returns how many entries were removed. Call it only when no other process writes to
    `folder`, because a live writer's temporary file looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        if entry.name.startswith(".") and ".tmp" in entry.name:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed += 1
    return removed


def default_cache_dir() -> Path:
    """Return the cache root: `$SVUTILS_CACHE_DIR`, else `~/.cache/svutils`."""
    configured = os.environ.get("SVUTILS_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "svutils"
