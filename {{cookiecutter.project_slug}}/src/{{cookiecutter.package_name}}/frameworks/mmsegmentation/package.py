"""Untrained MMSegmentation stages and packages: random weights, shaped like training's output.

For tests and benchmarks (inference and mining without a training run, and the "untrained"
side of the learning check): the stage's ``config.py`` is :func:`.config.model_config` as a
training run dumps it, and its ``meta`` names the classes and the background handling, so
inference and mining treat it exactly like a trained stage. Nothing here runs in a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...contract.object_types import ObjectType
from ..openmmlab.package import pack_one_stage, write_untrained_stage
from . import config as configs
from . import data, models


def untrained_stage(
    folder: Path,
    model_name: str,
    class_names: Sequence[str],
    *,
    img_size: int = 512,
    background_class: bool = False,
    seed: int = 0,
) -> list[Path]:
    """Write a randomly initialised stage into ``folder``; returns its two files."""
    import torch
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    spec = models.get_model(model_name)
    labels = data.label_set(list(class_names), background_class)
    cfg = configs.model_config(spec, labels, img_size)
    register_all_modules(init_default_scope=True)
    torch.manual_seed(seed)
    model = MODELS.build(configs.inference_model_config(cfg))
    model.init_weights()
    meta = {
        "class_names": list(class_names),
        "dataset_meta": {"classes": list(labels.model_classes)},
        "background_class": labels.background,
        "object_type": ObjectType.SEMANTIC_SEGMENTATION,
        "model": spec.name,
        "img_size": img_size,
    }
    config_text = configs.stage_config(cfg).pretty_text
    return write_untrained_stage(folder, model.state_dict(), config_text, meta)


def untrained_package(
    dest_tar: Path,
    model_name: str,
    class_names: Sequence[str],
    *,
    stage_name: str = "best",
    **stage_options: Any,
) -> Path:
    """A platform model package (tar) holding one :func:`untrained_stage`.

    ``stage_options`` are those of :func:`untrained_stage` (``img_size``,
    ``background_class``, ``seed``).
    """
    return pack_one_stage(
        dest_tar,
        lambda folder: untrained_stage(folder, model_name, class_names, **stage_options),
        object_type=ObjectType.SEMANTIC_SEGMENTATION,
        class_names=class_names,
        metrics={"mIoU": 0.0, "mAP": 0.0},
        stage_name=stage_name,
    )
