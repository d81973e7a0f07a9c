"""Inference with MMDetection: the author's function, kept thin on purpose.

``frameworks/mmdetection/inference.py`` does the work: the model stage the user chose
(``config.py`` + ``model.pth`` in ``ctx.model.files``) is rebuilt with ``confidence_threshold``
and ``iou_threshold`` in its test config, the candidates run through it in batches of
``batch_size_per_gpu`` (``num_workers_per_gpu`` loader processes prepare the next batches, one
process per GPU), and the boxes (detection) or instance masks (instance segmentation, as
compressed RLE) go to ``ctx.results``. Unreadable images get an empty result. When mining ran
just before in the same task, its predictions are reused instead of a second pass. Replace this
function with your own code if you like: the contract is
documented on the type of ``ctx``, :class:`~..contract.context.InferenceContext`.
"""

from __future__ import annotations

from ..contract.context import InferenceContext
from ..frameworks.mmdetection import inference


def infer(ctx: InferenceContext) -> None:
    """Predict every candidate image into ``ctx.results``."""
    inference.infer(ctx)
