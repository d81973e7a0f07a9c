"""The stub model: what it learns from a tiny hand-made dataset, what it predicts, how it is
stored, and the mining statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from {{ cookiecutter.package_name }} import baseline
from {{ cookiecutter.package_name }}.contract.dataset import Annotation, DatasetItem
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError

DETECTION, SEMANTIC, INSTANCE = 2, 3, 4


def make_image(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (120, 60, 30)).save(path)
    return path


def region(shape: tuple, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# --- detection ------------------------------------------------------------------------------


@pytest.fixture
def detection_items(tmp_path) -> list:
    """Three images of different sizes; normalised boxes written next to each object."""
    return [
        DatasetItem(
            make_image(tmp_path / "a.png", 100, 50),
            [
                Annotation(0, (10, 5, 20, 10)),  # (0.1, 0.1, 0.2, 0.2)
                Annotation(1, (50, 25, 50, 25)),  # (0.5, 0.5, 0.5, 0.5)
            ],
        ),
        DatasetItem(
            make_image(tmp_path / "b.png", 200, 100),
            [
                Annotation(0, (40, 20, 40, 20)),  # (0.2, 0.2, 0.2, 0.2)
                Annotation(0, (20, 10, 40, 20)),  # (0.1, 0.1, 0.2, 0.2)
            ],
        ),
        DatasetItem(make_image(tmp_path / "negative.png", 100, 100), []),
    ]


def test_fit_learns_frequency_and_median_box(detection_items):
    model = baseline.fit(detection_items, num_classes=3, object_type=DETECTION)
    assert model["num_images"] == 3
    classes = model["classes"]
    # Class 0 is in 2 of 3 images, class 1 in 1 of 3, class 2 never.
    assert [c["frequency"] for c in classes] == [0.6667, 0.3333, 0.0]
    assert [c["instances"] for c in classes] == [3, 1, 0]
    # Median of (0.1, 0.2, 0.1) per coordinate.
    assert classes[0]["box"] == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert classes[1]["box"] == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert classes[2]["box"] is None
    assert "mask" not in classes[0]
    json.dumps(model)  # plain JSON types only


def test_fit_reports_progress(detection_items):
    seen = []
    baseline.fit(detection_items, 3, DETECTION, progress=seen.append)
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_detection_prediction(detection_items):
    model = baseline.fit(detection_items, 3, DETECTION)
    predictions = baseline.predict(model, 200, 100, DETECTION)
    # Most frequent class first; the unseen class 2 is not predicted.
    assert predictions == [(20, 10, 40, 20, 0, 0.6667), (100, 50, 100, 50, 1, 0.3333)]
    assert all(isinstance(value, int) for value in predictions[0][:5])


def test_detection_boxes_stay_inside_tiny_images(detection_items):
    model = baseline.fit(detection_items, 3, DETECTION)
    for x, y, w, h, _class_id, _score in baseline.predict(model, 1, 1, DETECTION):
        assert (x, y, w, h) == (0, 0, 1, 1)


def test_predict_refuses_another_object_type(detection_items):
    model = baseline.fit(detection_items, 3, DETECTION)
    with pytest.raises(ExecutorError) as caught:
        baseline.predict(model, 10, 10, INSTANCE)
    assert caught.value.code == ErrorCode.MODEL


def test_model_without_positives_predicts_nothing(tmp_path):
    items = [DatasetItem(make_image(tmp_path / "n.png", 8, 8), [])]
    model = baseline.fit(items, 2, DETECTION)
    assert [c["frequency"] for c in model["classes"]] == [0.0, 0.0]
    assert baseline.predict(model, 8, 8, DETECTION) == []


# --- semantic segmentation -------------------------------------------------------------------


@pytest.fixture
def semantic_items(tmp_path) -> list:
    """4x4 images. Class 0: left half, then top-left quadrant. Class 1: bottom half (once)."""
    shape = (4, 4)
    return [
        DatasetItem(
            make_image(tmp_path / "s1.png", 4, 4),
            [Annotation(0, (0, 0, 2, 4), region(shape, slice(0, 4), slice(0, 2)))],
        ),
        DatasetItem(
            make_image(tmp_path / "s2.png", 4, 4),
            [
                Annotation(0, (0, 0, 2, 2), region(shape, slice(0, 2), slice(0, 2))),
                Annotation(1, (0, 2, 4, 2), region(shape, slice(2, 4), slice(0, 4))),
            ],
        ),
    ]


def test_semantic_fit_learns_mean_mask(semantic_items):
    model = baseline.fit(semantic_items, 2, SEMANTIC, mask_grid_size=2)
    class0, class1 = model["classes"]
    assert class0["frequency"] == 1.0
    assert class1["frequency"] == 0.5
    # Grid cells (2x2 pixels each) covered: left column in image 1, top-left cell in image 2.
    assert class0["mask"] == [[1.0, 0.0], [0.5, 0.0]]
    assert class1["mask"] == [[0.0, 0.0], [1.0, 1.0]]
    assert class0["box"] == pytest.approx([0.0, 0.0, 0.5, 0.75])


def test_semantic_prediction_gives_overlaps_to_the_more_frequent_class(semantic_items):
    model = baseline.fit(semantic_items, 2, SEMANTIC, mask_grid_size=2)
    predictions = baseline.predict(model, 4, 4, SEMANTIC)
    assert [(class_id, score) for _mask, class_id, score in predictions] == [(0, 1.0), (1, 0.5)]
    class0, class1 = predictions[0][0], predictions[1][0]
    # Class 0: the left half (cells >= 0.5). Class 1: the bottom half minus class 0's pixels.
    np.testing.assert_array_equal(class0, region((4, 4), slice(0, 4), slice(0, 2)))
    np.testing.assert_array_equal(class1, region((4, 4), slice(2, 4), slice(2, 4)))


def test_semantic_masks_are_resized_to_the_image(semantic_items):
    model = baseline.fit(semantic_items, 2, SEMANTIC, mask_grid_size=2)
    (mask, _class_id, _score), _ = baseline.predict(model, 10, 6, SEMANTIC)
    assert mask.shape == (6, 10)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, region((6, 10), slice(0, 6), slice(0, 5)))


def test_weak_typical_mask_falls_back_to_the_typical_box():
    model = {
        "format": baseline.FORMAT,
        "version": baseline.VERSION,
        "object_type": SEMANTIC,
        "num_classes": 1,
        "num_images": 5,
        "mask_grid_size": 2,
        "classes": [
            {
                "frequency": 0.4,
                "instances": 2,
                "box": [0.5, 0.5, 0.5, 0.5],
                "mask": [[0.2, 0.2], [0.2, 0.4]],
            }
        ],
    }
    [(mask, class_id, score)] = baseline.predict(model, 8, 8, SEMANTIC)
    assert (class_id, score) == (0, 0.4)
    np.testing.assert_array_equal(mask, region((8, 8), slice(4, 8), slice(4, 8)))


# --- instance segmentation -------------------------------------------------------------------


def test_instance_mask_is_learnt_inside_the_box_and_pasted_into_it(tmp_path):
    # One instance: its box is the top-left quarter of an 8x8 image and its mask fills the
    # left half of that box, so the typical (box-relative) mask is the left grid column.
    mask = region((8, 8), slice(0, 4), slice(0, 2))
    items = [DatasetItem(make_image(tmp_path / "i.png", 8, 8), [Annotation(0, (0, 0, 4, 4), mask)])]
    model = baseline.fit(items, 1, INSTANCE, mask_grid_size=2)
    assert model["classes"][0]["mask"] == [[1.0, 0.0], [1.0, 0.0]]
    assert model["classes"][0]["box"] == pytest.approx([0.0, 0.0, 0.5, 0.5])

    [(predicted, class_id, score)] = baseline.predict(model, 16, 16, INSTANCE)
    assert (class_id, score) == (0, 1.0)
    # Typical box on a 16x16 image: (0, 0, 8, 8); the left half of it is the mask.
    np.testing.assert_array_equal(predicted, region((16, 16), slice(0, 8), slice(0, 4)))


def test_every_seen_class_gets_a_non_empty_instance_mask(tmp_path):
    items = []
    for index in range(3):
        mask = region((6, 6), slice(index * 2, index * 2 + 2), slice(0, 6))
        image = make_image(tmp_path / f"{index}.png", 6, 6)
        items.append(DatasetItem(image, [Annotation(index % 2, (0, index * 2, 6, 2), mask)]))
    model = baseline.fit(items, 2, INSTANCE)
    predictions = baseline.predict(model, 30, 20, INSTANCE)
    assert sorted(class_id for _m, class_id, _s in predictions) == [0, 1]
    for mask, _class_id, score in predictions:
        assert mask.shape == (20, 30)
        assert mask.any()
        assert 0.0 < score <= 1.0


@pytest.mark.parametrize("grid_size", [0, baseline.MAX_MASK_GRID_SIZE + 1])
def test_bad_mask_grid_size_is_a_config_error(semantic_items, grid_size):
    with pytest.raises(ExecutorError) as caught:
        baseline.fit(semantic_items, 2, SEMANTIC, mask_grid_size=grid_size)
    assert caught.value.code == ErrorCode.CONFIG


# --- storage ----------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, semantic_items):
    model = baseline.fit(semantic_items, 2, SEMANTIC, mask_grid_size=4)
    path = tmp_path / "models" / "last" / baseline.MODEL_FILE
    baseline.save(model, path)
    assert baseline.load(path) == model


def test_find_model_file(tmp_path):
    files = [tmp_path / "last" / "other.txt", tmp_path / "last" / baseline.MODEL_FILE]
    assert baseline.find_model_file(files) == files[1]
    with pytest.raises(ExecutorError) as caught:
        baseline.find_model_file(files[:1])
    assert caught.value.code == ErrorCode.MODEL
    assert "other.txt" in caught.value.message


def valid_model_text() -> str:
    model = baseline.fit([], 1, DETECTION)
    return json.dumps(model)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        valid_model_text().replace('"classes"', '"klasses"'),
        valid_model_text().replace(baseline.FORMAT, "something-else"),
        valid_model_text().replace('"frequency": 0.0', '"frequency": 2.0'),
        valid_model_text().replace('"box": null', '"box": [1, 2]'),
        valid_model_text().replace('"num_classes": 1', '"num_classes": 3'),
        valid_model_text().replace('"object_type": 2', '"object_type": 9'),
    ],
)
def test_bad_model_file_is_a_model_error(tmp_path, content):
    path = tmp_path / baseline.MODEL_FILE
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ExecutorError) as caught:
        baseline.load(path)
    assert caught.value.code == ErrorCode.MODEL
    assert str(path) in caught.value.message


def test_missing_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ExecutorError) as caught:
        baseline.load(tmp_path / "absent.json")
    assert caught.value.code == ErrorCode.MODEL


def test_the_valid_text_used_above_does_load(tmp_path):
    path = tmp_path / baseline.MODEL_FILE
    path.write_text(valid_model_text(), encoding="utf-8")
    assert baseline.load(path)["num_classes"] == 1


# --- mining ---------------------------------------------------------------------------------


def test_entropy_of_a_constant_image_is_zero():
    assert baseline.image_entropy(Image.new("RGB", (32, 32), (90, 90, 90))) == 0.0


def test_entropy_of_two_equal_grey_levels_is_one_bit():
    array = np.zeros((10, 10), dtype=np.uint8)
    array[:, 5:] = 255
    # 1 bit out of the 8 bits of a grey-level histogram.
    assert baseline.image_entropy(Image.fromarray(array)) == pytest.approx(1 / 8)


def test_entropy_of_noise_is_high():
    noise = np.random.default_rng(0).integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    assert baseline.image_entropy(Image.fromarray(noise)) > 0.9


def test_image_entropy_scorer_ranks_texture_first():
    score = baseline.mining_scorer("image_entropy")
    flat = Image.new("RGB", (16, 16))
    gradient = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)))
    assert score(Path("gradient.png"), gradient) > score(Path("flat.png"), flat) == 0.0


def test_random_scores_are_seeded_and_reproducible():
    image = Image.new("RGB", (4, 4))
    paths = [Path(f"/in/assets/{index}.jpg") for index in range(20)]
    first = [baseline.mining_scorer("random", 1)(path, image) for path in paths]
    again = [baseline.mining_scorer("random", 1)(path, image) for path in reversed(paths)]
    other = [baseline.mining_scorer("random", 2)(path, image) for path in paths]
    assert first == list(reversed(again))
    assert first != other
    assert all(0.0 <= score < 1.0 for score in first)
    assert len(set(first)) == len(first)


def test_unknown_mining_algorithm_is_a_config_error():
    with pytest.raises(ExecutorError) as caught:
        baseline.mining_scorer("uncertainty")
    assert caught.value.code == ErrorCode.CONFIG
    assert "image_entropy" in caught.value.message
