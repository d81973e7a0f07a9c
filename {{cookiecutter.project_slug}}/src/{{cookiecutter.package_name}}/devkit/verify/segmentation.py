"""Segmentation results: the COCO ``images``, ``categories`` and ``annotations`` of
``infer-result.json``, masks decoded, as the platform imports them
(docs/protocol.md#infer-result)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .findings import Finding, finding
from .inputs import ImageSizes
from .values import is_hashable, is_int, is_number, is_unit


def check_segmentation(
    path: Path, data: Any, names: list[str], known: set, object_type: int, sizes: ImageSizes
) -> list[Finding]:
    """The COCO result of semantic (3) or instance (4) segmentation; ``names`` are the
    candidates' basenames, ``known`` the task's class names in lower case."""
    if not isinstance(data, dict):
        return [
            finding(
                "SEG001", f"{path}: must be a COCO mapping with images, categories and annotations"
            )
        ]
    missing = [key for key in ("images", "categories", "annotations") if key not in data]
    if missing:
        return [
            finding(
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
                finding("SEG002", f"{path}: {key} must be a list, got {type(value).__name__}")
            )
            value = []
        lists[key] = value
    images = _check_images(path, lists["images"], names, sizes, findings)
    categories = _check_categories(path, lists["categories"], known, findings)
    findings.extend(
        _check_annotations(path, lists["annotations"], images, categories, object_type, sizes)
    )
    return findings


def _check_images(
    path: Path, entries: list, names: list[str], sizes: ImageSizes, findings: list[Finding]
) -> dict[Any, str]:
    """The ``images`` list against the candidates; returns file names by image id."""
    images: dict[Any, str] = {}
    seen_names = set()
    candidate_names = set(names)
    for index, image in enumerate(entries):
        where = f"{path}: images[{index}]"
        if (
            not isinstance(image, dict)
            or not is_hashable(image.get("id"))
            or ("id" not in image or not isinstance(image.get("file_name"), str))
        ):
            findings.append(
                finding("SEG003", f"{where} needs an id and a file_name, got {image!r}")
            )
            continue
        file_name = image["file_name"]
        if image["id"] in images:
            findings.append(
                finding(
                    "SEG007",
                    "{}: duplicate image id {!r} (the platform drops both)".format(
                        where, image["id"]
                    ),
                )
            )
        if file_name in seen_names:
            findings.append(finding("SEG007", f"{where}: duplicate file_name {file_name!r}"))
        seen_names.add(file_name)
        if os.path.basename(file_name) != file_name or not file_name:
            findings.append(
                finding(
                    "SEG004",
                    f"{where}: file_name {file_name!r} must be a bare basename; the "
                    "platform silently drops its annotations",
                )
            )
        elif file_name not in candidate_names:
            findings.append(
                finding("SEG005", f"{where}: file_name {file_name!r} is not a candidate")
            )
        else:
            size = sizes.get(file_name)
            if size is not None and (image.get("width"), image.get("height")) != size:
                findings.append(
                    finding(
                        "SEG024",
                        "{}: width x height {} x {} but the image is {} x {}".format(
                            where, image.get("width"), image.get("height"), *size
                        ),
                    )
                )
        images.setdefault(image["id"], file_name)
    for name in names:
        if name not in seen_names:
            findings.append(finding("SEG006", f"{path}: candidate {name!r} is not in images"))
    return images


def _check_categories(path: Path, entries: list, known: set, findings: list[Finding]) -> set[Any]:
    """The ``categories`` list against the task's classes; returns the category ids."""
    categories = set()
    for index, category in enumerate(entries):
        where = f"{path}: categories[{index}]"
        if (
            not isinstance(category, dict)
            or "id" not in category
            or "name" not in category
            or (not is_hashable(category["id"]))
        ):
            findings.append(finding("SEG008", f"{where} needs an id and a name, got {category!r}"))
            continue
        if category["id"] in categories:
            findings.append(
                finding("SEG007", "{}: duplicate category id {!r}".format(where, category["id"]))
            )
        else:
            categories.add(category["id"])
        if str(category["name"]).strip().lower() not in known:
            findings.append(
                finding(
                    "SEG009",
                    "{}: category {!r} is not in class_names".format(where, category["name"]),
                )
            )
    return categories


def _check_annotations(
    path: Path,
    entries: list,
    images: dict[Any, str],
    categories: set[Any],
    object_type: int,
    sizes: ImageSizes,
) -> list[Finding]:
    """The ``annotations`` list: references to images and categories, then each annotation."""
    findings: list[Finding] = []
    annotation_ids = set()
    for index, annotation in enumerate(entries):
        where = f"{path}: annotations[{index}]"
        if (
            not isinstance(annotation, dict)
            or not is_hashable(annotation.get("image_id"))
            or (not is_hashable(annotation.get("category_id")))
            or "image_id" not in annotation
            or ("category_id" not in annotation)
        ):
            findings.append(finding("SEG010", f"{where} needs image_id and category_id"))
            continue
        if "id" in annotation:
            if not is_hashable(annotation["id"]) or annotation["id"] in annotation_ids:
                findings.append(
                    finding(
                        "SEG007", "{}: duplicate annotation id {!r}".format(where, annotation["id"])
                    )
                )
            else:
                annotation_ids.add(annotation["id"])
        image_id, category_id = annotation["image_id"], annotation["category_id"]
        if image_id not in images:
            findings.append(
                finding("SEG011", f"{where}: image_id {image_id!r} is not in images (dropped)")
            )
            file_name = None
        else:
            file_name = images[image_id]
        if category_id not in categories:
            findings.append(
                finding(
                    "SEG011", f"{where}: category_id {category_id!r} is not in categories (dropped)"
                )
            )
        size = sizes.get(file_name) if file_name else None
        findings.extend(_check_seg_annotation(where, annotation, object_type, size))
    return findings


def _check_seg_annotation(
    where: str, annotation: dict[str, Any], object_type: int, size: tuple[int, int] | None
) -> list[Finding]:
    findings: list[Finding] = []
    bbox = annotation.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(is_number(value) and math.isfinite(value) for value in bbox)
    ):
        findings.append(
            finding(
                "SEG012",
                f"{where}: bbox {bbox!r} must be [x, y, w, h] numbers (else "
                "'error format', dropped)",
            )
        )
    elif int(bbox[2]) <= 0 or int(bbox[3]) <= 0:
        findings.append(finding("SEG013", f"{where}: bbox {bbox!r} has w or h <= 0 (dropped)"))
    area_ok = (
        "area" in annotation and is_number(annotation["area"]) and math.isfinite(annotation["area"])
    )
    if not area_ok:
        findings.append(
            finding(
                "SEG014",
                "{}: area {!r} is required (int(anno['area']) fails the task)".format(
                    where, annotation.get("area")
                ),
            )
        )
    mask = _check_segmentation_field(where, annotation.get("segmentation"), size, findings)
    if mask is not None and area_ok and abs(float(annotation["area"]) - float(mask.sum())) > 0.5:
        findings.append(
            finding(
                "SEG025",
                "{}: area {} but the mask has {} pixels".format(
                    where, annotation["area"], int(mask.sum())
                ),
            )
        )
    if object_type == 4:
        if "confidence" not in annotation:
            findings.append(
                finding(
                    "SEG021", f"{where}: instance segmentation needs a confidence (defaults to -1)"
                )
            )
        elif not is_unit(annotation["confidence"]):
            findings.append(
                finding(
                    "SEG022",
                    "{}: confidence {!r} must be a finite number in [0, 1]".format(
                        where, annotation["confidence"]
                    ),
                )
            )
    elif "confidence" in annotation:
        findings.append(
            finding("SEG023", f"{where}: semantic segmentation annotations carry no confidence")
        )
        if not is_unit(annotation["confidence"]):
            findings.append(
                finding(
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
                finding(
                    "SEG016",
                    f"{where}: RLE counts must be a compressed string, got {type(counts).__name__}",
                )
            )
            return None
        rle_size = segmentation.get("size")
        if not (
            isinstance(rle_size, list)
            and len(rle_size) == 2
            and all(is_int(value) and value > 0 for value in rle_size)
        ):
            findings.append(finding("SEG018", f"{where}: RLE size {rle_size!r} must be [H, W]"))
            return None
        if size is not None and rle_size != [size[1], size[0]]:
            findings.append(
                finding(
                    "SEG018",
                    f"{where}: RLE size {rle_size} but the image is [H, W] = "
                    f"[{size[1]}, {size[0]}]",
                )
            )
        runs = rle_runs(counts)
        if runs is None or sum(runs) != rle_size[0] * rle_size[1]:
            findings.append(
                finding(
                    "SEG017",
                    "{}: RLE counts do not decode to {} x {} pixels".format(where, *rle_size),
                )
            )
            return None
        return runs_to_mask(runs, rle_size[0], rle_size[1])
    if isinstance(segmentation, list):
        if len(segmentation) != 1:
            findings.append(
                finding(
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
            and all(is_number(value) and math.isfinite(value) for value in points)
        ):
            findings.append(
                finding(
                    "SEG020",
                    f"{where}: polygon {points!r} must be [x1, y1, x2, y2, ...] "
                    "with at least 3 points",
                )
            )
        return None
    findings.append(
        finding(
            "SEG015",
            f"{where}: segmentation {segmentation!r} is neither an RLE mapping nor a polygon list",
        )
    )
    return None


def rle_runs(counts: str) -> list[int] | None:
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


def runs_to_mask(runs: list[int], height: int, width: int) -> np.ndarray:
    """The mask of validated COCO runs: alternating 0/1 runs, column-major (Fortran) order."""
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((width, height)).T
