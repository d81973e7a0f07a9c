"""Mining: score every candidate image by how much labelling it would help.

What ``ctx`` offers and what the writer expects, whatever the method, is documented on
:class:`~..contract.context.MiningContext` (your editor shows it on ``ctx.``).
"""

from __future__ import annotations

import logging

from .. import baseline
from ..contract.context import MiningContext

log = logging.getLogger(__name__)


def mine(ctx: MiningContext) -> None:
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
