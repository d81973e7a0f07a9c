"""Mining: score every candidate image by how much labelling it would help.

The contract, whatever the method:

- the model package's files are ``ctx.model.files``;
- hyper-parameters come from ``ctx.params`` (defaults: ``img-man/mining-template.yaml``);
- every candidate gets ``ctx.results.add(image, score)``, a finite float, higher = more worth
  labelling; once the function returns, the writer writes one line per candidate, sorted as the
  platform expects (a failure leaves no partial file);
- ``ctx.images()`` yields each candidate with its pixels and reports progress as it goes; an
  unreadable one comes as None, is logged, gets no score and so ranks last; the run goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import baseline

log = logging.getLogger(__name__)


def mine(ctx: Any) -> None:
    """Score every candidate with ``mining_algorithm`` (image_entropy | random)."""
    # ---- REPLACE ME: load your model from ctx.model.files and build your scoring function ----
    # The baseline's image statistics need no model; loading it still checks that the user
    # chose a model this executor can use.
    baseline.load(baseline.find_model_file(ctx.model.files))
    score = baseline.mining_scorer(ctx.params.mining_algorithm, ctx.params.random_seed)
    # ---- end of REPLACE ME ------------------------------------------------------------------

    for path, image in ctx.images():
        if image is not None:  # an unreadable image gets no score and so ranks last
            ctx.results.add(path, score(path, image))  # REPLACE ME: your model's score
    log.info("mined %d images with %s", len(ctx.candidates()), ctx.params.mining_algorithm)
