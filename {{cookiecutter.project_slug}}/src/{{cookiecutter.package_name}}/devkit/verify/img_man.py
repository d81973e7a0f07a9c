"""Static checks of ``img-man``: ``manifest.yaml`` and the task templates, as registration and
the web UI read them (docs/protocol.md#img-man)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...contract.params import RESERVED_KEYS, TEMPLATE_FILES
from .findings import Finding, finding
from .inputs import read_yaml
from .values import is_int, is_number

OBJECT_TYPES = (2, 3, 4, 50)
# Template sub-folders when manifest.yaml lists several object types (controller common_task.py).
TYPE_FOLDERS = {2: "det", 3: "semantic-seg", 4: "instance-seg", 50: "multi-modal"}
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


def verify_static(img_man_dir: Path) -> list[Finding]:
    """Check ``manifest.yaml`` and the templates like registration does.

    See docs/protocol.md#img-man.
    """
    img_man = Path(img_man_dir)
    manifest_path = img_man / "manifest.yaml"
    manifest, findings = _read_manifest(manifest_path)
    folders, folder_findings = _template_folders(img_man, manifest_path, manifest)
    findings.extend(folder_findings)
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
            finding(
                "TPL001",
                f"no task template in {img_man} parses to a mapping; "
                "registration fails with 'does not match any "
                "configuration'",
            )
        )
    return findings


def _read_manifest(manifest_path: Path) -> tuple[dict[str, Any], list[Finding]]:
    """manifest.yaml as registration reads it: a missing or broken one is ``{}``."""
    if not manifest_path.is_file():
        return {}, [
            finding(
                "MAN001", f"{manifest_path} is missing; YMIR then assumes object_type 2 (detection)"
            )
        ]
    data, error = read_yaml(manifest_path)
    if error or not isinstance(data, dict):
        return {}, [
            finding(
                "MAN002",
                "{}: {}; YMIR silently treats it as empty, i.e. detection".format(
                    manifest_path, error or "not a mapping"
                ),
            )
        ]
    return data, []


def _template_folders(
    img_man: Path, manifest_path: Path, manifest: dict[str, Any]
) -> tuple[list[tuple[Path, int]], list[Finding]]:
    """``(folder, object_type)`` pairs whose templates registration reads, from the manifest's
    object_type: the root folder for an int, a per-type sub-folder for each listed type."""
    findings: list[Finding] = []
    folders: list[tuple[Path, int]] = []
    value = manifest.get("object_type", 2)
    listed = isinstance(value, list)
    if listed:
        findings.append(
            finding(
                "MAN005",
                f"{manifest_path}: object_type is a list; YMIR 2.1-2.3 call int() on "
                "it and fail registration",
            )
        )
        values = value
    elif is_int(value):
        values = [value]
    else:
        findings.append(
            finding(
                "MAN003", f"{manifest_path}: object_type must be an int or a list, got {value!r}"
            )
        )
        values = []
    for item in values:
        if not is_int(item) or item not in OBJECT_TYPES:
            findings.append(
                finding(
                    "MAN004",
                    f"{manifest_path}: object_type {item!r} is not one of 2 (detection), "
                    "3 (semantic seg), 4 (instance seg), 50 "
                    "(multi-modal)",
                )
            )
            continue
        if listed:
            folder = img_man / TYPE_FOLDERS[item]
            if not folder.is_dir():
                findings.append(
                    finding("MAN006", f"object_type {item} is listed but {folder} does not exist")
                )
                continue
            folders.append((folder, item))
    if not listed and is_int(value):
        # Registration reads the root templates whatever the int is.
        folders.append((img_man, value))
    return folders, findings


def _check_template(
    path: Path, task: str, object_type: int
) -> tuple[dict[str, Any] | None, list[Finding]]:
    findings: list[Finding] = []
    data, error = read_yaml(path)
    if error:
        return None, [
            finding("TPL002", f"{path}: not valid YAML ({error}); YMIR silently drops the task")
        ]
    if data is None:
        return None, [finding("TPL003", f"{path} is empty: the {task} task is not offered")]
    if not isinstance(data, dict):
        return None, [
            finding(
                "TPL002",
                f"{path}: must be a mapping, got {type(data).__name__}; YMIR silently drops "
                "the task",
            )
        ]
    for key, value in data.items():
        if not isinstance(key, str):
            findings.append(finding("TPL005", f"{path}: key {key!r} is not a string"))
            continue
        where = f"{path}: {key}"
        if len(key) > MAX_KEY_CHARS:
            findings.append(
                finding(
                    "TPL011",
                    f"{path}: the UI allows keys of at most {MAX_KEY_CHARS} characters, "
                    f"this one has {len(key)}",
                )
            )
        if isinstance(value, (dict, list)):
            findings.append(
                finding(
                    "TPL004",
                    f"{where} is a {type(value).__name__}; templates must be flat key: scalar "
                    "(the UI edits values as text)",
                )
            )
        elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            findings.append(
                finding(
                    "TPL012",
                    f"{where}: the UI's text input holds at most {MAX_STRING_CHARS} "
                    f"characters, the value has {len(value)}",
                )
            )
        elif is_number(value) and len(str(value)) > MAX_NUMBER_CHARS:
            findings.append(
                finding(
                    "TPL013",
                    f"{where}: the UI's number input holds at most {MAX_NUMBER_CHARS} "
                    f"characters, {value!r} has {len(str(value))}",
                )
            )
        if key in TEMPLATE_RESERVED:
            findings.append(
                finding(
                    "TPL010", f"{where}: reserved key is injected by the platform; comment it out"
                )
            )
    if task == "training":
        findings.extend(_check_export_format(path, data, object_type))
    if "shm_size" in data:
        value = data["shm_size"]
        valid = (is_int(value) and value > 0) or (
            isinstance(value, str) and DOCKER_SIZE_RE.match(value.strip()) is not None
        )
        if not valid:
            findings.append(
                finding(
                    "TPL009",
                    f"{path}: shm_size {value!r} is not a docker size such as "
                    "'16G'; docker run would fail",
                )
            )
    return data, findings


def _check_export_format(path: Path, data: dict[str, Any], object_type: int) -> list[Finding]:
    if "export_format" not in data:
        return [
            finding(
                "TPL008",
                f"{path}: no export_format; the platform's default may not be a "
                "format the executor reads",
            )
        ]
    value = data["export_format"]
    if not isinstance(value, str) or not EXPORT_FORMAT_RE.match(value.strip()):
        return [
            finding(
                "TPL006", f"{path}: export_format {value!r} must match {EXPORT_FORMAT_RE.pattern}"
            )
        ]
    family = value.strip().split(":")[0]
    if object_type in (3, 4) and family not in SEGMENTATION_FORMATS:
        return [
            finding(
                "TPL007",
                f"{path}: export_format {value!r} carries no masks; object_type {object_type} "
                "needs seg-coco (or coco)",
            )
        ]
    if object_type == 2 and family not in DETECTION_FORMATS:
        return [finding("TPL007", f"{path}: export_format {value!r} is not a detection format")]
    if family == "coco":
        return [
            finding(
                "TPL014",
                f"{path}: export_format {value!r}: YMIR 2.0-2.4 do not know 'coco' and export no "
                "annotations for it (empty train / val indexes); 'seg-coco:raw' is the COCO "
                "export of YMIR 2.1 and later",
            )
        ]
    return []
