"""The MMDetection models this executor offers: short names -> configs shipped in mmdet.

The ``model`` hyper-parameter is one of :data:`MODELS`' keys. Each maps to a config file that
ships inside the installed mmdet package (``<mmdet>/.mim/configs``), so no repository checkout
is needed at run time, and to the COCO-pretrained weights of that config. Those weights are
baked into the image at build time (``python -m <package>.frameworks.mmdetection.models
--download /weights``, run by the Dockerfile) and are the starting point of training when the
user picks no pretrained model; the class-dependent layers of the head are re-initialised for
the task's classes. Nothing is downloaded at run time: a missing file means training from
scratch (with a warning), never a network access.

Detection: ``rtmdet_tiny`` (default), ``yolox_tiny``, ``retinanet_r18``, ``faster_rcnn_r50``.
Instance segmentation: ``rtmdet_ins_tiny`` (default), ``mask_rcnn_r50``.

This module imports neither torch nor mmdet at import time: the download runs in a plain build
stage.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ...contract.errors import ErrorCode, ExecutorError

log = logging.getLogger(__name__)

DETECTION, INSTANCE_SEGMENTATION = 2, 4
TARGET_NAMES = {DETECTION: "detection", INSTANCE_SEGMENTATION: "instance segmentation"}

# Where the image keeps baked weights; tests and local runs point it elsewhere.
WEIGHTS_DIR_VARIABLE = "YMIR_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = "/weights"
_V2 = "https://download.openmmlab.com/mmdetection/v2.0"
_V3 = "https://download.openmmlab.com/mmdetection/v3.0"


@dataclass(frozen=True)
class ModelSpec:
    """One offered model: its mmdet config, baked weights and training references."""

    name: str
    object_type: int  # 2 detection, 4 instance segmentation
    config: str  # relative to <mmdet>/.mim/configs
    weights_url: str  # COCO-pretrained weights of exactly this config
    # GPUs x images per GPU the config's learning rate was tuned for ("8xb32" -> 256; the
    # 1x schedules say 8 x 2): learning_rate 0 scales the config's rate by our total batch / this.
    reference_batch: int
    # The square input side the config's scales were designed for: every resize / crop / mosaic
    # scale of the pipelines is multiplied by img_size / this.
    reference_size: int
    # A single-stage dense head (per-pixel class maps): what the aldd mining algorithm needs.
    dense_head: bool
    description: str

    @property
    def weights_file(self) -> str:
        """The file name of the baked weights in the weights folder."""
        return self.weights_url.rsplit("/", 1)[-1]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="rtmdet_tiny",
            object_type=DETECTION,
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
            object_type=DETECTION,
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
            object_type=DETECTION,
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
            object_type=DETECTION,
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
            object_type=INSTANCE_SEGMENTATION,
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
            object_type=INSTANCE_SEGMENTATION,
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
DEFAULT_MODEL = {DETECTION: "rtmdet_tiny", INSTANCE_SEGMENTATION: "rtmdet_ins_tiny"}


def models_for(object_type: int) -> list[ModelSpec]:
    """The models offered for a target, in the documented order."""
    return [spec for spec in MODELS.values() if spec.object_type == object_type]


def default_model(object_type: int) -> ModelSpec:
    """The default model of a target (the img-man template's ``model`` default)."""
    return MODELS[DEFAULT_MODEL[object_type]]


def get_model(name: str, object_type: int | None = None) -> ModelSpec:
    """The spec for a ``model`` hyper-parameter value (case, ``-`` and spaces ignored).

    Raises:
        ExecutorError: CONFIG for an unknown name; OBJECT_TYPE for a model of the other target
            (e.g. ``mask_rcnn_r50`` in a detection executor).
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in MODELS:
        known = models_for(object_type) if object_type in TARGET_NAMES else MODELS.values()
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
                TARGET_NAMES[spec.object_type],
                TARGET_NAMES.get(object_type, object_type),
                ", ".join(other.name for other in models_for(object_type)),
            ),
        )
    return spec


def configs_root() -> Path:
    """The config folder shipped inside the installed mmdet package."""
    import mmdet  # imported late: the download CLI must run without it

    package = Path(mmdet.__file__).parent
    for candidate in (package / ".mim" / "configs", package.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise ExecutorError(ErrorCode.CONFIG, f"mmdet at {package} ships no configs (.mim/configs)")


def config_file(spec: ModelSpec) -> Path:
    """The config file of ``spec`` in the installed mmdet."""
    path = configs_root() / spec.config
    if not path.is_file():
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"model {spec.name!r}: config {spec.config} is missing from the installed mmdet "
            "(a different version?)",
        )
    return path


def weights_dir() -> Path:
    """Where baked weights live: ``$YMIR_WEIGHTS_DIR``, default ``/weights``."""
    return Path(os.environ.get(WEIGHTS_DIR_VARIABLE) or DEFAULT_WEIGHTS_DIR)


def baked_weights(spec: ModelSpec) -> Path | None:
    """The baked weights of ``spec``, or None when the image was built without them."""
    path = weights_dir() / spec.weights_file
    return path if path.is_file() else None


def download(dest: str | os.PathLike, names: Sequence[str] | None = None) -> list[Path]:
    """Download the weights of ``names`` (default: every model) into ``dest``.

    For the image build only. Existing files are kept; each file is written to a temporary
    name first, so an interrupted build never leaves a truncated checkpoint behind. The
    checkpoint names end with the first 8 hex digits of their SHA-256 (OpenMMLab's
    convention), which is checked.
    """
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(MODELS):
        spec = get_model(name)
        target = folder / spec.weights_file
        if not target.is_file():
            log.info("downloading %s -> %s", spec.weights_url, target)
            handle, temporary = tempfile.mkstemp(dir=str(folder), suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out, urllib.request.urlopen(
                    spec.weights_url, timeout=600
                ) as response:
                    while True:
                        chunk = response.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                _check_hash(Path(temporary), spec)
                os.replace(temporary, str(target))
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        written.append(target)
    return written


def _check_hash(path: Path, spec: ModelSpec) -> None:
    expected = spec.weights_file.rsplit("-", 1)[-1].split(".")[0]
    if len(expected) != 8:
        return  # not an OpenMMLab hash-suffixed name
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(expected):
        raise OSError(f"{spec.weights_url}: sha256 {digest.hexdigest()[:8]} != {expected}")


def describe(object_type: int | None = None) -> str:
    """The model list as the README and ``--list`` show it."""
    lines = []
    for spec in MODELS.values():
        if object_type is not None and spec.object_type != object_type:
            continue
        default = " (default)" if DEFAULT_MODEL[spec.object_type] == spec.name else ""
        target = TARGET_NAMES[spec.object_type]
        lines.append(f"{spec.name}{default} [{target}]: {spec.description} ({spec.config})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m <package>.frameworks.mmdetection.models",
        description="List the offered MMDetection models or download their COCO weights "
        "(image build time only).",
    )
    parser.add_argument("--download", metavar="DIR", help="download the weights into DIR")
    parser.add_argument("--models", default="", help="comma-separated model names (default: all)")
    parser.add_argument(
        "--object-type",
        type=int,
        choices=sorted(TARGET_NAMES),
        help="only the models of this target (2 detection, 4 instance segmentation)",
    )
    parser.add_argument("--list", action="store_true", help="print the models and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list or not args.download:
        print(describe(args.object_type))
        return 0
    names = [part.strip() for part in args.models.split(",") if part.strip()]
    if not names and args.object_type is not None:
        names = [spec.name for spec in models_for(args.object_type)]
    for path in download(args.download, names or None):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
