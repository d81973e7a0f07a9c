"""Training with MMDetection: the author's training function for this executor.

What happens (``frameworks/mmdetection/training.py`` has the details):

- the hyper-parameters of ``img-man/training-template.yaml`` (``model``, ``epochs``,
  ``batch_size_per_gpu``, ``num_workers_per_gpu``, ``learning_rate``, ``img_size``,
  ``val_interval``, ``max_keep_checkpoints``, ``cfg_options``) shape the mmdet config of the
  chosen model;
- the training and validation sets become COCO json files under ``/out``;
- training starts from the pretrained model the user picked, else from the COCO weights baked
  into the image, with one process per GPU (torchrun) or on the CPU;
- after every evaluation the stages ``best`` and ``last`` (``model.pth`` + ``config.py``) are
  written to ``/out/models`` and registered in ``result.yaml`` with COCO metrics (``mAP`` =
  mAP@[.5:.95]; instance segmentation: ``maskAP``, ``boxAP``); progress goes to monitor.txt.

To change the model family, the data handling or the stages, edit the framework package; to
train something else entirely, replace the body of :func:`train` (the contract is documented
on the type of ``ctx``, :class:`~..contract.context.TrainingContext`: ``ctx.results.add_stage``
with the main metric).
"""

from __future__ import annotations

from ..contract.context import TrainingContext
from ..frameworks.mmdetection import training


def train(ctx: TrainingContext) -> None:
    """Train an MMDetection model on the task's data; the stages land in result.yaml."""
    training.run(ctx)
