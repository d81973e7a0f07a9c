"""Training: learn a model from the training set, evaluate it on the validation set, save it.

What ``ctx`` offers and what ``ctx.results.add_stage`` expects, whatever the model, is
documented on :class:`~..contract.context.TrainingContext` (your editor shows it on ``ctx.``).
"""

from __future__ import annotations

import logging

from .. import baseline, evaluation
from ..contract.context import TrainingContext
from ..contract.images import image_size
from ..contract.object_types import ObjectType

log = logging.getLogger(__name__)

STAGE = "last"
# The metrics result.yaml gets per target (names YMIR knows); the evaluator's others are logged.
STAGE_METRICS = {
    ObjectType.DETECTION: ("mAP", "mAR"),
    ObjectType.INSTANCE_SEGMENTATION: ("maskAP", "boxAP", "mAP"),
    # No box mAP exists for semantic segmentation: the result writer supplies what YMIR 2.0
    # requires under that name, rather than a made-up number here.
    ObjectType.SEMANTIC_SEGMENTATION: ("mIoU", "mAcc"),
}


def train(ctx: TrainingContext) -> None:
    """Fit the baseline on the training set, evaluate it on the validation set, save it."""
    train_items = ctx.train_items()
    val_items = ctx.val_items()
    num_classes = len(ctx.class_names)
    stage_dir = ctx.results.stage_dir(STAGE)
    log.info("training on %d images, validating on %d", len(train_items), len(val_items))

    # ---- REPLACE ME: plug your model in here ------------------------------------------------
    # Train on train_items (ctx.device is "cpu" or "cuda:0"; a pretrained package chosen by the
    # user is in ctx.model.files) reporting ctx.progress and the loss to ctx.tensorboard,
    # predict every validation image in the result writers' formats (see baseline.predict),
    # save the weights into stage_dir.
    curve = _FitCurve(ctx, len(train_items))  # the baseline has no loss: its fit progress
    model = baseline.fit(
        train_items,
        num_classes,
        ctx.object_type,
        # Only the segmentation templates declare mask_grid_size (detection learns no mask).
        mask_grid_size=(
            ctx.params.mask_grid_size
            if ctx.object_type != ObjectType.DETECTION
            else baseline.DEFAULT_MASK_GRID_SIZE
        ),
        progress=curve.report,
    )
    predictions = {}
    for done, item in enumerate(val_items, start=1):
        width, height = image_size(item.image)
        predictions[item.image] = baseline.predict(model, width, height, ctx.object_type)
        ctx.progress(0.5 + 0.4 * done / len(val_items))
    baseline.save(model, stage_dir / baseline.MODEL_FILE)
    files = [baseline.MODEL_FILE]
    # ---- end of REPLACE ME ------------------------------------------------------------------

    metrics = evaluation.evaluate_predictions(ctx.object_type, val_items, predictions, num_classes)
    ctx.tensorboard.add_scalars(
        {f"val/{key}": value for key, value in metrics.items()}, step=len(train_items)
    )
    ctx.results.add_stage(STAGE, files=files, metrics=_stage_metrics(ctx.object_type, metrics))
    ctx.progress(1.0)
    log.info("training done, stage %r: %s", STAGE, _summary(metrics))


class _FitCurve:
    """Fit progress as monitor progress (first half of the task) and as a TensorBoard curve
    over the images fitted, one point per 5% (a point per image would be noise)."""

    POINTS = 20

    def __init__(self, ctx: TrainingContext, total: int) -> None:
        self.ctx = ctx
        self.total = total
        self.points = 0

    def report(self, fraction: float) -> None:
        self.ctx.progress(0.5 * fraction)
        point = int(fraction * self.POINTS)
        if point > self.points or fraction >= 1.0:
            self.points = point
            step = round(fraction * self.total)
            self.ctx.tensorboard.add_scalars({"train/fit_progress": fraction}, step=step)


def _stage_metrics(object_type: ObjectType, metrics: dict[str, float]) -> dict[str, float]:
    return {key: metrics[key] for key in STAGE_METRICS[object_type]}


def _summary(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:.4f}" for key, value in sorted(metrics.items()))
