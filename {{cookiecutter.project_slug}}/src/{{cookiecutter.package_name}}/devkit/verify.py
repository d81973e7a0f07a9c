"""Check an executor's files against the YMIR platform's own rules, without docker.

The platform parses ``monitor.txt``, ``result.yaml``, ``infer-result.json`` and ``result.tsv``
with code that fails a task (or silently drops results) on details that are easy to get wrong:
a float box coordinate, a percent written as 55, a stage file in the wrong folder, a mining
file sorted the wrong way. The checks here re-implement those parsers (docs/protocol.md#outputs,
docs/protocol.md#img-man) and the stricter rules of a good verifier
(docs/protocol.md#devkit-checks), so the mistakes show up on a developer's machine instead of in
a failed YMIR task.

Every check has a stable id (``MON003``), a severity and, where known, the platform error code
the mistake would cause:

* ``platform-fatal``: the platform rejects the image or fails the task (or its UI shows it as
  failed), e.g. 160011 ``RC_CMD_NO_RESULT``, 169999 ``RC_CMD_ERROR_UNKNOWN``, 150404 monitor
  parse error, 130401 image registration error;
* ``verifier-fatal``: the platform accepts the output but loses or misreads part of it, or a
  rule of the reference verifier is broken;
* ``warning``: legal but suspicious or not portable to every platform version.

``CHECKS`` lists every check; ``verify_work_dir`` runs the applicable ones on a task's
``in/`` + ``out/`` folder (a local run, or a failed platform task's leftovers). It reads the
run's outcome from ``monitor.txt`` as the platform does: state 4 (or a monitor the executor never
wrote) is a failed run, checked against the failure protocol (state 4 with an executor code, a
one-line reason as the log's last line, no half-written result); anything else is checked as a
success.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from ..contract.booleans import parse_bool
from ..contract.env import parse_protocol_version
from ..contract.errors import ErrorCode, ExecutorError
from ..contract.images import image_size
from ..contract.object_types import ObjectType
from ..contract.params import RESERVED_KEYS, TEMPLATE_FILES
from ..contract.tensorboard import EventFileError, event_files, read_scalars

PLATFORM_FATAL = "platform-fatal"
VERIFIER_FATAL = "verifier-fatal"
WARNING = "warning"
SEVERITIES = (PLATFORM_FATAL, VERIFIER_FATAL, WARNING)

# Platform return codes (ymir ``mir/tools/code.py`` and backend ``error_codes.py``, 2.5).
DOCKER_IMAGE_ERROR = 130401
PERCENT_LOG_PARSE_ERROR = 150404
RC_CMD_CONTAINER_ERROR = 160004
RC_CMD_UNKNOWN_TYPES = 160005
RC_CMD_NO_RESULT = 160011
RC_CMD_ERROR_UNKNOWN = 169999


@dataclass(frozen=True)
class Check:
    """One rule: its id, severity, the platform code it causes (if known) and a summary."""

    check_id: str
    severity: str
    code: int | None
    title: str


@dataclass
class Finding:
    """One broken rule in one place."""

    check_id: str
    severity: str
    message: str
    code: int | None = None


_PF, _VF, _W = PLATFORM_FATAL, VERIFIER_FATAL, WARNING

CHECKS: dict[str, Check] = {
    check.check_id: check
    for check in (
        # -- img-man: manifest and templates (docs/protocol.md#img-man) ----------------------
        Check("MAN001", _W, None, "manifest.yaml is missing (YMIR assumes object_type 2)"),
        Check("MAN002", _VF, None, "manifest.yaml is not a YAML mapping (YMIR reads it as {})"),
        Check("MAN003", _PF, DOCKER_IMAGE_ERROR, "object_type is neither an int nor a list"),
        Check("MAN004", _VF, None, "object_type value not in {2, 3, 4, 50}"),
        Check("MAN005", _W, None, "object_type is a list (needs YMIR >= 2.4)"),
        Check("MAN006", _VF, None, "per-type template folder missing for a listed object_type"),
        Check("TPL001", _PF, DOCKER_IMAGE_ERROR, "no template parses to a mapping"),
        Check("TPL002", _VF, None, "template is not valid YAML or not a mapping"),
        Check("TPL003", _W, None, "template file is empty (task not offered)"),
        Check("TPL004", _VF, None, "template value is not a scalar (templates must be flat)"),
        Check("TPL005", _VF, None, "template key is not a string"),
        Check("TPL006", _PF, None, "export_format is not <anno>:raw with a known format"),
        Check("TPL007", _PF, None, "export_format does not fit the object type"),
        Check("TPL008", _W, None, "training template has no export_format"),
        Check("TPL009", _PF, RC_CMD_CONTAINER_ERROR, "shm_size is not a docker size"),
        Check("TPL010", _W, None, "reserved key is active in a template"),
        Check("TPL011", _VF, None, "template key longer than 50 characters"),
        Check("TPL012", _VF, None, "template string value longer than 100 characters"),
        Check("TPL013", _VF, None, "template numeric value longer than 20 characters"),
        Check("TPL014", _W, None, "export_format is exported by YMIR 2.5 only ('coco')"),
        # -- monitor.txt (docs/protocol.md#monitor-file) -------------------------------------
        Check("MON001", _VF, None, "monitor.txt is missing"),
        Check("MON002", _VF, None, "monitor.txt is empty"),
        Check("MON003", _PF, PERCENT_LOG_PARSE_ERROR, "first line has < 4 TAB-separated fields"),
        Check("MON004", _PF, PERCENT_LOG_PARSE_ERROR, "timestamp is not a float"),
        Check("MON005", _PF, PERCENT_LOG_PARSE_ERROR, "percent is not a float"),
        Check("MON006", _VF, None, "percent outside [0, 1]"),
        Check("MON007", _PF, PERCENT_LOG_PARSE_ERROR, "state is not an integer 0..4"),
        Check("MON008", _PF, None, "state 3 (done) written by the executor"),
        Check("MON009", _VF, None, "state 0 (unknown) written by the executor"),
        Check("MON010", _PF, PERCENT_LOG_PARSE_ERROR, "state_code is not an integer"),
        Check("MON011", _VF, None, "successful run does not end at percent 1.0"),
        Check("MON012", _VF, None, "successful run left state 4 (error)"),
        Check("MON013", _W, None, "failed run did not write state 4"),
        Check("MON014", _W, None, "state 2 (running) with a non-zero code"),
        Check("MON015", _W, None, "state 4 with a code that is no executor error code"),
        Check("MON016", _W, None, "more than 100 lines (the rest is dropped)"),
        Check("MON017", _W, None, "task id differs from env.yaml's task_id"),
        # -- training: result.yaml (docs/protocol.md#training-result) ------------------------
        Check("TRN001", _PF, RC_CMD_NO_RESULT, "result.yaml is missing"),
        Check("TRN002", _PF, RC_CMD_NO_RESULT, "result.yaml is not safe-loadable YAML"),
        Check("TRN003", _PF, RC_CMD_NO_RESULT, "result.yaml is empty or not a mapping"),
        Check("TRN004", _VF, None, "both 'model' and 'model_stages' (legacy parser wins)"),
        Check("TRN005", _VF, None, "legacy result format under a modern protocol"),
        Check("TRN006", _PF, RC_CMD_NO_RESULT, "legacy protocol but no 'model' key"),
        Check("TRN010", _PF, RC_CMD_NO_RESULT, "model_stages missing or not a non-empty mapping"),
        Check("TRN011", _PF, RC_CMD_NO_RESULT, "stage is not a mapping or lacks a field"),
        Check("TRN012", _VF, None, "stage_name differs from its key"),
        Check("TRN013", _PF, None, "stage name contains '@'"),
        Check("TRN014", _VF, None, "stage name is not an identifier"),
        Check("TRN015", _PF, RC_CMD_NO_RESULT, "stage files is not a non-empty list of names"),
        Check("TRN016", _VF, None, "model file path is absolute or leaves the models folder"),
        Check("TRN017", _PF, RC_CMD_NO_RESULT, "model file not found"),
        Check("TRN018", _VF, None, "model file is a symlink"),
        Check("TRN019", _PF, RC_CMD_NO_RESULT, "timestamp is not a positive integer"),
        Check("TRN020", _PF, RC_CMD_NO_RESULT, "metric is not a number in [0, 1]"),
        Check("TRN021", _PF, RC_CMD_NO_RESULT, "tp/fp/fn is not an integer >= 0"),
        Check("TRN022", _PF, RC_CMD_NO_RESULT, "stage has no mAP (required by YMIR 2.0)"),
        Check("TRN023", _VF, None, "stage lacks the target's main metric"),
        Check("TRN024", _PF, RC_CMD_NO_RESULT, "best_stage_name missing or not a stage"),
        Check("TRN025", _W, None, "best_stage_name is not the stage with the best metric"),
        Check("TRN026", _PF, RC_CMD_NO_RESULT, "evaluate_config is not {str: float}"),
        Check("TRN027", _PF, RC_CMD_NO_RESULT, "attachments malformed or missing"),
        Check("TRN028", _W, None, "top-level object_type missing (read by YMIR 2.1-2.3)"),
        Check("TRN029", _VF, None, "top-level object_type differs from the target"),
        Check("TRN030", _W, None, "more than 11 stages (all are packed)"),
        Check("TRN040", _PF, RC_CMD_NO_RESULT, "legacy 'model' is not a non-empty list of names"),
        Check("TRN041", _PF, RC_CMD_NO_RESULT, "legacy 'map' missing or not in [0, 1]"),
        Check("TRN042", _PF, RC_CMD_NO_RESULT, "legacy model file not directly in models/"),
        Check("TRN050", _W, None, "tensorboard folder missing or empty"),
        Check("TRN051", _W, None, "no TensorBoard event file with scalars (no training curve)"),
        # -- infer-result.json (docs/protocol.md#infer-result) -------------------------------
        Check("INF001", _PF, RC_CMD_ERROR_UNKNOWN, "infer-result.json is missing"),
        Check("INF002", _PF, RC_CMD_ERROR_UNKNOWN, "infer-result.json is not valid JSON"),
        Check("DET001", _PF, RC_CMD_NO_RESULT, "no top-level 'detection' mapping"),
        Check("DET002", _VF, None, "candidate missing from 'detection'"),
        Check("DET003", _VF, None, "'detection' key is not a candidate"),
        Check("DET004", _W, None, "'detection' key is a path, not a basename"),
        Check("DET005", _VF, None, "image entry is not a mapping with a box list"),
        Check("DET006", _VF, None, "legacy protocol needs 'annotations', found 'boxes'"),
        Check("DET007", _W, None, "modern protocol uses 'annotations' instead of 'boxes'"),
        Check("DET010", _PF, RC_CMD_ERROR_UNKNOWN, "annotation is not a mapping with a 'box'"),
        Check(
            "DET011", _PF, RC_CMD_ERROR_UNKNOWN, "box has a key outside x, y, w, h, rotate_angle"
        ),
        Check("DET012", _PF, RC_CMD_ERROR_UNKNOWN, "box x/y/w/h missing or not a JSON integer"),
        Check("DET013", _PF, RC_CMD_ERROR_UNKNOWN, "rotate_angle is not a number"),
        Check("DET014", _VF, None, "box w or h <= 0"),
        Check("DET015", _VF, None, "box outside the image"),
        Check("DET016", _PF, RC_CMD_ERROR_UNKNOWN, "class_name missing, empty or not a string"),
        Check("DET017", _VF, None, "class_name not in class_names"),
        Check("DET018", _VF, None, "score missing (the box is dropped)"),
        Check("DET019", _VF, None, "score is not a finite number in [0, 1]"),
        Check("DET020", _W, None, "more than 50 boxes in an image (YMIR 1.1 keeps 50)"),
        Check("DET021", _PF, RC_CMD_ERROR_UNKNOWN, "rotate_angle under the legacy protocol"),
        Check("SEG001", _PF, RC_CMD_ERROR_UNKNOWN, "images/categories/annotations key missing"),
        Check("SEG002", _VF, None, "images/categories/annotations is not a list"),
        Check("SEG003", _PF, RC_CMD_ERROR_UNKNOWN, "image entry lacks an id or a file_name"),
        Check("SEG004", _VF, None, "file_name is not a bare basename"),
        Check("SEG005", _VF, None, "file_name is not a candidate"),
        Check("SEG006", _W, None, "candidate missing from images"),
        Check("SEG007", _VF, None, "duplicate id or file_name"),
        Check("SEG008", _PF, RC_CMD_ERROR_UNKNOWN, "category entry lacks an id or a name"),
        Check("SEG009", _PF, RC_CMD_UNKNOWN_TYPES, "category name not in class_names"),
        Check("SEG010", _PF, RC_CMD_ERROR_UNKNOWN, "annotation lacks image_id or category_id"),
        Check("SEG011", _VF, None, "annotation refers to an unknown image or category"),
        Check("SEG012", _VF, None, "bbox missing or not 4 numbers"),
        Check("SEG013", _VF, None, "bbox w or h <= 0"),
        Check("SEG014", _PF, RC_CMD_ERROR_UNKNOWN, "area missing or not a number"),
        Check("SEG015", _VF, None, "segmentation missing or neither RLE nor polygon"),
        Check("SEG016", _PF, RC_CMD_ERROR_UNKNOWN, "RLE counts missing or not a string"),
        Check("SEG017", _PF, RC_CMD_ERROR_UNKNOWN, "RLE counts not decodable"),
        Check("SEG018", _VF, None, "RLE size is not [H, W] of the image"),
        Check("SEG019", _PF, RC_CMD_ERROR_UNKNOWN, "more than one polygon"),
        Check("SEG020", _PF, RC_CMD_ERROR_UNKNOWN, "polygon malformed"),
        Check("SEG021", _VF, None, "instance segmentation annotation without confidence"),
        Check("SEG022", _VF, None, "confidence is not a finite number in [0, 1]"),
        Check("SEG023", _W, None, "semantic segmentation annotation with confidence"),
        Check("SEG024", _W, None, "images width/height differ from the image file"),
        Check("SEG025", _W, None, "area differs from the mask's pixel count"),
        # -- result.tsv (docs/protocol.md#mining-result) -------------------------------------
        Check("MIN001", _PF, RC_CMD_NO_RESULT, "result.tsv is missing"),
        Check("MIN002", _VF, None, "line is not '<path>\\t<score>'"),
        Check("MIN003", _VF, None, "score is not a finite number"),
        Check("MIN004", _VF, None, "path is not a candidate"),
        Check("MIN005", _VF, None, "candidate listed more than once"),
        Check("MIN006", _VF, None, "candidate missing"),
        Check("MIN007", _VF, None, "lines not sorted by descending score"),
        Check("MIN008", _W, None, "file name stem is not a 40-hex asset hash"),
        # -- a failed run: the failure protocol (docs/protocol.md#failures) ------------------
        Check("FAL001", _W, RC_CMD_CONTAINER_ERROR, "failed run wrote no executor error code"),
        Check("FAL002", _VF, None, "failed run's last log line is no one-line reason"),
        Check("FAL003", _VF, None, "failed run left a half-written result"),
        # -- the work dir itself ---------------------------------------------------------
        Check("WRK001", _VF, None, "in/env.yaml missing or not a mapping"),
        Check("WRK002", _VF, None, "config.yaml missing or not a mapping"),
        Check("WRK003", _VF, None, "env.yaml run_* flags name no valid task combination"),
        Check("WRK004", _VF, None, "protocol_version is not a version number"),
        Check("WRK005", _VF, None, "candidate index missing or unreadable"),
        Check("WRK006", _VF, None, "config class_names is not a non-empty list of names"),
    )
}

OBJECT_TYPES = (2, 3, 4, 50)
# Template sub-folders when manifest.yaml lists several object types (controller common_task.py).
# object_type -> the metric result.yaml must carry (docs/protocol.md#training-result).
MAIN_METRIC = {int(member): member.main_metric for member in ObjectType}
TYPE_FOLDERS = {2: "det", 3: "semantic-seg", 4: "instance-seg", 50: "multi-modal"}
# Stage metrics the platform validates as floats in [0, 1] (ModelStageStorage, 2.5).
FLOAT_METRICS = ("mAP", "mAR", "mIoU", "mAcc", "maskAP", "boxAP")
COUNT_METRICS = ("tp", "fp", "fn")
MAX_STAGES = 11
BOX_KEYS = frozenset({"x", "y", "w", "h", "rotate_angle"})
EXPORT_FORMAT_RE = re.compile(r"^(ark|voc|det-ark|det-voc|coco|seg-coco):raw$")
# Detection reads boxes from either COCO name (YMIR 2.1-2.4 export COCO only as seg-coco).
DETECTION_FORMATS = frozenset({"ark", "voc", "det-ark", "det-voc", "coco", "seg-coco"})
SEGMENTATION_FORMATS = frozenset({"coco", "seg-coco"})
# docker/go-units RAMInBytes, which parses --shm-size.
DOCKER_SIZE_RE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
# Keys a template may carry although the platform also reads them (export_format, shm_size and
# the live-code keys are template settings); the others are injected and overwrite the template.
TEMPLATE_RESERVED = RESERVED_KEYS - {
    "export_format",
    "shm_size",
    "git_url",
    "git_branch",
    "code_config",
    "openpai_enable",
}
MAX_KEY_CHARS = 50
MAX_STRING_CHARS = 100
MAX_NUMBER_CHARS = 20
LEGACY_MAX_BOXES = 50
MONITOR_KEPT_LINES = 100
ASSET_HASH_RE = re.compile(r"^[0-9a-f]{40}$")
EXECUTOR_CODES = frozenset(int(code) for code in ErrorCode)


def _finding(check_id: str, message: str) -> Finding:
    check = CHECKS[check_id]
    return Finding(check_id, check.severity, message, check.code)


def has_errors(findings: Iterable[Finding]) -> bool:
    """True if any finding is more than a warning."""
    return any(finding.severity != WARNING for finding in findings)


def format_findings(findings: Sequence[Finding]) -> str:
    """A human-readable report: one line per finding, most severe first, then a summary."""
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    lines = []
    for finding in sorted(findings, key=lambda item: order.get(item.severity, 0)):
        code = f" [YMIR code {finding.code}]" if finding.code is not None else ""
        lines.append(f"{finding.severity.upper():<14} {finding.check_id}{code}: {finding.message}")
    counts = {severity: 0 for severity in SEVERITIES}
    for finding in findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    if not findings:
        lines.append("verify: all checks passed")
    else:
        lines.append(
            f"verify: {counts[PLATFORM_FATAL]} platform-fatal, "
            f"{counts[VERIFIER_FATAL]} verifier-fatal, {counts[WARNING]} warning(s)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# small helpers


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_unit(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and 0.0 <= value <= 1.0


def _read_yaml(path: Path) -> tuple[Any, str | None]:
    """(data, None) or (None, reason); ``yaml.safe_load`` as the platform uses it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, f"cannot read: {error}"
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as error:
        return None, " ".join(str(error).split())


def _protocol(env: dict[str, Any]) -> tuple[bool, list[Finding]]:
    """(legacy, findings) from env.yaml's protocol_version, as the executor decides it."""
    value = env.get("protocol_version") if isinstance(env, dict) else None
    if value is None or value == "":
        return True, []
    try:
        return parse_protocol_version(str(value)) < (1, 0, 0), []
    except ExecutorError:
        return False, [
            _finding(
                "WRK004",
                f"env.yaml protocol_version {value!r} is not a version number; checked as modern",
            )
        ]


def _rebase(value: Any, env_root: Any, local_root: Path | None) -> Path | None:
    """A path from env.yaml as a local path.

    A local run writes real local paths, which are used as given. A platform task's leftovers
    name container paths (/in/..., /out/...): those under the env's root_dir are moved under the
    local in/ or out/ folder.
    """
    if value is None or value == "":
        return None
    path = Path(str(value))
    if local_root is None or not env_root:
        return path
    root = Path(str(env_root))
    if path == root:
        return local_root
    try:
        relative = path.relative_to(root)
    except ValueError:
        return path
    return local_root / relative


def _output_path(env: dict[str, Any], key: str, out_dir: Path, default: str) -> Path:
    output = env.get("output") if isinstance(env, dict) else None
    if isinstance(output, dict) and output.get(key):
        mapped = _rebase(output.get(key), output.get("root_dir"), out_dir)
        if mapped is not None:
            return mapped
    return out_dir / default


class _ImageSizes:
    """Image sizes by candidate basename, read lazily; ``None`` when the image is unreadable."""

    def __init__(self, candidates: Sequence[str]) -> None:
        self._paths = {os.path.basename(str(path)): Path(str(path)) for path in candidates}
        self._sizes: dict[str, tuple[int, int] | None] = {}

    def get(self, name: str) -> tuple[int, int] | None:
        if name not in self._sizes:
            path = self._paths.get(name)
            size = None
            if path is not None and path.is_file():
                try:
                    size = image_size(path)
                except (ExecutorError, OSError):
                    size = None
            self._sizes[name] = size
        return self._sizes[name]


# ---------------------------------------------------------------------------------------
# A. static checks of img-man


def verify_static(img_man_dir: Path) -> list[Finding]:
    """Check ``manifest.yaml`` and the templates like registration does.

    See docs/protocol.md#img-man.
    """
    img_man = Path(img_man_dir)
    findings: list[Finding] = []
    manifest_path = img_man / "manifest.yaml"
    object_types: list[int] = []
    folders: list[tuple[Path, int]] = []
    listed = False
    if not manifest_path.is_file():
        findings.append(
            _finding(
                "MAN001", f"{manifest_path} is missing; YMIR then assumes object_type 2 (detection)"
            )
        )
        manifest: dict[str, Any] = {}
    else:
        data, error = _read_yaml(manifest_path)
        if error or not isinstance(data, dict):
            findings.append(
                _finding(
                    "MAN002",
                    "{}: {}; YMIR silently treats it as empty, i.e. detection".format(
                        manifest_path, error or "not a mapping"
                    ),
                )
            )
            manifest = {}
        else:
            manifest = data
    value = manifest.get("object_type", 2)
    if isinstance(value, list):
        listed = True
        findings.append(
            _finding(
                "MAN005",
                f"{manifest_path}: object_type is a list; YMIR 2.1-2.3 call int() on "
                "it and fail registration",
            )
        )
        values = value
    elif _is_int(value):
        values = [value]
    else:
        findings.append(
            _finding(
                "MAN003", f"{manifest_path}: object_type must be an int or a list, got {value!r}"
            )
        )
        values = []
    for item in values:
        if not _is_int(item) or item not in OBJECT_TYPES:
            findings.append(
                _finding(
                    "MAN004",
                    f"{manifest_path}: object_type {item!r} is not one of 2 (detection), "
                    "3 (semantic seg), 4 (instance seg), 50 "
                    "(multi-modal)",
                )
            )
            continue
        object_types.append(item)
        if listed:
            folder = img_man / TYPE_FOLDERS[item]
            if not folder.is_dir():
                findings.append(
                    _finding("MAN006", f"object_type {item} is listed but {folder} does not exist")
                )
                continue
            folders.append((folder, item))
    if not listed and _is_int(value):
        # Registration reads the root templates whatever the int is.
        folders.append((img_man, value))

    found = 0
    for folder, object_type in folders:
        for task, name in TEMPLATE_FILES.items():
            path = folder / name
            if not path.is_file():
                continue
            template, template_findings = _check_template(path, task, object_type)
            findings.extend(template_findings)
            if template is not None:
                found += 1
    if found == 0 and not any(f.check_id in ("MAN003",) for f in findings):
        findings.append(
            _finding(
                "TPL001",
                f"no task template in {img_man} parses to a mapping; "
                "registration fails with 'does not match any "
                "configuration'",
            )
        )
    return findings


def _check_template(
    path: Path, task: str, object_type: int
) -> tuple[dict[str, Any] | None, list[Finding]]:
    findings: list[Finding] = []
    data, error = _read_yaml(path)
    if error:
        return None, [
            _finding("TPL002", f"{path}: not valid YAML ({error}); YMIR silently drops the task")
        ]
    if data is None:
        return None, [_finding("TPL003", f"{path} is empty: the {task} task is not offered")]
    if not isinstance(data, dict):
        return None, [
            _finding(
                "TPL002",
                f"{path}: must be a mapping, got {type(data).__name__}; YMIR silently drops "
                "the task",
            )
        ]
    for key, value in data.items():
        if not isinstance(key, str):
            findings.append(_finding("TPL005", f"{path}: key {key!r} is not a string"))
            continue
        where = f"{path}: {key}"
        if len(key) > MAX_KEY_CHARS:
            findings.append(
                _finding(
                    "TPL011",
                    f"{path}: the UI allows keys of at most {MAX_KEY_CHARS} characters, "
                    f"this one has {len(key)}",
                )
            )
        if isinstance(value, (dict, list)):
            findings.append(
                _finding(
                    "TPL004",
                    f"{where} is a {type(value).__name__}; templates must be flat key: scalar "
                    "(the UI edits values as text)",
                )
            )
        elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            findings.append(
                _finding(
                    "TPL012",
                    f"{where}: the UI's text input holds at most {MAX_STRING_CHARS} "
                    f"characters, the value has {len(value)}",
                )
            )
        elif _is_number(value) and len(str(value)) > MAX_NUMBER_CHARS:
            findings.append(
                _finding(
                    "TPL013",
                    f"{where}: the UI's number input holds at most {MAX_NUMBER_CHARS} "
                    f"characters, {value!r} has {len(str(value))}",
                )
            )
        if key in TEMPLATE_RESERVED:
            findings.append(
                _finding(
                    "TPL010", f"{where}: reserved key is injected by the platform; comment it out"
                )
            )
    if task == "training":
        findings.extend(_check_export_format(path, data, object_type))
    if "shm_size" in data:
        value = data["shm_size"]
        valid = (_is_int(value) and value > 0) or (
            isinstance(value, str) and DOCKER_SIZE_RE.match(value.strip()) is not None
        )
        if not valid:
            findings.append(
                _finding(
                    "TPL009",
                    f"{path}: shm_size {value!r} is not a docker size such as "
                    "'16G'; docker run would fail",
                )
            )
    return data, findings


def _check_export_format(path: Path, data: dict[str, Any], object_type: int) -> list[Finding]:
    if "export_format" not in data:
        return [
            _finding(
                "TPL008",
                f"{path}: no export_format; the platform's default may not be a "
                "format the executor reads",
            )
        ]
    value = data["export_format"]
    if not isinstance(value, str) or not EXPORT_FORMAT_RE.match(value.strip()):
        return [
            _finding(
                "TPL006", f"{path}: export_format {value!r} must match {EXPORT_FORMAT_RE.pattern}"
            )
        ]
    family = value.strip().split(":")[0]
    if object_type in (3, 4) and family not in SEGMENTATION_FORMATS:
        return [
            _finding(
                "TPL007",
                f"{path}: export_format {value!r} carries no masks; object_type {object_type} "
                "needs seg-coco (or coco)",
            )
        ]
    if object_type == 2 and family not in DETECTION_FORMATS:
        return [_finding("TPL007", f"{path}: export_format {value!r} is not a detection format")]
    if family == "coco":
        return [
            _finding(
                "TPL014",
                f"{path}: export_format {value!r}: YMIR 2.0-2.4 do not know 'coco' and export no "
                "annotations for it (empty train / val indexes); 'seg-coco:raw' is the COCO "
                "export of YMIR 2.1 and later",
            )
        ]
    return []


# ---------------------------------------------------------------------------------------
# D. monitor.txt


def verify_monitor(
    monitor_file: Path, expect_success: bool, task_id: str | None = None
) -> list[Finding]:
    """Parse ``monitor.txt`` exactly like ``PercentLogHandler.parse_percent_log``.

    See docs/protocol.md#monitor-file.

    ``expect_success``: the executor exited 0 (final percent 1.0, no state 4) or not
    (state 4 expected). ``task_id``: env.yaml's task id, compared when given.
    """
    path = Path(monitor_file)
    if not path.is_file():
        return [_finding("MON001", f"{path} is missing")]
    # Text mode with universal newlines and readlines(), as the platform reads it.
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
    if not lines:
        return [_finding("MON002", f"{path} is empty: the executor never reported")]
    findings: list[Finding] = []
    fields = lines[0].strip().split("\t")
    if len(fields) < 4:
        return [
            _finding(
                "MON003",
                "{}: first line {!r} needs at least 4 TAB-separated fields "
                "(task_id, timestamp, percent, state)".format(path, lines[0].rstrip("\n")),
            )
        ]
    tid, stamp, percent_text, state_text = fields[:4]
    try:
        float(stamp)
    except ValueError:
        findings.append(_finding("MON004", f"{path}: timestamp {stamp!r} is not a float"))
    percent: float | None = None
    try:
        percent = float(percent_text)
    except ValueError:
        findings.append(_finding("MON005", f"{path}: percent {percent_text!r} is not a float"))
    if percent is not None and not (math.isfinite(percent) and 0.0 <= percent <= 1.0):
        findings.append(
            _finding(
                "MON006",
                f"{path}: percent {percent_text!r} is outside [0, 1] (a fraction, not "
                "a percentage)",
            )
        )
        percent = None
    state: int | None = None
    with contextlib.suppress(ValueError):
        state = int(state_text)
    if state is None or not 0 <= state <= 4:
        findings.append(_finding("MON007", f"{path}: state {state_text!r} is not one of 0..4"))
        state = None
    elif state == 3:
        findings.append(
            _finding(
                "MON008",
                f"{path}: state 3 (done) is the platform's; the monitor "
                "marks the task finished before post-processing",
            )
        )
    elif state == 0:
        findings.append(
            _finding(
                "MON009", f"{path}: state 0 (unknown); executors write 2 (running) or 4 (error)"
            )
        )
    code: int | None = None
    if len(fields) > 4:
        try:
            code = int(fields[4])
        except ValueError:
            findings.append(
                _finding("MON010", f"{path}: state_code {fields[4]!r} is not an integer")
            )
    if expect_success:
        if percent is not None and percent < 1.0:
            findings.append(
                _finding(
                    "MON011",
                    f"{path}: the run succeeded but the last percent is "
                    f"{percent_text}; report progress 1.0 at the end",
                )
            )
        if state == 4:
            findings.append(
                _finding("MON012", f"{path}: state 4 (error) although the executor exited 0")
            )
    elif state is not None and state != 4:
        findings.append(
            _finding(
                "MON013",
                f"{path}: the run failed but the state is {state}; write state "
                "4 with an error code so the UI can explain the "
                "failure (else YMIR reports 160004)",
            )
        )
    if state == 2 and code not in (None, 0):
        findings.append(
            _finding(
                "MON014", f"{path}: state 2 (running) with code {code}; running lines carry code 0"
            )
        )
    if state == 4 and code is not None and code not in EXECUTOR_CODES:
        findings.append(
            _finding(
                "MON015", f"{path}: error code {code} is not an executor code (300001..300301)"
            )
        )
    if len(lines) > MONITOR_KEPT_LINES:
        findings.append(
            _finding(
                "MON016",
                f"{path}: {len(lines)} lines; the platform keeps lines 2..{MONITOR_KEPT_LINES} "
                "only",
            )
        )
    if task_id is not None and tid != str(task_id):
        findings.append(
            _finding("MON017", f"{path}: task id {tid!r} differs from env.yaml's {task_id!r}")
        )
    return findings


# ---------------------------------------------------------------------------------------
# E. training: result.yaml


def verify_training(
    out_dir: Path, env: dict[str, Any], config: dict[str, Any], object_type: int
) -> list[Finding]:
    """Check ``result.yaml`` and the model files like the platform's packing does.

    See docs/protocol.md#training-result.

    ``env`` is env.yaml's content (its protocol_version picks modern or legacy; its output
    paths are used, moved under ``out_dir`` when they name another root). ``config`` is the
    task's config.yaml (kept for checks that depend on it; unused by the current rules).
    """
    del config  # no rule depends on the hyper-parameters yet
    out_dir = Path(out_dir)
    env = env if isinstance(env, dict) else {}
    legacy, findings = _protocol(env)
    result_file = _output_path(env, "training_result_file", out_dir, "models/result.yaml")
    models_dir = _output_path(env, "models_dir", out_dir, "models")
    tensorboard_dir = _output_path(env, "tensorboard_dir", out_dir, "tensorboard")

    if not tensorboard_dir.is_dir() or not any(tensorboard_dir.iterdir()):
        findings.append(
            _finding(
                "TRN050", f"{tensorboard_dir} is missing or empty; write TensorBoard events there"
            )
        )
    else:
        findings.extend(_check_tensorboard(tensorboard_dir))
    if not result_file.is_file():
        findings.append(_finding("TRN001", f"{result_file} is missing"))
        return findings
    data, error = _read_yaml(result_file)
    if error:
        findings.append(_finding("TRN002", f"{result_file}: yaml.safe_load fails: {error}"))
        return findings
    if not isinstance(data, dict) or not data:
        findings.append(
            _finding("TRN003", f"{result_file}: must be a non-empty mapping, got {data!r}")
        )
        return findings

    has_model, has_stages = "model" in data, "model_stages" in data
    if has_model and has_stages:
        findings.append(
            _finding(
                "TRN004",
                f"{result_file}: has both 'model' and 'model_stages'; the "
                "platform then uses the legacy parser and ignores "
                "model_stages",
            )
        )
    if legacy:
        if not has_model:
            findings.append(
                _finding(
                    "TRN006",
                    f"{result_file}: the legacy protocol (no protocol_version) "
                    "reads only 'model' and 'map'",
                )
            )
            return findings
        findings.extend(_check_legacy_result(result_file, data, models_dir, flat=True))
        return findings
    if has_model:
        if not has_stages:
            findings.append(
                _finding(
                    "TRN005",
                    "{}: legacy 'model'/'map' format under protocol {}; write model_stages".format(
                        result_file, env.get("protocol_version")
                    ),
                )
            )
        # YMIR 2.x reads the legacy format too, looking files up like stage files.
        findings.extend(_check_legacy_result(result_file, data, models_dir, flat=False))
        return findings
    findings.extend(_check_modern_result(result_file, data, models_dir, object_type))
    return findings


def _check_tensorboard(tensorboard_dir: Path) -> list[Finding]:
    """The training curve YMIR's TensorBoard shows: an event file with at least one scalar."""
    try:
        scalars = read_scalars(tensorboard_dir)
    except (OSError, EventFileError) as error:
        return [_finding("TRN051", f"{tensorboard_dir}: unreadable event file: {error}")]
    if scalars:
        return []
    files = len(event_files(tensorboard_dir))
    return [
        _finding(
            "TRN051",
            f"{tensorboard_dir}: {files} event file(s) without a scalar; YMIR shows no training "
            "curve (write loss and metrics, e.g. with ctx.tensorboard.add_scalars)",
        )
    ]


def _check_file_name(where: str, name: Any) -> Finding | None:
    if not isinstance(name, str) or not name:
        return _finding("TRN015", f"{where}: file entry {name!r} is not a file name")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith("/") or ".." in parts:
        return _finding("TRN016", f"{where}: file {name!r} must be relative to the models folder")
    return None


def _check_stage_files(where: str, files: Any, bases: Sequence[Path]) -> list[Finding]:
    if not isinstance(files, list) or not files:
        return [
            _finding(
                "TRN015", f"{where}: files must be a non-empty list of file names, got {files!r}"
            )
        ]
    findings = []
    for name in files:
        problem = _check_file_name(where, name)
        if problem is not None:
            findings.append(problem)
            continue
        # The platform looks in models/<stage>/ first, then models/ (models._find_model_file).
        found = next((base / name for base in bases if os.path.lexists(str(base / name))), None)
        if found is None:
            findings.append(
                _finding(
                    "TRN017",
                    "{}: file {!r} not found in {}".format(
                        where, name, " or ".join(str(base) for base in bases)
                    ),
                )
            )
        elif found.is_symlink():
            findings.append(
                _finding("TRN018", f"{where}: {found} is a symlink; copy the real file")
            )
        elif not found.is_file():
            findings.append(_finding("TRN017", f"{where}: {found} is not a regular file"))
    return findings


def _check_modern_result(
    result_file: Path, data: dict[str, Any], models_dir: Path, object_type: int
) -> list[Finding]:
    findings: list[Finding] = []
    stages = data.get("model_stages")
    if not isinstance(stages, dict) or not stages:
        return [
            _finding(
                "TRN010", f"{result_file}: model_stages must be a non-empty mapping, got {stages!r}"
            )
        ]
    main = MAIN_METRIC.get(object_type, "mAP")
    if len(stages) > MAX_STAGES:
        findings.append(
            _finding(
                "TRN030",
                f"{result_file}: {len(stages)} stages; every stage's files are packed into "
                f"the model (the SDK keeps {MAX_STAGES})",
            )
        )
    scores: dict[str, float] = {}
    for key, stage in stages.items():
        name = str(key)
        where = f"{result_file}: stage {name!r}"
        if "@" in name:
            findings.append(
                _finding("TRN013", f"{where}: '@' separates model hash and stage name in YMIR")
            )
        elif not name.replace("-", "_").isidentifier():
            findings.append(
                _finding("TRN014", f"{where}: stage names must be identifiers ('-' allowed)")
            )
        if not isinstance(stage, dict):
            findings.append(_finding("TRN011", f"{where}: must be a mapping, got {stage!r}"))
            continue
        missing = [field for field in ("stage_name", "files", "timestamp") if field not in stage]
        if missing:
            findings.append(_finding("TRN011", "{}: missing {}".format(where, ", ".join(missing))))
        if "stage_name" in stage and stage["stage_name"] != key:
            findings.append(
                _finding(
                    "TRN012",
                    "{}: stage_name {!r} differs from the key".format(where, stage["stage_name"]),
                )
            )
        if "files" in stage:
            findings.extend(
                _check_stage_files(where, stage["files"], [models_dir / name, models_dir])
            )
        if "timestamp" in stage and not (_is_int(stage["timestamp"]) and stage["timestamp"] > 0):
            findings.append(
                _finding(
                    "TRN019",
                    "{}: timestamp {!r} must be a positive integer (seconds)".format(
                        where, stage["timestamp"]
                    ),
                )
            )
        for metric in FLOAT_METRICS:
            if metric in stage and not _is_unit(stage[metric]):
                findings.append(
                    _finding(
                        "TRN020",
                        f"{where}: {metric} = {stage[metric]!r} must be a float in [0, 1] (not "
                        "a percentage)",
                    )
                )
        for metric in COUNT_METRICS:
            if metric in stage and not (_is_int(stage[metric]) and stage[metric] >= 0):
                findings.append(
                    _finding(
                        "TRN021", f"{where}: {metric} = {stage[metric]!r} must be an integer >= 0"
                    )
                )
        if "mAP" not in stage:
            findings.append(
                _finding(
                    "TRN022",
                    f"{where}: no mAP; YMIR 2.0 requires it in every stage "
                    "(write 0.0 when it does not apply)",
                )
            )
        if main not in stage:
            findings.append(
                _finding(
                    "TRN023", f"{where}: no {main}, the main metric of object_type {object_type}"
                )
            )
        elif _is_unit(stage[main]):
            scores[key] = float(stage[main])

    best = data.get("best_stage_name")
    if best is None or not isinstance(best, (str, int)) or best not in stages:
        findings.append(
            _finding(
                "TRN024", f"{result_file}: best_stage_name {best!r} is not a key of model_stages"
            )
        )
    elif scores and best in scores and scores[best] < max(scores.values()):
        top = max(scores, key=lambda name: scores[name])
        findings.append(
            _finding(
                "TRN025",
                f"{result_file}: best_stage_name {best!r} has {main} = {scores[best]}, "
                f"stage {top!r} has {scores[top]}",
            )
        )
    if "evaluate_config" in data:
        config = data["evaluate_config"]
        if not isinstance(config, dict) or not all(
            isinstance(key, str) and _is_number(value) for key, value in config.items()
        ):
            findings.append(
                _finding(
                    "TRN026",
                    f"{result_file}: evaluate_config must map names to numbers, got {config!r}",
                )
            )
    if "attachments" in data:
        findings.extend(_check_attachments(result_file, data["attachments"], models_dir))
    if "object_type" not in data:
        findings.append(
            _finding(
                "TRN028",
                f"{result_file}: no top-level object_type; YMIR 2.1-2.3 then "
                "take the model as detection",
            )
        )
    elif data["object_type"] != object_type:
        findings.append(
            _finding(
                "TRN029",
                "{}: object_type {!r} but the executor's target is {}".format(
                    result_file, data["object_type"], object_type
                ),
            )
        )
    return findings


def _check_attachments(result_file: Path, attachments: Any, models_dir: Path) -> list[Finding]:
    if not isinstance(attachments, dict):
        return [
            _finding(
                "TRN027",
                f"{result_file}: attachments must map sections to file lists, got {attachments!r}",
            )
        ]
    findings = []
    for section, files in attachments.items():
        if not isinstance(section, str) or not isinstance(files, list):
            findings.append(
                _finding(
                    "TRN027", f"{result_file}: attachments {section!r} must be a list of file names"
                )
            )
            continue
        for name in files:
            path = models_dir / "attachments" / section / str(name)
            if not isinstance(name, str) or not path.is_file():
                findings.append(_finding("TRN027", f"{result_file}: attachment {path} not found"))
    return findings


def _check_legacy_result(
    result_file: Path, data: dict[str, Any], models_dir: Path, flat: bool
) -> list[Finding]:
    """``model`` + ``map``; ``flat``: YMIR 1.1, which wants the files directly in models/."""
    findings: list[Finding] = []
    files = data.get("model")
    if not isinstance(files, list) or not files:
        findings.append(
            _finding(
                "TRN040",
                f"{result_file}: model must be a non-empty list of file names, got {files!r}",
            )
        )
    else:
        for name in files:
            if not isinstance(name, str) or not name:
                findings.append(
                    _finding("TRN040", f"{result_file}: model entry {name!r} is not a file name")
                )
                continue
            path = models_dir / name
            if not flat:
                problem = _check_file_name(str(result_file), name)
                if problem is not None:
                    findings.append(problem)
                    continue
            if flat and ("/" in name.replace("\\", "/") or os.path.isabs(name)):
                findings.append(
                    _finding(
                        "TRN042",
                        f"{result_file}: legacy model file {name!r} must be a plain "
                        f"name directly in {models_dir}",
                    )
                )
            elif path.is_symlink():
                findings.append(
                    _finding("TRN018", f"{result_file}: {path} is a symlink; copy the real file")
                )
            elif not path.is_file():
                findings.append(
                    _finding("TRN042", f"{result_file}: legacy model file {path} not found")
                )
    if "map" not in data or not _is_unit(data["map"]):
        findings.append(
            _finding(
                "TRN041",
                "{}: map must be a float in [0, 1] (YMIR 1.1 fails without it), got {!r}".format(
                    result_file, data.get("map")
                ),
            )
        )
    return findings


# ---------------------------------------------------------------------------------------
# E. infer-result.json


def verify_infer(
    out_dir: Path,
    candidates: Sequence[str],
    class_names: Sequence[str],
    object_type: int,
    legacy: bool,
    result_file: Path | None = None,
) -> list[Finding]:
    """Check ``infer-result.json`` for detection (2) or segmentation (3, 4).

    See docs/protocol.md#infer-result.

    ``candidates`` are the candidate image paths; images that exist locally are opened (header
    only) to check boxes and mask sizes against the real image size.
    """
    path = Path(result_file) if result_file is not None else Path(out_dir) / "infer-result.json"
    if not path.is_file():
        return [_finding("INF001", f"{path} is missing")]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return [_finding("INF002", f"{path}: {error}")]
    known = {str(name).strip().lower() for name in class_names}
    sizes = _ImageSizes(candidates)
    names = [os.path.basename(str(candidate)) for candidate in candidates]
    if object_type == 2:
        return _check_detection(path, data, names, known, legacy, sizes)
    return _check_segmentation(path, data, names, known, object_type, sizes)


def _check_detection(
    path: Path, data: Any, names: list[str], known: set, legacy: bool, sizes: _ImageSizes
) -> list[Finding]:
    detection = data.get("detection") if isinstance(data, dict) else None
    if not isinstance(detection, dict):
        return [
            _finding(
                "DET001",
                f"{path}: needs a top-level 'detection' mapping ('have no detection dict')",
            )
        ]
    findings: list[Finding] = []
    keys = set()
    candidate_names = set(names)  # a set: outputs of 100k candidates are checked too
    for key in detection:
        base = os.path.basename(str(key))
        keys.add(base)
        if base != key:
            findings.append(
                _finding(
                    "DET004", f"{path}: key {key!r} is a path; the platform only uses its basename"
                )
            )
        if base not in candidate_names:
            findings.append(_finding("DET003", f"{path}: key {key!r} is not a candidate image"))
    for name in names:
        if name not in keys:
            findings.append(
                _finding(
                    "DET002",
                    f"{path}: candidate {name!r} is missing (use an empty list for no boxes)",
                )
            )
    list_key = "annotations" if legacy else "boxes"
    for key, entry in detection.items():
        where = f"{path}: {key!r}"
        if not isinstance(entry, dict):
            findings.append(
                _finding("DET005", f"{where} must be a mapping with a {list_key!r} list")
            )
            continue
        if legacy and list_key not in entry and "boxes" in entry:
            findings.append(
                _finding(
                    "DET006", f"{where}: YMIR 1.1 reads only 'annotations'; 'boxes' is ignored"
                )
            )
            continue
        if not legacy and "boxes" not in entry and "annotations" in entry:
            findings.append(
                _finding(
                    "DET007", f"{where}: 'annotations' is the legacy key; YMIR 2.x prefers 'boxes'"
                )
            )
            list_key_here = "annotations"
        else:
            list_key_here = list_key
        boxes = entry.get(list_key_here)
        if not isinstance(boxes, list):
            findings.append(
                _finding("DET005", f"{where}: {list_key_here!r} must be a list, got {boxes!r}")
            )
            continue
        if legacy and len(boxes) > LEGACY_MAX_BOXES:
            findings.append(
                _finding(
                    "DET020",
                    f"{where}: {len(boxes)} boxes; YMIR 1.1 keeps the {LEGACY_MAX_BOXES} best",
                )
            )
        size = sizes.get(os.path.basename(str(key)))
        for index, annotation in enumerate(boxes):
            findings.extend(_check_box(f"{where}[{index}]", annotation, known, size, legacy))
    return findings


def _check_box(
    where: str, annotation: Any, known: set, size: tuple[int, int] | None, legacy: bool = False
) -> list[Finding]:
    if not isinstance(annotation, dict) or not isinstance(annotation.get("box"), dict):
        return [
            _finding(
                "DET010", f"{where}: must be a mapping with a 'box' mapping, got {annotation!r}"
            )
        ]
    findings: list[Finding] = []
    box = annotation["box"]
    extra = sorted(str(key) for key in box if key not in BOX_KEYS)
    if extra:
        findings.append(
            _finding(
                "DET011",
                f"{where}: box keys {extra} are not fields of Rect (protobuf "
                "ParseError fails the whole task)",
            )
        )
    coords_ok = True
    for key in ("x", "y", "w", "h"):
        if not _is_int(box.get(key)):
            coords_ok = False
            findings.append(
                _finding("DET012", f"{where}: box {key} = {box.get(key)!r} must be a JSON integer")
            )
    if "rotate_angle" in box and legacy:
        # found by ymir-cmd 1.1.0's mir mining --add-annotations (json_format.ParseDict)
        findings.append(
            _finding(
                "DET021",
                f"{where}: YMIR 1.1's Rect has only x, y, w, h; rotate_angle fails the task",
            )
        )
    elif "rotate_angle" in box and not (
        _is_number(box["rotate_angle"]) and math.isfinite(box["rotate_angle"])
    ):
        findings.append(
            _finding(
                "DET013",
                "{}: rotate_angle {!r} must be a number".format(where, box["rotate_angle"]),
            )
        )
    if coords_ok:
        x, y, w, h = (box[key] for key in ("x", "y", "w", "h"))
        if w <= 0 or h <= 0:
            findings.append(_finding("DET014", f"{where}: box w, h = {w}, {h} must be > 0"))
        elif size is not None and (x < 0 or y < 0 or x + w > size[0] or y + h > size[1]):
            findings.append(
                _finding(
                    "DET015",
                    f"{where}: box {[x, y, w, h]} lies outside the {size[0]}x{size[1]} image",
                )
            )
    name = annotation.get("class_name")
    if not isinstance(name, str) or not name.strip():
        findings.append(
            _finding("DET016", f"{where}: class_name {name!r} must be a non-empty string")
        )
    elif name.strip().lower() not in known:
        findings.append(_finding("DET017", f"{where}: class_name {name!r} is not in class_names"))
    if "score" not in annotation:
        findings.append(_finding("DET018", f"{where}: no score; the platform drops the box"))
    elif not _is_unit(annotation["score"]):
        findings.append(
            _finding(
                "DET019",
                "{}: score {!r} must be a finite number in [0, 1]".format(
                    where, annotation["score"]
                ),
            )
        )
    return findings


def _rle_runs(counts: str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (pycocotools ``rleFrString``), or None.

    Ported rather than calling pycocotools: its decoder writes past its buffer when the runs do
    not add up to H x W, so a broken file could crash the verifier instead of being reported.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value = 0
        shift = 0
        more = True
        while more:
            if position >= len(counts):
                return None
            char = ord(counts[position]) - 48
            if not 0 <= char < 64:
                return None
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            position += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
    return runs


def _runs_to_mask(runs: list[int], height: int, width: int) -> np.ndarray:
    """The mask of validated COCO runs: alternating 0/1 runs, column-major (Fortran) order."""
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((width, height)).T


def _check_segmentation(
    path: Path, data: Any, names: list[str], known: set, object_type: int, sizes: _ImageSizes
) -> list[Finding]:
    if not isinstance(data, dict):
        return [
            _finding(
                "SEG001", f"{path}: must be a COCO mapping with images, categories and annotations"
            )
        ]
    missing = [key for key in ("images", "categories", "annotations") if key not in data]
    if missing:
        return [
            _finding(
                "SEG001",
                "{}: missing key(s) {} (KeyError in the platform)".format(path, ", ".join(missing)),
            )
        ]
    findings: list[Finding] = []
    lists = {}
    for key in ("images", "categories", "annotations"):
        value = data[key]
        if not isinstance(value, list):
            findings.append(
                _finding("SEG002", f"{path}: {key} must be a list, got {type(value).__name__}")
            )
            value = []
        lists[key] = value

    images: dict[Any, str] = {}
    seen_names = set()
    candidate_names = set(names)
    for index, image in enumerate(lists["images"]):
        where = f"{path}: images[{index}]"
        if (
            not isinstance(image, dict)
            or not _hashable(image.get("id"))
            or ("id" not in image or not isinstance(image.get("file_name"), str))
        ):
            findings.append(
                _finding("SEG003", f"{where} needs an id and a file_name, got {image!r}")
            )
            continue
        file_name = image["file_name"]
        if image["id"] in images:
            findings.append(
                _finding(
                    "SEG007",
                    "{}: duplicate image id {!r} (the platform drops both)".format(
                        where, image["id"]
                    ),
                )
            )
        if file_name in seen_names:
            findings.append(_finding("SEG007", f"{where}: duplicate file_name {file_name!r}"))
        seen_names.add(file_name)
        if os.path.basename(file_name) != file_name or not file_name:
            findings.append(
                _finding(
                    "SEG004",
                    f"{where}: file_name {file_name!r} must be a bare basename; the "
                    "platform silently drops its annotations",
                )
            )
        elif file_name not in candidate_names:
            findings.append(
                _finding("SEG005", f"{where}: file_name {file_name!r} is not a candidate")
            )
        else:
            size = sizes.get(file_name)
            if size is not None and (image.get("width"), image.get("height")) != size:
                findings.append(
                    _finding(
                        "SEG024",
                        "{}: width x height {} x {} but the image is {} x {}".format(
                            where, image.get("width"), image.get("height"), *size
                        ),
                    )
                )
        images.setdefault(image["id"], file_name)
    for name in names:
        if name not in seen_names:
            findings.append(_finding("SEG006", f"{path}: candidate {name!r} is not in images"))

    categories = set()
    for index, category in enumerate(lists["categories"]):
        where = f"{path}: categories[{index}]"
        if (
            not isinstance(category, dict)
            or "id" not in category
            or "name" not in category
            or (not _hashable(category["id"]))
        ):
            findings.append(_finding("SEG008", f"{where} needs an id and a name, got {category!r}"))
            continue
        if category["id"] in categories:
            findings.append(
                _finding("SEG007", "{}: duplicate category id {!r}".format(where, category["id"]))
            )
        else:
            categories.add(category["id"])
        if str(category["name"]).strip().lower() not in known:
            findings.append(
                _finding(
                    "SEG009",
                    "{}: category {!r} is not in class_names".format(where, category["name"]),
                )
            )

    annotation_ids = set()
    for index, annotation in enumerate(lists["annotations"]):
        where = f"{path}: annotations[{index}]"
        if (
            not isinstance(annotation, dict)
            or not _hashable(annotation.get("image_id"))
            or (not _hashable(annotation.get("category_id")))
            or "image_id" not in annotation
            or ("category_id" not in annotation)
        ):
            findings.append(_finding("SEG010", f"{where} needs image_id and category_id"))
            continue
        if "id" in annotation:
            if not _hashable(annotation["id"]) or annotation["id"] in annotation_ids:
                findings.append(
                    _finding(
                        "SEG007", "{}: duplicate annotation id {!r}".format(where, annotation["id"])
                    )
                )
            else:
                annotation_ids.add(annotation["id"])
        image_id, category_id = annotation["image_id"], annotation["category_id"]
        if image_id not in images:
            findings.append(
                _finding("SEG011", f"{where}: image_id {image_id!r} is not in images (dropped)")
            )
            file_name = None
        else:
            file_name = images[image_id]
        if category_id not in categories:
            findings.append(
                _finding(
                    "SEG011", f"{where}: category_id {category_id!r} is not in categories (dropped)"
                )
            )
        size = sizes.get(file_name) if file_name else None
        findings.extend(_check_seg_annotation(where, annotation, object_type, size))
    return findings


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _check_seg_annotation(
    where: str, annotation: dict[str, Any], object_type: int, size: tuple[int, int] | None
) -> list[Finding]:
    findings: list[Finding] = []
    bbox = annotation.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(_is_number(value) and math.isfinite(value) for value in bbox)
    ):
        findings.append(
            _finding(
                "SEG012",
                f"{where}: bbox {bbox!r} must be [x, y, w, h] numbers (else "
                "'error format', dropped)",
            )
        )
    elif int(bbox[2]) <= 0 or int(bbox[3]) <= 0:
        findings.append(_finding("SEG013", f"{where}: bbox {bbox!r} has w or h <= 0 (dropped)"))
    area_ok = (
        "area" in annotation
        and _is_number(annotation["area"])
        and math.isfinite(annotation["area"])
    )
    if not area_ok:
        findings.append(
            _finding(
                "SEG014",
                "{}: area {!r} is required (int(anno['area']) fails the task)".format(
                    where, annotation.get("area")
                ),
            )
        )
    mask = _check_segmentation_field(where, annotation.get("segmentation"), size, findings)
    if mask is not None and area_ok and abs(float(annotation["area"]) - float(mask.sum())) > 0.5:
        findings.append(
            _finding(
                "SEG025",
                "{}: area {} but the mask has {} pixels".format(
                    where, annotation["area"], int(mask.sum())
                ),
            )
        )
    if object_type == 4:
        if "confidence" not in annotation:
            findings.append(
                _finding(
                    "SEG021", f"{where}: instance segmentation needs a confidence (defaults to -1)"
                )
            )
        elif not _is_unit(annotation["confidence"]):
            findings.append(
                _finding(
                    "SEG022",
                    "{}: confidence {!r} must be a finite number in [0, 1]".format(
                        where, annotation["confidence"]
                    ),
                )
            )
    elif "confidence" in annotation:
        findings.append(
            _finding("SEG023", f"{where}: semantic segmentation annotations carry no confidence")
        )
        if not _is_unit(annotation["confidence"]):
            findings.append(
                _finding(
                    "SEG022",
                    "{}: confidence {!r} must be a finite number in [0, 1]".format(
                        where, annotation["confidence"]
                    ),
                )
            )
    return findings


def _check_segmentation_field(
    where: str, segmentation: Any, size: tuple[int, int] | None, findings: list[Finding]
) -> np.ndarray | None:
    """Check an RLE or polygon; returns the decoded RLE mask when it could be decoded."""
    if isinstance(segmentation, dict):
        counts = segmentation.get("counts")
        if not isinstance(counts, str):
            findings.append(
                _finding(
                    "SEG016",
                    f"{where}: RLE counts must be a compressed string, got {type(counts).__name__}",
                )
            )
            return None
        rle_size = segmentation.get("size")
        if not (
            isinstance(rle_size, list)
            and len(rle_size) == 2
            and all(_is_int(value) and value > 0 for value in rle_size)
        ):
            findings.append(_finding("SEG018", f"{where}: RLE size {rle_size!r} must be [H, W]"))
            return None
        if size is not None and rle_size != [size[1], size[0]]:
            findings.append(
                _finding(
                    "SEG018",
                    f"{where}: RLE size {rle_size} but the image is [H, W] = "
                    f"[{size[1]}, {size[0]}]",
                )
            )
        runs = _rle_runs(counts)
        if runs is None or sum(runs) != rle_size[0] * rle_size[1]:
            findings.append(
                _finding(
                    "SEG017",
                    "{}: RLE counts do not decode to {} x {} pixels".format(where, *rle_size),
                )
            )
            return None
        return _runs_to_mask(runs, rle_size[0], rle_size[1])
    if isinstance(segmentation, list):
        if len(segmentation) != 1:
            findings.append(
                _finding(
                    "SEG019",
                    f"{where}: {len(segmentation)} polygons (a flat coordinate list counts "
                    "as one per number); the platform supports one "
                    "[[x1, y1, ...]]",
                )
            )
            return None
        points = segmentation[0]
        if not (
            isinstance(points, list)
            and len(points) >= 6
            and len(points) % 2 == 0
            and all(_is_number(value) and math.isfinite(value) for value in points)
        ):
            findings.append(
                _finding(
                    "SEG020",
                    f"{where}: polygon {points!r} must be [x1, y1, x2, y2, ...] "
                    "with at least 3 points",
                )
            )
        return None
    findings.append(
        _finding(
            "SEG015",
            f"{where}: segmentation {segmentation!r} is neither an RLE mapping nor a polygon list",
        )
    )
    return None


# ---------------------------------------------------------------------------------------
# E. result.tsv


def verify_mining(
    out_dir: Path, candidates: Sequence[str], result_file: Path | None = None
) -> list[Finding]:
    """Check ``result.tsv``: each candidate once, as given, sorted by descending score.

    See docs/protocol.md#mining-result.
    """
    path = Path(result_file) if result_file is not None else Path(out_dir) / "result.tsv"
    if not path.is_file():
        return [_finding("MIN001", f"{path} is missing (platform: 'Cannot find result file')")]
    findings: list[Finding] = []
    wanted = [str(candidate) for candidate in candidates]
    wanted_set = set(wanted)
    seen: dict[str, int] = {}
    previous: float | None = None
    sorted_ok = True
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split("\t")
        if len(fields) != 2:
            findings.append(_finding("MIN002", f"{where}: {line!r} must be '<path>\\t<score>'"))
            continue
        candidate, score_text = fields
        try:
            score = float(score_text)
        except ValueError:
            score = float("nan")
        if not math.isfinite(score):
            findings.append(
                _finding("MIN003", f"{where}: score {score_text!r} is not a finite number")
            )
        else:
            if previous is not None and score > previous and sorted_ok:
                sorted_ok = False
                findings.append(
                    _finding(
                        "MIN007",
                        f"{where}: score {score} follows {previous}; the platform takes "
                        "the first top-k lines, so sort descending",
                    )
                )
            previous = score
        if candidate not in wanted_set:
            findings.append(
                _finding(
                    "MIN004",
                    f"{where}: {candidate!r} is not a candidate path as given in the index",
                )
            )
        elif candidate in seen:
            findings.append(
                _finding("MIN005", f"{where}: {candidate!r} already on line {seen[candidate]}")
            )
        else:
            seen[candidate] = number
    for candidate in wanted:
        if candidate not in seen:
            findings.append(_finding("MIN006", f"{path}: candidate {candidate!r} is missing"))
    odd = [
        name
        for name in wanted
        if not ASSET_HASH_RE.match(os.path.splitext(os.path.basename(name))[0])
    ]
    if odd:
        findings.append(
            _finding(
                "MIN008",
                f"{path}: {len(odd)} candidate name(s) such as {odd[0]!r} are not "
                "<sha1>.<ext>; the platform maps results by that "
                "stem",
            )
        )
    return findings


# ---------------------------------------------------------------------------------------
# the whole work dir


def _read_candidates(index_file: Path | None) -> list[str] | None:
    if index_file is None or not index_file.is_file():
        return None
    try:
        text = index_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return [line.split("\t")[0] for line in text.splitlines() if line.strip()]


def _object_type(config: dict[str, Any], env: dict[str, Any], in_dir: Path) -> int:
    value = config.get("object_type")
    if _is_int(value) and value in MAIN_METRIC:
        return value
    manifest = env.get("manifest_file")
    if manifest:
        data, error = _read_yaml(Path(str(manifest)))
        if not error and isinstance(data, dict):
            value = data.get("object_type")
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if _is_int(value) and value in MAIN_METRIC:
                return value
    return 2


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, as the platform reads it from ``monitor.txt`` (and the log's tail)."""

    failed: bool
    state: int | None
    code: int | None
    reason: str  # the log's last non-blank line: what the YMIR UI shows last

    def describe(self) -> str:
        if not self.failed:
            return f"the run succeeded (monitor state {self.state})"
        if self.state != 4:
            state = "the executor never wrote monitor.txt" if self.state == 1 else "no state 4"
            return f"the run failed ({state})"
        code = "no code" if self.code is None else f"code {self.code}"
        if self.code in EXECUTOR_CODES:
            code += f" {ErrorCode(self.code).name}"
        return f"the run failed (monitor state 4, {code}): {self.reason or 'no reason logged'}"


def _monitor_state(monitor_file: Path) -> tuple[int | None, int | None]:
    """(state, code) of monitor.txt's first line; None where absent or not an integer."""
    try:
        with open(monitor_file, encoding="utf-8", errors="replace") as handle:
            fields = handle.readline().strip().split("\t")
    except OSError:
        return None, None
    numbers: list[int | None] = []
    for index in (3, 4):
        try:
            numbers.append(int(fields[index]))
        except (IndexError, ValueError):
            numbers.append(None)
    return numbers[0], numbers[1]


def _log_tail(log_file: Path, count: int = 2) -> list[str] | None:
    """The last ``count`` non-blank lines of the executor log; None when it is missing."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


def _log_file(env: dict[str, Any], out_dir: Path) -> Path:
    return _output_path(env, "executor_log_file", out_dir, "ymir-executor-out.log")


def run_outcome(work_dir: Path) -> RunOutcome:
    """The outcome of the run in ``work_dir``: failed when ``monitor.txt`` says error (4), or
    still pending (1: the executor never reported, so it did not get far)."""
    work_dir = Path(work_dir)
    env, error = _read_yaml(work_dir / "in" / "env.yaml")
    env = env if not error and isinstance(env, dict) else {}
    out_dir = work_dir / "out"
    state, code = _monitor_state(_output_path(env, "monitor_file", out_dir, "monitor.txt"))
    tail = _log_tail(_log_file(env, out_dir)) or []
    return RunOutcome(
        failed=state in (1, 4), state=state, code=code, reason=tail[-1].strip() if tail else ""
    )


# The end of an uncaught Python traceback: "ValueError: ..." after indented frame lines.
_EXCEPTION_LINE_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def verify_failure(
    out_dir: Path,
    env: dict[str, Any],
    config: dict[str, Any],
    object_type: int,
    candidates: tuple[list[str], list[str]] | None,
) -> list[Finding]:
    """A failed run against the failure protocol, beyond the monitor line itself: an executor
    code (else YMIR can only say 160004), a one-line reason as the log's last line (the UI shows
    the last lines), and no half-written result (whatever result file exists must be complete:
    YMIR leaves a failed task's out/ as it is, and a retry or a user reads it). ``candidates``:
    the candidate index's paths as given and as local paths (mining / infer tasks)."""
    out_dir = Path(out_dir)
    findings: list[Finding] = []
    monitor_file = _output_path(env, "monitor_file", out_dir, "monitor.txt")
    state, code = _monitor_state(monitor_file)
    if state == 4 and code is None:
        findings.append(
            _finding(
                "FAL001",
                f"{monitor_file}: state 4 without an error code; YMIR reports 160004 (container "
                "error): fine for an unexpected failure, a known one should carry its 300xxx code",
            )
        )
    log_file = _log_file(env, out_dir)
    tail = _log_tail(log_file)
    if not tail:
        what = "is missing" if tail is None else "is empty"
        findings.append(
            _finding("FAL002", f"{log_file} {what}: the UI shows no reason for the failure")
        )
    else:
        last, before = tail[-1], tail[0] if len(tail) > 1 else ""
        ends_in_traceback = (
            last[:1].isspace()
            or last.startswith("Traceback")
            or (before[:1].isspace() and _EXCEPTION_LINE_RE.match(last) is not None)
        )
        if ends_in_traceback:
            findings.append(
                _finding(
                    "FAL002",
                    f"{log_file}: ends in a traceback ({last.strip()[:120]!r}); print a one-line "
                    "reason after it, the last lines are what the YMIR UI shows",
                )
            )
    findings.extend(_half_written(out_dir, env, config, object_type, candidates))
    return findings


def _half_written(
    out_dir: Path,
    env: dict[str, Any],
    config: dict[str, Any],
    object_type: int,
    candidates: tuple[list[str], list[str]] | None,
) -> list[Finding]:
    problems: list[Finding] = []
    if out_dir.is_dir():
        for path in sorted(out_dir.rglob(".*.tmp")):
            problems.append(_finding("FAL003", f"{path}: a temporary file of an unfinished write"))
    legacy, _ = _protocol(env)
    results: list[tuple[Path, Any]] = [
        (
            _output_path(env, "training_result_file", out_dir, "models/result.yaml"),
            lambda: verify_training(out_dir, env, config, object_type),
        ),
    ]
    if candidates is not None:
        as_given, local = candidates
        mining_file = _output_path(env, "mining_result_file", out_dir, "result.tsv")
        infer_file = _output_path(env, "infer_result_file", out_dir, "infer-result.json")
        class_names = config.get("class_names")
        if not isinstance(class_names, list):
            class_names = []
        results += [
            (
                mining_file,
                lambda: verify_mining(out_dir, as_given, result_file=mining_file),
            ),
            (
                infer_file,
                lambda: verify_infer(
                    out_dir, local, class_names, object_type, legacy, result_file=infer_file
                ),
            ),
        ]
    for result_file, check in results:
        if not result_file.is_file():
            continue
        for finding in check():
            if finding.severity != WARNING and not finding.check_id.startswith("WRK"):
                problems.append(
                    _finding(
                        "FAL003",
                        f"{result_file} is incomplete after the failure ({finding.check_id}: "
                        f"{finding.message})",
                    )
                )
    return problems


def verify_work_dir(
    work_dir: Path, expect_success: bool | None = None, object_type: int | None = None
) -> list[Finding]:
    """Verify a task's ``work_dir/in`` + ``work_dir/out`` like the platform would read them.

    Reads ``in/env.yaml`` and the config it names, then checks the monitor and the outputs of
    every task env.yaml asks for. Env paths are used as given (a local run writes real local
    paths); container paths of a platform task's leftovers are moved under ``work_dir``.
    ``expect_success``: None reads the outcome from monitor.txt (:func:`run_outcome`); a
    failed run (or False) is checked against the failure protocol (:func:`verify_failure`)
    instead of for results. ``object_type`` defaults to config.yaml's (YMIR 2.4+), else the
    manifest's, else 2.
    """
    work_dir = Path(work_dir)
    in_dir, out_dir = work_dir / "in", work_dir / "out"
    env_file = in_dir / "env.yaml"
    env, error = _read_yaml(env_file) if env_file.is_file() else (None, "missing")
    if error or not isinstance(env, dict):
        return [_finding("WRK001", "{}: {}".format(env_file, error or "not a mapping"))]
    findings: list[Finding] = []
    inputs = env.get("input")
    if not isinstance(inputs, dict):
        inputs = {}
    in_root = inputs.get("root_dir")

    config_file = _rebase(inputs.get("config_file"), in_root, in_dir) or in_dir / "config.yaml"
    config, error = _read_yaml(config_file) if config_file.is_file() else (None, "missing")
    if error or not isinstance(config, dict):
        findings.append(_finding("WRK002", "{}: {}".format(config_file, error or "not a mapping")))
        config = {}

    # A missing flag is false, as the executor reads it; anything but a boolean is a finding.
    flags = {
        key: False if env.get(key) is None else parse_bool(env.get(key))
        for key in ("run_training", "run_mining", "run_infer")
    }
    training, mining, infer = (flags["run_training"], flags["run_mining"], flags["run_infer"])
    if (
        None in flags.values()
        or not (training or mining or infer)
        or (training and (mining or infer))
    ):
        findings.append(
            _finding(
                "WRK003",
                "{}: run_training/run_mining/run_infer = {}, {}, {}; "
                "expected training alone, or mining and/or "
                "infer".format(
                    env_file, env.get("run_training"), env.get("run_mining"), env.get("run_infer")
                ),
            )
        )
        return findings

    legacy, protocol_findings = _protocol(env)
    findings.extend(protocol_findings)
    monitor_file = _output_path(env, "monitor_file", out_dir, "monitor.txt")
    if expect_success is None:
        expect_success = not run_outcome(work_dir).failed
    findings.extend(
        verify_monitor(
            monitor_file, expect_success, task_id=str(env["task_id"]) if "task_id" in env else None
        )
    )
    if object_type is None:
        object_type = _object_type(config, env, in_dir)

    index = None if training else _rebase(inputs.get("candidate_index_file"), in_root, in_dir)
    raw_candidates = None if index is None else _read_candidates(index)
    if not expect_success:
        candidates = (
            None
            if raw_candidates is None
            else (raw_candidates, [str(_rebase(path, in_root, in_dir)) for path in raw_candidates])
        )
        findings.extend(verify_failure(out_dir, env, config, object_type, candidates))
        return findings

    if training:
        # verify_training reports its own protocol findings; keep them once.
        findings.extend(
            item
            for item in verify_training(out_dir, env, config, object_type)
            if item.check_id != "WRK004"
        )
        return findings

    if raw_candidates is None:
        findings.append(_finding("WRK005", f"candidate index {index} is missing or unreadable"))
        return findings
    if mining:
        result = _output_path(env, "mining_result_file", out_dir, "result.tsv")
        findings.extend(verify_mining(out_dir, raw_candidates, result_file=result))
    if infer:
        class_names = config.get("class_names")
        if (
            not isinstance(class_names, list)
            or not class_names
            or not all(isinstance(name, str) for name in class_names)
        ):
            findings.append(
                _finding(
                    "WRK006",
                    f"config class_names {class_names!r} must be a non-empty list of names",
                )
            )
            class_names = []
        local = [str(_rebase(path, in_root, in_dir)) for path in raw_candidates]
        result = _output_path(env, "infer_result_file", out_dir, "infer-result.json")
        findings.extend(
            verify_infer(out_dir, local, class_names, object_type, legacy, result_file=result)
        )
    return findings
