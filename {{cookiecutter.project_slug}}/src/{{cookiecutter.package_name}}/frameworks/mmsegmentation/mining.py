"""Mining for semantic segmentation: rank candidates by how unsure the model is about them.

``mining_algorithm``:

* ``entropy`` (default): per pixel the softmax entropy divided by ``log(number of classes)``
  (in [0, 1]); it measured best in the mining benchmark (``benchmarks/README.md``).
* ``margin``: per pixel ``1 - (p1 - p2)``, the gap between the two most probable classes of
  the softmax (the "best versus second best" uncertainty of the public executor's RSAL
  mining); near 1 where the model hesitates between two classes.
* ``random``: a random order (seed ``random_seed``, default 1), the baseline any algorithm
  must beat; it needs no forward pass.

Per image, the pixel uncertainty (at the model's input resolution) is averaged over the
blocks of a grid of at most 16 x 16 regions, and the score is the mean of the most uncertain
tenth of the blocks. So an image with one badly understood region ranks above an image that
is mildly unsure at its object boundaries everywhere, and large images do not win by size.
(The public executor uses superpixels; grid blocks need no OpenCV contrib and behave alike
for ranking.) The result writer sorts descending; unreadable images rank last.

When inference runs in the same task, the masks are computed from the same forward pass and
handed over to it (see :mod:`.inference`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import inference, jobs

if TYPE_CHECKING:
    from ...contract.context import MiningContext

log = logging.getLogger(__name__)

GRID = 16
TOP_FRACTION = 0.1


def pixel_uncertainty(logits: torch.Tensor, algorithm: str) -> torch.Tensor:
    """HxW uncertainty in [0, 1] from ``C x H x W`` class scores."""
    if logits.shape[0] == 1:
        # A single sigmoid channel: the two-class distribution it stands for.
        positive = logits[0].sigmoid()
        probabilities = torch.stack([1 - positive, positive])
    else:
        probabilities = logits.float().softmax(dim=0)
    classes = probabilities.shape[0]
    if algorithm == "margin":
        top = probabilities.topk(2, dim=0).values
        return 1.0 - (top[0] - top[1])
    if algorithm == "entropy":
        entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=0)
        return entropy / math.log(classes)
    raise ValueError(f"unknown uncertainty {algorithm!r}")


def region_score(uncertainty: torch.Tensor, grid: int = GRID, top: float = TOP_FRACTION) -> float:
    """The mean of the most uncertain ``top`` share of the grid blocks."""
    height, width = uncertainty.shape
    pooled = torch.nn.functional.adaptive_avg_pool2d(
        uncertainty[None, None].float(), (min(grid, height), min(grid, width))
    ).flatten()
    count = max(1, math.ceil(top * pooled.numel()))
    return float(pooled.topk(count).values.mean())


def run(ctx: MiningContext) -> None:
    """Score every candidate into ``ctx.results`` (written, sorted, by the caller)."""
    algorithm = ctx.params.mining_algorithm  # one of the declared choices
    candidates = ctx.candidates()
    with_infer = ctx.handover is not None  # inference follows in this task
    options = inference.settings(ctx)
    seed = ctx.params.random_seed
    random_scores = np.random.RandomState(seed).random_sample(len(candidates))
    if algorithm == "random" and not with_infer:
        for path, score in zip(candidates, random_scores):
            ctx.results.add(path, float(score))
        log.info("random mining of %d images, seed %d", len(candidates), seed)
        return

    rows = jobs.run(
        ctx,
        masks=with_infer,
        algorithm=None if algorithm == "random" else algorithm,
        **options,
    )
    unscored = 0
    try:
        # One entry at a time, in candidate order (every candidate exactly once).
        for index, entry in rows.merged(len(candidates)):
            if "error" in entry:
                unscored += 1  # the writer ranks it last
                continue
            score = random_scores[index] if algorithm == "random" else entry["score"]
            ctx.results.add(candidates[index], float(score))
    except BaseException:
        rows.remove()
        raise
    if with_infer and ctx.handover is not None:
        ctx.handover.keep(inference.share_key(ctx, options["confidence_threshold"]), rows)
    else:
        rows.remove()
    log.info(
        "%s mining of %d images (%d unreadable)%s",
        algorithm,
        len(candidates),
        unscored,
        "; masks kept for inference" if with_infer else "",
    )
