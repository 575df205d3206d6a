"""Tests of ExperimentConfig validation, profiles and command-line values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from svutils import config as config_module
from svutils.config import (
    CLEAR,
    KINDS,
    NOTEBOOKS,
    OVERRIDABLE_FIELDS,
    ConfigError,
    ConfigTypeError,
    ExperimentConfig,
    available_profiles,
    describe_overrides,
    field_help,
    load_profile,
    parse_cli_value,
)


# ---------------------------------------------------------------------------------------
# Field validation.


def test_defaults_are_valid():
    config = ExperimentConfig()
    assert config.tasks == ["imdb", "rte", "qnli", "qqp", "mnli"]
    assert config.checkpoint_epochs == [1, 2, 3]
    assert config.kinds == list(KINDS)


def test_every_field_has_help():
    help_texts = field_help()
    assert set(help_texts) == {item.name for item in dataclasses.fields(ExperimentConfig)}
    assert all(text.strip() for text in help_texts.values())


def test_kinds_match_models_module():
    models = pytest.importorskip("svutils.models", reason="svutils.models is not written yet")
    assert KINDS == models.KINDS


def test_tasks_follow_tasks_module():
    tasks = pytest.importorskip("svutils.tasks", reason="svutils.tasks is not written yet")
    assert config_module.valid_task_names() == tuple(tasks.TASKS)


@pytest.mark.parametrize(
    ("field_name", "value", "message"),
    [
        ("n_bands", 0, "invalid n_bands 0: expected an integer >= 1, e.g. 10"),
        ("max_length", 4, "invalid max_length 4: expected an integer in [8, 4096]"),
        ("max_length", 5000, "invalid max_length 5000"),
        ("epochs", 0, "invalid epochs 0"),
        ("n_train", 0, "invalid n_train 0"),
        ("learning_rate", 0.0, "invalid learning_rate 0.0: expected a number > 0"),
        ("learning_rate", float("nan"), "the value is not finite"),
        ("warmup_ratio", 1.0, "invalid warmup_ratio 1.0: expected a number in [0, 1)"),
        ("weight_decay", -0.1, "invalid weight_decay -0.1: expected a number >= 0"),
        ("n_bootstrap", 99, "invalid n_bootstrap 99: expected an integer >= 100"),
        ("ci_level", 0.4, "invalid ci_level 0.4: expected a number in [0.5, 0.999]"),
        ("ci_level", 1.0, "invalid ci_level 1.0"),
        ("collapse_threshold", 0.3, "invalid collapse_threshold 0.3"),
        ("band_convention", "ceil", "invalid band_convention 'ceil': expected one of balanced, floor"),
        ("seeds", [], "invalid seeds []: the list is empty"),
        ("seeds", [-1], "invalid item of seeds -1"),
        ("seeds", [0, 0], "0 is listed twice"),
        ("tasks", ["rte", "rte"], "'rte' is listed twice"),
        ("tasks", ["rtee"], "invalid tasks item 'rtee': valid names are imdb, rte"),
        ("tasks", "rte,,qnli", "the list has an empty item"),
        ("kinds", ["q", "x"], "invalid kinds item 'x'"),
        ("model", "  ", "the string is empty"),
        ("eval_split", "", "the string is empty"),
    ],
)
def test_invalid_value_raises(field_name, value, message):
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig(**{field_name: value})
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("n_bands", True),
        ("n_bands", 4.0),
        ("n_bands", "4"),
        ("learning_rate", "1e-3"),
        ("learning_rate", False),
        ("controls", "false"),
        ("controls", 1),
        ("seeds", [True]),
        ("tasks", 5),
        ("layer_groups", 3),
        ("task_overrides", [1]),
        ("data_dir", 3),
    ],
)
def test_wrong_type_raises_type_error(field_name, value):
    with pytest.raises(ConfigTypeError) as raised:
        ExperimentConfig(**{field_name: value})
    assert isinstance(raised.value, TypeError)
    assert isinstance(raised.value, ValueError)
    assert field_name in str(raised.value)


def test_type_error_hints_float_literal():
    with pytest.raises(ConfigTypeError) as raised:
        ExperimentConfig(n_bands=4.0)
    assert "write 4 without a decimal point" in str(raised.value)


def test_int_accepted_for_float():
    config = ExperimentConfig(learning_rate=1, warmup_ratio=0)
    assert config.learning_rate == 1.0
    assert isinstance(config.learning_rate, float)
    assert isinstance(config.warmup_ratio, float)


def test_lists_from_strings():
    config = ExperimentConfig(tasks=" RTE, qnli ", seeds="0,1,2", kinds='["q", "v"]')
    assert config.tasks == ["rte", "qnli"]
    assert config.seeds == [0, 1, 2]
    assert config.kinds == ["q", "v"]


def test_kinds_aliases_expand_in_order():
    assert ExperimentConfig(kinds="ffn,q").kinds == ["q", "ffn_in", "ffn_out"]
    assert ExperimentConfig(kinds=["attn"]).kinds == ["q", "k", "v", "o"]
    assert ExperimentConfig(kinds="all").kinds == list(KINDS)


def test_optional_fields_clear_words():
    config = ExperimentConfig(n_train="all", n_eval="None", data_dir="null", eval_split=CLEAR)
    assert config.n_train is None
    assert config.n_eval is None
    assert config.data_dir is None
    assert config.eval_split is None


def test_checkpoint_epochs_sorted():
    config = ExperimentConfig(epochs=10, checkpoint_epochs=[10, 0, 3])
    assert config.checkpoint_epochs == [0, 3, 10]


def test_checkpoint_epochs_must_include_last_epoch():
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig(epochs=4, checkpoint_epochs=[1, 2])
    assert "must include the last epoch (4), e.g. [1, 2, 4]" in str(raised.value)


def test_checkpoint_epochs_after_last_epoch():
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig(epochs=2, checkpoint_epochs=[1, 2, 3])
    assert "epochs [3] are after the last epoch (2)" in str(raised.value)


def test_layer_groups_ranges():
    config = ExperimentConfig(layer_groups={"early": "0-3", "late": [11, 8, "9-10"], "one": 5})
    assert config.layer_groups == {"early": [0, 1, 2, 3], "late": [8, 9, 10, 11], "one": [5]}


def test_layer_groups_from_json_text():
    config = ExperimentConfig(layer_groups='{"early": "0-1,4"}')
    assert config.layer_groups == {"early": [0, 1, 4]}


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"early": "3-1"}, "the range '3-1' is empty"),
        ({"early": [0, 0]}, "layer 0 is listed twice"),
        ({"early": "0-2,2"}, "layer 2 is listed twice"),
        ({"early": [-1]}, "layer -1 is negative"),
        ({"early": "a-b"}, "'a-b' is not a layer index or range"),
        ({"early": []}, "the group has no layers"),
        ({}, "the mapping is empty"),
        ({"": [1]}, "group name '' is not a non-empty string"),
    ],
)
def test_layer_groups_invalid(groups, message):
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig(layer_groups=groups)
    assert message in str(raised.value)


def test_task_overrides_validated_like_fields():
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig(task_overrides={"imdb": {"max_length": 2}})
    assert "invalid task_overrides['imdb'].max_length 2" in str(raised.value)


def test_task_overrides_unknown_field():
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig(task_overrides={"imdb": {"max_len": 100}})
    message = str(raised.value)
    assert "per-task overrides may set only n_train, n_eval" in message
    assert "did you mean 'max_length'?" in message


def test_task_overrides_unknown_task():
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig(task_overrides={"imbd": {"max_length": 100}})
    assert "invalid task 'imbd' in task_overrides" in str(raised.value)
    assert "did you mean 'imdb'?" in str(raised.value)


def test_config_is_frozen():
    config = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_bands = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Methods.


def test_for_task_applies_overrides():
    config = ExperimentConfig(
        tasks=["imdb", "rte"],
        max_length=128,
        task_overrides={"imdb": {"max_length": 512, "n_eval": None, "eval_split": "test"}},
        n_eval=100,
    )
    imdb = config.for_task("imdb")
    rte = config.for_task("rte")
    assert imdb.tasks == ["imdb"]
    assert imdb.max_length == 512
    assert imdb.n_eval is None
    assert imdb.eval_split == "test"
    assert imdb.task_overrides == {}
    assert rte.max_length == 128
    assert rte.n_eval == 100


def test_for_task_epochs_override_adjusts_checkpoints():
    config = ExperimentConfig(
        tasks=["rte", "qnli"],
        epochs=10,
        checkpoint_epochs=[1, 2, 3, 10],
        task_overrides={"rte": {"epochs": 2}, "qnli": {"epochs": 12}},
    )
    assert config.for_task("rte").checkpoint_epochs == [1, 2]
    assert config.for_task("qnli").checkpoint_epochs == [1, 2, 3, 10, 12]


def test_for_task_outside_tasks():
    config = ExperimentConfig(tasks=["rte"])
    with pytest.raises(ConfigError) as raised:
        config.for_task("qnli")
    assert "task 'qnli' is not in this config's tasks (rte)" in str(raised.value)


def test_to_dict_is_json():
    config = load_profile("original")
    values = config.to_dict()
    assert json.loads(json.dumps(values)) == values
    assert ExperimentConfig(**values) == config


def test_fingerprint_ignores_paths_and_profile():
    base = ExperimentConfig(profile="a", output_dir="/x", cache_dir="/y")
    moved = ExperimentConfig(profile="b", output_dir="/z", cache_dir="/w")
    changed = ExperimentConfig(n_bands=5)
    assert base.fingerprint() == moved.fingerprint()
    assert base.fingerprint() != changed.fingerprint()


def test_resolved_output_dir_default():
    config = ExperimentConfig(profile="smoke")
    assert config.resolved_output_dir() == config_module.REPO_ROOT / "results" / "smoke"
    assert ExperimentConfig(output_dir="~/out").resolved_output_dir() == Path.home() / "out"


def test_resolved_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.setenv("SVUTILS_CACHE_DIR", str(tmp_path))
    assert ExperimentConfig().resolved_cache_dir() == tmp_path
    assert ExperimentConfig(cache_dir="/c").resolved_cache_dir() == Path("/c")


def test_resolved_data_dir_hub(monkeypatch):
    monkeypatch.delenv("SVUTILS_DATA_DIR", raising=False)
    assert ExperimentConfig().resolved_data_dir() is None


def test_resolved_data_dir_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SVUTILS_DATA_DIR", str(tmp_path))
    assert ExperimentConfig().resolved_data_dir() == tmp_path


def test_resolved_data_dir_missing_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("SVUTILS_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError) as raised:
        ExperimentConfig().resolved_data_dir()
    assert "$SVUTILS_DATA_DIR" in str(raised.value)
    with pytest.raises(FileNotFoundError) as raised:
        ExperimentConfig(data_dir=str(tmp_path / "absent")).resolved_data_dir()
    assert "is not a folder" in str(raised.value)


def test_resolved_data_dir_synthetic(tmp_path):
    config = load_profile("smoke", cache_dir=str(tmp_path))
    folder = config.resolved_data_dir()
    assert folder == tmp_path / "synthetic-data"
    assert (folder / "rte" / "train.jsonl").is_file()
    assert len((folder / "rte" / "train.jsonl").read_text().splitlines()) == 200


def test_resolved_data_dir_synthetic_larger(tmp_path):
    config = load_profile("smoke", cache_dir=str(tmp_path), n_train=300, tasks="rte")
    folder = config.resolved_data_dir()
    assert folder == tmp_path / "synthetic-data-300-120"
    assert len((folder / "rte" / "train.jsonl").read_text().splitlines()) == 300


def test_finetune_config_fields(tmp_path):
    finetune = pytest.importorskip(
        "svutils.finetune", reason="svutils.finetune is not written yet; rerun when it exists"
    )
    config = load_profile(
        "smoke", cache_dir=str(tmp_path), task_overrides={"imdb": {"max_length": 64}}
    )
    built = config.finetune_config("imdb", seed=3)
    assert isinstance(built, finetune.FinetuneConfig)
    assert built.model == "tiny-bert"
    assert built.task == "imdb"
    assert built.seed == 3
    assert built.max_length == 64
    assert built.n_train == 64
    assert list(built.checkpoint_epochs) == [1, 2, 3]
    assert Path(built.data_dir) == tmp_path / "synthetic-data"


def test_finetune_config_rejects_bad_seed():
    pytest.importorskip("svutils.finetune", reason="svutils.finetune is not written yet")
    with pytest.raises(ConfigError):
        ExperimentConfig().finetune_config("rte", seed=-1)


# ---------------------------------------------------------------------------------------
# Profiles.


def test_profiles_available():
    assert available_profiles() == ("original", "paper", "quick", "smoke")


@pytest.mark.parametrize("name", ["original", "paper", "quick", "smoke"])
def test_profile_loads_for_every_notebook(name):
    for notebook in (None, *NOTEBOOKS):
        config = load_profile(name, notebook=notebook)
        assert config.profile == name


@pytest.mark.parametrize("name", ["original", "paper", "quick", "smoke"])
def test_profile_file_starts_with_comment(name):
    text = (config_module.PROFILES_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# ")


def test_smoke_profile_values():
    config = load_profile("smoke")
    assert config.model == "tiny-bert"
    assert config.tasks == ["rte", "imdb"]
    assert config.data_dir == "synthetic"
    assert (config.n_train, config.n_eval, config.max_length) == (64, 48, 32)
    assert (config.epochs, config.checkpoint_epochs) == (3, [1, 2, 3])
    assert config.learning_rate == 1e-3
    assert (config.batch_size, config.eval_batch_size) == (16, 32)
    assert (config.n_bands, config.controls, config.n_bootstrap) == (4, True, 200)


def test_quick_profile_values():
    config = load_profile("quick")
    assert config.model == "minilm"
    assert config.tasks == ["imdb", "rte", "qnli", "mnli", "qqp"]
    assert (config.n_train, config.n_eval, config.max_length) == (1000, 600, 128)
    assert config.for_task("rte").n_eval is None
    assert (config.for_task("imdb").n_train, config.for_task("imdb").n_eval) == (600, 400)
    assert (config.learning_rate, config.batch_size) == (1e-4, 16)
    assert (config.warmup_ratio, config.weight_decay) == (0.1, 0.01)
    assert (config.n_bands, config.band_convention, config.n_bootstrap) == (10, "balanced", 1000)


def test_quick_profile_notebook_tasks():
    for notebook in ("training_duration", "matrix_specific"):
        assert load_profile("quick", notebook=notebook).tasks == ["qnli", "mnli"]
    assert load_profile("quick", notebook="why").tasks == ["rte", "qnli"]
    assert load_profile("quick", notebook="early_ffn").tasks == ["qnli"]
    assert len(load_profile("quick", notebook="task_complexity").tasks) == 5


def test_paper_profile_values():
    config = load_profile("paper")
    assert config.model == "distilbert-base-uncased"
    assert (config.n_train, config.n_eval) == (None, None)
    assert config.seeds == [0, 1, 2]
    assert config.learning_rate == 2e-5
    assert config.for_task("imdb").max_length == 512
    assert config.for_task("rte").max_length == 256


def test_original_profile_values():
    config = load_profile("original")
    imdb, rte, mnli = (config.for_task(task) for task in ("imdb", "rte", "mnli"))
    assert config.model == "bert-base-cased"
    assert (imdb.n_train, imdb.n_eval, imdb.max_length) == (10000, 10000, 100)
    assert (rte.n_train, rte.n_eval, rte.max_length) == (None, None, 256)
    assert (mnli.n_train, mnli.n_eval, mnli.eval_split) == (2500, 4000, "validation")
    assert (config.epochs, config.checkpoint_epochs) == (10, [1, 2, 3, 10])
    assert (config.learning_rate, config.batch_size) == (5e-5, 16)
    assert config.band_convention == "floor"
    assert config.layer_groups == {"early": [0, 1, 2, 3], "middle": [4, 5, 6, 7], "late": [8, 9, 10, 11]}


def test_unknown_profile():
    with pytest.raises(ConfigError) as raised:
        load_profile("quik")
    message = str(raised.value)
    assert "unknown profile 'quik'; valid profiles are original, paper, quick, smoke" in message
    assert "svutils/profiles/" in message
    assert "did you mean 'quick'?" in message


def test_unknown_notebook():
    with pytest.raises(ConfigError) as raised:
        load_profile("quick", notebook="primer")
    assert "unknown notebook 'primer'; valid notebooks are svd_primer" in str(raised.value)


def test_unknown_override_field():
    with pytest.raises(ConfigError) as raised:
        load_profile("quick", n_band=4)
    message = str(raised.value)
    assert "unknown field 'n_band' in the overrides" in message
    assert "did you mean 'n_bands'?" in message


def test_override_none_keeps_profile_value():
    config = load_profile("quick", n_bands=None, tasks=None, n_train=None)
    assert config.n_bands == 10
    assert config.n_train == 1000


def test_override_clear_sets_none():
    assert load_profile("quick", n_train=CLEAR).n_train is None


def test_override_beats_notebook_section():
    config = load_profile("quick", notebook="why", tasks=["mnli"])
    assert config.tasks == ["mnli"]


def test_override_task_overrides_merge():
    config = load_profile("original", task_overrides={"imdb": {"max_length": 200}})
    imdb = config.for_task("imdb")
    assert imdb.max_length == 200
    assert imdb.n_train == 10000
    assert config.for_task("mnli").eval_split == "validation"


def test_override_profile_rejected():
    with pytest.raises(ConfigError) as raised:
        load_profile("quick", profile="smoke")
    assert "profile cannot be overridden" in str(raised.value)


def _write_profile(monkeypatch, tmp_path, text: str) -> None:
    (tmp_path / "custom.yaml").write_text(text)
    monkeypatch.setattr(config_module, "PROFILES_DIR", tmp_path)


def test_profile_file_bad_value(monkeypatch, tmp_path):
    _write_profile(monkeypatch, tmp_path, "defaults:\n  n_bands: 0\n")
    with pytest.raises(ConfigError) as raised:
        load_profile("custom")
    assert "invalid n_bands 0" in str(raised.value)
    assert "in profile 'custom'" in str(raised.value)


def test_profile_file_unknown_section(monkeypatch, tmp_path):
    _write_profile(monkeypatch, tmp_path, "defaults: {}\nnotebook:\n  why: {}\n")
    with pytest.raises(ConfigError) as raised:
        load_profile("custom")
    assert "unknown sections ['notebook']" in str(raised.value)


def test_profile_file_unknown_notebook(monkeypatch, tmp_path):
    _write_profile(monkeypatch, tmp_path, "defaults: {}\nnotebooks:\n  whyy:\n    n_bands: 3\n")
    with pytest.raises(ConfigError) as raised:
        load_profile("custom")
    assert "unknown notebook 'whyy'" in str(raised.value)


def test_profile_file_without_defaults(monkeypatch, tmp_path):
    _write_profile(monkeypatch, tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError) as raised:
        load_profile("custom")
    assert "must be a mapping with a 'defaults:' mapping" in str(raised.value)


def test_profile_yaml_reads_exponent_float(monkeypatch, tmp_path):
    _write_profile(monkeypatch, tmp_path, "defaults:\n  learning_rate: 3e-4\n")
    assert load_profile("custom").learning_rate == 3e-4


# ---------------------------------------------------------------------------------------
# Command-line values.


@pytest.mark.parametrize(
    ("field_name", "text", "expected"),
    [
        ("n_bands", "10", 10),
        ("learning_rate", "5e-5", 5e-5),
        ("warmup_ratio", "0", 0.0),
        ("controls", "false", False),
        ("controls", "Yes", True),
        ("tasks", "rte,qnli", ["rte", "qnli"]),
        ("tasks", '["mnli"]', ["mnli"]),
        ("seeds", "0,1,2", [0, 1, 2]),
        ("checkpoint_epochs", "[1, 3]", [1, 3]),
        ("kinds", "attn", ["q", "k", "v", "o"]),
        ("model", "bert-base-cased", "bert-base-cased"),
        ("band_convention", "floor", "floor"),
        ("n_eval", "null", CLEAR),
        ("n_train", "all", CLEAR),
        ("data_dir", "synthetic", "synthetic"),
        ("layer_groups", '{"early": "0-3"}', {"early": [0, 1, 2, 3]}),
        ("layer_groups", "none", CLEAR),
        ("task_overrides", '{"imdb": {"max_length": 100}}', {"imdb": {"max_length": 100}}),
        ("task_overrides", "{rte: {n_eval: null}}", {"rte": {"n_eval": None}}),
    ],
)
def test_parse_cli_value(field_name, text, expected):
    assert parse_cli_value(field_name, text) == expected


@pytest.mark.parametrize(
    ("field_name", "text", "message"),
    [
        ("n_bands", "ten", "invalid value 'ten' for -p n_bands: expected an integer >= 1, e.g. -p n_bands 10"),
        ("n_bands", "2.5", "invalid value '2.5' for -p n_bands"),
        ("learning_rate", "fast", "invalid value 'fast' for -p learning_rate: expected a number > 0"),
        ("controls", "maybe", "expected true or false, e.g. -p controls false"),
        ("n_bands", "0", "invalid n_bands 0: expected an integer >= 1, e.g. 10 (from -p n_bands '0')"),
        ("seeds", "0,x", "invalid seeds 'x': the item is not an integer"),
        ("task_overrides", "{imdb: [", "the mapping does not parse"),
        ("layer_groups", "[1, 2]", "invalid layer_groups [1, 2] of type list"),
    ],
)
def test_parse_cli_value_invalid(field_name, text, message):
    with pytest.raises(ConfigError) as raised:
        parse_cli_value(field_name, text)
    assert message in str(raised.value)


def test_parse_cli_value_unknown_field():
    with pytest.raises(ConfigError) as raised:
        parse_cli_value("n_bandz", "4")
    assert "unknown field 'n_bandz' for -p" in str(raised.value)
    assert "did you mean 'n_bands'?" in str(raised.value)


def test_parse_cli_value_profile_field():
    with pytest.raises(ConfigError) as raised:
        parse_cli_value("profile", "smoke")
    assert "profile is chosen with --profile" in str(raised.value)


def test_parse_cli_value_covers_every_field():
    examples = {name: config_module.FIELD_SPECS[name].example.strip("'") for name in OVERRIDABLE_FIELDS}
    for name, text in examples.items():
        parse_cli_value(name, text)


def test_describe_overrides():
    text = describe_overrides(
        {"n_bands": 4, "tasks": ["rte", "qnli"], "controls": False, "task_overrides": {"imdb": {"max_length": 100}}}
    )
    assert text == (
        "-p n_bands 4 -p tasks rte,qnli -p controls false "
        "-p task_overrides '{\"imdb\": {\"max_length\": 100}}'"
    )
