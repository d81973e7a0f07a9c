"""Untrained model stages and packages: random weights in exactly the shape training writes.

For tests and benchmarks (inference and mining without a training run, and the "untrained"
side of the learning check): the stage holds ``model.pth`` (weights + the meta training
writes) and ``config.py`` (:func:`.config.model_config`), and the package is packed by
:func:`contract.models.pack_model` like a training output, so the devkit installs it as the
platform would. Nothing here runs in a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ... import __version__
from ..openmmlab.checkpoint import save_checkpoint
from ..openmmlab.weights import CONFIG_FILE, WEIGHTS_FILE
from . import config as configs
from . import data, models

SEMANTIC_SEGMENTATION = 3


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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "class_names": list(class_names),
        "dataset_meta": {"classes": list(labels.model_classes)},
        "background_class": labels.background,
        "executor_version": __version__,
        "object_type": SEMANTIC_SEGMENTATION,
        "model": spec.name,
        "img_size": img_size,
    }
    weights = save_checkpoint(folder / WEIGHTS_FILE, model.state_dict(), meta)
    config_file = folder / CONFIG_FILE
    config_file.write_text(configs.stage_config(cfg).pretty_text, encoding="utf-8")
    return [weights, config_file]


def untrained_package(
    dest_tar: Path,
    model_name: str,
    class_names: Sequence[str],
    *,
    img_size: int = 512,
    background_class: bool = False,
    seed: int = 0,
    stage_name: str = "best",
) -> Path:
    """A platform model package (tar) holding one :func:`untrained_stage`."""
    import yaml

    from ...contract.models import pack_model

    dest_tar = Path(dest_tar)
    models_dir = dest_tar.parent / f"{dest_tar.stem}-models"
    files = untrained_stage(
        models_dir / stage_name,
        model_name,
        class_names,
        img_size=img_size,
        background_class=background_class,
        seed=seed,
    )
    result = {
        "best_stage_name": stage_name,
        "model_stages": {
            stage_name: {
                "stage_name": stage_name,
                "files": [path.name for path in files],
                "timestamp": 1,
                "mAP": 0.0,
                "mIoU": 0.0,
            }
        },
        "mIoU": 0.0,
        "mAP": 0.0,
        "object_type": SEMANTIC_SEGMENTATION,
    }
    (models_dir / "result.yaml").write_text(yaml.safe_dump(result), encoding="utf-8")
    executor_config = {"class_names": list(class_names), "object_type": SEMANTIC_SEGMENTATION}
    pack_model(models_dir / "result.yaml", stage_name, dest_tar, executor_config)
    return dest_tar
