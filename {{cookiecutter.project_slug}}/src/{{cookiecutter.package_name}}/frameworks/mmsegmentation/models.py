"""The MMSegmentation models this executor offers: short names -> configs shipped in mmseg.

The ``model`` hyper-parameter is one of :data:`MODELS`' keys. Each maps to a config file that
ships inside the installed mmsegmentation package (``<mmseg>/.mim/configs``), so no repository
checkout is needed at run time, and to the weights of that config trained on its dataset
(ADE20K or Cityscapes). Those weights are baked into the image at build time
(``python -m <package>.frameworks.mmsegmentation.models --download /weights``, run by the
Dockerfile) and used as the starting point of training when the user picks no pretrained
model; the decode heads are re-initialised for the task's classes. Nothing is downloaded at run
time: a missing file means training from scratch (logged), never a network access.

This module imports neither torch nor mmseg at import time: the download runs in a plain build
stage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ...contract.errors import ErrorCode, ExecutorError
from ..openmmlab import bake_weights, weights
from ..openmmlab.weights import ModelSpec

_DOWNLOAD_ROOT = "https://download.openmmlab.com/mmsegmentation/v0.5"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="segformer_b0",
            config="segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
            weights_url=f"{_DOWNLOAD_ROOT}/segformer/segformer_mit-b0_512x512_160k_ade20k/"
            "segformer_mit-b0_512x512_160k_ade20k_20210726_101530-8ffa8fda.pth",
            reference_batch=16,
            description="SegFormer with a MiT-B0 encoder (3.8M parameters), ADE20K weights; "
            "the light default, good at any image size",
        ),
        ModelSpec(
            name="fast_scnn",
            config="fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py",
            weights_url=f"{_DOWNLOAD_ROOT}/fast_scnn/fast_scnn_lr0.12_8x4_160k_cityscapes/"
            "fast_scnn_lr0.12_8x4_160k_cityscapes_20210630_164853-0cec9937.pth",
            reference_batch=32,
            description="Fast-SCNN (1.5M parameters), Cityscapes weights; the fastest, "
            "for large images and weak GPUs",
        ),
        ModelSpec(
            name="deeplabv3plus_r18",
            config="deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py",
            weights_url=f"{_DOWNLOAD_ROOT}/deeplabv3plus/deeplabv3plus_r18-d8_512x1024_80k_"
            "cityscapes/deeplabv3plus_r18-d8_512x1024_80k_cityscapes_20201226_080942-cff257fe.pth",
            reference_batch=8,
            description="DeepLabV3+ with a ResNet-18 backbone (12.5M parameters), Cityscapes "
            "weights; sharper boundaries, slower",
        ),
        ModelSpec(
            name="pspnet_r18",
            config="pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py",
            weights_url=f"{_DOWNLOAD_ROOT}/pspnet/pspnet_r18-d8_512x1024_80k_cityscapes/"
            "pspnet_r18-d8_512x1024_80k_cityscapes_20201225_021458-09ffa746.pth",
            reference_batch=8,
            description="PSPNet with a ResNet-18 backbone (12.8M parameters), Cityscapes "
            "weights; strong scene context",
        ),
    )
}
DEFAULT_MODEL = "segformer_b0"


def get_model(name: str) -> ModelSpec:
    """The spec for a ``model`` hyper-parameter value (case and spaces ignored).

    Raises:
        ExecutorError: CONFIG for an unknown name, listing the known ones.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in MODELS:
        raise ExecutorError(
            ErrorCode.CONFIG,
            "unknown model {!r}; choose one of {}".format(name, ", ".join(sorted(MODELS))),
        )
    return MODELS[key]


def config_file(spec: ModelSpec) -> Path:
    """The config file of ``spec`` in the installed mmsegmentation."""
    return weights.shipped_config("mmseg", spec)


def describe() -> str:
    """The model list as the README and ``--list`` show it."""
    lines = []
    for name, spec in MODELS.items():
        default = " (default)" if name == DEFAULT_MODEL else ""
        lines.append(f"{name}{default}: {spec.description} [{spec.config}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m <package>.frameworks.mmsegmentation.models",
        description="List the offered MMSegmentation models, or bake their weights into a "
        "folder (image build time only).",
    )
    parser.add_argument("--list", action="store_true", help="print the models and exit")
    parser.add_argument("--models", default="", help="comma-separated model names (default: all)")
    bake_weights.add_bake_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list or not args.download:
        print(describe())
        return 0
    names = [part.strip() for part in args.models.split(",") if part.strip()]
    try:
        specs = [get_model(name) for name in names or sorted(MODELS)]
    except ExecutorError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    return bake_weights.bake_command(args, specs)


if __name__ == "__main__":
    sys.exit(main())
