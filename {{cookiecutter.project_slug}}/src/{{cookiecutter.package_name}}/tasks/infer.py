"""Inference: predict every candidate image with the model the user chose.

The contract, whatever the model:

- the model package's files are ``ctx.model.files`` (absolute paths of the chosen stage's files);
- hyper-parameters come from ``ctx.params`` (defaults: ``img-man/infer-template.yaml``);
- predictions go to ``ctx.results.add``; detection: ``add(image, [(x, y, w, h, class_id,
  score), ...])``; segmentation: ``add(image, width, height, [(bool_mask_HxW, class_id, score),
  ...])``. The writer checks every value (integer boxes, known classes, scores in [0, 1]) and
  lists every candidate in ``infer-result.json``, also those that got no prediction; the file
  is written once the function returns, so a failure never leaves half a result;
- ``ctx.images()`` yields each candidate with its pixels and reports progress as it goes; an
  unreadable one comes as None, is logged and gets no prediction; the run goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import baseline
from ..contract.errors import ErrorCode, ExecutorError
from ..contract.object_types import ObjectType

log = logging.getLogger(__name__)


def infer(ctx: Any) -> None:
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
        if ctx.object_type == ObjectType.DETECTION:
            ctx.results.add(path, kept)
        else:
            ctx.results.add(path, image.width, image.height, kept)
    log.info("inferred %d images, confidence >= %s", len(ctx.candidates()), threshold)
