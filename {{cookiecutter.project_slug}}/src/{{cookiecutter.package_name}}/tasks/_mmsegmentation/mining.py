"""Mining with MMSegmentation: the author's function, kept thin on purpose.

``frameworks/mmsegmentation/mining.py`` does the work: every candidate gets an uncertainty
score from the model's softmax (``mining_algorithm``: ``margin`` between the two most probable
classes, ``entropy``, or ``random``), aggregated over the image's most uncertain regions; the
result writer sorts them. When inference runs in the same task it reuses these forward passes.
Replace this function with your own code if you like: the contract is
documented on the type of ``ctx``, :class:`~..contract.context.MiningContext`.
"""

from __future__ import annotations

from ..contract.context import MiningContext
from ..frameworks.mmsegmentation import mining


def mine(ctx: MiningContext) -> None:
    """Score every candidate image into ``ctx.results``."""
    mining.run(ctx)
