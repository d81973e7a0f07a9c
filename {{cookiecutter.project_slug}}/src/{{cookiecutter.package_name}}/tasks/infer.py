"""Inference: predict every candidate image with the model the user chose.

What ``ctx`` offers and what the writer expects, whatever the model, is documented on
:class:`~..contract.context.InferenceContext` (your editor shows it on ``ctx.``).
"""

from __future__ import annotations

import logging

from .. import baseline
from ..contract.context import InferenceContext
from ..contract.errors import ErrorCode, ExecutorError
from ..contract.results import DetectionResult

log = logging.getLogger(__name__)


def infer(ctx: InferenceContext) -> None:
    """Predict the baseline for every candidate, keeping scores >= ``confidence_threshold``."""
    threshold = ctx.params.confidence_threshold
    # ---- REPLACE ME: load your model from ctx.model.files (on ctx.device) ----------------------
    model = baseline.load(baseline.find_model_file(ctx.model.files))
    if model["num_classes"] != len(ctx.class_names):
        raise ExecutorError(
            ErrorCode.MODEL,
            "the model knows {} classes, this task has {}".format(
                model["num_classes"], len(ctx.class_names)
            ),
        )
    # ---- end of REPLACE ME ------------------------------------------------------------------

    for path, image in ctx.images():
        if image is None:
            continue  # listed in the result with no prediction
        # ---- REPLACE ME: run your model on image --------------------------------------------
        predictions = baseline.predict(model, image.width, image.height, ctx.object_type)
        # ---- end of REPLACE ME --------------------------------------------------------------
        kept = [prediction for prediction in predictions if prediction[-1] >= threshold]
        if isinstance(ctx.results, DetectionResult):  # boxes; the other writer takes masks
            ctx.results.add(path, kept)
        else:
            ctx.results.add(path, image.width, image.height, kept)
    log.info("inferred %d images, confidence >= %s", len(ctx.candidates()), threshold)
