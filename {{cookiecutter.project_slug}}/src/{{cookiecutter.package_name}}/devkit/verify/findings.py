"""The verifier's checks, its findings and the report it prints.

Every check has a stable id (``MON003``), a severity and, where known, the platform error code
the mistake would cause:

* ``platform-fatal``: the platform rejects the image or fails the task (or its UI shows it as
  failed), e.g. 160011 ``RC_CMD_NO_RESULT``, 169999 ``RC_CMD_ERROR_UNKNOWN``, 150404 monitor
  parse error, 130401 image registration error;
* ``verifier-fatal``: the platform accepts the output but loses or misreads part of it, or a
  rule of the reference verifier is broken;
* ``warning``: legal but suspicious or not portable to every platform version.

``CHECKS`` lists every check; the modules beside this one find where each is broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

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


def finding(check_id: str, message: str) -> Finding:
    """A :class:`Finding` of check ``check_id`` (its severity and code from ``CHECKS``)."""
    check = CHECKS[check_id]
    return Finding(check_id, check.severity, message, check.code)


def has_errors(findings: Iterable[Finding]) -> bool:
    """True if any finding is more than a warning."""
    return any(item.severity != WARNING for item in findings)


def format_findings(findings: Sequence[Finding]) -> str:
    """A human-readable report: one line per finding, most severe first, then a summary."""
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    lines = []
    for item in sorted(findings, key=lambda found: order.get(found.severity, 0)):
        code = f" [YMIR code {item.code}]" if item.code is not None else ""
        lines.append(f"{item.severity.upper():<14} {item.check_id}{code}: {item.message}")
    counts = {severity: 0 for severity in SEVERITIES}
    for item in findings:
        counts[item.severity] = counts.get(item.severity, 0) + 1
    if not findings:
        lines.append("verify: all checks passed")
    else:
        lines.append(
            f"verify: {counts[PLATFORM_FATAL]} platform-fatal, "
            f"{counts[VERIFIER_FATAL]} verifier-fatal, {counts[WARNING]} warning(s)"
        )
    return "\n".join(lines)
