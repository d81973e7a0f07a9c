"""The stub "model": a trivial but real baseline, learnt from the training set.

It exists so that a freshly generated executor trains, infers and mines end to end with honest
numbers before its author plugs a real model in. What it learns, per class:

- ``frequency``: the fraction of training images that contain the class;
- ``box``: the typical box, the median of the normalised ``x, y, w, h`` (relative to the image
  size) over all instances;
- ``mask`` (segmentation only): the typical mask, the mean of the masks resized to a
  ``mask_grid_size`` x ``mask_grid_size`` grid (the fraction of each cell covered). For semantic
  segmentation the grid spans the whole image (the class's union mask per image); for instance
  segmentation it spans the instance's own box (the typical shape of one instance).

It predicts the same thing for every image: for every class with frequency > 0 one prediction
with score = frequency, placed where the class typically is. The typical mask is thresholded at
0.5 and resized to the image (semantic) or to the typical box (instance); where nothing reaches
0.5 the typical box is filled instead, so a class that was seen never gets an empty mask. In
semantic segmentation a pixel claimed by several classes goes to the more frequent one.

Mining scores come from a cheap, documented image statistic (see :func:`mining_scorer`).

The model is a small JSON file, ``baseline.json``.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import Image

from .contract.atomic import write_text_atomic
from .contract.errors import ErrorCode, ExecutorError
from .contract.images import image_size
from .contract.object_types import ObjectType

if TYPE_CHECKING:
    from .contract.dataset import DatasetItem

log = logging.getLogger(__name__)

MODEL_FILE = "baseline.json"
FORMAT = "ymir-executor-baseline"
VERSION = 1
DEFAULT_MASK_GRID_SIZE = 32
# A typical mask is a coarse prior; finer grids only make baseline.json huge.
MAX_MASK_GRID_SIZE = 256
# A typical-mask cell belongs to the predicted mask when at least this fraction of the
# training masks covered it.
MASK_THRESHOLD = 0.5

MINING_ALGORITHMS = ("image_entropy", "random")


# Pillow >= 9.1 moved the filters into Image.Resampling; older versions only have the constants.
_RESAMPLING = getattr(Image, "Resampling", Image)


# --- learning ------------------------------------------------------------------------------


def fit(
    items: Sequence[DatasetItem],
    num_classes: int,
    object_type: int,
    mask_grid_size: int = DEFAULT_MASK_GRID_SIZE,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Learn the per-class statistics from ``items``; returns the JSON-serialisable model.

    ``progress`` (optional) is called with the fraction of items done.
    """
    _check_object_type(object_type)
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    if not 1 <= mask_grid_size <= MAX_MASK_GRID_SIZE:
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"mask_grid_size must be between 1 and {MAX_MASK_GRID_SIZE}, got {mask_grid_size}",
        )
    segmentation = object_type != ObjectType.DETECTION
    images_with = np.zeros(num_classes, dtype=np.int64)
    boxes: list[list[list[float]]] = [[] for _ in range(num_classes)]
    mask_sums = np.zeros((num_classes, mask_grid_size, mask_grid_size), dtype=np.float64)
    mask_counts = np.zeros(num_classes, dtype=np.int64)
    used = 0
    total = len(items)
    for done, item in enumerate(items, start=1):
        size = _item_size(item)
        if size is not None:
            used += 1
            width, height = size
            for class_id in {annotation.class_id for annotation in item.annotations}:
                images_with[class_id] += 1
            for annotation in item.annotations:
                x, y, w, h = annotation.box
                boxes[annotation.class_id].append([x / width, y / height, w / width, h / height])
            if segmentation:
                for class_id, grid in _mask_grids(item, object_type, mask_grid_size, width, height):
                    mask_sums[class_id] += grid
                    mask_counts[class_id] += 1
        if progress is not None:
            progress(done / total)

    classes = []
    for class_id in range(num_classes):
        entry: dict[str, Any] = {
            "frequency": _round(images_with[class_id] / used) if used else 0.0,
            "instances": len(boxes[class_id]),
            "box": [_round(v) for v in np.median(boxes[class_id], axis=0)]
            if boxes[class_id]
            else None,
        }
        if segmentation:
            entry["mask"] = (
                [[_round(v) for v in row] for row in mask_sums[class_id] / mask_counts[class_id]]
                if mask_counts[class_id]
                else None
            )
        classes.append(entry)
    return {
        "format": FORMAT,
        "version": VERSION,
        "object_type": int(object_type),
        "num_classes": int(num_classes),
        "num_images": used,
        "mask_grid_size": int(mask_grid_size),
        "classes": classes,
    }


def _item_size(item: DatasetItem) -> tuple | None:
    """(width, height) from the item's masks or the size the dataset reader checked, else from
    the image header; None if unreadable."""
    for annotation in item.annotations:
        if annotation.mask is not None:
            height, width = annotation.mask.shape[:2]
            return int(width), int(height)
    width, height = getattr(item, "width", None), getattr(item, "height", None)
    if width and height:
        return int(width), int(height)
    try:
        return image_size(item.image)
    except ExecutorError as error:
        # The dataset reader already skips unreadable images; this only guards a race.
        log.warning("skipped training image: %s", error.message)
        return None


def _mask_grids(item: DatasetItem, object_type: int, grid_size: int, width: int, height: int):
    """(class_id, coverage grid) pairs of one item, in the frame the model learns them in."""
    if object_type == ObjectType.SEMANTIC_SEGMENTATION:
        # One union mask per class and image: the class's typical extent in the image.
        unions: dict[int, np.ndarray] = {}
        for annotation in item.annotations:
            mask = _annotation_mask(annotation, width, height)
            unions[annotation.class_id] = unions.get(annotation.class_id, False) | mask
        for class_id, mask in unions.items():
            yield class_id, _coverage_grid(mask, grid_size)
        return
    for annotation in item.annotations:
        mask = _annotation_mask(annotation, width, height)
        x, y, w, h = _clip_box(annotation.box, width, height)
        yield annotation.class_id, _coverage_grid(mask[y : y + h, x : x + w], grid_size)


def _annotation_mask(annotation: Any, width: int, height: int) -> np.ndarray:
    if annotation.mask is not None:
        return np.asarray(annotation.mask, dtype=bool)
    # A box without a mask (should not happen for segmentation exports) counts as its box.
    mask = np.zeros((height, width), dtype=bool)
    x, y, w, h = _clip_box(annotation.box, width, height)
    mask[y : y + h, x : x + w] = True
    return mask


def _coverage_grid(mask: np.ndarray, grid_size: int) -> np.ndarray:
    """The fraction of each grid cell the mask covers (area averaging, any input size)."""
    # float32 gives a mode "F" image (Pillow's mode argument is deprecated in recent versions).
    image = Image.fromarray(mask.astype(np.float32))
    return np.asarray(image.resize((grid_size, grid_size), _RESAMPLING.BOX), dtype=np.float64)


# --- prediction ----------------------------------------------------------------------------


def predict(
    model: dict[str, Any], width: int, height: int, object_type: int | None = None
) -> list[tuple]:
    """The baseline's prediction for an image of ``width`` x ``height``, in the writers' formats.

    - detection: ``(x, y, w, h, class_id, score)`` integer boxes;
    - segmentation: ``(mask, class_id, score)`` with a boolean HxW mask.

    One prediction per class with frequency > 0, most frequent first, score = frequency.
    """
    model_type = int(model["object_type"])
    if object_type is not None and int(object_type) != model_type:
        raise ExecutorError(
            ErrorCode.MODEL,
            f"the model was trained for object_type {model_type}, "
            f"this task is object_type {object_type}",
        )
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ranked = sorted(
        (-entry["frequency"], class_id)
        for class_id, entry in enumerate(model["classes"])
        if entry["frequency"] > 0 and entry["box"] is not None
    )
    predictions: list[tuple] = []
    semantic = model_type == ObjectType.SEMANTIC_SEGMENTATION
    taken = np.zeros((height, width), dtype=bool) if semantic else None
    for negative_frequency, class_id in ranked:
        entry = model["classes"][class_id]
        score = float(-negative_frequency)
        x, y, w, h = _pixel_box(entry["box"], width, height)
        if model_type == ObjectType.DETECTION:
            predictions.append((x, y, w, h, class_id, score))
            continue
        mask = np.zeros((height, width), dtype=bool)
        grid = _thresholded(entry.get("mask"))
        if model_type == ObjectType.SEMANTIC_SEGMENTATION:
            if grid is not None:
                mask = _resize_bool(grid, width, height)
        elif grid is not None:
            mask[y : y + h, x : x + w] = _resize_bool(grid, w, h)
        if not mask.any():
            mask[y : y + h, x : x + w] = True
        if taken is not None:
            # Classes come most frequent first: the pixels they claimed stay theirs.
            mask &= ~taken
            taken |= mask
            if not mask.any():
                continue
        predictions.append((mask, class_id, score))
    return predictions


def _pixel_box(box: Sequence[float], width: int, height: int) -> tuple:
    """A normalised box in integer pixels, inside the image, at least 1x1."""
    nx, ny, nw, nh = box
    return _clip_box(
        (round(nx * width), round(ny * height), round(nw * width), round(nh * height)),
        width,
        height,
    )


def _clip_box(box: Sequence[float], width: int, height: int) -> tuple:
    x, y, w, h = (int(v) for v in box)
    x = min(max(x, 0), width - 1)
    y = min(max(y, 0), height - 1)
    w = max(1, min(w, width - x))
    h = max(1, min(h, height - y))
    return x, y, w, h


def _thresholded(grid: list | None) -> np.ndarray | None:
    if grid is None:
        return None
    mask = np.asarray(grid, dtype=np.float64) >= MASK_THRESHOLD
    return mask if mask.any() else None


def _resize_bool(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(grid.astype(np.uint8) * 255)
    return np.asarray(image.resize((width, height), _RESAMPLING.NEAREST)) > 127


# --- mining --------------------------------------------------------------------------------


def image_entropy(image: Image.Image) -> float:
    """Shannon entropy of the grayscale histogram, divided by its maximum (8 bits): [0, 1].

    A flat image scores 0; an image with many grey levels (texture, detail, clutter) scores
    high. The idea: more varied images carry more information worth labelling.
    """
    histogram = np.asarray(image.convert("L").histogram(), dtype=np.float64)
    total = histogram.sum()
    if total == 0:
        return 0.0
    p = histogram[histogram > 0] / total
    return float(max(0.0, -(p * np.log2(p)).sum()) / 8.0)


def mining_scorer(algorithm: str, seed: int = 1) -> Callable[[Path, Image.Image], float]:
    """The scoring function for ``mining_algorithm``: ``score(path, image) -> float`` in [0, 1].

    - ``image_entropy``: :func:`image_entropy` of the image;
    - ``random``: uniform in [0, 1), seeded by ``random_seed`` and the image path, so the same
      candidate gets the same score in every run, whatever the candidate order.

    Raises:
        ExecutorError: code CONFIG for an unknown algorithm.
    """
    if algorithm == "image_entropy":
        return lambda path, image: image_entropy(image)
    if algorithm == "random":
        return lambda path, image: random.Random(f"{seed}:{path}").random()
    raise ExecutorError(
        ErrorCode.CONFIG,
        "mining_algorithm must be one of {}, got {!r}".format(
            ", ".join(MINING_ALGORITHMS), algorithm
        ),
    )


# --- storage -------------------------------------------------------------------------------


def save(model: dict[str, Any], path: Path) -> None:
    """Write the model as JSON (atomically, creating the folder)."""
    write_text_atomic(path, json.dumps(model, indent=1) + "\n")


def load(path: Path) -> dict[str, Any]:
    """Read and check a model written by :func:`save`.

    Raises:
        ExecutorError: code MODEL when the file is missing, not JSON or not a baseline model.
    """
    try:
        model = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ExecutorError(ErrorCode.MODEL, f"cannot read model {path}: {error}") from error
    problem = _model_problem(model)
    if problem:
        raise ExecutorError(ErrorCode.MODEL, f"{path} is not a valid baseline model: {problem}")
    return model


def find_model_file(files: Sequence[Path], name: str = MODEL_FILE) -> Path:
    """The file called ``name`` in a model package's files.

    Raises:
        ExecutorError: code MODEL when the package has no such file.
    """
    for file in files:
        if Path(file).name == name:
            return Path(file)
    listed = ", ".join(Path(file).name for file in files) or "no files"
    raise ExecutorError(ErrorCode.MODEL, f"the model package has no {name} ({listed})")


def _model_problem(model: Any) -> str | None:
    """What is wrong with a loaded model, or None."""
    if not isinstance(model, dict):
        return "not a JSON object"
    if model.get("format") != FORMAT:
        return "format is {!r}, expected {!r}".format(model.get("format"), FORMAT)
    if model.get("version") != VERSION:
        return "version {!r} is not supported (expected {})".format(model.get("version"), VERSION)
    for key in ("object_type", "num_classes", "mask_grid_size", "classes"):
        if key not in model:
            return f"missing key {key!r}"
    if model["object_type"] not in {member.value for member in ObjectType}:
        return "unknown object_type {!r}".format(model["object_type"])
    classes = model["classes"]
    if not isinstance(classes, list) or len(classes) != model["num_classes"]:
        return "'classes' must list num_classes entries"
    grid_size = model["mask_grid_size"]
    if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 1:
        return "mask_grid_size must be a positive integer"
    for class_id, entry in enumerate(classes):
        where = f"class {class_id}"
        if not isinstance(entry, dict) or "frequency" not in entry or "box" not in entry:
            return f"{where}: needs 'frequency' and 'box'"
        if not _is_fraction(entry["frequency"]):
            return f"{where}: frequency must be a number in [0, 1]"
        box = entry["box"]
        if box is not None and not (
            isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)
        ):
            return f"{where}: box must be 4 numbers or null"
        if model["object_type"] != ObjectType.DETECTION:
            mask = entry.get("mask")
            if mask is not None and not _is_grid(mask, grid_size):
                return f"{where}: mask must be a {grid_size}x{grid_size} grid or null"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_fraction(value: Any) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def _is_grid(grid: Any, size: Any) -> bool:
    return (
        isinstance(grid, list)
        and len(grid) == size
        and all(
            isinstance(row, list) and len(row) == size and all(_is_number(v) for v in row)
            for row in grid
        )
    )


def _check_object_type(object_type: int) -> None:
    if object_type not in {member.value for member in ObjectType}:
        raise ValueError(f"object_type must be {ObjectType.names()}, got {object_type}")


def _round(value: Any) -> float:
    # 4 decimals keep baseline.json small and readable; python floats keep it JSON-safe.
    return round(float(value), 4)
