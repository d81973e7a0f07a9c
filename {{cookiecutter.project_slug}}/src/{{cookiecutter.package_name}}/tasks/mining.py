"""Mining: score every candidate image by how much labelling it would help.

The contract, whatever the method:

- the model package's files are ``ctx.model.files``;
- hyper-parameters come from ``ctx.params`` (defaults: ``img-man/mining-template.yaml``);
- every candidate gets ``ctx.results.add(image, score)``, a finite float, higher = more worth
  labelling; once the function returns, the writer writes one line per candidate, sorted as the
  platform expects (a failure leaves no partial file);
- an unreadable candidate is logged and gets the lowest score; the run goes on;
- progress goes to ``ctx.progress(fraction)``.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import baseline
from ..contract.errors import ErrorCode, ExecutorError
from ..contract.images import open_image

log = logging.getLogger(__name__)


def mine(ctx: Any) -> None:
    """Score every candidate with ``mining_algorithm`` (image_entropy | random)."""
    candidates = ctx.candidates()
    # ---- REPLACE ME: load your model from ctx.model.files and build your scoring function ----
    # The baseline's image statistics need no model; loading it still checks that the user
    # chose a model this executor can use.
    baseline.load(baseline.find_model_file(ctx.model.files))
    score = baseline.mining_scorer(ctx.params.mining_algorithm, ctx.params.random_seed)
    # ---- end of REPLACE ME ------------------------------------------------------------------

    unreadable = 0
    for done, path in enumerate(candidates, start=1):
        ctx.progress((done - 1) / len(candidates))
        try:
            image = open_image(path)  # RGB, not EXIF-rotated: the platform's pixel frame
        except ExecutorError as error:
            if error.code != ErrorCode.IMAGE:
                raise
            log.warning("lowest mining score for an unreadable image: %s", error.message)
            unreadable += 1
            ctx.results.add(path, baseline.CORRUPT_IMAGE_SCORE)
            continue
        ctx.results.add(path, score(path, image))  # REPLACE ME: your model's score for image
    ctx.progress(1.0)
    log.info(
        "mined %d images (%d unreadable) with %s",
        len(candidates),
        unreadable,
        ctx.params.mining_algorithm,
    )
