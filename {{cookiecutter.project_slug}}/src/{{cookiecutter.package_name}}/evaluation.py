"""Evaluation of predictions against a validation set: the metrics that go into result.yaml.

Shared by the stub tasks and by framework code, so that every executor reports the same, honest
numbers:

- detection: COCO box evaluation (pycocotools) -> ``mAP`` is AP averaged over IoU 0.50:0.95
  (the COCO definition, never AP@0.5 relabelled), plus ``mAP_50``, ``mAP_75`` and ``mAR``;
- instance segmentation: COCO mask and box evaluation -> ``maskAP``, ``boxAP``, ``mAP`` (= boxAP)
  and ``maskAP_50``;
- semantic segmentation: a confusion matrix over labelled pixels -> ``mIoU``, ``mAcc``, ``aAcc``;
  optionally with the unlabelled pixels as background, where a class prediction is a false
  positive.

Conventions: category ids are class indices (0-based, positions in ``class_names``); predictions
are keyed by the image path of the ground-truth :class:`DatasetItem`; an image without an entry
has no predictions. Every value is a Python float in [0, 1]; a metric that is undefined because
there is nothing to evaluate (no ground truth) is 0.0, never NaN or -1.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .contract.images import image_size
from .contract.object_types import ObjectType

if TYPE_CHECKING:
    from .contract.dataset import DatasetItem

# Label-map values that mean "no prediction for this pixel" (255 is the usual ignore index).
NO_LABEL_VALUES = (-1, 255)

# Indices into COCOeval.stats (see COCOeval.summarize).
_AP = 0
_AP_50 = 1
_AP_75 = 2
_AR_100 = 8


def evaluate_detection(
    gt: Sequence[DatasetItem],
    predictions: dict[Path, list[tuple]],
    num_classes: int,
) -> dict[str, float]:
    """COCO box evaluation of ``(x, y, w, h, class_id, score)`` predictions.

    Returns ``{"mAP", "mAP_50", "mAP_75", "mAR"}`` (mAR = AR with at most 100 detections).
    """
    dataset = _gt_dataset(gt, num_classes, with_masks=False, predictions=None)
    detections = []
    for image_id, item in enumerate(gt, start=1):
        for pred in _predictions_for(predictions, item):
            x, y, w, h, class_id, score = pred
            _check_class(class_id, num_classes)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(class_id),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "score": float(score),
                }
            )
    stats = _coco_stats(dataset, detections, "bbox")
    return {
        "mAP": stats[_AP],
        "mAP_50": stats[_AP_50],
        "mAP_75": stats[_AP_75],
        "mAR": stats[_AR_100],
    }


def evaluate_instance_masks(
    gt: Sequence[DatasetItem],
    predictions: dict[Path, list[tuple]],
    num_classes: int,
) -> dict[str, float]:
    """COCO mask and box evaluation of ``(mask, class_id, score)`` predictions.

    ``mask`` is a boolean HxW array (or a pycocotools RLE dict). The predicted box is the mask's
    bounding box. Returns ``{"maskAP", "boxAP", "mAP", "maskAP_50"}`` where ``mAP`` = ``boxAP``,
    because YMIR 2.0 requires a ``mAP`` in every stage and box AP is what that name means.
    """
    dataset = _gt_dataset(gt, num_classes, with_masks=True, predictions=predictions)
    segm_results = []
    bbox_results = []
    for image_id, item in enumerate(gt, start=1):
        for mask, class_id, score in _predictions_for(predictions, item):
            _check_class(class_id, num_classes)
            rle = _to_rle(mask)
            if mask_utils.area(rle) == 0:
                continue  # an empty mask is no prediction (the result writer drops it too)
            common = {"image_id": image_id, "category_id": int(class_id), "score": float(score)}
            segm_results.append(dict(common, segmentation=rle))
            bbox_results.append(dict(common, bbox=[float(v) for v in mask_utils.toBbox(rle)]))
    segm = _coco_stats(dataset, segm_results, "segm")
    bbox = _coco_stats(dataset, bbox_results, "bbox")
    return {
        "maskAP": segm[_AP],
        "boxAP": bbox[_AP],
        "mAP": bbox[_AP],
        "maskAP_50": segm[_AP_50],
    }


def evaluate_semantic(
    gt: Sequence[DatasetItem],
    predictions: dict[Path, np.ndarray],
    num_classes: int,
    background: bool = False,
) -> dict[str, float]:
    """Pixel metrics of label-map predictions (HxW ints, -1 or 255 = no prediction).

    Ground-truth pixels outside every annotation are unlabelled and ignored. Per class c over the
    labelled pixels: IoU = TP / (TP + FP + FN), Acc = TP / (pixels of class c). ``mIoU`` averages
    IoU over classes present in the ground truth or the prediction; ``mAcc`` averages Acc over
    classes present in the ground truth; ``aAcc`` = correctly labelled pixels / labelled pixels.
    A labelled pixel without a prediction counts as missed for its class.

    ``background``: pixels outside every annotation are background instead, as where objects
    are annotated on an unlabelled scene (a COCO dataset): a class predicted there is a false
    positive of that class, and images without annotations count. Background is no class of
    its own: it is not averaged, and ``aAcc`` stays over the annotated pixels. Without it, a
    model that predicts a class everywhere scores that class's recall.
    """
    # Rows: ground-truth class (and background, last); columns: predicted class, plus a last
    # column for "no prediction" (background's own, correct, prediction).
    rows = num_classes + 1 if background else num_classes
    confusion = np.zeros((rows, num_classes + 1), dtype=np.int64)
    for item in gt:
        if not item.annotations and not background:
            continue  # no labelled pixel: nothing to count
        prediction = _predictions_for(predictions, item, default=None)
        size = None if prediction is None else (prediction.shape[1], prediction.shape[0])
        truth = gt_label_map(item, size)
        if prediction is None:
            prediction = np.full(truth.shape, -1, dtype=np.int64)
        if background:
            truth = np.where(truth < 0, num_classes, truth)
        prediction = np.asarray(prediction).astype(np.int64)
        if prediction.shape != truth.shape:
            raise ValueError(
                f"prediction for {item.image} has shape {prediction.shape}, "
                f"the ground truth {truth.shape}"
            )
        labelled = truth >= 0
        predicted = prediction[labelled]
        truth = truth[labelled]
        none = np.isin(predicted, NO_LABEL_VALUES)
        if np.any((predicted < 0) & ~none) or np.any((predicted >= num_classes) & ~none):
            raise ValueError(f"prediction for {item.image} has labels outside 0..{num_classes - 1}")
        predicted = np.where(none, num_classes, predicted)
        confusion += np.bincount(
            truth * (num_classes + 1) + predicted, minlength=rows * (num_classes + 1)
        ).reshape(rows, num_classes + 1)

    true_positive = np.diag(confusion[:num_classes, :num_classes]).astype(np.float64)
    gt_pixels = confusion[:num_classes].sum(axis=1).astype(np.float64)
    predicted_pixels = confusion[:, :num_classes].sum(axis=0).astype(np.float64)
    union = gt_pixels + predicted_pixels - true_positive
    present = union > 0
    labelled_classes = gt_pixels > 0
    total = gt_pixels.sum()
    return {
        "mIoU": _mean(true_positive[present] / union[present]),
        "mAcc": _mean(true_positive[labelled_classes] / gt_pixels[labelled_classes]),
        "aAcc": float(true_positive.sum() / total) if total > 0 else 0.0,
    }


def evaluate_predictions(
    object_type: int,
    gt: Sequence[DatasetItem],
    predictions: dict[Path, list[tuple]],
    num_classes: int,
    background: bool = False,
) -> dict[str, float]:
    """The target's evaluation of predictions in the result writers' formats.

    Detection: ``(x, y, w, h, class_id, score)``; segmentation: ``(mask, class_id, score)``
    (semantic masks are merged into a label map, later masks winning where they overlap).
    ``background``: see :func:`evaluate_semantic` (semantic segmentation only).
    """
    if object_type == ObjectType.DETECTION:
        return evaluate_detection(gt, predictions, num_classes)
    if object_type == ObjectType.INSTANCE_SEGMENTATION:
        return evaluate_instance_masks(gt, predictions, num_classes)
    if object_type == ObjectType.SEMANTIC_SEGMENTATION:
        label_maps = {}
        for image, masks in predictions.items():
            if masks:  # no masks = no prediction, which a missing entry already means
                height, width = np.shape(masks[0][0])[:2]
                label_maps[image] = label_map_from_masks(masks, height, width)
        return evaluate_semantic(gt, label_maps, num_classes, background)
    raise ValueError(f"unknown object_type {object_type!r}")


def label_map_from_masks(
    masks: Sequence[tuple], height: int, width: int, fill: int = -1
) -> np.ndarray:
    """Turn ``(mask, class_id, score)`` tuples into one HxW label map (later masks win)."""
    label_map = np.full((height, width), fill, dtype=np.int64)
    for mask, class_id, _score in masks:
        label_map[np.asarray(mask, dtype=bool)] = int(class_id)
    return label_map


def gt_label_map(item: DatasetItem, size: tuple[int, int] | None = None) -> np.ndarray:
    """The ground truth of one item as an HxW label map, -1 where nothing is annotated.

    ``size`` (width, height) is only needed when the item has no mask to take it from.
    """
    width, height = _item_size(item, size)
    label_map = np.full((height, width), -1, dtype=np.int64)
    for annotation in item.annotations:
        label_map[_annotation_mask(annotation, height, width)] = int(annotation.class_id)
    return label_map


# --- helpers -------------------------------------------------------------------------------


def _gt_dataset(
    gt: Sequence[DatasetItem],
    num_classes: int,
    with_masks: bool,
    predictions: dict[Path, list[tuple]] | None,
) -> dict[str, Any]:
    """The ground truth as an in-memory COCO dataset (image ids 1.., annotation ids 1..).

    Ids start at 1 because COCOeval stores the matched ground-truth id and treats 0 as
    "unmatched".
    """
    images = []
    annotations: list[dict[str, Any]] = []
    for image_id, item in enumerate(gt, start=1):
        image: dict[str, Any] = {"id": image_id, "file_name": str(item.image)}
        if with_masks:
            # pycocotools reads the image size of every annotated image in segm evaluation.
            hint = None
            for mask, _class_id, _score in _predictions_for(predictions or {}, item):
                height, width = mask["size"] if isinstance(mask, dict) else np.shape(mask)[:2]
                hint = (int(width), int(height))
                break
            if item.annotations or hint is not None:
                width, height = _item_size(item, hint)
                image.update(width=width, height=height)
        images.append(image)
        for annotation in item.annotations:
            _check_class(annotation.class_id, num_classes)
            x, y, w, h = (float(v) for v in annotation.box)
            record = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(annotation.class_id),
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if with_masks:
                rle = _to_rle(_annotation_mask(annotation, image["height"], image["width"]))
                record.update(segmentation=rle, area=float(mask_utils.area(rle)))
            annotations.append(record)
    categories = [{"id": index, "name": str(index)} for index in range(num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _coco_stats(
    dataset: dict[str, Any], results: list[dict[str, Any]], iou_type: str
) -> list[float]:
    """Run COCOeval and return its 12 summary numbers, with 'undefined' (-1) turned into 0.0."""
    if not dataset["annotations"] or not results:
        # No ground truth: nothing can be found. No predictions: nothing was found.
        # (pycocotools cannot load an empty result list.)
        return [0.0] * 12
    # pycocotools prints progress on stdout; keep the executor log readable.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [max(0.0, float(value)) for value in evaluator.stats]


def _predictions_for(predictions: dict[Any, Any], item: DatasetItem, default: Any = ()) -> Any:
    """The predictions of one item, looked up by its Path (or the same path as a string)."""
    if item.image in predictions:
        return predictions[item.image]
    return predictions.get(str(item.image), default)


def _item_size(item: DatasetItem, hint: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) of an item: from its masks or the size the dataset reader checked,
    else the hint, else the image header."""
    for annotation in item.annotations:
        if annotation.mask is not None:
            height, width = annotation.mask.shape[:2]
            return int(width), int(height)
    width, height = getattr(item, "width", None), getattr(item, "height", None)
    if width and height:
        return int(width), int(height)
    if hint is not None:
        return int(hint[0]), int(hint[1])
    return image_size(item.image)


def _annotation_mask(annotation: Any, height: int, width: int) -> np.ndarray:
    """The annotation's mask; an annotation with a box only counts as its filled box."""
    if annotation.mask is not None:
        mask = np.asarray(annotation.mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"mask of shape {mask.shape} in an image of {width}x{height}")
        return mask
    mask = np.zeros((height, width), dtype=bool)
    x, y, w, h = (int(v) for v in annotation.box)
    mask[max(0, y) : max(0, y + h), max(0, x) : max(0, x + w)] = True
    return mask


def _to_rle(mask: Any) -> dict[str, Any]:
    """A compressed RLE as pycocotools wants it (bytes counts) from a mask or an RLE dict."""
    if isinstance(mask, dict):
        counts = mask["counts"]
        if isinstance(counts, list):
            height, width = mask["size"]
            return mask_utils.frPyObjects(mask, height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": list(mask["size"]), "counts": counts}
    array = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    if array.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {array.shape}")
    return mask_utils.encode(array)


def _check_class(class_id: Any, num_classes: int) -> None:
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)):
        raise ValueError(f"class ids must be integers, got {class_id!r}")
    if not 0 <= int(class_id) < num_classes:
        raise ValueError(f"class id {class_id} outside 0..{num_classes - 1}")


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0
