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

from ..contract.hyperparams import (
    INFER,
    MINING,
    PREDICTING,
    TRAINING,
    Boolean,
    Choice,
    HyperParameter,
    Integer,
    Number,
    Text,
)
from ..frameworks.mmsegmentation import models


def _model_name(name: str) -> str:
    # The models' own reading: case, '-' and spaces ignored.
    return models.get_model(name).name


HYPERPARAMETERS: tuple[HyperParameter, ...] = (
    # training
    Choice(
        "model",
        [(name, spec.description) for name, spec in models.MODELS.items()],
        read=_model_name,
        tasks=TRAINING,
        help="The model to train, by short name (the README describes each). Training starts "
        "from the pretrained model picked for the task, else from the model's ADE20K / "
        "Cityscapes weights baked into the image, else from scratch",
    ),
    Integer(
        "max_iters",
        minimum=1,
        tasks=TRAINING,
        help="Training iterations (batches); the model's learning-rate schedule is scaled to it.",
    ),
    Integer(
        "val_interval",
        minimum=1,
        tasks=TRAINING,
        help="Evaluate on the validation set every this many iterations (and after the last); "
        "each evaluation writes the model stages (the best so far and the last).",
    ),
    Integer(
        "batch_size_per_gpu",
        minimum=1,
        tasks=TRAINING,
        help="Training images per GPU in one iteration (the total batch is this times the "
        "number of GPUs). Lower it if training runs out of GPU memory (code 300103).",
    ),
    Integer(
        "num_workers_per_gpu",
        minimum=0,
        tasks=TRAINING,
        help="Processes per GPU that load and augment training images; 0 loads them in the "
        "training process: slow, but the least memory.",
    ),
    Number(
        "learning_rate",
        minimum=0.0,
        tasks=TRAINING,
        help="Base learning rate. 0 (automatic) takes the model config's rate, scaled by the "
        "total batch size over the batch size the config was tuned for.",
    ),
    Integer(
        "img_size",
        minimum=32,
        tasks=TRAINING,
        help="Side in pixels of the square training crop; images are resized around this "
        "scale and cropped to it. Larger sees more context, at more memory and time.",
    ),
    Boolean(
        "background_class",
        tasks=TRAINING,
        help="How pixels that no annotation covers are learnt: false ignores them (no loss; "
        "the model learns exactly class_names, right when annotations cover the images), true "
        "learns them as an extra background class (right for objects on an unlabelled "
        "background; background is never written to a result). With one class name, "
        "background is always learnt.",
    ),
    Integer(
        "max_keep_checkpoints",
        minimum=1,
        tasks=TRAINING,
        help="Training checkpoints kept on disk; older ones are deleted, so that the space "
        "used in /out stays bounded (the best stage is always kept).",
    ),
    Text(
        "cfg_options",
        max_length=100,
        tasks=TRAINING,
        help="For experts: mmengine config overrides applied last, space-separated key=value "
        "pairs such as 'optim_wrapper.optimizer.weight_decay=0.01 "
        "model.decode_head.dropout_ratio=0.2' (the README has the syntax). A malformed pair "
        "stops the task (code 300001); '' sets nothing.",
    ),
    # mining and inference
    Choice(
        "mining_algorithm",
        [
            ("entropy", "the entropy of the class probabilities per pixel"),
            (
                "margin",
                "1 - (best - second best class probability) per pixel: where the model "
                "hesitates between two classes",
            ),
            (
                "random",
                "a random order, the same again for the same random_seed: the baseline "
                "to compare the others with",
            ),
        ],
        tasks=MINING,
        help="How candidates are ranked (the README explains each). The pixel scores are "
        "averaged over image regions; the most uncertain regions rank the image",
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
        help="Used when mining and inference run in one task: lowest probability of a pixel's "
        "most likely class for the pixel to be labelled in the inference result; 0: every "
        "pixel gets its most likely class.",
    ),
    Number(
        "confidence_threshold",
        minimum=0.0,
        maximum=1.0,
        tasks=INFER,
        help="Lowest probability of a pixel's most likely class for the pixel to be labelled; "
        "less certain pixels stay unlabelled. 0 (what a missing value means; it cannot be "
        "typed in the UI): every pixel gets its most likely class.",
    ),
    Integer(
        "batch_size_per_gpu",
        minimum=1,
        tasks=PREDICTING,
        help="Images per GPU in one forward pass; larger is faster until the GPU is busy or "
        "out of memory (code 300103).",
    ),
    Integer(
        "num_workers_per_gpu",
        minimum=0,
        tasks=PREDICTING,
        help="Processes per GPU that read and resize images ahead of the model (0 cannot be "
        "typed in the UI). On the CPU only as many run as the cores the model leaves free "
        "(often none: beside the model they would slow it down).",
    ),
)
