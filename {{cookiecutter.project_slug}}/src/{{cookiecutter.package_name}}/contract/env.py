"""Read and check ``env.yaml``: which task to run and where every input and output lives.

YMIR writes ``/in/env.yaml`` for every task (docs/protocol.md#env-yaml). All paths in it are
absolute, so a local run only needs its own env.yaml, named by the environment variable
``YMIR_ENV_FILE`` (the SDK's ``DEFAULT_ENV_FILE_PATH`` is honoured too, for compatibility).

The protocol is decided here and only here: no ``protocol_version`` (YMIR 1.1) or a version
below 1.0.0 is *legacy*; 1.0.0 and above is *modern* (every YMIR 2.x writes ``1.1.0``).
Environment variables such as ``YMIR_VERSION`` are deliberately ignored.

Every problem is reported as ``ExecutorError(ErrorCode.CONFIG, "<file>: <what> ...")`` so the
user sees which file and key are wrong and how to fix them.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .booleans import parse_bool
from .errors import ErrorCode, ExecutorError

ENV_FILE_VARIABLES = ("YMIR_ENV_FILE", "DEFAULT_ENV_FILE_PATH")
DEFAULT_ENV_FILE = "/in/env.yaml"

# The newest protocol this code knows; anything newer is run as modern with a warning.
KNOWN_PROTOCOL_VERSION = "1.1.0"

_LOG = logging.getLogger(__name__)

# "1", "1.1", "1.1.0", "v1.1.0" and release suffixes ("1.1.0rc1", "1.1.0-dev", "1.1.0+x") are
# accepted; only the leading numbers are compared. "1.x" or "latest" are not versions.
_VERSION_RE = re.compile(r"^v?(\d+(?:\.\d+)*)(?:(?:[-+]|(?=[A-Za-z]))[0-9A-Za-z][0-9A-Za-z.+-]*)?$")

_RUN_FLAGS = ("run_training", "run_mining", "run_infer")


@dataclass(frozen=True)
class InputPaths:
    """``input`` section of env.yaml. Index files the task does not use are ``None``."""

    root_dir: Path
    assets_dir: Path
    annotations_dir: Path
    models_dir: Path
    training_index_file: Path | None
    val_index_file: Path | None
    candidate_index_file: Path | None
    config_file: Path


@dataclass(frozen=True)
class OutputPaths:
    """``output`` section of env.yaml. ``executor_log_file`` is absent before YMIR 2.0."""

    root_dir: Path
    models_dir: Path
    tensorboard_dir: Path
    training_result_file: Path
    mining_result_file: Path
    infer_result_file: Path
    monitor_file: Path
    executor_log_file: Path | None


@dataclass(frozen=True)
class Env:
    """The parsed env.yaml."""

    task_id: str
    run_training: bool
    run_mining: bool
    run_infer: bool
    protocol_version: str | None
    manifest_file: Path | None
    input: InputPaths
    output: OutputPaths

    @property
    def legacy(self) -> bool:
        """True for YMIR 1.1 (no ``protocol_version``, or one below 1.0.0).

        Legacy decides the result formats: ``model`` + ``map`` in result.yaml, the infer key
        ``annotations`` and flat model files.
        """
        if self.protocol_version is None:
            return True
        return parse_protocol_version(self.protocol_version) < (1, 0, 0)


def parse_protocol_version(value: str, source: str = "env.yaml") -> tuple[int, ...]:
    """``"1.1.0"`` -> ``(1, 1, 0)``; shorter forms are padded (``"1.1"`` -> ``(1, 1, 0)``).

    Numbers are compared as numbers, so ``"1.10.0"`` is newer than ``"1.9.0"``.
    """
    match = _VERSION_RE.match(value.strip())
    if match is None:
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: protocol_version {value!r} is not a version number; YMIR writes "
            f"'{KNOWN_PROTOCOL_VERSION}' (remove the key for the legacy YMIR 1.1 protocol)",
        )
    numbers = tuple(int(part) for part in match.group(1).split("."))
    return numbers + (0,) * (3 - len(numbers))


def env_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """The env.yaml to read.

    ``$YMIR_ENV_FILE``, else ``$DEFAULT_ENV_FILE_PATH`` (the SDK's name), else /in/env.yaml.
    """
    if environ is None:
        # Looked up at call time so that tests and the devkit can change os.environ.
        environ = os.environ
    for variable in ENV_FILE_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            return Path(value)
    return Path(DEFAULT_ENV_FILE)


def load_env(path: Path | None = None) -> Env:
    """Read, check and return env.yaml (``path``, or the one :func:`env_file_path` names)."""
    env_path = Path(path) if path is not None else env_file_path()
    data = _read_mapping(env_path)
    source = str(env_path)

    protocol_version = _protocol_version(data, source)
    flags = {name: _flag(data, name, source) for name in _RUN_FLAGS}
    _check_flags(flags, source)

    input_section = _section(data, "input", source)
    output_section = _section(data, "output", source)
    inputs = InputPaths(
        root_dir=_path(input_section, "input", "root_dir", source),
        assets_dir=_path(input_section, "input", "assets_dir", source),
        annotations_dir=_path(input_section, "input", "annotations_dir", source),
        models_dir=_path(input_section, "input", "models_dir", source),
        # The platform writes '' for the index files a task does not use.
        training_index_file=_optional_path(input_section, "input", "training_index_file", source),
        val_index_file=_optional_path(input_section, "input", "val_index_file", source),
        candidate_index_file=_optional_path(input_section, "input", "candidate_index_file", source),
        config_file=_path(input_section, "input", "config_file", source),
    )
    outputs = OutputPaths(
        root_dir=_path(output_section, "output", "root_dir", source),
        models_dir=_path(output_section, "output", "models_dir", source),
        tensorboard_dir=_path(output_section, "output", "tensorboard_dir", source),
        training_result_file=_path(output_section, "output", "training_result_file", source),
        mining_result_file=_path(output_section, "output", "mining_result_file", source),
        infer_result_file=_path(output_section, "output", "infer_result_file", source),
        monitor_file=_path(output_section, "output", "monitor_file", source),
        # Only YMIR >= 2.0 names the log file; before that the platform captured stdout itself.
        executor_log_file=_optional_path(output_section, "output", "executor_log_file", source),
    )
    return Env(
        task_id=_task_id(data, source),
        run_training=flags["run_training"],
        run_mining=flags["run_mining"],
        run_infer=flags["run_infer"],
        protocol_version=protocol_version,
        # Only YMIR >= 2.1 writes manifest_file; callers fall back to /img-man.
        manifest_file=_optional_path(data, "", "manifest_file", source),
        input=inputs,
        output=outputs,
    )


def _read_mapping(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{path}: file not found; YMIR mounts it as {DEFAULT_ENV_FILE}, for a local run "
            f"set {ENV_FILE_VARIABLES[0]} to the absolute path of an env.yaml",
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ExecutorError(ErrorCode.CONFIG, f"{path}: cannot read the file: {error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        # The YAML error names line and column; keep it on one line for the UI's log tail.
        detail = " ".join(str(error).split())
        raise ExecutorError(ErrorCode.CONFIG, f"{path}: not valid YAML: {detail}") from error
    if not isinstance(data, dict):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{path}: must be a YAML mapping of keys (task_id, run_training, input, output, ...), "
            f"got {_kind(data)}",
        )
    return data


def _protocol_version(data: dict, source: str) -> str | None:
    value = data.get("protocol_version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: protocol_version must be a version string such as "
            f"'{KNOWN_PROTOCOL_VERSION}', got {value!r}",
        )
    # An unquoted `protocol_version: 1.1` arrives as a float; its text is still the version.
    text = str(value).strip()
    if not text:
        # The SDK bundled with YMIR defaults a missing version to ''; treat it as absent.
        return None
    version = parse_protocol_version(text, source)
    if version[0] >= 2:
        _LOG.warning(
            "%s: protocol_version %s is newer than this executor knows (%s); running it with "
            "the modern protocol",
            source,
            text,
            KNOWN_PROTOCOL_VERSION,
        )
    return text


def _flag(data: dict, key: str, source: str) -> bool:
    value = data.get(key)
    # A missing flag is false, as in the SDK's parser; _check_flags rejects "nothing to do".
    if value is None:
        return False
    flag = parse_bool(value)
    if flag is None:
        raise ExecutorError(
            ErrorCode.CONFIG, f"{source}: {key} must be true or false, got {value!r}"
        )
    return flag


def _check_flags(flags: dict, source: str) -> None:
    if not any(flags.values()):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: none of run_training, run_mining, run_infer is true; set run_training "
            f"for training, or run_mining and/or run_infer for mining and inference",
        )
    if flags["run_training"] and (flags["run_mining"] or flags["run_infer"]):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: run_training cannot be combined with run_mining or run_infer; YMIR runs "
            f"training in its own container, so set only one of them to true",
        )


def _task_id(data: dict, source: str) -> str:
    value = data.get("task_id")
    if value is None or (isinstance(value, str) and not value.strip()):
        # The platform's own default (env_config.py) when no id was given.
        return "default-task"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ExecutorError(ErrorCode.CONFIG, f"{source}: task_id must be a string, got {value!r}")
    # monitor.txt is tab separated: an id with whitespace would shift its columns.
    text = str(value).strip()
    if any(char.isspace() for char in text):
        raise ExecutorError(
            ErrorCode.CONFIG, f"{source}: task_id must not contain whitespace, got {value!r}"
        )
    return text


def _section(data: dict, name: str, source: str) -> dict:
    section = data.get(name)
    if section is None:
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: missing key '{name}'; it must map each {name} path name to an absolute "
            f"path (see the env.yaml example in docs/protocol.md#env-yaml)",
        )
    if not isinstance(section, dict):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: '{name}' must be a mapping of path names to absolute paths, "
            f"got {_kind(section)}",
        )
    return section


def _raw_path(section: dict, prefix: str, key: str, source: str) -> Path | None:
    name = f"{prefix}.{key}" if prefix else key
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: {name} must be an absolute path string, got {value!r}",
        )
    text = value.strip()
    if not text:
        return None
    path = Path(text)
    if not path.is_absolute():
        # A relative path would depend on the working directory, which the platform does not
        # define; the devkit writes absolute paths too.
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: {name} must be an absolute path, got {value!r}; write it from the "
            f"root (e.g. /in/...) as YMIR does",
        )
    return path


def _path(section: dict, prefix: str, key: str, source: str) -> Path:
    path = _raw_path(section, prefix, key, source)
    if path is None:
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{source}: missing key '{prefix}.{key}' (or it is empty); add it with an absolute "
            f"path, as YMIR writes it (e.g. {_EXAMPLES.get((prefix, key), '/' + prefix)})",
        )
    return path


def _optional_path(section: dict, prefix: str, key: str, source: str) -> Path | None:
    return _raw_path(section, prefix, key, source)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return f"a {type(value).__name__} ({value!r:.60})"


# Values YMIR 2.5 writes, quoted in error messages so that the fix is obvious.
_EXAMPLES = {
    ("input", "root_dir"): "/in",
    ("input", "assets_dir"): "/in/assets",
    ("input", "annotations_dir"): "/in/annotations",
    ("input", "models_dir"): "/in/models",
    ("input", "config_file"): "/in/config.yaml",
    ("output", "root_dir"): "/out",
    ("output", "models_dir"): "/out/models",
    ("output", "tensorboard_dir"): "/out/tensorboard",
    ("output", "training_result_file"): "/out/models/result.yaml",
    ("output", "mining_result_file"): "/out/result.tsv",
    ("output", "infer_result_file"): "/out/infer-result.json",
    ("output", "monitor_file"): "/out/monitor.txt",
}
