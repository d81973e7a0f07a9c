"""A model package -> a :class:`Detector` on a device, ready for batched prediction.

- **The model comes from the package**, not from the image: ``config.py`` (the config the
  training dumped, already holding the classes and the image size) and ``model.pth`` (an
  mmengine checkpoint whose ``meta`` names the classes and the object type). The checkpoint is
  loaded with :func:`..openmmlab.checkpoint.load_checkpoint`, which unpickles fully only the
  files the executor trusts (see that module); a missing, corrupt or mismatching file is error
  300004, a model made for the other target 300005.
- **Thresholds** ``confidence_threshold`` and ``iou_threshold`` go into the config's
  ``model.test_cfg`` before the model is built (``rcnn.*`` for two-stage models), so the
  heads' own post-processing applies them and nothing is filtered twice.
- **Memory format**: on the CPU the network's convolutions run channels-last (NHWC), which
  oneDNN computes 1.2x faster for most listed models; mmcv's compiled ops still get NCHW
  inputs (see :func:`use_channels_last`). GPUs keep PyTorch's default layout.
- **fp16** (``fp16=True``, or the optional ``fp16`` hyper-parameter; GPUs only, the CPU
  ignores it): backbone, neck and head convolutions run under float16 autocast, but every
  head hands float32 tensors to the post-processing, so box decoding and NMS (mmcv's NMS
  rejects half) stay in float32.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ...contract.errors import ErrorCode, ExecutorError
from ..openmmlab.weights import CONFIG_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

DETECTION, INSTANCE_SEGMENTATION = 2, 4
# Modules whose forward runs under autocast with fp16 (their outputs are cast back to float32).
_HALF_MODULES = (
    "backbone",
    "neck",
    "bbox_head",
    "rpn_head",
    "roi_head.bbox_head",
    "roi_head.mask_head",
)


@dataclass
class Detector:
    """A model rebuilt from a package, ready for :func:`.predictor.predict_batches`."""

    model: Any  # mmdet BaseDetector in eval mode on ``device``
    cfg: Any  # the mmengine Config it was built from (thresholds applied)
    model_classes: list[str]  # the model's classes, in its label order
    label_map: list[int | None]  # model label -> index in the task's class_names (None: drop)
    object_type: int
    with_masks: bool
    device: str
    model_type: str  # cfg.model.type, e.g. "RTMDet", "FasterRCNN"
    model_name: str | None = None  # the executor's short name when the checkpoint says it


# --- model package -> detector --------------------------------------------------------------


def package_files(package: Any) -> tuple[Path, Path]:
    """``(config.py, weights)`` of a model package (:class:`contract.models.ModelPackage`).

    The weights are ``model.pth``; a package with another single ``.pth`` (hand-made or older)
    is accepted too.

    Raises:
        ExecutorError: MODEL when the package lacks the config or the weights.
    """
    config = package.find_file(CONFIG_FILE)
    try:
        weights = package.find_file(WEIGHTS_FILE)
    except ExecutorError:
        others = [path for path in package.files if path.suffix == ".pth"]
        if len(others) != 1:
            raise
        weights = others[0]
    return config, weights


def load_config(config_file: Path) -> Any:
    """The dumped mmdet config of a package (MODEL error when it cannot be read)."""
    from . import config

    # The config is Python the training wrote: it has the checkpoint's trust (see
    # openmmlab.checkpoint), never a user-supplied file.
    return config.load_config(config_file)


def config_has_masks(cfg: Any) -> bool:
    """Whether the configured model predicts instance masks."""
    model = cfg.model
    roi_head = model.get("roi_head") or {}
    if roi_head.get("mask_head") is not None:
        return True
    head = model.get("bbox_head") or {}
    return "Ins" in str(head.get("type", "")) or model.get("mask_head") is not None


def load_detector(
    package: Any,
    object_type: int,
    class_names: Sequence[str],
    device: str = "cpu",
    *,
    score_thr: float | None = None,
    iou_thr: float | None = None,
    fp16: bool = False,
    channels_last: bool | None = None,
) -> Detector:
    """Rebuild the detector of a model package on ``device``.

    ``object_type`` is the executor's target, ``class_names`` the task's classes: the model's
    labels are mapped to them by name (a model class the task does not list is dropped, with a
    warning). ``channels_last`` (default: on the CPU only) applies :func:`use_channels_last`.

    Raises:
        ExecutorError: MODEL for a missing, corrupt or mismatching config / checkpoint,
            OBJECT_TYPE when the model was made for the other target.
    """
    config_file, weights_file = package_files(package)
    cfg = load_config(config_file)
    checkpoint = _load_checkpoint(weights_file)
    meta = checkpoint.get("meta") or {}
    _check_object_type(object_type, meta, getattr(package, "info", {}) or {}, cfg)
    if score_thr is not None or iou_thr is not None:
        from . import config

        # Before the build: the heads copy test_cfg when they are constructed.
        config.set_thresholds(cfg, score_thr, iou_thr)
    model = _build_model(cfg, config_file)
    _load_weights(model, checkpoint["state_dict"], weights_file)
    model.eval()
    model.to(device)
    on_gpu = str(device).startswith("cuda")
    if channels_last is None:
        channels_last = not on_gpu
    if channels_last:
        use_channels_last(model)
    if fp16 and on_gpu:
        enable_fp16(model, device)
    elif fp16:
        log.info("fp16 is for GPUs (half-precision CPU kernels are slower): full precision")

    model_classes = _model_classes(checkpoint, cfg, package, class_names)
    label_map = _label_map(model_classes, class_names)
    return Detector(
        model=model,
        cfg=cfg,
        model_classes=model_classes,
        label_map=label_map,
        object_type=object_type,
        with_masks=config_has_masks(cfg),
        device=str(device),
        model_type=str(cfg.model.get("type", "")),
        model_name=str(meta.get("model") or (cfg.get("ymir") or {}).get("model") or "") or None,
    )


def _load_checkpoint(weights_file: Path) -> dict:
    from ..openmmlab.checkpoint import load_checkpoint

    return load_checkpoint(weights_file, map_location="cpu")


def _check_object_type(object_type: int, meta: dict, info: dict, cfg: Any) -> None:
    names = {DETECTION: "detection", 3: "semantic segmentation", 4: "instance segmentation"}
    ymir = cfg.get("ymir") or {}  # what the training's config surgery recorded
    declarations: tuple[tuple[str, Any], ...] = (
        ("checkpoint", meta.get("object_type")),
        ("config", ymir.get("object_type")),
        ("package", info.get("object_type")),
    )
    for where, declared in declarations:
        if declared in (None, ""):
            continue
        try:
            declared = int(declared)
        except (TypeError, ValueError):
            continue
        if declared != object_type:
            raise ExecutorError(
                ErrorCode.OBJECT_TYPE,
                f"the model does {names.get(declared, declared)} (object_type {declared} in its "
                f"{where}), this executor does {names.get(object_type, object_type)}",
            )
    if object_type == INSTANCE_SEGMENTATION and not config_has_masks(cfg):
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"the model ({cfg.model.get('type')}) predicts boxes only; instance segmentation "
            "needs a model with a mask head",
        )


def _build_model(cfg: Any, config_file: Path) -> Any:
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get("default_scope", "mmdet"))
    try:
        return MODELS.build(cfg.model)
    except Exception as error:
        raise ExecutorError(
            ErrorCode.MODEL, f"cannot build the model of {config_file.name}: {_line(error)}"
        ) from error


def _load_weights(model: Any, state_dict: dict, weights_file: Path) -> None:
    state = {
        (key[len("module.") :] if key.startswith("module.") else key): value
        for key, value in state_dict.items()
    }
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # size mismatches: weights of another config
        raise ExecutorError(
            ErrorCode.MODEL,
            f"the weights {weights_file.name} do not fit the model config: {_line(error)}",
        ) from error
    missing = [key for key in result.missing_keys if not key.startswith("data_preprocessor.")]
    if missing:
        raise ExecutorError(
            ErrorCode.MODEL,
            f"the weights {weights_file.name} do not fit the model config: {len(missing)} "
            f"parameters missing (e.g. {', '.join(missing[:3])})",
        )
    if result.unexpected_keys:
        log.warning(
            "%s: %d unexpected parameters ignored (e.g. %s)",
            weights_file.name,
            len(result.unexpected_keys),
            ", ".join(result.unexpected_keys[:3]),
        )


def _model_classes(
    checkpoint: dict, cfg: Any, package: Any, class_names: Sequence[str]
) -> list[str]:
    from ..openmmlab.checkpoint import class_names as checkpoint_classes

    names = checkpoint_classes(checkpoint) or getattr(package, "class_names", None)
    if not names:
        try:
            names = list(cfg.test_dataloader.dataset.metainfo["classes"])
        except (AttributeError, KeyError, TypeError):
            names = None
    if not names:
        log.warning("the model does not name its classes; assuming the task's class_names order")
        names = list(class_names)
    return [str(name) for name in names]


def _label_map(model_classes: Sequence[str], class_names: Sequence[str]) -> list[int | None]:
    lookup = {str(name).strip().lower(): index for index, name in enumerate(class_names)}
    mapping = [lookup.get(str(name).strip().lower()) for name in model_classes]
    dropped = [name for name, index in zip(model_classes, mapping) if index is None]
    if dropped:
        log.warning(
            "the model's classes %s are not in this task's class_names; their predictions "
            "are dropped",
            ", ".join(dropped),
        )
    if all(index is None for index in mapping):
        raise ExecutorError(
            ErrorCode.MODEL,
            f"none of the model's classes ({', '.join(model_classes)}) is in class_names "
            f"({', '.join(class_names)})",
        )
    return mapping


# --- memory format and fp16 ------------------------------------------------------------------


def use_channels_last(model: Any) -> None:
    """Store the model's convolution weights channels-last (NHWC); mmcv's ops still see NCHW.

    Why: oneDNN computes NHWC convolutions faster than NCHW ones. Measured on this executor's
    CPU benchmark (bare forward, 2 cores, 320 px): RTMDet-tiny 1.24x, YOLOX-tiny 1.21x,
    RetinaNet-R18 1.18x, Mask R-CNN-R50 1.18x; Faster R-CNN-R50 and RTMDet-Ins-tiny, whose time
    goes to their RoI head's fully connected layers and mask post-processing, gain little.
    Predictions stay equal up to float rounding. GPUs are left alone: unmeasured there.

    A convolution with NHWC weights returns NHWC feature maps. PyTorch's own operators follow
    strides, but mmcv's compiled ops (``RoIAlign``, deformable convolutions, ...) read their
    tensors' memory as NCHW: RoIAlign fed an NHWC map silently returns other numbers. So every
    module of ``mmcv.ops`` keeps its own weights (a deformable convolution's, and those of the
    convolution computing its offsets) in NCHW and gets its tensor inputs made contiguous first.
    """
    import torch

    model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if type(module).__module__.startswith("mmcv.ops.") and not getattr(
            module, "_ymir_nchw_inputs", False
        ):
            module.to(memory_format=torch.contiguous_format)
            module.forward = _with_contiguous_inputs(module.forward, torch)
            module._ymir_nchw_inputs = True


def _with_contiguous_inputs(forward: Callable, torch: Any) -> Callable:
    def contiguous(value: Any) -> Any:
        return value.contiguous() if torch.is_tensor(value) else value

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        inputs = [contiguous(value) for value in args]
        return forward(*inputs, **{name: contiguous(value) for name, value in kwargs.items()})

    return wrapped


def enable_fp16(model: Any, device: str) -> None:
    """Run the network's convolutions under float16 autocast, post-processing in float32.

    Each module of :data:`_HALF_MODULES` that exists gets its ``forward`` wrapped: autocast on
    the way in, every floating tensor of the output cast back to float32 on the way out. Box
    decoding, score thresholds and NMS (in ``predict_by_feat``, outside ``forward``) therefore
    see float32 only.
    """
    import torch

    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    for path in _HALF_MODULES:
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if module is None or getattr(module, "_ymir_fp16", False):
            continue
        module.forward = _autocast_forward(module.forward, device_type, torch)
        module._ymir_fp16 = True


def _autocast_forward(forward: Callable, device_type: str, torch: Any) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _autocast(device_type, torch):
            output = forward(*args, **kwargs)
        return _to_float32(output, torch)

    return wrapped


def _autocast(device_type: str, torch: Any) -> Any:
    if hasattr(torch, "autocast"):  # torch >= 1.10
        return torch.autocast(device_type, dtype=torch.float16)
    if device_type == "cuda":  # torch 1.8 / 1.9 (the cu111 image): CUDA autocast only
        return torch.cuda.amp.autocast()
    log.warning("this torch has no CPU autocast; fp16 is ignored on the CPU")
    return contextlib.nullcontext()


def _to_float32(value: Any, torch: Any) -> Any:
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        converted = [_to_float32(item, torch) for item in value]
        return type(value)(converted) if isinstance(value, list) else tuple(converted)
    if isinstance(value, dict):
        return {key: _to_float32(item, torch) for key, item in value.items()}
    return value


def _line(error: BaseException) -> str:
    return (" ".join(str(error).split()) or type(error).__name__)[:300]
