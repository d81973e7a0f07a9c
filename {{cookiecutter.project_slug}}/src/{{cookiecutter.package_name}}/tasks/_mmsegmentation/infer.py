"""Inference with MMSegmentation: the author's function, kept thin on purpose.

``frameworks/mmsegmentation/inference.py`` does the work: the model stage chosen by the user
(``model.pth`` + ``config.py`` in ``ctx.model.files``) is rebuilt, the candidates run through it
in batches, and every class present in an image becomes one compressed-RLE annotation of
``infer-result.json`` (never the background). Replace this function with your own code if you
like: the contract is
documented on the type of ``ctx``, :class:`~..contract.context.InferenceContext`.
"""

from __future__ import annotations

from ..contract.context import InferenceContext
from ..frameworks.mmsegmentation import inference


def infer(ctx: InferenceContext) -> None:
    """Segment every candidate image into ``ctx.results``."""
    inference.run(ctx)
