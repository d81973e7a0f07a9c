"""Binary masks and their COCO encodings (RLE and polygons), via pycocotools.

YMIR's seg-coco exports and segmentation results carry masks as compressed RLE with a
*string* ``counts`` (JSON cannot hold the bytes pycocotools produces) or as polygons. Masks
inside the executor are boolean ``H x W`` numpy arrays; these helpers convert between the forms
and compute the ``bbox`` / ``area`` fields the platform requires.

Invalid input raises :class:`ValueError`; callers that read platform files turn it into an
:class:`~.errors.ExecutorError` naming the file.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict:
    """``{"size": [h, w], "counts": "<compressed RLE>"}`` of a 2-D mask (non-zero = inside)."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H x W), got shape {array.shape}")
    # pycocotools wants column-major uint8.
    rle = coco_mask.encode(np.asfortranarray(array.astype(bool).astype(np.uint8)))
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    height, width = (int(value) for value in rle["size"])
    return {"size": [height, width], "counts": counts}


def decode_rle(rle: dict) -> np.ndarray:
    """The boolean ``H x W`` mask of a COCO RLE.

    ``counts`` may be a compressed string, its bytes, or the uncompressed list of run lengths
    (COCO's ``iscrowd`` form).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'size' and 'counts'")
    height, width = _size(rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(int(run) for run in counts) != height * width:
            raise ValueError(f"RLE run lengths do not add up to {height}x{width} pixels")
        uncompressed = {"size": [height, width], "counts": [int(run) for run in counts]}
        compressed = coco_mask.frPyObjects(uncompressed, height, width)
    elif isinstance(counts, (str, bytes)):
        text = counts.encode("ascii") if isinstance(counts, str) else counts
        # pycocotools decodes short run lists into uninitialised memory instead of failing.
        if sum(_string_runs(text)) != height * width:
            raise ValueError(f"RLE counts do not add up to {height}x{width} pixels")
        compressed = {"size": [height, width], "counts": text}
    else:
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    decoded = _decode(compressed)
    if decoded.shape[:2] != (height, width):
        raise ValueError(f"RLE decodes to {decoded.shape[:2]}, not its size {height}x{width}")
    return decoded.astype(bool)


def polygon_to_mask(polygon: Sequence[Any], height: int, width: int) -> np.ndarray:
    """The boolean ``height x width`` mask of one polygon ``[x1, y1, x2, y2, ...]`` or several.

    Polygons with fewer than three points cover no area and are ignored (pycocotools would
    misread a 4-number polygon as a box).
    """
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {height}x{width}")
    if isinstance(polygon, np.ndarray):
        polygon = polygon.tolist()
    if not isinstance(polygon, (list, tuple)):
        raise ValueError(f"a polygon must be a list of coordinates, got {type(polygon).__name__}")
    parts = polygon if polygon and isinstance(polygon[0], (list, tuple)) else [polygon]
    rings = []
    for part in parts:
        try:
            coords = [float(value) for value in part]
        except (TypeError, ValueError) as error:
            raise ValueError(f"polygon coordinates must be numbers: {error}") from error
        if len(coords) % 2:
            raise ValueError(f"a polygon needs x, y pairs, got {len(coords)} numbers")
        if len(coords) >= 6:
            rings.append(coords)
    if not rings:
        return np.zeros((height, width), dtype=bool)
    merged = coco_mask.merge(coco_mask.frPyObjects(rings, height, width))
    return _decode(merged).astype(bool)


def mask_bbox(mask: np.ndarray) -> list[int]:
    """``[x, y, w, h]`` of the mask's pixels, integers with ``w, h >= 1``.

    Raises:
        ValueError: for an empty mask, which has no box (writers drop such masks).
    """
    array = np.asarray(mask).astype(bool)
    if array.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H x W), got shape {array.shape}")
    rows = np.flatnonzero(array.any(axis=1))
    cols = np.flatnonzero(array.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no bounding box")
    x, y = int(cols[0]), int(rows[0])
    return [x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1]


def mask_area(mask: np.ndarray) -> int:
    """Number of pixels inside the mask."""
    return int(np.count_nonzero(mask))


def rle_runs(rle: dict) -> tuple[np.ndarray, int, int]:
    """``(canonical run lengths, height, width)`` of a COCO RLE, checked, without decoding.

    The runs alternate background / mask pixels in column-major order, starting with
    background; canonical means what :func:`encode_rle` makes of the decoded mask (no empty
    runs after the first), so :func:`runs_to_rle` of them is that encoding. This costs the
    length of ``counts``, not the ``H x W`` of decoding, and refuses what :func:`decode_rle`
    refuses.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'size' and 'counts'")
    height, width = _size(rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        runs = np.array([int(run) for run in counts], dtype=np.int64)
        if (runs < 0).any() or int(runs.sum()) != height * width:
            raise ValueError(f"RLE run lengths do not add up to {height}x{width} pixels")
    elif isinstance(counts, (str, bytes)):
        text = counts.encode("ascii") if isinstance(counts, str) else counts
        runs = _string_runs_array(text)
        if int(runs.sum()) != height * width:
            raise ValueError(f"RLE counts do not add up to {height}x{width} pixels")
    else:
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    return _canonical_runs(runs), height, width


def runs_to_rle(runs: np.ndarray, height: int, width: int) -> dict:
    """The compressed RLE (string ``counts``) of canonical runs, as :func:`encode_rle` writes it."""
    rle = coco_mask.frPyObjects(
        {"size": [height, width], "counts": np.asarray(runs, dtype=np.int64).tolist()},
        height,
        width,
    )
    counts = rle["counts"]
    return {
        "size": [height, width],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else str(counts),
    }


def runs_area(runs: np.ndarray) -> int:
    """Mask pixels of RLE runs (:func:`mask_area` of the mask)."""
    return int(runs[1::2].sum())


def runs_bbox(runs: np.ndarray, height: int) -> list[int]:
    """``[x, y, w, h]`` of the mask of non-empty RLE runs (:func:`mask_bbox` of the mask).

    Raises:
        ValueError: for an empty mask, which has no box.
    """
    starts = np.cumsum(runs) - runs
    inside = runs[1::2] > 0
    first = starts[1::2][inside]
    last = first + runs[1::2][inside] - 1
    if first.size == 0:
        raise ValueError("an empty mask has no bounding box")
    first_column, last_column = first // height, last // height
    x0, x1 = int(first_column.min()), int(last_column.max())
    if (first_column != last_column).any():
        # A run that wraps into the next column covers the bottom row of one column and the
        # top row of the next.
        y0, y1 = 0, height - 1
    else:
        y0, y1 = int((first % height).min()), int((last % height).max())
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def _canonical_runs(runs: np.ndarray) -> np.ndarray:
    """Runs with the empty ones after the first merged away (their neighbours join)."""
    if runs.size <= 1 or (runs[1:] > 0).all():
        return runs
    values = np.arange(runs.size) % 2
    keep = runs > 0
    keep[0] = True  # the leading background run, possibly empty
    runs, values = runs[keep], values[keep]
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return np.add.reduceat(runs, starts)


def _string_runs_array(text: bytes) -> np.ndarray:
    """:func:`_string_runs` on arrays: the same runs and errors, at C speed."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    chars = np.frombuffer(text, dtype=np.uint8).astype(np.int64) - 48
    if ((chars < 0) | (chars >= 64)).any():
        raise ValueError("RLE counts string has an invalid character")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise ValueError("RLE counts string ends inside a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    digits = ends - starts + 1
    if int(digits.max()) > 12:
        # Beyond 60 bits numpy's integers would wrap: let Python's integers do it.
        return np.array(_string_runs(text), dtype=np.int64)
    position = np.arange(chars.size) - np.repeat(starts, digits)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] |= np.left_shift(-1, 5 * digits[negative])
    # Runs after the second are stored as differences to the run two places back.
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if (runs < 0).any():
        raise ValueError("RLE counts string has a negative run length")
    return runs


def _decode(rle: dict) -> np.ndarray:
    # pycocotools' decode trips numpy 2's copy-keyword DeprecationWarning on every call; it is
    # harmless and would otherwise flood logs (or fail test suites that treat warnings as errors).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle)


def _string_runs(text: bytes) -> list[int]:
    """Run lengths of a compressed RLE string (the inverse of pycocotools' ``rleToString``)."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        more = True
        while more:
            if position >= len(text):
                raise ValueError("RLE counts string ends inside a number")
            char = text[position] - 48
            if not 0 <= char < 64:
                raise ValueError("RLE counts string has an invalid character")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        # Runs after the second are stored as differences to the run two places back.
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("RLE counts string has a negative run length")
        runs.append(value)
    return runs


def _size(size: Any) -> tuple[int, int]:
    try:
        height, width = (int(value) for value in size)
    except (TypeError, ValueError) as error:
        raise ValueError(f"RLE size must be [height, width], got {size!r}") from error
    if height < 1 or width < 1:
        raise ValueError(f"RLE size must be positive, got {size!r}")
    return height, width
