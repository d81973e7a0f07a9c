"""Judge an executor's outputs against the ground truth the active-learning loop holds back.

- :func:`read_predictions` reads an ``infer-result.json`` (detection boxes, or segmentation
  COCO) into the evaluation's prediction tuples, keyed by image basename;
- :func:`evaluate` scores them with the project's own :mod:`..evaluation` (COCO mAP, mask AP,
  mIoU), the same numbers for every executor, whatever its training reports. The loop's
  datasets annotate objects (COCO), so the pixels outside them are background: mIoU counts a
  class predicted there as a false positive (else a model that paints a class everywhere
  would score its recall);
- :func:`enrichment` is the cheap one-round measure: how much more of what the start model
  misses (:func:`missed_objects`), and of the rarest class, a mining algorithm's top-k holds
  than a random top-k would (1.0 = as random, 2.0 = twice as much).

Main metrics per target: the main one and its value at IoU 0.5 (semantic segmentation has no
IoU threshold: mIoU is both).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import evaluation
from ..contract import masks
from ..contract.dataset import DatasetItem
from ..contract.object_types import ObjectType
from .al_dataset import SEGMENTATION_TYPES, LabelledDataset, object_box, object_mask

# object_type -> (main metric, the metric at IoU 0.5)
METRICS = {
    ObjectType.DETECTION: ("mAP", "mAP_50"),
    ObjectType.SEMANTIC_SEGMENTATION: ("mIoU", "mIoU"),
    ObjectType.INSTANCE_SEGMENTATION: ("maskAP", "maskAP_50"),
}
# A ground-truth object counts as found when a prediction of its class overlaps it this much.
FOUND_IOU = 0.5


def read_predictions(
    result_file: Path, object_type: int, class_names: Sequence[str]
) -> dict[str, list[tuple]]:
    """Predictions per image basename: ``(x, y, w, h, class_id, score)`` boxes for detection,
    ``(bool mask, class_id, score)`` for segmentation (score 1.0 where the result has none)."""
    data = json.loads(Path(result_file).read_text(encoding="utf-8"))
    lookup = {name.strip().lower(): index for index, name in enumerate(class_names)}
    predictions: dict[str, list[tuple]] = {}
    if object_type == ObjectType.DETECTION:
        for key, entry in data["detection"].items():
            boxes = []
            for box in entry.get("boxes") or entry.get("annotations") or []:
                rect = box["box"]
                class_id = lookup[str(box["class_name"]).strip().lower()]
                boxes.append((rect["x"], rect["y"], rect["w"], rect["h"], class_id, box["score"]))
            predictions[os.path.basename(key)] = boxes
        return predictions
    names = {image["id"]: os.path.basename(image["file_name"]) for image in data["images"]}
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    category = {c["id"]: lookup[str(c["name"]).strip().lower()] for c in data["categories"]}
    for name in names.values():
        predictions.setdefault(name, [])
    for annotation in data["annotations"]:
        height, width = sizes[annotation["image_id"]]
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, dict):
            mask = masks.decode_rle(segmentation)
        else:
            mask = masks.polygon_to_mask(segmentation, height, width)
        score = float(annotation.get("confidence", 1.0))
        predictions[names[annotation["image_id"]]].append(
            (mask, category[annotation["category_id"]], score)
        )
    return predictions


def evaluate(
    object_type: int,
    gt: Sequence[DatasetItem],
    predictions: dict[str, list[tuple]],
    num_classes: int,
) -> dict[str, float]:
    """The project's evaluation of ``predictions`` (by basename) on the ``gt`` items
    (semantic segmentation: unannotated pixels are background)."""
    by_item = {item.image: predictions.get(item.image.name, []) for item in gt}
    return evaluation.evaluate_predictions(object_type, gt, by_item, num_classes, background=True)


def missed_objects(
    dataset: LabelledDataset,
    indices: Sequence[int],
    predictions: dict[str, list[tuple]],
    object_type: int,
) -> dict[int, float]:
    """Per image index: how much of its ground truth the model misses, ``sum(1 - s)`` over its
    objects, where ``s`` is the best score of a prediction of the object's class that overlaps
    it by IoU >= 0.5 (boxes for detection, masks for segmentation), 0 when none does.

    An object the model finds confidently counts little, one it finds with a low score or not
    at all nearly fully: no score threshold to choose, which matters for a start model whose
    scores are all low.
    """
    missed = {}
    for index in indices:
        image = dataset.images[index]
        found = predictions.get(image.asset, [])
        total = 0.0
        for obj in image.objects:
            same_class = [p for p in found if p[-2] == obj["category_id"]]
            if object_type in SEGMENTATION_TYPES:
                truth = object_mask(obj, image)
                overlaps = [(_mask_iou(truth, p[0]), p[-1]) for p in same_class]
            else:
                truth_box = object_box(obj)
                overlaps = [(_box_iou(truth_box, p[:4]), p[-1]) for p in same_class]
            score = max((float(s) for iou, s in overlaps if iou >= FOUND_IOU), default=0.0)
            total += 1.0 - min(1.0, max(0.0, score))
        missed[index] = total
    return missed


def enrichment(
    dataset: LabelledDataset,
    pool: Sequence[int],
    selected: Sequence[int],
    missed: dict[int, float],
    rare_class: int,
) -> dict[str, Any]:
    """How concentrated the start model's misses and the rare class are in ``selected``.

    ``missed``: the start model's misses per pool image (:func:`missed_objects`).
    Each value is (share of the pool's total inside ``selected``) / (``len(selected)`` /
    ``len(pool)``): 1.0 for what a random pick gets on average, None when the pool has none.
    """
    fraction = len(selected) / float(len(pool))

    def ratio(inside: float, total: float) -> float | None:
        return None if total == 0 else (inside / total) / fraction

    def rare_objects(index: int) -> int:
        return sum(obj["category_id"] == rare_class for obj in dataset.images[index].objects)

    return {
        "missed": ratio(sum(missed[i] for i in selected), sum(missed[i] for i in pool)),
        "rare": ratio(sum(rare_objects(i) for i in selected), sum(rare_objects(i) for i in pool)),
        "missed_in_top_k": float(sum(missed[i] for i in selected)),
        "rare_in_top_k": int(sum(rare_objects(i) for i in selected)),
    }


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    width = min(ax + aw, bx + bw) - max(ax, bx)
    height = min(ay + ah, by + bh) - max(ay, by)
    inter = max(0.0, width) * max(0.0, height)
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        return 0.0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
