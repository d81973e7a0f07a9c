"""Today's result writers, kept as the reference the streamed ones are measured against.

A verbatim copy of ``contract/results.py``'s ``DetectionResult``, ``SegmentationResult`` and
``MiningResult`` as they were before they streamed (issue 14): every box kept as two dicts in
memory, the whole document built and serialised at ``write()``. ``scale.py`` runs them side by
side with the streamed writers, and ``tests/test_results_streamed.py`` checks that both write
the same documents. Not used by the executor. Only the empty detection entry differs: the
streamed writers add ``"annotations": []`` beside ``"boxes": []`` (see ``DetectionResult``).
(The legacy protocol's boxes have no ``rotate_angle``, here as in the executor: YMIR 1.1's
parser refuses it, which the platform tier found after this copy was made.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Tuple, Union

import numpy as np

from {{ cookiecutter.package_name }}.contract.atomic import write_text_atomic
from {{ cookiecutter.package_name }}.contract.errors import ExecutorError
from {{ cookiecutter.package_name }}.contract.images import image_size
from {{ cookiecutter.package_name }}.contract.masks import decode_rle, encode_rle, mask_area, mask_bbox
from {{ cookiecutter.package_name }}.contract.results import (
    _class_index,
    _dump_json,
    _normalise_class_names,
    _number,
    _unit_float,
)

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.contract.env import OutputPaths

PathLike = Union[str, "os.PathLike[str]"]


def _candidate_keys(candidates: Sequence[PathLike]) -> tuple[list[Path], dict[str, int]]:
    """Candidates and their basenames (the keys the platform maps results by), unique."""
    paths = [Path(candidate) for candidate in candidates]
    keys: dict[str, int] = {}
    for index, path in enumerate(paths):
        key = os.path.basename(str(path))
        if not key:
            raise ValueError(f"candidate {str(path)!r} has no file name")
        if key in keys:
            # The platform rejects such a task before the run; results could not be told apart.
            raise ValueError(f"two candidates share the file name {key!r}")
        keys[key] = index
    return paths, keys


def _candidate_key(image: PathLike, keys: dict[str, int]) -> str:
    key = os.path.basename(str(image))
    if key not in keys:
        raise ValueError(f"{str(image)!r} is not one of the candidate images")
    return key


Box = Tuple[Any, Any, Any, Any, Any, Any]


class DetectionResult:
    """Collects boxes per candidate and writes the detection ``infer-result.json``
    (docs/protocol.md#infer-result-detection).

    Boxes become integer ``x, y, w, h`` (top-left corner and size), clipped to the image when
    its size is known; boxes that end up empty are dropped. Class ids or names are turned into
    names from ``class_names``; scores must be in [0, 1]. Every candidate appears in the file,
    with an empty list when nothing was added. Legacy protocol: the per-image key is
    ``annotations`` (YMIR 1.1), otherwise ``boxes``.
    """

    def __init__(
        self,
        output: OutputPaths,
        candidates: Sequence[PathLike],
        class_names: Sequence[str],
        legacy: bool,
    ) -> None:
        self.output = output
        self.result_file = Path(output.infer_result_file)
        self.legacy = bool(legacy)
        self._paths, self._keys = _candidate_keys(candidates)
        self._names, self._lookup = _normalise_class_names(class_names)
        self._boxes: dict[str, list[dict[str, Any]]] = {key: [] for key in self._keys}
        self._sizes: dict[str, tuple[int, int] | None] = {}

    def _size(self, key: str) -> tuple[int, int] | None:
        if key not in self._sizes:
            try:
                self._sizes[key] = image_size(self._paths[self._keys[key]])
            except (ExecutorError, OSError):
                # An unreadable image is reported by whoever reads it; boxes are then only
                # clipped at the top-left.
                self._sizes[key] = None
        return self._sizes[key]

    def add(
        self, image: PathLike, boxes: Sequence[Box], size: tuple[int, int] | None = None
    ) -> None:
        """Add boxes ``(x, y, w, h, class_id_or_name, score)`` for one candidate image.

        ``size`` is the image's ``(width, height)``; when omitted it is read from the file's
        header. Raises ``ValueError`` for unknown images or classes, bad numbers or scores;
        nothing is added then.
        """
        key = _candidate_key(image, self._keys)
        if size is not None:
            width, height = (int(_number(value, "image size")) for value in size)
            if width < 1 or height < 1:
                raise ValueError(f"image size must be positive, got {size!r}")
            self._sizes[key] = (width, height)
        bounds = self._size(key)
        entries = []
        for box in boxes:
            entry = self._entry(box, bounds)
            if entry is not None:
                entries.append(entry)
        self._boxes[key].extend(entries)

    def _entry(self, box: Box, bounds: tuple[int, int] | None) -> dict[str, Any] | None:
        try:
            x, y, w, h, label, score = box
        except (TypeError, ValueError):
            raise ValueError(f"a box must be (x, y, w, h, class, score), got {box!r}") from None
        x0, y0 = _number(x, "box x"), _number(y, "box y")
        x1, y1 = x0 + _number(w, "box w"), y0 + _number(h, "box h")
        class_name = self._names[_class_index(label, self._names, self._lookup)]
        confidence = _unit_float(score, "score")
        x0, y0 = max(0.0, x0), max(0.0, y0)
        if bounds is not None:
            x1, y1 = min(float(bounds[0]), x1), min(float(bounds[1]), y1)
        if x1 <= x0 or y1 <= y0:
            return None
        left, top = round(x0), round(y0)
        # A sliver thinner than a pixel still marks an object: keep it one pixel wide.
        width = max(1, round(x1) - left)
        height = max(1, round(y1) - top)
        if bounds is not None:
            left = max(0, min(left, bounds[0] - width))
            top = max(0, min(top, bounds[1] - height))
        rect: dict[str, Any] = {"x": left, "y": top, "w": width, "h": height}
        if not self.legacy:
            # YMIR 1.1's Rect has no rotate_angle: protobuf would refuse the whole result there
            rect["rotate_angle"] = 0.0
        return {"box": rect, "class_name": class_name, "score": confidence}

    def document(self) -> dict[str, Any]:
        """The JSON document :meth:`write` writes."""
        list_key = "annotations" if self.legacy else "boxes"
        return {
            "detection": {
                key: {list_key: [dict(entry, box=dict(entry["box"])) for entry in self._boxes[key]]}
                for key in self._keys
            }
        }

    def write(self) -> None:
        """Write ``infer-result.json`` atomically, every candidate present."""
        write_text_atomic(self.result_file, _dump_json(self.document()))


MaskSpec = Tuple[Any, Any, Any]


class SegmentationResult:
    """Collects masks and writes the COCO-style segmentation ``infer-result.json``
    (docs/protocol.md#infer-result-segmentation).

    Semantic segmentation (object_type 3): one annotation per (image, class); masks of the same
    class are merged, ``iscrowd`` is 1 and there is no ``confidence``. Instance segmentation
    (4): one annotation per instance with its ``confidence``. Every annotation has ``bbox``
    ``[x, y, w, h]``, ``area`` and ``segmentation`` as compressed RLE with a string ``counts``;
    empty masks are dropped. ``file_name`` is the candidate's bare basename and every candidate
    is listed in ``images``; ``categories`` use ``id`` = index in ``class_names``.
    """

    def __init__(
        self,
        output: OutputPaths,
        candidates: Sequence[PathLike],
        class_names: Sequence[str],
        object_type: int,
    ) -> None:
        if object_type not in (3, 4):
            raise ValueError(f"object_type must be 3 or 4, got {object_type!r}")
        self.output = output
        self.result_file = Path(output.infer_result_file)
        self.object_type = int(object_type)
        self._paths, self._keys = _candidate_keys(candidates)
        self._names, self._lookup = _normalise_class_names(class_names)
        self._sizes: dict[str, tuple[int, int]] = {}
        # Annotations are built when added (the mask is at hand then; no decoding at write):
        # semantic: key -> {class index: annotation}; instance: key -> [annotation]
        self._semantic: dict[str, dict[int, dict[str, Any]]] = {}
        self._instances: dict[str, list[dict[str, Any]]] = {}

    def _mask(self, spec: Any, width: int, height: int) -> np.ndarray:
        if isinstance(spec, dict):
            size = spec.get("size")
            try:
                matches = [int(size[0]), int(size[1])] == [height, width]
            except (TypeError, ValueError, IndexError):
                matches = False
            if not matches:
                raise ValueError(
                    f"RLE size {size!r} does not match the image ([h, w] = [{height}, {width}])"
                )
            return decode_rle(spec)
        mask = np.asarray(spec)
        if mask.shape != (height, width):
            raise ValueError(
                f"mask shape {mask.shape} does not match the image size "
                f"(h, w) = ({height}, {width})"
            )
        return mask.astype(bool)

    def add(self, image: PathLike, width: int, height: int, masks: Sequence[MaskSpec]) -> None:
        """Add ``(mask, class_id_or_name, score)`` items for one candidate image.

        ``mask`` is a boolean ``height x width`` array or an RLE dict of that size. ``score``
        is required (in [0, 1]) for instance segmentation and ignored for semantic.
        Raises ``ValueError`` for anything invalid; nothing is added then.
        """
        key = _candidate_key(image, self._keys)
        width_i = int(_number(width, "width"))
        height_i = int(_number(height, "height"))
        if width_i < 1 or height_i < 1 or width_i != width or height_i != height:
            raise ValueError(f"image size must be positive integers, got {width!r}x{height!r}")
        if key in self._sizes and self._sizes[key] != (width_i, height_i):
            raise ValueError(
                "image {!r} was added before with size {}x{}".format(key, *self._sizes[key])
            )

        items: list[tuple[int, np.ndarray, float]] = []
        for spec in masks:
            try:
                mask_spec, label, score = spec
            except (TypeError, ValueError):
                raise ValueError(
                    f"a mask item must be (mask, class, score), got {spec!r}"
                ) from None
            mask = self._mask(mask_spec, width_i, height_i)
            index = _class_index(label, self._names, self._lookup)
            if self.object_type == 4:
                if score is None:
                    raise ValueError("instance segmentation needs a score for every mask")
                confidence = _unit_float(score, "score")
            else:
                confidence = 0.0
            items.append((index, mask, confidence))

        self._sizes[key] = (width_i, height_i)
        for index, mask, confidence in items:
            if not mask.any():
                continue
            if self.object_type == 3:
                per_class = self._semantic.setdefault(key, {})
                if index in per_class:
                    mask = mask | decode_rle(per_class[index]["segmentation"])
                per_class[index] = dict(self._annotation(index, mask), iscrowd=1)
            else:
                entry = dict(self._annotation(index, mask), iscrowd=0, confidence=confidence)
                self._instances.setdefault(key, []).append(entry)

    def _image_size(self, key: str) -> tuple[int, int]:
        if key in self._sizes:
            return self._sizes[key]
        try:
            return image_size(self._paths[self._keys[key]])
        except (ExecutorError, OSError):
            # An unreadable candidate keeps its place in "images" with an unknown (0) size.
            return (0, 0)

    @staticmethod
    def _annotation(index: int, mask: np.ndarray) -> dict[str, Any]:
        rle = encode_rle(mask)
        return {
            "category_id": index,
            "bbox": [int(value) for value in mask_bbox(mask)],
            "area": int(mask_area(mask)),
            "segmentation": {
                "size": [int(rle["size"][0]), int(rle["size"][1])],
                "counts": str(rle["counts"]),
            },
        }

    def document(self) -> dict[str, Any]:
        """The COCO document :meth:`write` writes."""
        images = []
        annotations = []
        for image_id, key in enumerate(self._keys, start=1):
            width, height = self._image_size(key)
            images.append({"id": image_id, "file_name": key, "width": width, "height": height})
            if self.object_type == 3:
                entries = [entry for _, entry in sorted(self._semantic.get(key, {}).items())]
            else:
                entries = self._instances.get(key, [])
            annotations.extend((image_id, entry) for entry in entries)
        return {
            "images": images,
            "categories": [
                {"id": index, "name": name, "supercategory": "none"}
                for index, name in enumerate(self._names)
            ],
            "annotations": [
                dict({"id": number, "image_id": image_id}, **entry)
                for number, (image_id, entry) in enumerate(annotations, start=1)
            ],
        }

    def write(self) -> None:
        """Write ``infer-result.json`` atomically."""
        write_text_atomic(self.result_file, _dump_json(self.document()))


class MiningResult:
    """Collects one score per candidate and writes ``result.tsv`` (docs/protocol.md#mining-result).

    The platform takes the first top-k lines in file order, so lines are sorted by descending
    score (ties keep the candidate order). Every candidate appears exactly once, with its path
    exactly as given in the candidate index; candidates that got no score (e.g. unreadable
    images) are written last with ``lowest score - 1`` (``-1.0`` when nothing was scored).
    """

    def __init__(self, output: OutputPaths, candidates: Sequence[PathLike]) -> None:
        self.output = output
        self.result_file = Path(output.mining_result_file)
        self._paths = [str(candidate) for candidate in candidates]
        for path in self._paths:
            if any(char in path for char in "\t\r\n"):
                raise ValueError(f"candidate path {path!r} contains a tab or newline")
        self._index: dict[str, int] = {}
        for index, path in enumerate(self._paths):
            if path in self._index:
                raise ValueError(f"candidate {path!r} is listed twice")
            self._index[path] = index
        # A fallback for callers that pass resolved paths: the basename, when it is unique.
        basenames: dict[str, list[int]] = {}
        for index, path in enumerate(self._paths):
            basenames.setdefault(os.path.basename(path), []).append(index)
        self._by_basename = {name: hits[0] for name, hits in basenames.items() if len(hits) == 1}
        self._scores: dict[int, float] = {}

    def add(self, image: PathLike, score: Any) -> None:
        """Set the score of one candidate (a finite number; a later call replaces it)."""
        path = str(image)
        index = self._index.get(path)
        if index is None:
            index = self._by_basename.get(os.path.basename(path))
        if index is None:
            raise ValueError(f"{path!r} is not one of the candidate images")
        self._scores[index] = _number(score, "mining score")

    def lines(self) -> list[str]:
        """The lines :meth:`write` writes, without newlines."""
        floor = (min(self._scores.values()) if self._scores else 0.0) - 1.0
        scored = [(self._scores.get(index, floor), index) for index in range(len(self._paths))]
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [f"{self._paths[index]}\t{float(score)!r}" for score, index in scored]

    def write(self) -> None:
        """Write ``result.tsv`` atomically."""
        lines = self.lines()
        write_text_atomic(self.result_file, "".join(line + "\n" for line in lines))
