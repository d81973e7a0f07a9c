"""The validation metric of training: mIoU / mAcc / aAcc over the task's classes, in [0, 1].

mmseg's ``IoUMetric`` reports percentages and averages over every class the model learns. YMIR
wants fractions, and when the model learns an extra background class (``background_class``)
the numbers must describe ``class_names`` only, like the platform's own evaluation of the
inference result, which never contains background. Conventions follow the package's
``evaluation.evaluate_semantic``: ``mIoU`` averages the classes present in the ground truth or
the prediction, ``mAcc`` those present in the ground truth; pixels labelled 255 are ignored.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

log = logging.getLogger(__name__)


class YmirIoUMetric(IoUMetric):
    """``IoUMetric`` with fractions, optionally leaving out model label 0 (background)."""

    def __init__(self, skip_background: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skip_background = bool(skip_background)

    def compute_metrics(self, results: list) -> dict[str, float]:
        columns = tuple(zip(*results))
        intersect, union, _predicted, label = (
            np.asarray(sum(column).cpu().numpy(), dtype=np.float64) for column in columns
        )
        start = 1 if self.skip_background else 0
        intersect, union, label = intersect[start:], union[start:], label[start:]
        names = list(self.dataset_meta["classes"])[start:]
        present, labelled = union > 0, label > 0
        iou = np.divide(intersect, union, out=np.full_like(intersect, np.nan), where=present)
        acc = np.divide(intersect, label, out=np.full_like(intersect, np.nan), where=labelled)
        for name, class_iou, class_acc in zip(names, iou, acc):
            log.info("class %s: IoU %.4f, Acc %.4f", name, class_iou, class_acc)
        total = label.sum()
        return {
            "mIoU": float(iou[present].mean()) if present.any() else 0.0,
            "mAcc": float(acc[labelled].mean()) if labelled.any() else 0.0,
            "aAcc": float(intersect.sum() / total) if total > 0 else 0.0,
        }


# force: importing this module again (tests, DDP workers) must not fail on the registry.
METRICS.register_module(name="YmirIoUMetric", module=YmirIoUMetric, force=True)
