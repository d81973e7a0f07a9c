"""Semantic segmentation inference: every candidate -> one RLE mask per class present.

Batched (``batch_size_per_gpu`` images per forward pass, ``num_workers_per_gpu`` DataLoader
workers decoding and resizing ahead; see :mod:`.predictor`), one process per GPU with the
candidates sharded (:mod:`.jobs`). Per image, the class scores are resized back to the stored
image size and the arg-max gives each pixel a class; every class present becomes one
annotation through ``ctx.results`` (the writer stores compressed RLE and computes ``bbox`` and
``area``). The background class, when the model learnt one, is never written. Pixels whose top
softmax probability is below ``confidence_threshold`` are left unlabelled. An unreadable
image is logged and listed with no annotation.

When mining and inference run in one task, mining computes the masks in the same forward pass
and keeps its rows files in the run's ``ctx.handover`` (:mod:`...contract.handover`) under
:func:`share_key`, and inference takes them: every image goes through the model once, and no
prediction is held in memory.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import jobs

if TYPE_CHECKING:
    from ...contract.context import CandidateContext, InferenceContext, TaskContext

log = logging.getLogger(__name__)


def settings(ctx: TaskContext) -> dict[str, Any]:
    """The task's prediction settings (typed and range-checked by their declarations)."""
    return {
        "batch_size": ctx.params.batch_size_per_gpu,
        "num_workers": ctx.params.num_workers_per_gpu,
        "confidence_threshold": ctx.params.confidence_threshold,
    }


def share_key(ctx: CandidateContext, confidence_threshold: float) -> str:
    """What must be equal for mining's masks to be inference's: model files (path, size,
    modification time), classes, candidates and the threshold."""
    digest = hashlib.sha1()
    for path in sorted(str(path) for path in ctx.model.files):
        stat = Path(path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(f"{list(ctx.class_names)}\0{confidence_threshold!r}\n".encode())
    for candidate in ctx.candidates():
        digest.update(str(candidate).encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def run(ctx: InferenceContext) -> None:
    """Predict every candidate and add the masks to ``ctx.results`` (written by the caller)."""
    options = settings(ctx)
    candidates = ctx.candidates()
    rows = None
    if ctx.handover is not None:
        rows = ctx.handover.take(share_key(ctx, options["confidence_threshold"]))
    if rows is not None:
        log.info("inference reuses the masks mining computed for %d images", len(candidates))
    else:
        rows = jobs.run(ctx, masks=True, algorithm=None, **options)
    try:
        missing = jobs.add_masks(ctx, candidates, rows)
    finally:
        rows.remove()
    log.info(
        "inferred %d images (%d without a prediction), batch size %d",
        len(candidates),
        missing,
        options["batch_size"],
    )
