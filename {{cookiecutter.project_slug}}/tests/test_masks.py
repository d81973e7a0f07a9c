"""Masks round-trip through COCO RLE and polygons; bbox / area are what the platform expects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from {{ cookiecutter.package_name }}.contract.masks import (
    decode_rle,
    encode_rle,
    mask_area,
    mask_bbox,
    polygon_to_mask,
)


def square(height=8, width=10, top=1, left=2, bottom=4, right=6):
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_encode_gives_string_counts_and_size_h_w():
    rle = encode_rle(square())
    assert rle["size"] == [8, 10]
    assert isinstance(rle["counts"], str)
    # JSON-ready: the infer result and seg-coco exports store it as is.
    assert json.loads(json.dumps(rle)) == rle


def test_round_trip_random_masks():
    generator = np.random.default_rng(7)
    for _ in range(50):
        height, width = (int(value) for value in generator.integers(1, 40, size=2))
        mask = generator.random((height, width)) < generator.random()
        decoded = decode_rle(encode_rle(mask))
        assert decoded.dtype == bool
        assert decoded.shape == (height, width)
        assert (decoded == mask).all()


def test_encode_accepts_non_bool_arrays():
    labels = np.zeros((5, 5), dtype=np.uint8)
    labels[2, 2] = 3
    assert mask_area(decode_rle(encode_rle(labels))) == 1


def test_encode_matches_pycocotools():
    mask = square()
    expected = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert encode_rle(mask)["counts"].encode("ascii") == expected["counts"]


def test_decode_accepts_bytes_counts():
    rle = encode_rle(square())
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    assert (decode_rle(as_bytes) == square()).all()


def test_decode_accepts_uncompressed_counts():
    # Column-major runs in a 5 x 7 mask: 7 off, 1 on, 4 off, 2 on, the rest off.
    mask = decode_rle({"size": [5, 7], "counts": [7, 1, 4, 2, 21]})
    expected = np.zeros((5, 7), dtype=bool)
    expected[2, 1] = True
    expected[2:4, 2] = True
    assert (mask == expected).all()


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [5, 7]},
        {"counts": "abc"},
        {"size": [5, 7], "counts": 12},
        {"size": [5], "counts": "abc"},
        {"size": [0, 7], "counts": ""},
        {"size": [5, 7], "counts": [7, 1, 4]},
        {"size": [2, 2], "counts": "garbage!!"},
        {"size": [5, 7], "counts": "é"},
        "not a dict",
    ],
)
def test_decode_rejects_bad_rle(rle):
    with pytest.raises(ValueError):
        decode_rle(rle)


def test_decode_rejects_counts_for_another_size():
    rle = encode_rle(square(5, 7))
    # pycocotools itself would hand back uninitialised memory here.
    with pytest.raises(ValueError):
        decode_rle({"size": [10, 10], "counts": rle["counts"]})


def test_polygon_to_mask_flat_and_nested():
    flat = polygon_to_mask([2, 1, 6, 1, 6, 4, 2, 4], 8, 10)
    nested = polygon_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 8, 10)
    assert flat.dtype == bool
    assert flat.shape == (8, 10)
    assert (flat == square()).all()
    assert (nested == flat).all()


def test_polygon_to_mask_several_parts_merge():
    mask = polygon_to_mask([[0, 0, 3, 0, 3, 3, 0, 3], [5, 5, 8, 5, 8, 7, 5, 7]], 8, 10)
    assert mask_area(mask) == 9 + 6
    assert mask[0, 0]
    assert mask[6, 7]


def test_polygon_float_coordinates_and_numpy():
    mask = polygon_to_mask(np.array([2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]), 8, 10)
    assert mask_area(mask) == 12


def test_degenerate_polygons_cover_nothing():
    # A 4-number "polygon" would be read as a box by pycocotools: it has no area.
    assert not polygon_to_mask([1, 1, 5, 5], 8, 10).any()
    assert not polygon_to_mask([], 8, 10).any()
    assert mask_area(polygon_to_mask([[1, 1, 5, 5], [2, 1, 6, 1, 6, 4, 2, 4]], 8, 10)) == 12


@pytest.mark.parametrize(
    ("polygon", "height", "width"),
    [([1, 2, 3], 8, 10), (["a", 1, 2, 3, 4, 5], 8, 10), ([1, 1, 5, 1, 5, 5], 0, 10), (7, 8, 10)],
)
def test_bad_polygons(polygon, height, width):
    with pytest.raises(ValueError):
        polygon_to_mask(polygon, height, width)


def test_mask_bbox_and_area():
    mask = square()
    assert mask_bbox(mask) == [2, 1, 4, 3]
    assert all(isinstance(value, int) for value in mask_bbox(mask))
    assert mask_area(mask) == 12
    assert isinstance(mask_area(mask), int)


def test_single_pixel_box_has_size_one():
    mask = np.zeros((4, 4), dtype=bool)
    mask[3, 0] = True
    assert mask_bbox(mask) == [0, 3, 1, 1]
    assert mask_area(mask) == 1


def test_empty_mask_has_no_box():
    with pytest.raises(ValueError):
        mask_bbox(np.zeros((4, 4), dtype=bool))
    assert mask_area(np.zeros((4, 4), dtype=bool)) == 0


def test_non_2d_masks_are_refused():
    with pytest.raises(ValueError):
        encode_rle(np.zeros((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError):
        mask_bbox(np.zeros(5, dtype=bool))
