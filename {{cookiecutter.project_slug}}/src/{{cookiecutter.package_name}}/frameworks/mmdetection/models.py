"""The MMDetection models this executor offers: short names -> configs shipped in mmdet.

The ``model`` hyper-parameter is one of :data:`MODELS`' keys. Each maps to a config file that
ships inside the installed mmdet package (``<mmdet>/.mim/configs``), so no repository checkout
is needed at run time, and to the COCO-pretrained weights of that config. Those weights are
baked into the image at build time (``python -m <package>.frameworks.mmdetection.models
--download /weights``, run by the Dockerfile; see :mod:`..openmmlab.bake_weights`) and are the
starting point of training when the user picks no pretrained model; the class-dependent layers
of the head are re-initialised for the task's classes. Nothing is downloaded at run time: a
missing file means training from scratch (with a warning), never a network access.

Detection: ``rtmdet_tiny`` (default), ``yolox_tiny``, ``retinanet_r18``, ``faster_rcnn_r50``.
Instance segmentation: ``rtmdet_ins_tiny`` (default), ``mask_rcnn_r50``.

This module imports neither torch nor mmdet at import time: the download runs in a plain build
stage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ...contract.errors import ErrorCode, ExecutorError
from ...contract.object_types import ObjectType
from ..openmmlab import bake_weights, weights

# The targets MMDetection does here.
TARGETS = (ObjectType.DETECTION, ObjectType.INSTANCE_SEGMENTATION)

_V2 = "https://download.openmmlab.com/mmdetection/v2.0"
_V3 = "https://download.openmmlab.com/mmdetection/v3.0"


@dataclass(frozen=True)
class ModelSpec(weights.ModelSpec):
    """One offered model, with what detection training needs to know about its config."""

    object_type: int = ObjectType.DETECTION  # 2 detection, 4 instance segmentation
    # The square input side the config's scales were designed for: every resize / crop / mosaic
    # scale of the pipelines is multiplied by img_size / this.
    reference_size: int = 640
    # A single-stage dense head (per-pixel class maps): what the aldd mining algorithm needs.
    dense_head: bool = False


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="rtmdet_tiny",
            object_type=ObjectType.DETECTION,
            config="rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
            weights_url=f"{_V3}/rtmdet/rtmdet_tiny_8xb32-300e_coco/"
            "rtmdet_tiny_8xb32-300e_coco_20220902_112414-78e30dcc.pth",
            reference_batch=256,
            reference_size=640,
            dense_head=True,
            description="RTMDet-tiny (4.8M parameters, COCO box AP 41.1): fast and accurate, "
            "the default",
        ),
        ModelSpec(
            name="yolox_tiny",
            object_type=ObjectType.DETECTION,
            config="yolox/yolox_tiny_8xb8-300e_coco.py",
            weights_url=f"{_V2}/yolox/yolox_tiny_8x8_300e_coco/"
            "yolox_tiny_8x8_300e_coco_20211124_171234-b4047906.pth",
            reference_batch=64,
            reference_size=640,
            dense_head=True,
            description="YOLOX-tiny (5.1M parameters, COCO box AP 31.8)",
        ),
        ModelSpec(
            name="retinanet_r18",
            object_type=ObjectType.DETECTION,
            config="retinanet/retinanet_r18_fpn_1x_coco.py",
            weights_url=f"{_V2}/retinanet/retinanet_r18_fpn_1x_coco/"
            "retinanet_r18_fpn_1x_coco_20220407_171055-614fd399.pth",
            reference_batch=16,
            reference_size=800,
            dense_head=True,
            description="RetinaNet with a ResNet-18 FPN (21M parameters, COCO box AP 31.7)",
        ),
        ModelSpec(
            name="faster_rcnn_r50",
            object_type=ObjectType.DETECTION,
            config="faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
            weights_url=f"{_V2}/faster_rcnn/faster_rcnn_r50_fpn_1x_coco/"
            "faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth",
            reference_batch=16,
            reference_size=800,
            dense_head=False,
            description="Faster R-CNN with a ResNet-50 FPN (41M parameters, COCO box AP 37.4): "
            "two-stage, slower",
        ),
        ModelSpec(
            name="rtmdet_ins_tiny",
            object_type=ObjectType.INSTANCE_SEGMENTATION,
            config="rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py",
            weights_url=f"{_V3}/rtmdet/rtmdet-ins_tiny_8xb32-300e_coco/"
            "rtmdet-ins_tiny_8xb32-300e_coco_20221130_151727-ec670f7e.pth",
            reference_batch=256,
            reference_size=640,
            dense_head=True,
            description="RTMDet-Ins-tiny (5.6M parameters, COCO mask AP 35.4): the default",
        ),
        ModelSpec(
            name="mask_rcnn_r50",
            object_type=ObjectType.INSTANCE_SEGMENTATION,
            config="mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
            weights_url=f"{_V2}/mask_rcnn/mask_rcnn_r50_fpn_1x_coco/"
            "mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth",
            reference_batch=16,
            reference_size=800,
            dense_head=False,
            description="Mask R-CNN with a ResNet-50 FPN (44M parameters, COCO mask AP 34.7): "
            "two-stage, slower",
        ),
    )
}
DEFAULT_MODEL = {
    ObjectType.DETECTION: "rtmdet_tiny",
    ObjectType.INSTANCE_SEGMENTATION: "rtmdet_ins_tiny",
}


def models_for(object_type: int) -> list[ModelSpec]:
    """The models offered for a target, in the documented order."""
    return [spec for spec in MODELS.values() if spec.object_type == object_type]


def default_model(object_type: int) -> ModelSpec:
    """The default model of a target (the img-man template's ``model`` default)."""
    return MODELS[DEFAULT_MODEL[ObjectType(object_type)]]


def get_model(name: str, object_type: int | None = None) -> ModelSpec:
    """The spec for a ``model`` hyper-parameter value (case, ``-`` and spaces ignored).

    Raises:
        ExecutorError: CONFIG for an unknown name; OBJECT_TYPE for a model of the other target
            (e.g. ``mask_rcnn_r50`` in a detection executor).
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in MODELS:
        known = models_for(object_type) if object_type in TARGETS else MODELS.values()
        raise ExecutorError(
            ErrorCode.CONFIG,
            "unknown model {!r}; choose one of {}".format(
                name, ", ".join(spec.name for spec in known)
            ),
        )
    spec = MODELS[key]
    if object_type is not None and spec.object_type != object_type:
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            "model {!r} does {}, this executor does {}; choose one of {}".format(
                spec.name,
                ObjectType(spec.object_type).title,
                ObjectType(object_type).title if object_type in TARGETS else object_type,
                ", ".join(other.name for other in models_for(object_type)),
            ),
        )
    return spec


def config_file(spec: ModelSpec) -> Path:
    """The config file of ``spec`` in the installed mmdet."""
    return weights.shipped_config("mmdet", spec)


def describe(object_type: int | None = None) -> str:
    """The model list as the README and ``--list`` show it."""
    lines = []
    for spec in MODELS.values():
        if object_type is not None and spec.object_type != object_type:
            continue
        default = " (default)" if DEFAULT_MODEL[ObjectType(spec.object_type)] == spec.name else ""
        target = ObjectType(spec.object_type).title
        lines.append(f"{spec.name}{default} [{target}]: {spec.description} ({spec.config})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m <package>.frameworks.mmdetection.models",
        description="List the offered MMDetection models, or bake their COCO weights into a "
        "folder (image build time only).",
    )
    parser.add_argument("--list", action="store_true", help="print the models and exit")
    parser.add_argument("--models", default="", help="comma-separated model names (default: all)")
    parser.add_argument(
        "--object-type",
        type=int,
        choices=[int(target) for target in TARGETS],
        help="only the models of this target (2 detection, 4 instance segmentation)",
    )
    bake_weights.add_bake_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list or not args.download:
        print(describe(args.object_type))
        return 0
    names = [part.strip() for part in args.models.split(",") if part.strip()]
    try:
        specs = [get_model(name, args.object_type) for name in names]
    except ExecutorError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    if not specs:
        specs = models_for(args.object_type) if args.object_type else list(MODELS.values())
    return bake_weights.bake_command(args, specs)


if __name__ == "__main__":
    sys.exit(main())
