"""Mining with MMDetection: the author's function, kept thin on purpose.

``frameworks/mmdetection/mining.py`` does the work: every candidate gets a score from
``mining_algorithm`` (``entropy`` of the detections' confidences, ``cald`` consistency under
flip / cutout / rotation / shrink, ``aldd`` dense-head uncertainty for RTMDet, YOLOX and
RetinaNet, or ``random``); the result writer sorts them, unreadable images last. When inference
runs in the same task, it reuses the predictions made here. Replace this function with your own
code if you like: the contract is
documented on the type of ``ctx``, :class:`~..contract.context.MiningContext`.
"""

from __future__ import annotations

from ..contract.context import MiningContext
from ..frameworks.mmdetection import mining


def mine(ctx: MiningContext) -> None:
    """Score every candidate image into ``ctx.results``."""
    mining.mine(ctx)
