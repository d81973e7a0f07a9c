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

import functools

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
from ..contract.object_types import ObjectType
from ..frameworks.mmdetection import models


def _model_name(object_type: int, name: str) -> str:
    # The models' own reading: case, '-' and spaces ignored, and a model of the other target
    # is refused as such (code 300005), not as an unknown name.
    return models.get_model(name, object_type).name


def _model(object_type: int) -> HyperParameter:
    return Choice(
        "model",
        [(spec.name, spec.description) for spec in models.models_for(object_type)],
        read=functools.partial(_model_name, object_type),
        tasks=TRAINING,
        targets=(object_type,),
        help="The model to train, by short name (the README describes each). Training starts "
        "from the pretrained model picked for the task, else from the model's COCO weights "
        "baked into the image, else from scratch",
    )


def _batch_size(tasks: tuple[str, ...], help_text: str) -> HyperParameter:
    return Integer("batch_size_per_gpu", minimum=1, tasks=tasks, help=help_text)


def _workers(tasks: tuple[str, ...], help_text: str) -> HyperParameter:
    return Integer("num_workers_per_gpu", minimum=0, tasks=tasks, help=help_text)


HYPERPARAMETERS: tuple[HyperParameter, ...] = (
    # training
    _model(ObjectType.DETECTION),
    _model(ObjectType.INSTANCE_SEGMENTATION),
    Integer(
        "epochs",
        minimum=1,
        tasks=TRAINING,
        help="Passes over the training set; the model's schedule (learning-rate steps, warm-up, "
        "the last epochs without mosaic) is scaled to it.",
    ),
    _batch_size(
        TRAINING,
        "Training images per GPU in one step (the total batch is this times the number of "
        "GPUs). Lower it if training runs out of GPU memory (code 300103).",
    ),
    _workers(
        TRAINING,
        "Processes per GPU that load and augment training images; 0 loads them in the "
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
        help="Side in pixels of the square training and test scale, a multiple of 32 (others "
        "are rounded up); applied to every resize, crop, pad and mosaic step. Larger finds "
        "smaller objects, at more memory and time.",
    ),
    Integer(
        "val_interval",
        minimum=1,
        tasks=TRAINING,
        help="Evaluate on the validation set every this many epochs (and after the last); each "
        "evaluation writes the model stages (the best so far and the last).",
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
        "model.test_cfg.max_per_img=50' (the README has the syntax). A malformed pair stops "
        "the task (code 300001); '' sets nothing.",
    ),
    # mining and inference
    Choice(
        "mining_algorithm",
        [
            ("entropy", "the summed uncertainty of the detections' scores (every model)"),
            (
                "cald",
                "how much the detections change under flips, cut-outs, rotation and "
                "scaling (every model; five forward passes per image)",
            ),
            (
                "aldd",
                "the uncertainty of the class maps of the detection head (RTMDet, YOLOX "
                "and RetinaNet models only; others stop with code 300001)",
            ),
            ("random", "a reproducible random order: the baseline to compare the others with"),
        ],
        tasks=MINING,
        help="How candidates are ranked (the README explains each)",
    ),
    Number(
        "confidence_threshold",
        minimum=0.0,
        maximum=1.0,
        tasks=MINING,
        help="Lowest score of a prediction that counts for mining and, when mining and "
        "inference run in one task, is written to the inference result. Keep it low (YMIR "
        "evaluates stored predictions from a score of 0.005 on).",
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
    Number(
        "iou_threshold",
        above=0.0,
        maximum=1.0,
        tasks=INFER,
        help="IoU above which non-maximum suppression removes the lower-scored of two "
        "overlapping predictions of one class; lower removes more duplicates, higher keeps "
        "more of crowded objects.",
    ),
    _batch_size(
        PREDICTING,
        "Images per GPU in one forward pass; larger is faster until the GPU is busy or out of "
        "memory (code 300103).",
    ),
    _workers(
        PREDICTING,
        "Processes per GPU that read and resize images ahead of the model (0 cannot be typed "
        "in the UI). On the CPU only as many run as the cores the model leaves free (often "
        "none: beside the model they would slow it down).",
    ),
    Boolean(
        "fp16",
        tasks=PREDICTING,
        help="true runs the network in half precision on GPUs (faster on tensor-core GPUs; box "
        "decoding and NMS stay in full precision); false keeps full precision. No effect on "
        "the CPU.",
    ),
)
