"""Detection results: the ``detection`` mapping of ``infer-result.json``, box by box, as the
platform's protobuf parser reads it (docs/protocol.md#infer-result)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .findings import Finding, finding
from .inputs import ImageSizes
from .values import is_int, is_number, is_unit

BOX_KEYS = frozenset({"x", "y", "w", "h", "rotate_angle"})
LEGACY_MAX_BOXES = 50


def check_detection(
    path: Path, data: Any, names: list[str], known: set, legacy: bool, sizes: ImageSizes
) -> list[Finding]:
    """The ``detection`` mapping: one entry per candidate, each box valid; ``names`` are the
    candidates' basenames, ``known`` the task's class names in lower case."""
    detection = data.get("detection") if isinstance(data, dict) else None
    if not isinstance(detection, dict):
        return [
            finding(
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
                finding(
                    "DET004", f"{path}: key {key!r} is a path; the platform only uses its basename"
                )
            )
        if base not in candidate_names:
            findings.append(finding("DET003", f"{path}: key {key!r} is not a candidate image"))
    for name in names:
        if name not in keys:
            findings.append(
                finding(
                    "DET002",
                    f"{path}: candidate {name!r} is missing (use an empty list for no boxes)",
                )
            )
    list_key = "annotations" if legacy else "boxes"
    for key, entry in detection.items():
        where = f"{path}: {key!r}"
        if not isinstance(entry, dict):
            findings.append(
                finding("DET005", f"{where} must be a mapping with a {list_key!r} list")
            )
            continue
        if legacy and list_key not in entry and "boxes" in entry:
            findings.append(
                finding("DET006", f"{where}: YMIR 1.1 reads only 'annotations'; 'boxes' is ignored")
            )
            continue
        if not legacy and "boxes" not in entry and "annotations" in entry:
            findings.append(
                finding(
                    "DET007", f"{where}: 'annotations' is the legacy key; YMIR 2.x prefers 'boxes'"
                )
            )
            list_key_here = "annotations"
        else:
            list_key_here = list_key
        boxes = entry.get(list_key_here)
        if not isinstance(boxes, list):
            findings.append(
                finding("DET005", f"{where}: {list_key_here!r} must be a list, got {boxes!r}")
            )
            continue
        if legacy and len(boxes) > LEGACY_MAX_BOXES:
            findings.append(
                finding(
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
            finding(
                "DET010", f"{where}: must be a mapping with a 'box' mapping, got {annotation!r}"
            )
        ]
    findings: list[Finding] = []
    box = annotation["box"]
    extra = sorted(str(key) for key in box if key not in BOX_KEYS)
    if extra:
        findings.append(
            finding(
                "DET011",
                f"{where}: box keys {extra} are not fields of Rect (protobuf "
                "ParseError fails the whole task)",
            )
        )
    coords_ok = True
    for key in ("x", "y", "w", "h"):
        if not is_int(box.get(key)):
            coords_ok = False
            findings.append(
                finding("DET012", f"{where}: box {key} = {box.get(key)!r} must be a JSON integer")
            )
    if "rotate_angle" in box and legacy:
        # found by ymir-cmd 1.1.0's mir mining --add-annotations (json_format.ParseDict)
        findings.append(
            finding(
                "DET021",
                f"{where}: YMIR 1.1's Rect has only x, y, w, h; rotate_angle fails the task",
            )
        )
    elif "rotate_angle" in box and not (
        is_number(box["rotate_angle"]) and math.isfinite(box["rotate_angle"])
    ):
        findings.append(
            finding(
                "DET013",
                "{}: rotate_angle {!r} must be a number".format(where, box["rotate_angle"]),
            )
        )
    if coords_ok:
        x, y, w, h = (box[key] for key in ("x", "y", "w", "h"))
        if w <= 0 or h <= 0:
            findings.append(finding("DET014", f"{where}: box w, h = {w}, {h} must be > 0"))
        elif size is not None and (x < 0 or y < 0 or x + w > size[0] or y + h > size[1]):
            findings.append(
                finding(
                    "DET015",
                    f"{where}: box {[x, y, w, h]} lies outside the {size[0]}x{size[1]} image",
                )
            )
    name = annotation.get("class_name")
    if not isinstance(name, str) or not name.strip():
        findings.append(
            finding("DET016", f"{where}: class_name {name!r} must be a non-empty string")
        )
    elif name.strip().lower() not in known:
        findings.append(finding("DET017", f"{where}: class_name {name!r} is not in class_names"))
    if "score" not in annotation:
        findings.append(finding("DET018", f"{where}: no score; the platform drops the box"))
    elif not is_unit(annotation["score"]):
        findings.append(
            finding(
                "DET019",
                "{}: score {!r} must be a finite number in [0, 1]".format(
                    where, annotation["score"]
                ),
            )
        )
    return findings
