"""env.yaml parsing: protocol detection, path checks, run flags and the error messages."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package_name }}.contract.env import (
    DEFAULT_ENV_FILE,
    ENV_FILE_VARIABLES,
    Env,
    InputPaths,
    OutputPaths,
    env_file_path,
    load_env,
)
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError

# What YMIR 2.5 writes for a training task (docs/protocol.md#env-yaml), keys sorted as
# yaml.safe_dump does.
TRAINING_ENV = """\
input:
  annotations_dir: /in/annotations
  assets_dir: /in/assets
  candidate_index_file: ''
  config_file: /in/config.yaml
  models_dir: /in/models
  root_dir: /in
  training_index_file: /in/train-index.tsv
  val_index_file: /in/val-index.tsv
manifest_file: /img-man/manifest.yaml
output:
  executor_log_file: /out/ymir-executor-out.log
  infer_result_file: /out/infer-result.json
  mining_result_file: /out/result.tsv
  models_dir: /out/models
  monitor_file: /out/monitor.txt
  root_dir: /out
  tensorboard_dir: /out/tensorboard
  training_result_file: /out/models/result.yaml
protocol_version: 1.1.0
run_infer: false
run_mining: false
run_training: true
task_id: t0000001000002ebb7f11653630774
"""

REQUIRED_INPUT = ("root_dir", "assets_dir", "annotations_dir", "models_dir", "config_file")
REQUIRED_OUTPUT = (
    "root_dir",
    "models_dir",
    "tensorboard_dir",
    "training_result_file",
    "mining_result_file",
    "infer_result_file",
    "monitor_file",
)


def training_env() -> dict:
    return yaml.safe_load(TRAINING_ENV)


def infer_env(mining: bool = False, infer: bool = True) -> dict:
    data = training_env()
    data["run_training"] = False
    data["run_mining"] = mining
    data["run_infer"] = infer
    data["input"]["training_index_file"] = ""
    data["input"]["val_index_file"] = ""
    data["input"]["candidate_index_file"] = "/in/candidate-index.tsv"
    return data


def legacy_env() -> dict:
    """YMIR 1.1: no protocol_version, no executor_log_file, no manifest_file."""
    data = training_env()
    del data["protocol_version"]
    del data["manifest_file"]
    del data["output"]["executor_log_file"]
    return data


def write(tmp_path: Path, data: object, name: str = "env.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def config_error(path: Path, *fragments: str) -> ExecutorError:
    """Load ``path``, expect a CONFIG error naming the file and every fragment."""
    with pytest.raises(ExecutorError) as caught:
        load_env(path)
    error = caught.value
    assert error.code == ErrorCode.CONFIG
    assert str(path) in error.message
    for fragment in fragments:
        assert fragment in error.message
    return error


# --- where env.yaml is found -------------------------------------------------------------


def test_env_file_variables_and_default():
    assert ENV_FILE_VARIABLES == ("YMIR_ENV_FILE", "DEFAULT_ENV_FILE_PATH")
    assert DEFAULT_ENV_FILE == "/in/env.yaml"


def test_env_file_path_prefers_ymir_env_file():
    environ = dict(YMIR_ENV_FILE="/a/env.yaml", DEFAULT_ENV_FILE_PATH="/b/env.yaml")
    assert env_file_path(environ) == Path("/a/env.yaml")


def test_env_file_path_falls_back_to_sdk_variable():
    assert env_file_path(dict(DEFAULT_ENV_FILE_PATH="/b/env.yaml")) == Path("/b/env.yaml")
    # An empty variable counts as unset.
    environ = dict(YMIR_ENV_FILE="", DEFAULT_ENV_FILE_PATH="/b/env.yaml")
    assert env_file_path(environ) == Path("/b/env.yaml")


def test_env_file_path_default():
    assert env_file_path(dict()) == Path("/in/env.yaml")
    assert env_file_path(dict(YMIR_ENV_FILE="  ")) == Path("/in/env.yaml")


def test_env_file_path_reads_os_environ_at_call_time(monkeypatch):
    monkeypatch.delenv("YMIR_ENV_FILE", raising=False)
    monkeypatch.delenv("DEFAULT_ENV_FILE_PATH", raising=False)
    assert env_file_path() == Path("/in/env.yaml")
    monkeypatch.setenv("DEFAULT_ENV_FILE_PATH", "/sdk/env.yaml")
    assert env_file_path() == Path("/sdk/env.yaml")
    monkeypatch.setenv("YMIR_ENV_FILE", "/local/env.yaml")
    assert env_file_path() == Path("/local/env.yaml")


def test_load_env_without_argument_uses_ymir_env_file(tmp_path, monkeypatch):
    path = write(tmp_path, training_env())
    monkeypatch.setenv("YMIR_ENV_FILE", str(path))
    monkeypatch.setenv("DEFAULT_ENV_FILE_PATH", str(tmp_path / "missing.yaml"))
    assert load_env().task_id == "t0000001000002ebb7f11653630774"


def test_load_env_without_argument_uses_sdk_variable(tmp_path, monkeypatch):
    path = write(tmp_path, training_env())
    monkeypatch.delenv("YMIR_ENV_FILE", raising=False)
    monkeypatch.setenv("DEFAULT_ENV_FILE_PATH", str(path))
    assert load_env().run_training is True


def test_load_env_accepts_a_string_path(tmp_path):
    path = write(tmp_path, training_env())
    assert load_env(str(path)).run_training is True


# --- the protocol -------------------------------------------------------------------------


def test_modern_training_env_is_parsed_completely(tmp_path):
    env = load_env(write(tmp_path, training_env()))
    assert isinstance(env, Env)
    assert env.task_id == "t0000001000002ebb7f11653630774"
    assert (env.run_training, env.run_mining, env.run_infer) == (True, False, False)
    assert env.protocol_version == "1.1.0"
    assert env.legacy is False
    assert env.manifest_file == Path("/img-man/manifest.yaml")
    assert env.input == InputPaths(
        root_dir=Path("/in"),
        assets_dir=Path("/in/assets"),
        annotations_dir=Path("/in/annotations"),
        models_dir=Path("/in/models"),
        training_index_file=Path("/in/train-index.tsv"),
        val_index_file=Path("/in/val-index.tsv"),
        candidate_index_file=None,
        config_file=Path("/in/config.yaml"),
    )
    assert env.output == OutputPaths(
        root_dir=Path("/out"),
        models_dir=Path("/out/models"),
        tensorboard_dir=Path("/out/tensorboard"),
        training_result_file=Path("/out/models/result.yaml"),
        mining_result_file=Path("/out/result.tsv"),
        infer_result_file=Path("/out/infer-result.json"),
        monitor_file=Path("/out/monitor.txt"),
        executor_log_file=Path("/out/ymir-executor-out.log"),
    )


def test_env_is_frozen(tmp_path):
    env = load_env(write(tmp_path, training_env()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.run_training = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.output.monitor_file = Path("/tmp/x")  # type: ignore[misc]


def test_legacy_env_without_protocol_version(tmp_path):
    env = load_env(write(tmp_path, legacy_env()))
    assert env.protocol_version is None
    assert env.legacy is True
    # Before YMIR 2.0 there is no log file, before 2.1 no manifest_file.
    assert env.output.executor_log_file is None
    assert env.manifest_file is None
    assert env.output.monitor_file == Path("/out/monitor.txt")


@pytest.mark.parametrize(
    ("version", "legacy"),
    [
        ("1.0.0", False),
        ("1.1.0", False),
        ("1.1", False),
        ("1", False),
        ("1.10.0", False),
        ("0.0.1", True),  # the SDK's default for "absent"
        ("0.9.9", True),
        ("0.10", True),
        (" 1.1.0 ", False),
        ("v1.1.0", False),
        ("1.1.0rc1", False),
        ("1.1.0-dev", False),
    ],
)
def test_protocol_versions_compare_numerically(tmp_path, version, legacy):
    data = training_env()
    data["protocol_version"] = version
    env = load_env(write(tmp_path, data))
    assert env.legacy is legacy
    assert env.protocol_version == version.strip()


def test_unquoted_protocol_version_is_a_number_in_yaml(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text(TRAINING_ENV.replace("protocol_version: 1.1.0", "protocol_version: 1.1"))
    env = load_env(path)
    assert env.protocol_version == "1.1"
    assert env.legacy is False


def test_empty_protocol_version_is_legacy(tmp_path):
    # The SDK bundled with YMIR defaults a missing version to ''.
    data = training_env()
    data["protocol_version"] = ""
    env = load_env(write(tmp_path, data))
    assert env.protocol_version is None
    assert env.legacy is True


def test_future_protocol_is_modern_with_a_warning(tmp_path, caplog):
    data = training_env()
    data["protocol_version"] = "2.0.0"
    with caplog.at_level(logging.WARNING):
        env = load_env(write(tmp_path, data))
    assert env.legacy is False
    assert env.protocol_version == "2.0.0"
    assert any(
        "2.0.0" in record.getMessage() and record.levelno == logging.WARNING
        for record in caplog.records
    )


def test_known_protocol_logs_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_env(write(tmp_path, training_env()))
    assert not caplog.records


@pytest.mark.parametrize("version", ["latest", "abc", "1.x", "one.two", "-1", "1..0", "1."])
def test_junk_protocol_version_is_a_config_error(tmp_path, version):
    data = training_env()
    data["protocol_version"] = version
    error = config_error(write(tmp_path, data), "protocol_version", repr(version))
    assert "1.1.0" in error.message  # says what a valid value looks like


def test_protocol_version_of_wrong_type(tmp_path):
    data = training_env()
    data["protocol_version"] = ["1.1.0"]
    config_error(write(tmp_path, data), "protocol_version")


def test_legacy_property_of_a_hand_built_env():
    inputs = InputPaths(
        Path("/in"),
        Path("/in/assets"),
        Path("/in/annotations"),
        Path("/in/models"),
        None,
        None,
        Path("/in/c.tsv"),
        Path("/in/config.yaml"),
    )
    outputs = OutputPaths(
        Path("/out"),
        Path("/out/models"),
        Path("/out/tb"),
        Path("/out/r.yaml"),
        Path("/out/result.tsv"),
        Path("/out/infer-result.json"),
        Path("/out/monitor.txt"),
        None,
    )
    env = Env("t", False, False, True, None, None, inputs, outputs)
    assert env.legacy is True
    assert dataclasses.replace(env, protocol_version="1.1.0").legacy is False
    assert dataclasses.replace(env, protocol_version="0.5").legacy is True


# --- run flags ----------------------------------------------------------------------------


def test_infer_env_has_no_training_index_files(tmp_path):
    env = load_env(write(tmp_path, infer_env()))
    assert (env.run_training, env.run_mining, env.run_infer) == (False, False, True)
    assert env.input.training_index_file is None
    assert env.input.val_index_file is None
    assert env.input.candidate_index_file == Path("/in/candidate-index.tsv")


def test_mining_and_infer_together(tmp_path):
    env = load_env(write(tmp_path, infer_env(mining=True, infer=True)))
    assert (env.run_training, env.run_mining, env.run_infer) == (False, True, True)


def test_mining_only(tmp_path):
    env = load_env(write(tmp_path, infer_env(mining=True, infer=False)))
    assert (env.run_mining, env.run_infer) == (True, False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("yes", True),
        ("y", True),
        ("on", True),
        ("1", True),
        (1, True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("n", False),
        ("off", False),
        ("0", False),
        (0, False),
        (None, False),
    ],
)
def test_run_flags_accept_string_booleans(tmp_path, value, expected):
    data = infer_env(mining=True, infer=True)
    data["run_infer"] = value
    env = load_env(write(tmp_path, data))
    assert env.run_infer is expected
    assert env.run_mining is True


def test_missing_run_flag_is_false(tmp_path):
    data = infer_env(mining=True, infer=False)
    del data["run_infer"]
    del data["run_training"]
    env = load_env(write(tmp_path, data))
    assert (env.run_training, env.run_mining, env.run_infer) == (False, True, False)


@pytest.mark.parametrize("value", ["maybe", "2", 2, [True], "  "])
def test_bad_run_flag_is_a_config_error(tmp_path, value):
    data = infer_env()
    data["run_mining"] = value
    config_error(write(tmp_path, data), "run_mining", "true or false")


def test_no_run_flag_set_is_rejected(tmp_path):
    data = infer_env(mining=False, infer=False)
    config_error(write(tmp_path, data), "run_training", "run_mining", "run_infer")


def test_no_run_flag_present_is_rejected(tmp_path):
    data = training_env()
    for key in ("run_training", "run_mining", "run_infer"):
        del data[key]
    config_error(write(tmp_path, data), "none of")


@pytest.mark.parametrize("other", ["run_mining", "run_infer"])
def test_training_cannot_be_combined(tmp_path, other):
    data = training_env()
    data[other] = True
    config_error(write(tmp_path, data), "run_training", other)


def test_string_flags_combination_is_checked_too(tmp_path):
    data = training_env()
    data["run_training"] = "True"
    data["run_infer"] = "true"
    config_error(write(tmp_path, data), "cannot be combined")


# --- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", REQUIRED_INPUT)
def test_missing_input_path_is_named(tmp_path, key):
    data = training_env()
    del data["input"][key]
    config_error(write(tmp_path, data), "input." + key, "absolute path")


@pytest.mark.parametrize("key", REQUIRED_OUTPUT)
def test_missing_output_path_is_named(tmp_path, key):
    data = training_env()
    del data["output"][key]
    config_error(write(tmp_path, data), "output." + key, "absolute path")


def test_missing_monitor_file_message_suggests_the_platform_value(tmp_path):
    data = training_env()
    del data["output"]["monitor_file"]
    config_error(write(tmp_path, data), "output.monitor_file", "/out/monitor.txt")


@pytest.mark.parametrize("value", ["", None, "   "])
def test_empty_required_path_is_rejected(tmp_path, value):
    data = training_env()
    data["input"]["config_file"] = value
    config_error(write(tmp_path, data), "input.config_file")


@pytest.mark.parametrize("key", ["training_index_file", "val_index_file", "candidate_index_file"])
@pytest.mark.parametrize("value", ["", None, "DELETE"])
def test_empty_or_missing_index_paths_are_none(tmp_path, key, value):
    data = training_env()
    if value == "DELETE":
        del data["input"][key]
    else:
        data["input"][key] = value
    env = load_env(write(tmp_path, data))
    assert getattr(env.input, key) is None


def test_empty_executor_log_file_and_manifest_file_are_none(tmp_path):
    data = training_env()
    data["output"]["executor_log_file"] = ""
    data["manifest_file"] = ""
    env = load_env(write(tmp_path, data))
    assert env.output.executor_log_file is None
    assert env.manifest_file is None


@pytest.mark.parametrize(
    ("section", "key", "name"),
    [
        ("input", "assets_dir", "input.assets_dir"),
        ("input", "training_index_file", "input.training_index_file"),
        ("output", "monitor_file", "output.monitor_file"),
        ("output", "executor_log_file", "output.executor_log_file"),
        (None, "manifest_file", "manifest_file"),
    ],
)
def test_relative_paths_are_rejected(tmp_path, section, key, name):
    data = training_env()
    target = data if section is None else data[section]
    target[key] = "relative/path.txt"
    config_error(write(tmp_path, data), name, "absolute", "relative/path.txt")


@pytest.mark.parametrize("value", [5, ["/in/assets"], True])
def test_non_string_paths_are_rejected(tmp_path, value):
    data = training_env()
    data["input"]["assets_dir"] = value
    config_error(write(tmp_path, data), "input.assets_dir", "absolute path")


def test_paths_are_kept_as_written(tmp_path):
    # Local runs (the devkit) point every path somewhere else; nothing is hard-coded to /in.
    data = training_env()
    local = tmp_path / "my in" / "assets"
    data["input"]["assets_dir"] = str(local)
    env = load_env(write(tmp_path, data))
    assert env.input.assets_dir == local


@pytest.mark.parametrize("section", ["input", "output"])
def test_missing_section(tmp_path, section):
    data = training_env()
    del data[section]
    config_error(write(tmp_path, data), "'" + section + "'")


@pytest.mark.parametrize("section", ["input", "output"])
def test_section_that_is_not_a_mapping(tmp_path, section):
    data = training_env()
    data[section] = ["/in"]
    config_error(write(tmp_path, data), "'" + section + "'", "mapping")


# --- task_id ------------------------------------------------------------------------------


def test_missing_task_id_takes_the_platform_default(tmp_path):
    data = training_env()
    del data["task_id"]
    assert load_env(write(tmp_path, data)).task_id == "default-task"


def test_numeric_task_id_becomes_a_string(tmp_path):
    data = training_env()
    data["task_id"] = 12345
    assert load_env(write(tmp_path, data)).task_id == "12345"


@pytest.mark.parametrize("value", ["t 1", ["t1"], True])
def test_bad_task_id(tmp_path, value):
    data = training_env()
    data["task_id"] = value
    config_error(write(tmp_path, data), "task_id")


# --- the file itself ----------------------------------------------------------------------


def test_missing_file_says_how_to_fix(tmp_path):
    path = tmp_path / "nowhere" / "env.yaml"
    config_error(path, "not found", "YMIR_ENV_FILE")


def test_unreadable_file(tmp_path):
    # A folder where the file should be: reading fails with an OSError other than "not found".
    path = tmp_path / "env.yaml"
    path.mkdir()
    config_error(path, "cannot read")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("input: [unclosed\nrun_training: true\n")
    error = config_error(path, "not valid YAML")
    assert "\n" not in error.message  # one line: the UI shows the last log lines only


@pytest.mark.parametrize(("text", "kind"), [("", "empty"), ("- a\n- b\n", "list"), ("42\n", "int")])
def test_env_that_is_not_a_mapping(tmp_path, text, kind):
    path = tmp_path / "env.yaml"
    path.write_text(text)
    config_error(path, "mapping", kind)


def test_unknown_keys_are_ignored(tmp_path):
    # Future platform versions may add keys; they must not break older executors.
    data = training_env()
    data["something_new"] = 1
    data["input"]["extra_dir"] = "/in/extra"
    assert load_env(write(tmp_path, data)).run_training is True
