"""The hyper-parameters of this executor's tasks, each declared once.

Every key of the img-man templates is declared here (the platform's own ``export_format`` and
``shm_size`` excepted: the contract declares those): its kind, the range or choices allowed, the
tasks whose templates have it, the targets it applies to, and its help. The templates hold the
defaults, and only they do. ``ctx.params.<key>`` returns a value typed and checked against its
declaration (a bad one stops the task with code 300001), and
``python -m <package>.devkit hyperparams`` writes each help into the templates' comments and
the README's table.

To add a hyper-parameter: declare it here, add it with its default to the templates of its
tasks, then run that command (the tests fail until the three agree).
"""

from __future__ import annotations

from ..contract.hyperparams import INFER, MINING, TRAINING, Choice, HyperParameter, Integer, Number
from ..contract.object_types import ObjectType

SEGMENTATION = (ObjectType.SEMANTIC_SEGMENTATION, ObjectType.INSTANCE_SEGMENTATION)

HYPERPARAMETERS: tuple[HyperParameter, ...] = (
    Integer(
        "mask_grid_size",
        minimum=1,
        maximum=256,
        tasks=TRAINING,
        targets=SEGMENTATION,
        help="Side of the square grid (in cells) on which the baseline learns each class's "
        "typical mask, 16 to 64 being sensible; larger draws finer outlines and makes a bigger "
        "model file.",
    ),
    Choice(
        "mining_algorithm",
        [
            (
                "image_entropy",
                "the grayscale entropy of each image: detailed, busy images "
                "first; cheap and needs no model",
            ),
            (
                "random",
                "a random order, the same again for the same random_seed: a baseline "
                "to compare other algorithms with",
            ),
        ],
        tasks=MINING,
        help="How candidates are ranked",
    ),
    Integer(
        "random_seed",
        tasks=MINING,
        help="Seed of the 'random' algorithm (0 cannot be set from the UI); the same seed "
        "ranks the same candidates the same way.",
    ),
    Number(
        "confidence_threshold",
        minimum=0.0,
        maximum=1.0,
        tasks=MINING,
        help="Used when mining and inference run in one task: lowest score of a prediction "
        "written to the inference result. Keep it low (YMIR evaluates stored predictions "
        "from a score of 0.005 on).",
    ),
    Number(
        "confidence_threshold",
        minimum=0.0,
        maximum=1.0,
        tasks=INFER,
        help="Lowest score of a prediction written to the result; lower-scored predictions "
        "are dropped. Keep it low: YMIR evaluates stored predictions itself (from a score of "
        "0.005 on), so a high threshold lowers the measured recall.",
    ),
)
