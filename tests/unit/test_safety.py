"""Loading never executes remote code or unpickles weights."""

import ast
import os
from pathlib import Path

import pytest

from svutils.models import UnknownModelError, load_model

PACKAGE = Path(__file__).resolve().parents[2] / "svutils"


def test_pickled_weights_are_rejected(tmp_path):
    model, tokenizer = load_model("tiny-bert", 2)
    model.save_pretrained(tmp_path, safe_serialization=False)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "pytorch_model.bin").is_file()
    with pytest.raises(UnknownModelError, match="safetensors|model.safetensors"):
        load_model(str(tmp_path), 2)


def test_safetensors_folder_loads(tmp_path):
    model, tokenizer = load_model("tiny-bert", 2)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_model(str(tmp_path), 2)
    assert type(loaded).__name__ == "BertForSequenceClassification"


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_package_never_unpickles_or_trusts_remote_code():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not any(name.split(".")[0] in {"pickle", "dill", "joblib"} for name in names), path
        for call in _calls(tree):
            target = ast.unparse(call.func)
            assert target not in {"torch.load", "pd.read_pickle", "pandas.read_pickle", "np.load"}, f"{path}: {target}"
            for keyword in call.keywords:
                if keyword.arg == "trust_remote_code":
                    assert isinstance(keyword.value, ast.Constant) and keyword.value.value is False, f"{path}: {ast.unparse(call)}"


def test_atomic_writes_use_default_permissions(tmp_path):
    from svutils.io import atomic_directory, atomic_write_text

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "result.json", "{}")
        with atomic_directory(tmp_path / "checkpoint") as folder:
            (folder / "weights.bin").write_bytes(b"0")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "checkpoint").stat().st_mode & 0o777 == 0o755
