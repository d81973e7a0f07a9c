"""Validated, atomic writers for the task results the platform reads from ``/out``.

The formats and the platform's rules: docs/protocol.md#outputs.

Each writer accepts the author's values, checks them against the rules the platform's parsers
apply (and the stricter ones of the verifier), and refuses anything invalid with ``ValueError``
*before* writing: a file on disk is always complete and valid. Files are replaced atomically.

* :class:`TrainingResult` -> ``models/result.yaml`` (modern ``model_stages`` or legacy
  ``model`` + ``map``; rewritten after every stage so a killed run still leaves a usable model);
* :class:`DetectionResult` -> ``infer-result.json`` (``detection`` dict, integer boxes);
* :class:`SegmentationResult` -> ``infer-result.json`` (COCO with compressed RLE masks);
* :class:`MiningResult` -> ``result.tsv`` (one line per candidate, sorted descending).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Sequence, Tuple, Union

import numpy as np
import yaml

from .atomic import write_text_atomic
from .errors import ExecutorError
from .images import image_size
from .masks import decode_rle, encode_rle, mask_area, mask_bbox

if TYPE_CHECKING:
    from .env import OutputPaths

PathLike = Union[str, "os.PathLike[str]"]

MAIN_METRIC = {2: "mAP", 3: "mIoU", 4: "maskAP"}

# Stage fields the platform reads as counts (ints >= 0), not as [0, 1] metrics.
COUNT_METRICS = frozenset({"tp", "fp", "fn"})
# Keys of a stage entry that are not metrics; a metric with one of these names would clash.
_STAGE_FIELDS = frozenset({"stage_name", "files", "timestamp"})

# The SDK's default: the 10 newest stages plus the best one (docs/protocol.md#training-result).
DEFAULT_MAX_STAGES = 11


def _number(value: Any, what: str) -> float:
    """A finite Python float from a Python/numpy/torch scalar; booleans and NaN are refused.

    yaml.safe_dump cannot represent numpy or torch scalars, and the platform's pydantic models
    would misread booleans, so everything is converted (and checked) here.
    """
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not isinstance(value, numbers.Real):
        item = getattr(value, "item", None)
        if item is None:
            raise ValueError(f"{what} must be a number, got {value!r}")
        try:
            value = item()
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a scalar number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _unit_float(value: Any, what: str) -> float:
    number = _number(value, what)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must be in [0, 1] (not a percentage), got {value!r}")
    return number


def _count(value: Any, what: str) -> int:
    number = _number(value, what)
    if number < 0 or number != int(number):
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return int(number)


def _stage_name(name: Any) -> str:
    """The SDK's stage-name rule: numbers become ``stage_<n>``, others must be identifiers."""
    if isinstance(name, bool):
        raise ValueError(f"stage name must be a string, got {name!r}")
    if isinstance(name, numbers.Integral):
        name = f"stage_{int(name)}"
    name = str(name)
    if name.isdigit():
        name = "stage_" + name
    if "@" in name:
        # The platform refers to stages as "<model_hash>@<stage_name>".
        raise ValueError(f"stage name must not contain '@': {name!r}")
    if not name.replace("-", "_").isidentifier():
        raise ValueError(
            "stage name must be an identifier (letters, digits, '_' or '-', not starting with a "
            f"digit), got {name!r}"
        )
    return name


def _normalise_class_names(class_names: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    names = [str(name) for name in class_names]
    if not names:
        raise ValueError("class_names must not be empty")
    lookup: dict[str, int] = {}
    for index, name in enumerate(names):
        key = name.strip().lower()
        if not key:
            raise ValueError("class_names must not contain empty names")
        if key in lookup:
            raise ValueError(f"class_names must be unique, {name!r} appears twice")
        lookup[key] = index
    return names, lookup


def _class_index(value: Any, names: list[str], lookup: dict[str, int]) -> int:
    """Class index from an index into ``class_names`` or from a name (case/space-insensitive)."""
    if isinstance(value, (str, bytes)):
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        key = text.strip().lower()
        if key not in lookup:
            raise ValueError(f"unknown class name {text!r}; class_names are {names}")
        return lookup[key]
    index = _number(value, "class id")
    if index != int(index) or not 0 <= int(index) < len(names):
        raise ValueError(f"class id {value!r} is out of range for {len(names)} class_names")
    return int(index)


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


def _dump_json(data: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and the platform's json.loads would accept
    # them only to fail later; ASCII output keeps non-ASCII file names independent of encodings.
    return json.dumps(data, allow_nan=False, ensure_ascii=True) + "\n"


class TrainingResult:
    """Writes ``result.yaml`` (docs/protocol.md#training-result) after every :meth:`add_stage`.

    Modern protocol: ``model_stages`` with one entry per stage, files looked up (like the
    platform when it packs the model) in ``<models_dir>/<stage>/`` then ``<models_dir>/``.
    Legacy protocol (YMIR 1.1, detection only): ``model`` (the best stage's files, which must lie
    directly in ``models_dir``) and ``map``. The two formats are never mixed: a top-level
    ``model`` key would make the platform ignore ``model_stages``.

    ``mAP`` is written in every stage because YMIR 2.0 requires it: detection's own metric;
    for instance segmentation the given ``mAP``, else ``boxAP``; for semantic segmentation the
    given ``mAP``, else 0.0 (box AP does not apply to a label map, and 0.0 is the platform's own
    default for a missing metric).
    """

    def __init__(
        self,
        output: OutputPaths,
        object_type: int,
        legacy: bool,
        max_stages: int = DEFAULT_MAX_STAGES,
    ) -> None:
        if object_type not in MAIN_METRIC:
            raise ValueError(f"object_type must be 2, 3 or 4, got {object_type!r}")
        if legacy and object_type != 2:
            raise ValueError("the legacy protocol (YMIR 1.1) supports detection only")
        if isinstance(max_stages, bool) or not isinstance(max_stages, int) or max_stages < 1:
            raise ValueError(f"max_stages must be a positive integer, got {max_stages!r}")
        self.output = output
        self.object_type = int(object_type)
        self.legacy = bool(legacy)
        self.max_stages = max_stages
        self.result_file = Path(output.training_result_file)
        self.models_dir = Path(output.models_dir)
        self.main_metric = MAIN_METRIC[self.object_type]
        self._stages: dict[str, dict[str, Any]] = {}
        self._order: dict[str, int] = {}
        self._counter = 0
        self._evaluate_config: dict[str, float] | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def best_stage_name(self) -> str | None:
        """The stage with the highest main metric (newest on ties); ``None`` before any stage."""
        if not self._stages:
            return None
        return max(self._stages, key=self._rank)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """A copy of the stages kept so far, as they are written."""
        return {name: dict(stage) for name, stage in self._stages.items()}

    def add_stage(
        self,
        name: str | int,
        files: Sequence[PathLike],
        metrics: dict[str, Any],
        timestamp: int | None = None,
        evaluate_config: dict[str, Any] | None = None,
    ) -> None:
        """Record a stage (a saved model) and rewrite ``result.yaml``.

        Args:
            name: stage name; an identifier (``-`` allowed), numbers become ``stage_<n>``.
                Re-using a name replaces that stage.
            files: the stage's files, relative to ``models_dir/<name>/`` or ``models_dir``
                (absolute paths inside ``models_dir`` are accepted and made relative). They
                must exist and must not be symlinks. Legacy: directly inside ``models_dir``.
            metrics: floats in [0, 1] (numpy/torch scalars are converted); must include the
                target's main metric (``MAIN_METRIC``). ``tp``/``fp``/``fn`` are counts.
            timestamp: seconds since the epoch (default: now).
            evaluate_config: ``{name: float}`` stored with the model (e.g. ``conf_thr``).

        Raises:
            ValueError: for anything the platform would reject; nothing is written then.
        """
        stage_name = _stage_name(name)
        stage_files = self._check_files(stage_name, files)
        stage_metrics = self._check_metrics(metrics)
        if timestamp is None:
            timestamp = int(time.time())
        stamp = _number(timestamp, "timestamp")
        if stamp != int(stamp) or stamp <= 0:
            # The platform rejects a zero timestamp ("not values['timestamp']").
            raise ValueError(f"timestamp must be a positive integer, got {timestamp!r}")
        config = self._check_evaluate_config(evaluate_config)

        stage: dict[str, Any] = {
            "stage_name": stage_name,
            "files": stage_files,
            "timestamp": int(stamp),
        }
        stage.update(stage_metrics)

        stages = dict(self._stages)
        order = dict(self._order)
        stages[stage_name] = stage
        order[stage_name] = self._counter
        stages, order = self._trim(stages, order)
        evaluate = config if config is not None else self._evaluate_config
        document = self._document(stages, order, evaluate)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        # The file must read back exactly as the platform will read it.
        if yaml.safe_load(text) != document:
            raise ValueError("result.yaml would not read back as written")
        write_text_atomic(self.result_file, text)

        self._stages, self._order = stages, order
        self._counter += 1
        self._evaluate_config = evaluate

    # -- validation ---------------------------------------------------------------------

    def _check_files(self, stage_name: str, files: Sequence[PathLike]) -> list[str]:
        if isinstance(files, (str, bytes, os.PathLike)):
            raise ValueError(f"files must be a list of paths, got a single {files!r}")
        checked: list[str] = []
        for item in files:
            relative = self._relative(stage_name, item)
            if relative not in checked:
                checked.append(relative)
        if not checked:
            raise ValueError(f"stage {stage_name!r} lists no files")
        return checked

    def _bases(self, stage_name: str) -> list[Path]:
        # The platform's packing order: the stage folder first, then the models folder.
        if self.legacy:
            return [self.models_dir]
        return [self.models_dir / stage_name, self.models_dir]

    def _relative(self, stage_name: str, item: PathLike) -> str:
        path = Path(item)
        bases = self._bases(stage_name)
        if path.is_absolute():
            absolute = os.path.normpath(str(path))
            options = []
            for base in bases:
                prefix = os.path.normpath(str(base)) + os.sep
                if absolute.startswith(prefix):
                    options.append(absolute[len(prefix) :])
            if not options:
                raise ValueError(
                    f"model file {path} is outside the models folder {self.models_dir}"
                )
            # Relative to the innermost folder, i.e. the one the platform looks in first.
            relative = options[0]
        else:
            relative = str(path)
        parts = PurePosixPath(relative.replace(os.sep, "/")).parts
        if not parts or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"model file name {str(item)!r} must stay inside the models folder")
        relative = "/".join(parts)
        if self.legacy and len(parts) != 1:
            raise ValueError(
                f"legacy protocol: model files must lie directly in {self.models_dir}, "
                f"got {relative!r}"
            )
        for base in bases:
            candidate = base / relative
            if candidate.is_symlink():
                raise ValueError(
                    f"model file {candidate} is a symlink; the platform packs real files only"
                )
            if candidate.is_file():
                return relative
            if candidate.exists():
                raise ValueError(f"model file {candidate} is not a regular file")
        raise ValueError(
            "model file {!r} not found in {}".format(
                relative, " or ".join(str(base) for base in bases)
            )
        )

    def _check_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict, got {metrics!r}")
        checked: dict[str, Any] = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"metric names must be non-empty strings, got {key!r}")
            if key in _STAGE_FIELDS:
                raise ValueError(f"{key!r} is a stage field, not a metric")
            if key in COUNT_METRICS:
                checked[key] = _count(value, f"metric {key!r}")
            else:
                checked[key] = _unit_float(value, f"metric {key!r}")
        if self.main_metric not in checked:
            raise ValueError(
                f"metrics must include {self.main_metric!r}, the main metric of this target"
            )
        if "mAP" not in checked:
            checked["mAP"] = checked.get("boxAP", 0.0) if self.object_type == 4 else 0.0
        # mAP first: it is the one field every platform version reads.
        ordered = {"mAP": checked.pop("mAP")}
        ordered.update(checked)
        return ordered

    @staticmethod
    def _check_evaluate_config(config: dict[str, Any] | None) -> dict[str, float] | None:
        if config is None:
            return None
        if not isinstance(config, dict):
            raise ValueError(f"evaluate_config must be a dict, got {config!r}")
        checked: dict[str, float] = {}
        for key, value in config.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"evaluate_config keys must be strings, got {key!r}")
            # The platform's model meta declares Dict[str, float].
            checked[key] = _number(value, f"evaluate_config {key!r}")
        return checked

    # -- document -----------------------------------------------------------------------

    def _rank(
        self,
        name: str,
        stages: dict[str, dict[str, Any]] | None = None,
        order: dict[str, int] | None = None,
    ) -> tuple[float, int, int]:
        stages = self._stages if stages is None else stages
        order = self._order if order is None else order
        stage = stages[name]
        return (stage[self.main_metric], stage["timestamp"], order[name])

    def _best(self, stages: dict[str, dict[str, Any]], order: dict[str, int]) -> str:
        return max(stages, key=lambda name: self._rank(name, stages, order))

    def _trim(self, stages: dict[str, dict[str, Any]], order: dict[str, int]):
        """Keep the newest stages plus the best one (files of dropped stages are left alone)."""
        if len(stages) <= self.max_stages:
            return stages, order
        best = self._best(stages, order)
        newest_first = sorted(
            (name for name in stages if name != best),
            key=lambda name: (stages[name]["timestamp"], order[name]),
            reverse=True,
        )
        keep = set(newest_first[: self.max_stages - 1]) | {best}
        return (
            {name: stage for name, stage in stages.items() if name in keep},
            {name: rank for name, rank in order.items() if name in keep},
        )

    def _document(
        self,
        stages: dict[str, dict[str, Any]],
        order: dict[str, int],
        evaluate: dict[str, float] | None,
    ) -> dict[str, Any]:
        best = self._best(stages, order)
        if self.legacy:
            # YMIR 1.1 reads exactly these two keys (and KeyErrors without "map").
            return {"model": list(stages[best]["files"]), "map": stages[best]["mAP"]}
        document: dict[str, Any] = {
            "best_stage_name": best,
            "model_stages": {
                name: stages[name]
                for name in sorted(stages, key=lambda key: (stages[key]["timestamp"], order[key]))
            },
            self.main_metric: stages[best][self.main_metric],
            "mAP": stages[best]["mAP"],
        }
        if evaluate:
            document["evaluate_config"] = dict(evaluate)
        # Read by YMIR 2.1 to 2.3 (model type), ignored by 2.4+.
        document["object_type"] = self.object_type
        return document


Box = Tuple[Any, Any, Any, Any, Any, Any]


class DetectionResult:
    """Collects boxes per candidate and writes the detection ``infer-result.json``.

    See docs/protocol.md#infer-result-detection.

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
    """Collects masks and writes the COCO-style segmentation ``infer-result.json``.

    See docs/protocol.md#infer-result-segmentation.

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
