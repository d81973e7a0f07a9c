"""Training with MMSegmentation: the author's function, kept thin on purpose.

``frameworks/mmsegmentation/training.py`` does the work: the seg-coco training and validation
sets become label maps under ``/out``, the chosen model's config (hyper-parameter ``model``) is
adapted to the task's classes and hyper-parameters, and an mmengine runner trains it (one
process per GPU through torchrun). After every validation a hook writes the model stages
``best`` and ``last`` (``model.pth`` + ``config.py``) with ``mIoU`` / ``mAcc`` into
``/out/models/result.yaml`` and reports progress. Change the behaviour there, or replace this
function with your own code: the contract is
documented on the type of ``ctx``, :class:`~..contract.context.TrainingContext`.
"""

from __future__ import annotations

from ..contract.context import TrainingContext
from ..frameworks.mmsegmentation import training


def train(ctx: TrainingContext) -> None:
    """Train the model named by ``ctx.params.model`` and write its stages."""
    training.run(ctx)
