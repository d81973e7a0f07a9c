"""Untrained MMDetection stages and packages: random weights, shaped like training's output.

For tests and benchmarks (inference and mining without a training run, and the "untrained"
side of the learning check). The config goes through the same surgery as a training run's
(classes, ``img_size``, no downloads) and the checkpoint carries the same ``meta``, so
inference and mining treat the stage exactly like a trained one. Nothing here runs in a task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ...contract.params import Params
from ..openmmlab.package import pack_one_stage, write_untrained_stage

# Parameter names of the prediction heads (what ``noise`` perturbs).
_HEAD_PREFIXES = ("bbox_head.", "rpn_head.", "roi_head.", "mask_head.")


def untrained_stage(
    stage_dir: Path,
    model_name: str,
    object_type: int,
    class_names: Sequence[str],
    *,
    img_size: int = 640,
    seed: int = 0,
    noise: float = 0.0,
) -> list[Path]:
    """Write a model stage (``config.py`` + ``model.pth``) with randomly initialised weights.

    A freshly initialised head predicts near-empty boxes at one score; ``noise`` (e.g. 0.02)
    adds Gaussian noise of that standard deviation to the heads' weights, and batch norms get
    the statistics of random images, so the model predicts varied boxes, scores and masks.
    Returns the two files, weights first.
    """
    import torch
    from mmdet.registry import MODELS
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    from . import config, models

    stage_dir = Path(stage_dir)
    spec = models.get_model(model_name, object_type)
    # The stage of a one-epoch training run; an executor without training has no template to
    # take these from, and only the model, the classes and img_size shape the stage.
    stage_settings = {
        "model": spec.name,
        "epochs": 1,
        "batch_size_per_gpu": 8,
        "num_workers_per_gpu": 0,
        "learning_rate": 0.0,
        "img_size": img_size,
        "val_interval": 1,
        "max_keep_checkpoints": 1,
        "cfg_options": "",
    }
    settings = config.training_settings(Params(stage_settings, {}))
    inputs = config.TrainingInputs.offline(class_names, object_type, stage_dir / "work")
    cfg = config.stage_config(config.training_config(spec, settings, inputs))
    init_default_scope("mmdet")
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    if noise:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.dim() > 1 and name.startswith(_HEAD_PREFIXES):
                    parameter.add_(torch.randn_like(parameter) * float(noise))
        _calibrate_norms(model, img_size)
    meta = {
        "class_names": list(class_names),
        "dataset_meta": {"classes": list(class_names)},
        "object_type": int(object_type),
        "model": spec.name,
        "img_size": int(img_size),
    }
    return write_untrained_stage(stage_dir, model.state_dict(), cfg.pretty_text, meta)


def untrained_package(
    dest_tar: Path,
    model_name: str,
    object_type: int,
    class_names: Sequence[str],
    *,
    stage_name: str = "best",
    **stage_options: Any,
) -> Path:
    """A platform model package (tar) holding one :func:`untrained_stage`.

    ``stage_options`` are those of :func:`untrained_stage` (``img_size``, ``seed``, ``noise``).
    """
    return pack_one_stage(
        dest_tar,
        lambda folder: untrained_stage(
            folder, model_name, object_type, class_names, **stage_options
        ),
        object_type=object_type,
        class_names=class_names,
        metrics={"mAP": 0.0},
        stage_name=stage_name,
    )


def _calibrate_norms(model: Any, img_size: int) -> None:
    """Give batch norms the statistics of real activations, as training would.

    At initialisation every batch norm assumes mean 0 and variance 1, so activations shrink
    (or, for models fed raw pixels such as YOLOX, explode) layer after layer. A few forward
    passes of random images through the model's own preprocessing, in training mode
    (cumulative averages), fix the statistics.
    """
    import torch

    norms = [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    model.train()
    head = getattr(model, "bbox_head", None) or getattr(model, "rpn_head", None)
    with torch.no_grad():
        for _ in range(3):
            images = [
                torch.randint(0, 256, (3, img_size, img_size), dtype=torch.uint8) for _ in range(2)
            ]
            inputs = model.data_preprocessor({"inputs": images, "data_samples": None}, False)[
                "inputs"
            ]
            features = model.extract_feat(inputs)
            if head is not None:
                head(features)
    model.eval()
