"""The shared evaluator against values computed by hand from the metric definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from {{ cookiecutter.package_name }}.contract.dataset import Annotation, DatasetItem
from {{ cookiecutter.package_name }}.evaluation import (
    evaluate_detection,
    evaluate_instance_masks,
    evaluate_predictions,
    evaluate_semantic,
    gt_label_map,
    label_map_from_masks,
)

# COCO AP interpolates precision at 101 recall points 0.00, 0.01, ..., 1.00.
RECALL_POINTS = 101


def box_item(name: str, *boxes: tuple) -> DatasetItem:
    """An item with (x, y, w, h, class_id) boxes; the image file is never opened."""
    annotations = [Annotation(class_id=c, box=(x, y, w, h)) for x, y, w, h, c in boxes]
    return DatasetItem(image=Path("/in/assets") / name, annotations=annotations)


def square_mask(x: int, y: int, size: int, shape=(20, 20)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y : y + size, x : x + size] = True
    return mask


def mask_item(name: str, *objects: tuple) -> DatasetItem:
    """An item with (mask, class_id) objects, boxes taken from the masks."""
    annotations = []
    for mask, class_id in objects:
        rows, cols = np.nonzero(mask)
        box = (int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1)
        annotations.append(Annotation(class_id=class_id, box=box, mask=mask))
    return DatasetItem(image=Path("/in/assets") / name, annotations=annotations)


# --- detection ------------------------------------------------------------------------------


@pytest.fixture
def detection_gt() -> list:
    return [
        box_item("a.jpg", (10, 10, 20, 20, 0), (50, 50, 10, 30, 1)),
        box_item("b.jpg", (0, 0, 40, 40, 0)),
        box_item("negative.jpg"),
    ]


def test_perfect_detection_scores_one(detection_gt):
    predictions = {
        item.image: [(*a.box, a.class_id, 0.9) for a in item.annotations] for item in detection_gt
    }
    metrics = evaluate_detection(detection_gt, predictions, num_classes=3)
    assert metrics == {"mAP": 1.0, "mAP_50": 1.0, "mAP_75": 1.0, "mAR": 1.0}
    assert all(type(value) is float for value in metrics.values())


def test_no_detections_score_zero(detection_gt):
    assert evaluate_detection(detection_gt, {}, num_classes=3) == {
        "mAP": 0.0,
        "mAP_50": 0.0,
        "mAP_75": 0.0,
        "mAR": 0.0,
    }


def test_no_ground_truth_scores_zero_not_minus_one():
    gt = [box_item("negative.jpg")]
    predictions = {gt[0].image: [(0, 0, 5, 5, 0, 0.5)]}
    assert evaluate_detection(gt, predictions, num_classes=1)["mAP"] == 0.0


def test_half_found_detection():
    # Two objects; the better-scored detection hits one exactly, the other misses (IoU 0).
    # Precision is 1.0 up to recall 0.5 and recall never exceeds 0.5: AP = 51/101 at every
    # IoU threshold; AR = 0.5.
    gt = [box_item("a.jpg", (0, 0, 10, 10, 0)), box_item("b.jpg", (0, 0, 10, 10, 0))]
    predictions = {
        gt[0].image: [(0, 0, 10, 10, 0, 0.9)],
        gt[1].image: [(50, 50, 10, 10, 0, 0.8)],
    }
    metrics = evaluate_detection(gt, predictions, num_classes=1)
    assert metrics["mAP"] == pytest.approx(51 / RECALL_POINTS)
    assert metrics["mAP_50"] == pytest.approx(51 / RECALL_POINTS)
    assert metrics["mAR"] == pytest.approx(0.5)


def test_iou_064_counts_at_three_of_ten_thresholds():
    # An 8x8 box inside a 10x10 one: IoU = 64/100 = 0.64, a hit at IoU 0.50, 0.55, 0.60 and a
    # miss at 0.65 ... 0.95, so AP@[.5:.95] = 3/10, AP50 = 1, AP75 = 0.
    gt = [box_item("a.jpg", (0, 0, 10, 10, 0))]
    metrics = evaluate_detection(gt, {gt[0].image: [(0, 0, 8, 8, 0, 0.7)]}, num_classes=1)
    assert metrics["mAP"] == pytest.approx(0.3)
    assert metrics["mAP_50"] == pytest.approx(1.0)
    assert metrics["mAP_75"] == 0.0


def test_wrong_class_is_no_hit():
    gt = [box_item("a.jpg", (0, 0, 10, 10, 0))]
    metrics = evaluate_detection(gt, {gt[0].image: [(0, 0, 10, 10, 1, 0.9)]}, num_classes=2)
    assert metrics["mAP"] == 0.0


def test_mean_over_classes_with_ground_truth_only():
    # Class 0 found perfectly, class 1 missed, class 2 absent everywhere: mAP = (1 + 0) / 2.
    gt = [box_item("a.jpg", (0, 0, 10, 10, 0), (30, 30, 10, 10, 1))]
    metrics = evaluate_detection(gt, {gt[0].image: [(0, 0, 10, 10, 0, 0.9)]}, num_classes=3)
    assert metrics["mAP"] == pytest.approx(0.5)


def test_predictions_may_be_keyed_by_string(detection_gt):
    predictions = {
        str(item.image): [(*a.box, a.class_id, 0.9) for a in item.annotations]
        for item in detection_gt
    }
    assert evaluate_detection(detection_gt, predictions, num_classes=3)["mAP"] == 1.0


def test_bad_class_id_is_refused(detection_gt):
    with pytest.raises(ValueError, match="class id"):
        evaluate_detection(detection_gt, {detection_gt[0].image: [(0, 0, 1, 1, 7, 0.5)]}, 3)


def test_pycocotools_prints_nothing(detection_gt, capsys):
    predictions = {detection_gt[0].image: [(10, 10, 20, 20, 0, 0.9)]}
    evaluate_detection(detection_gt, predictions, num_classes=3)
    assert capsys.readouterr().out == ""


# --- instance segmentation --------------------------------------------------------------------


@pytest.fixture
def instance_gt() -> list:
    return [
        mask_item("a.png", (square_mask(0, 0, 10), 0), (square_mask(12, 12, 6), 1)),
        mask_item("b.png", (square_mask(5, 5, 10), 0)),
    ]


def test_perfect_instance_masks_score_one(instance_gt):
    predictions = {
        item.image: [(a.mask, a.class_id, 0.8) for a in item.annotations] for item in instance_gt
    }
    metrics = evaluate_instance_masks(instance_gt, predictions, num_classes=2)
    assert metrics == {"maskAP": 1.0, "boxAP": 1.0, "mAP": 1.0, "maskAP_50": 1.0}


def test_no_instance_masks_score_zero(instance_gt):
    metrics = evaluate_instance_masks(instance_gt, {}, num_classes=2)
    assert metrics == {"maskAP": 0.0, "boxAP": 0.0, "mAP": 0.0, "maskAP_50": 0.0}


def test_partial_instance_mask():
    # An 8x8 square inside the 10x10 ground truth: mask IoU and box IoU are both 0.64.
    gt = [mask_item("a.png", (square_mask(0, 0, 10), 0))]
    metrics = evaluate_instance_masks(gt, {gt[0].image: [(square_mask(0, 0, 8), 0, 0.6)]}, 1)
    assert metrics["maskAP"] == pytest.approx(0.3)
    assert metrics["boxAP"] == pytest.approx(0.3)
    assert metrics["mAP"] == metrics["boxAP"]
    assert metrics["maskAP_50"] == pytest.approx(1.0)


def test_mask_ap_and_box_ap_differ_for_a_hollow_prediction():
    # The predicted ring has the ground truth's bounding box (box IoU 1) but covers only
    # 100 - 36 = 64 of its 100 pixels (mask IoU 0.64).
    ring = square_mask(0, 0, 10)
    ring[2:8, 2:8] = False
    gt = [mask_item("a.png", (square_mask(0, 0, 10), 0))]
    metrics = evaluate_instance_masks(gt, {gt[0].image: [(ring, 0, 0.6)]}, 1)
    assert metrics["boxAP"] == pytest.approx(1.0)
    assert metrics["maskAP"] == pytest.approx(0.3)


def test_empty_predicted_masks_are_ignored(instance_gt):
    empty = np.zeros((20, 20), dtype=bool)
    metrics = evaluate_instance_masks(instance_gt, {instance_gt[0].image: [(empty, 0, 0.9)]}, 2)
    assert metrics["maskAP"] == 0.0


def test_negative_image_with_prediction_counts_as_false_positive():
    # One hit (score 0.5) and one false positive on a negative image with a higher score
    # (0.9): precision at recall 1 is 1/2, so AP = 0.5 at every threshold.
    negative = DatasetItem(image=Path("/in/assets/n.png"), annotations=[])
    gt = [mask_item("a.png", (square_mask(0, 0, 10), 0)), negative]
    predictions = {
        gt[0].image: [(square_mask(0, 0, 10), 0, 0.5)],
        negative.image: [(square_mask(0, 0, 10), 0, 0.9)],
    }
    metrics = evaluate_instance_masks(gt, predictions, num_classes=1)
    assert metrics["maskAP"] == pytest.approx(0.5)


# --- semantic segmentation -------------------------------------------------------------------


@pytest.fixture
def semantic_item() -> DatasetItem:
    """4x4: class 0 on the left half, class 1 top-right 2x2, bottom-right 2x2 unlabelled."""
    left = np.zeros((4, 4), dtype=bool)
    left[:, :2] = True
    top_right = np.zeros((4, 4), dtype=bool)
    top_right[:2, 2:] = True
    return DatasetItem(
        image=Path("/in/assets/s.png"),
        annotations=[
            Annotation(class_id=0, box=(0, 0, 2, 4), mask=left),
            Annotation(class_id=1, box=(2, 0, 2, 2), mask=top_right),
        ],
    )


def test_gt_label_map(semantic_item):
    expected = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, -1, -1], [0, 0, -1, -1]])
    np.testing.assert_array_equal(gt_label_map(semantic_item), expected)


def test_perfect_semantic_scores_one(semantic_item):
    prediction = gt_label_map(semantic_item)
    prediction[prediction < 0] = 1  # unlabelled pixels do not count, whatever is predicted
    metrics = evaluate_semantic([semantic_item], {semantic_item.image: prediction}, 3)
    assert metrics == {"mIoU": 1.0, "mAcc": 1.0, "aAcc": 1.0}


def test_no_semantic_prediction_scores_zero(semantic_item):
    assert evaluate_semantic([semantic_item], {}, 3) == {"mIoU": 0.0, "mAcc": 0.0, "aAcc": 0.0}
    nothing = np.full((4, 4), 255)
    metrics = evaluate_semantic([semantic_item], {semantic_item.image: nothing}, 3)
    assert metrics == {"mIoU": 0.0, "mAcc": 0.0, "aAcc": 0.0}


def test_everything_predicted_as_class_zero(semantic_item):
    # 12 labelled pixels. Class 0: TP 8, FP 4 (class 1's pixels), FN 0 -> IoU 8/12, Acc 1.
    # Class 1: TP 0, FN 4 -> IoU 0, Acc 0. Class 2 absent from both: not averaged.
    prediction = np.zeros((4, 4), dtype=np.int64)
    metrics = evaluate_semantic([semantic_item], {semantic_item.image: prediction}, 3)
    assert metrics["mIoU"] == pytest.approx((8 / 12 + 0.0) / 2)
    assert metrics["mAcc"] == pytest.approx(0.5)
    assert metrics["aAcc"] == pytest.approx(8 / 12)


def test_class_predicted_but_absent_lowers_miou_not_macc(semantic_item):
    # Class 1's pixels predicted as class 2: class 0 IoU 1, class 1 IoU 0, class 2 IoU 0.
    prediction = gt_label_map(semantic_item)
    prediction[prediction == 1] = 2
    metrics = evaluate_semantic([semantic_item], {semantic_item.image: prediction}, 3)
    assert metrics["mIoU"] == pytest.approx(1 / 3)
    assert metrics["mAcc"] == pytest.approx(0.5)
    assert metrics["aAcc"] == pytest.approx(8 / 12)


def test_background_makes_a_class_painted_outside_its_objects_a_false_positive(semantic_item):
    # The 4 unlabelled pixels predicted as class 1: ignored, or 4 false positives of class 1
    # (IoU 4 / 8) once they are background. Background is not averaged.
    prediction = gt_label_map(semantic_item)
    prediction[prediction < 0] = 1
    items, maps = [semantic_item], {semantic_item.image: prediction}
    assert evaluate_semantic(items, maps, 3)["mIoU"] == 1.0
    metrics = evaluate_semantic(items, maps, 3, background=True)
    assert metrics == {"mIoU": pytest.approx((1.0 + 4 / 8) / 2), "mAcc": 1.0, "aAcc": 1.0}
    # Background left without a prediction (-1 or 255) is right: nothing changes.
    exact = gt_label_map(semantic_item)
    assert evaluate_semantic(items, {semantic_item.image: exact}, 3, background=True)["mIoU"] == 1.0


def test_background_counts_images_without_annotations(semantic_item):
    # An image with nothing annotated, class 0 painted on all its 16 pixels: class 0 gets 16
    # false positives (IoU 8 / 24) once pixels outside annotations are background.
    empty = DatasetItem(image=Path("/in/assets/e.png"), annotations=[], width=4, height=4)
    exact = gt_label_map(semantic_item)
    maps = {semantic_item.image: exact, empty.image: np.zeros((4, 4), dtype=np.int64)}
    items = [semantic_item, empty]
    assert evaluate_semantic(items, maps, 3)["mIoU"] == 1.0
    assert evaluate_semantic(items, maps, 3, background=True)["mIoU"] == pytest.approx(
        (8 / 24 + 1.0) / 2
    )
    # Without a prediction the empty image is all correct background.
    assert evaluate_semantic(items, {semantic_item.image: exact}, 3, background=True) == {
        "mIoU": 1.0,
        "mAcc": 1.0,
        "aAcc": 1.0,
    }
    masks = [(np.ones((4, 4), dtype=bool), 0, 1.0)]
    metrics = evaluate_predictions(3, [empty], {empty.image: masks}, 3, background=True)
    assert metrics == {"mIoU": 0.0, "mAcc": 0.0, "aAcc": 0.0}


def test_semantic_shape_mismatch_is_refused(semantic_item):
    with pytest.raises(ValueError, match="shape"):
        evaluate_semantic([semantic_item], {semantic_item.image: np.zeros((5, 4))}, 3)


def test_label_map_from_masks_and_dispatch(semantic_item):
    masks = [(a.mask, a.class_id, 0.5) for a in semantic_item.annotations]
    label_map = label_map_from_masks(masks, 4, 4)
    assert label_map[3, 3] == -1
    assert label_map[0, 3] == 1
    metrics = evaluate_predictions(3, [semantic_item], {semantic_item.image: masks}, 3)
    assert metrics == {"mIoU": 1.0, "mAcc": 1.0, "aAcc": 1.0}


def test_dispatch_by_object_type(detection_gt, instance_gt):
    boxes = {
        item.image: [(*a.box, a.class_id, 1.0) for a in item.annotations] for item in detection_gt
    }
    assert evaluate_predictions(2, detection_gt, boxes, 3)["mAP"] == 1.0
    masks = {
        item.image: [(a.mask, a.class_id, 1.0) for a in item.annotations] for item in instance_gt
    }
    assert evaluate_predictions(4, instance_gt, masks, 2)["maskAP"] == 1.0
    with pytest.raises(ValueError):
        evaluate_predictions(1, detection_gt, boxes, 3)
