"""Readers for the datasets the YMIR platform exports into ``/in``.

Index files list ``<absolute image path>\\t<absolute annotation path>`` per line (training) or one
image path per line (mining / inference; docs/protocol.md#index-files). Annotations come in the
format chosen by the ``export_format`` hyper-parameter (docs/protocol.md#export-formats):

* ark (``.txt`` per image): ``<class_idx>, xmin, ymin, xmax, ymax[, quality, angle]`` with
  *inclusive* corners; an empty file is a negative image. The legacy protocol (YMIR 1.1) always
  exports ark with five columns, whatever ``export_format`` says.
* voc (``.xml`` per image): ``<object><name>`` is the class *name*; ``<truncated>`` may be the
  string ``unknown``.
* coco / seg-coco: one JSON shared by every line of every split; category ids are 0-based and
  only classes that occur are listed, so categories are mapped by *name* to ``class_names``.
  Detection reads the boxes of either (YMIR 2.1-2.4 export COCO only as ``seg-coco``; a box
  annotation's ``segmentation`` is then ``{}``) and ignores masks.

A platform that does not know the chosen annotation format exports no annotations and leaves
the train and validation indexes empty (``coco`` before YMIR 2.5, ``seg-coco`` on 2.0):
:func:`empty_export_error` turns that into a message that names the format to choose instead.

The class id of an :class:`Annotation` is always the position in ``class_names`` (the platform
re-indexes exports that way). Broken annotation files are dataset errors; unreadable images are
skipped with a warning (design decision: a handful of corrupt assets must not kill a training),
and :func:`require_items` lets the caller fail when nothing is left.
"""

from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from xml.parsers import expat

import numpy as np

from . import candidates, images, masks
from .candidates import CandidateList
from .errors import ErrorCode, ExecutorError
from .object_types import ObjectType

log = logging.getLogger(__name__)

SEGMENTATION_TYPES = (ObjectType.SEMANTIC_SEGMENTATION, ObjectType.INSTANCE_SEGMENTATION)

# Annotation part of ``export_format`` accepted per object type -> the reader that parses it.
EXPORT_FORMATS: dict[int, dict[str, str]] = {
    ObjectType.DETECTION: {
        "ark": "ark",
        "det-ark": "ark",
        "voc": "voc",
        "det-voc": "voc",
        "coco": "coco",
        "seg-coco": "coco",
    },
    ObjectType.SEMANTIC_SEGMENTATION: {"seg-coco": "coco", "coco": "coco"},
    ObjectType.INSTANCE_SEGMENTATION: {"seg-coco": "coco", "coco": "coco"},
}
# What YMIR 2.x exports when ``export_format`` is empty or missing (``exporter.parse_export_type``).
PLATFORM_DEFAULT_FORMAT = "voc:raw"
CANONICAL_FORMATS = ("ark", "voc", "coco")
# The first YMIR version whose exporter knows each annotation part (``parse_anno_format``);
# YMIR 1.1 ignores ``export_format`` and always exports ark.
EXPORTED_SINCE = {
    "ark": (2, 0),
    "det-ark": (2, 0),
    "voc": (2, 0),
    "det-voc": (2, 0),
    "seg-coco": (2, 1),
    "coco": (2, 5),
}
# What the executor can tell about the platform from its files: 2.0 writes no manifest_file
# into env.yaml, 2.1-2.3 no object_type into config.yaml; 2.4 and 2.5 write both.
PLATFORM_RANGES = {"2.0": ((2, 0), (2, 0)), "2.1-2.3": ((2, 1), (2, 3)), "2.4+": ((2, 4), (2, 5))}
PLATFORM_EVIDENCE = {
    "2.0": "YMIR 2.0 (env.yaml has no manifest_file)",
    "2.1-2.3": "YMIR 2.1-2.3 (config.yaml has no object_type)",
    "2.4+": "YMIR 2.4 or 2.5 (config.yaml has object_type)",
}


@dataclass
class Annotation:
    """One object: ``class_id`` indexes ``class_names``; ``box`` is integer ``(x, y, w, h)``."""

    class_id: int
    box: tuple[int, int, int, int]
    mask: np.ndarray | None = None
    score: float | None = None


@dataclass
class DatasetItem:
    """One image and its objects; no annotations means a negative (background-only) image.

    ``width`` / ``height`` are the stored pixel size (no EXIF rotation) when the reader checked
    the image, else ``None``.
    """

    image: Path
    annotations: list[Annotation] = field(default_factory=list)
    width: int | None = None
    height: int | None = None


def accepted_export_formats(object_type: int) -> list[str]:
    """The ``export_format`` values this object type accepts, as written in a template."""
    return [f"{name}:raw" for name in _formats_for(object_type)]


def parse_export_format(value: str | None, object_type: int) -> str:
    """``"ark"``, ``"voc"`` or ``"coco"`` for an ``export_format`` such as ``"det-ark:raw"``.

    Empty or missing means what the platform then exports (``voc:raw``), which only detection
    can read.

    Raises:
        ExecutorError: CONFIG for anything the target cannot read (message lists what it can).
    """
    formats = _formats_for(object_type)
    text = str(value if value is not None else "").strip().lower()
    given = text or PLATFORM_DEFAULT_FORMAT
    parts = given.split(":")
    if len(parts) == 2 and parts[1] == "raw" and parts[0] in formats:
        return formats[parts[0]]
    if not text:
        what = f"export_format is empty, so the platform exports {PLATFORM_DEFAULT_FORMAT}"
    else:
        what = f"export_format {value!r} is not supported"
    raise ExecutorError(
        ErrorCode.CONFIG,
        f"{what}; this executor (object_type {object_type}) accepts "
        + ", ".join(repr(name) for name in accepted_export_formats(object_type)),
    )


def read_index(path: str | os.PathLike) -> list[tuple[Path, Path | None]]:
    """``(image, annotation or None)`` per non-blank line of a tab-separated index file.

    Raises:
        ExecutorError: DATASET when the file is missing or a line has more than two columns.
    """
    index = Path(path)
    try:
        text = index.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ExecutorError(
            ErrorCode.DATASET, f"cannot read index file {index}: {error}"
        ) from error
    entries: list[tuple[Path, Path | None]] = []
    # Split on "\n" only: str.splitlines() would also break names at exotic Unicode separators.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) > 2 or not columns[0].strip():
            raise ExecutorError(
                ErrorCode.DATASET,
                f"{index}:{number}: expected '<image>' or '<image>\\t<annotation>', got {line!r}",
            )
        annotation = columns[1] if len(columns) == 2 and columns[1].strip() else None
        entries.append((Path(columns[0]), Path(annotation) if annotation else None))
    return entries


def read_candidates(index_file: str | os.PathLike) -> CandidateList:
    """The images of a mining / inference index, in file order (first column only).

    A compact sequence of paths (see :mod:`.candidates`: an index may list a million images).
    """
    return candidates.read_candidates(index_file)


def read_split(
    index_file: str | os.PathLike,
    class_names: Sequence[str],
    annotation_format: str,
    object_type: int,
    legacy: bool = False,
) -> list[DatasetItem]:
    """The images and ground truth of one split (train or val), in index order.

    ``annotation_format`` is a canonical name from :func:`parse_export_format` (an annotation
    part such as ``seg-coco`` or a raw ``export_format`` value is accepted too). Masks are
    decoded for segmentation targets only. Images that cannot be read are skipped with a
    warning; the result may be empty (see :func:`require_items`).

    Raises:
        ExecutorError: DATASET for a missing index or a malformed annotation file, CONFIG for a
        format the target cannot read.
    """
    fmt = "ark" if legacy else _canonical_format(annotation_format, object_type)
    with_masks = object_type in SEGMENTATION_TYPES
    lookup = _name_lookup(class_names)
    entries = read_index(index_file)
    items: list[DatasetItem] = []
    skipped = 0
    for image, annotation_file in entries:
        try:
            width, height = images.check_image(image)
        except ExecutorError as error:
            log.warning("skipping training image: %s", error.message)
            skipped += 1
            continue
        if annotation_file is None:
            annotations: list[Annotation] = []
        elif fmt == "ark":
            annotations = _read_ark(annotation_file, len(class_names), legacy)
        elif fmt == "voc":
            annotations = _read_voc(annotation_file, lookup)
        else:
            document = _coco_document(annotation_file, lookup)
            annotations = document.annotations_for(image, width, height, with_masks)
        items.append(DatasetItem(image, annotations, width, height))
    if skipped:
        log.warning(
            "%s: skipped %d of %d images that cannot be read", index_file, skipped, len(entries)
        )
    return items


def platform_range(has_manifest_file: bool, has_object_type: bool) -> str:
    """The YMIR versions that write such files: a key of :data:`PLATFORM_RANGES`."""
    if has_object_type:
        return "2.4+"
    return "2.1-2.3" if has_manifest_file else "2.0"


def empty_export_error(
    split_name: str, export_format: str | None, object_type: int, platform: str
) -> ExecutorError | None:
    """Why a split's index is empty when the platform did not export ``export_format``.

    ``platform`` is from :func:`platform_range`. Returns a CONFIG error that names the formats
    this platform does export for the target, or ``None`` when every version of that range
    exports the format (the dataset itself is then empty).
    """
    text = str(export_format or "").strip().lower() or PLATFORM_DEFAULT_FORMAT
    since = EXPORTED_SINCE.get(text.split(":")[0])
    oldest, newest = PLATFORM_RANGES[platform]
    if since is None or since <= oldest:
        return None
    exported = [
        f"'{name}:raw'"
        for name in _formats_for(object_type)
        if EXPORTED_SINCE[name] <= oldest and not name.startswith("det-")
    ]
    if exported:
        choice = "choose " + ", ".join(exported[:-1]) + (" or " if exported[1:] else "")
        choice += exported[-1]
    else:
        choice = f"this executor needs YMIR >= {_version_text(EXPORTED_SINCE['seg-coco'])}"
    if since <= newest:  # only the newer version of the range knows it (2.4 vs 2.5 and coco)
        choice += f" (on YMIR {_version_text(since)} the dataset has no {split_name} images)"
    return ExecutorError(
        ErrorCode.CONFIG,
        f"the {split_name} index is empty: YMIR exports {text!r} since "
        f"{_version_text(since)} only, and this platform is {PLATFORM_EVIDENCE[platform]}, "
        f"which exports no annotations for it: {choice}",
    )


def _version_text(version: tuple[int, int]) -> str:
    return ".".join(str(number) for number in version)


def require_items(items: list[DatasetItem], split_name: str) -> list[DatasetItem]:
    """``items`` unchanged, or a DATASET error when no valid image is left in the split."""
    if not items:
        raise ExecutorError(ErrorCode.DATASET, f"no valid image left in the {split_name} set")
    return items


# --- helpers -------------------------------------------------------------------------------


def _formats_for(object_type: int) -> dict[str, str]:
    try:
        return EXPORT_FORMATS[int(object_type)]
    except (KeyError, TypeError, ValueError) as error:
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"object_type {object_type!r} is not supported; use 2, 3 or 4",
        ) from error


def _canonical_format(annotation_format: str, object_type: int) -> str:
    """The reader name for a canonical name, an annotation part (``det-ark``) or a raw value."""
    formats = _formats_for(object_type)
    name = str(annotation_format or "").strip().lower()
    if name in formats:
        return formats[name]
    if name in CANONICAL_FORMATS:
        accepted = ", ".join(repr(value) for value in accepted_export_formats(object_type))
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{name} annotations cannot train object_type {object_type}; accepted: {accepted}",
        )
    return parse_export_format(annotation_format, object_type)


def _name_lookup(class_names: Sequence[str]) -> dict[str, int]:
    lookup: dict[str, int] = {}
    for index, name in enumerate(class_names):
        lookup.setdefault(str(name).strip().lower(), index)
    return lookup


def _dataset_error(where: str, message: str) -> ExecutorError:
    return ExecutorError(ErrorCode.DATASET, f"{where}: {message}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _dataset_error(str(path), f"cannot read annotation file: {error}") from error


def _integer(text: str, where: str, what: str) -> int:
    """An integer coordinate; ``"12.0"`` is tolerated, ``"12.5"`` is not."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise _dataset_error(where, f"{what} must be an integer, got {text!r}")
    return int(number)


def _score(value: Any) -> float | None:
    # Ground truth carries confidence -1 (or nothing); only a real probability is a score.
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def _inclusive_box(xmin: int, ymin: int, xmax: int, ymax: int) -> tuple[int, int, int, int] | None:
    width, height = xmax - xmin + 1, ymax - ymin + 1
    if width < 1 or height < 1:
        return None
    return (xmin, ymin, width, height)


def _read_ark(path: Path, class_count: int, legacy: bool) -> list[Annotation]:
    annotations = []
    for number, raw in enumerate(_read_text(path).split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{path}:{number}"
        # The platform writes ", "; hand-made files use ",". Both split the same way.
        columns = [column.strip() for column in line.split(",")]
        if len(columns) < 5:
            raise _dataset_error(
                where, f"expected '<class_idx>, xmin, ymin, xmax, ymax[, ...]', got {line!r}"
            )
        class_id = _integer(columns[0], where, "class_idx")
        xmin, ymin, xmax, ymax = (
            _integer(value, where, name)
            for value, name in zip(columns[1:5], ("xmin", "ymin", "xmax", "ymax"))
        )
        if not legacy and len(columns) >= 7:
            # quality and angle are floats; check them so a shifted column is not silently used.
            for value, name in zip(columns[5:7], ("anno_quality", "rotate_angle")):
                try:
                    float(value)
                except ValueError as error:
                    message = f"{name} must be a number, got {value!r}"
                    raise _dataset_error(where, message) from error
        if not 0 <= class_id < class_count:
            log.warning("%s: class index %d is not in class_names; object skipped", where, class_id)
            continue
        box = _inclusive_box(xmin, ymin, xmax, ymax)
        if box is None:
            log.warning("%s: empty box %s; object skipped", where, line)
            continue
        annotations.append(Annotation(class_id, box))
    return annotations


def _parse_xml(path: Path) -> tuple[ET.Element, dict[ET.Element, int]]:
    """The XML tree plus the line of every element, so errors can point at the object."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _dataset_error(str(path), f"cannot read annotation file: {error}") from error
    parser = expat.ParserCreate()
    builder = ET.TreeBuilder()
    lines: dict[ET.Element, int] = {}

    def start(tag: str, attributes: dict) -> None:
        lines[builder.start(tag, attributes)] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        root = builder.close()
    except expat.ExpatError as error:
        raise _dataset_error(
            f"{path}:{error.lineno}", f"invalid XML at column {error.offset}: {error}"
        ) from error
    except AssertionError as error:
        # TreeBuilder asserts when the document is empty.
        raise _dataset_error(f"{path}:1", "invalid XML: no root element") from error
    return root, lines


def _read_voc(path: Path, lookup: dict[str, int]) -> list[Annotation]:
    root, lines = _parse_xml(path)
    annotations = []
    for number, element in enumerate(root.iter("object"), start=1):
        name = (element.findtext("name") or "").strip().lower()
        where = f"{path}:{lines.get(element, 1)}: object {number} ({name or 'no name'})"
        if name not in lookup:
            log.debug("%s: class not in class_names; object skipped", where)
            continue
        bndbox = element.find("bndbox")
        if bndbox is None:
            raise _dataset_error(where, "object has no <bndbox>")
        corners = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(tag)
            if text is None:
                raise _dataset_error(where, f"<bndbox> has no <{tag}>")
            corners.append(_integer(text.strip(), where, tag))
        box = _inclusive_box(*corners)
        if box is None:
            log.warning("%s: empty box %s; object skipped", where, corners)
            continue
        score = _score(element.findtext("confidence"))
        annotations.append(Annotation(lookup[name], box, score=score))
    return annotations


class _CocoDocument:
    """One parsed coco-annotations.json, indexed by image basename."""

    def __init__(self, path: Path, lookup: dict[str, int]) -> None:
        self.path = path
        data = self._load(path)
        self.class_of_category = self._categories(data, lookup)
        self.images: dict[str, dict] = {}
        self.annotations: dict[Any, list[dict]] = {}
        for image in data["images"]:
            if not isinstance(image, dict) or "file_name" not in image or "id" not in image:
                raise _dataset_error(str(path), f"image entry without id / file_name: {image!r}")
            self.images[os.path.basename(str(image["file_name"]))] = image
        for annotation in data.get("annotations") or []:
            if not isinstance(annotation, dict) or "image_id" not in annotation:
                raise _dataset_error(str(path), f"annotation without image_id: {annotation!r}")
            self.annotations.setdefault(annotation["image_id"], []).append(annotation)

    @staticmethod
    def _load(path: Path) -> dict:
        try:
            data = json.loads(_read_text(path))
        except json.JSONDecodeError as error:
            raise _dataset_error(
                f"{path}:{error.lineno}", f"invalid JSON at column {error.colno}: {error.msg}"
            ) from error
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise _dataset_error(str(path), "not a COCO document (no 'images' list)")
        if not isinstance(data.get("categories", []), list) or not isinstance(
            data.get("annotations") or [], list
        ):
            raise _dataset_error(str(path), "'categories' and 'annotations' must be lists")
        return data

    def _categories(self, data: dict, lookup: dict[str, int]) -> dict[Any, int]:
        mapping = {}
        for category in data.get("categories") or []:
            if not isinstance(category, dict) or "id" not in category or "name" not in category:
                raise _dataset_error(str(self.path), f"category without id / name: {category!r}")
            name = str(category["name"]).strip().lower()
            # Ids are 0-based and only present classes are listed: never trust the position.
            if name in lookup:
                mapping[category["id"]] = lookup[name]
        return mapping

    def annotations_for(
        self, image: Path, width: int, height: int, with_masks: bool
    ) -> list[Annotation]:
        entry = self.images.get(image.name)
        if entry is None:
            log.warning("%s: image %s is not listed; treated as negative", self.path, image.name)
            return []
        result = []
        for annotation in self.annotations.get(entry["id"], []):
            class_id = self.class_of_category.get(annotation.get("category_id"))
            if class_id is None:
                continue
            where = f"{self.path}: annotation {annotation.get('id', '?')} of {image.name}"
            mask = self._mask(annotation, where, width, height) if with_masks else None
            if with_masks and mask is None:
                continue
            box = self._box(annotation, where, mask)
            if box is None:
                log.warning("%s: empty box; object skipped", where)
                continue
            result.append(Annotation(class_id, box, mask, _score(annotation.get("confidence"))))
        return result

    @staticmethod
    def _box(
        annotation: dict, where: str, mask: np.ndarray | None
    ) -> tuple[int, int, int, int] | None:
        bbox = annotation.get("bbox")
        if bbox is None and mask is not None:
            left, top, width, height = masks.mask_bbox(mask)
            return (left, top, width, height)
        try:
            x, y, w, h = (float(value) for value in bbox or ())
        except (TypeError, ValueError) as error:
            message = f"bbox must be [x, y, w, h] numbers, got {bbox!r}"
            raise _dataset_error(where, message) from error
        if not all(math.isfinite(value) for value in (x, y, w, h)):
            raise _dataset_error(where, f"bbox must be finite, got {bbox!r}")
        if w <= 0 or h <= 0:
            return None
        # Round the edges, not the size, so a box keeps covering the same pixels (half up, not
        # Python's round-half-even, so neighbouring boxes round alike).
        left, top = math.floor(x + 0.5), math.floor(y + 0.5)
        right, bottom = math.floor(x + w + 0.5), math.floor(y + h + 0.5)
        return (left, top, max(1, right - left), max(1, bottom - top))

    @staticmethod
    def _mask(annotation: dict, where: str, width: int, height: int) -> np.ndarray | None:
        segmentation = annotation.get("segmentation")
        if not segmentation:
            log.warning("%s: no segmentation; object skipped", where)
            return None
        try:
            if isinstance(segmentation, dict):
                mask = masks.decode_rle(segmentation)
            else:
                mask = masks.polygon_to_mask(segmentation, height, width)
        except ValueError as error:
            raise _dataset_error(where, f"bad segmentation: {error}") from error
        if mask.shape != (height, width):
            raise _dataset_error(
                where, f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {width}x{height}"
            )
        if not mask.any():
            log.warning("%s: empty mask; object skipped", where)
            return None
        return mask


# train and val share one JSON: keep the last few parsed documents (keyed by file identity, so an
# edited file is parsed again).
_COCO_CACHE: OrderedDict[tuple, _CocoDocument] = OrderedDict()
_COCO_CACHE_SIZE = 2


def _coco_document(path: Path, lookup: dict[str, int]) -> _CocoDocument:
    try:
        stat = path.stat()
    except OSError as error:
        raise _dataset_error(str(path), f"cannot read annotation file: {error}") from error
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size, tuple(sorted(lookup.items())))
    document = _COCO_CACHE.get(key)
    if document is None:
        document = _CocoDocument(path, lookup)
        _COCO_CACHE[key] = document
        while len(_COCO_CACHE) > _COCO_CACHE_SIZE:
            _COCO_CACHE.popitem(last=False)
    else:
        _COCO_CACHE.move_to_end(key)
    return document
