"""Inference: predict every candidate image with the model the user chose.

The contract, whatever the model:

- the model package's files are ``ctx.model.files`` (absolute paths of the chosen stage's files);
- hyper-parameters come from ``ctx.params`` (defaults: ``img-man/infer-template.yaml``);
- predictions go to ``ctx.results.add``; detection: ``add(image, [(x, y, w, h, class_id,
  score), ...])``; segmentation: ``add(image, width, height, [(bool_mask_HxW, class_id, score),
  ...])``. The writer checks every value (integer boxes, known classes, scores in [0, 1]) and
  lists every candidate in ``infer-result.json``, also those that got no prediction; the file
  is written once the function returns, so a failure never leaves half a result;
- an unreadable candidate is logged and gets no prediction; the run goes on;
- progress goes to ``ctx.progress(fraction)``.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import baseline
from ..contract.errors import ErrorCode, ExecutorError
from ..contract.images import open_image

log = logging.getLogger(__name__)

DETECTION = 2


def infer(ctx: Any) -> None:
    """Predict the baseline for every candidate, keeping scores >= ``confidence_threshold``."""
    threshold = ctx.params.confidence_threshold
    candidates = ctx.candidates()
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

    unreadable = 0
    for done, path in enumerate(candidates, start=1):
        ctx.progress((done - 1) / len(candidates))
        try:
            image = open_image(path)  # RGB, not EXIF-rotated: the platform's pixel frame
        except ExecutorError as error:
            if error.code != ErrorCode.IMAGE:
                raise
            log.warning("no prediction for an unreadable image: %s", error.message)
            unreadable += 1
            continue

        # ---- REPLACE ME: run your model on image ------------------------------------------------
        predictions = baseline.predict(model, image.width, image.height, ctx.object_type)
        # ---- end of REPLACE ME ------------------------------------------------------------------

        kept = [prediction for prediction in predictions if prediction[-1] >= threshold]
        if ctx.object_type == DETECTION:
            ctx.results.add(path, kept)
        else:
            ctx.results.add(path, image.width, image.height, kept)
    ctx.progress(1.0)
    log.info(
        "inferred %d images (%d unreadable), confidence >= %s",
        len(candidates),
        unreadable,
        threshold,
    )
