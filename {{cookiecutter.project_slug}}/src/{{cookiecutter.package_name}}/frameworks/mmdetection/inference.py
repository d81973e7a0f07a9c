"""Batched MMDetection inference: a model package in, boxes or instance masks out.

What :func:`infer` does, and why:

- **The model comes from the package**, not from the image: ``config.py`` (the config the
  training dumped, already holding the classes and the image size) and ``model.pth`` (an
  mmengine checkpoint whose ``meta`` names the classes and the object type). The checkpoint is
  loaded with :func:`..openmmlab.checkpoint.load_checkpoint`, which unpickles fully only the
  files the executor trusts (see that module); a missing, corrupt or mismatching file is error
  300004, a model made for the other target 300005.
- **Thresholds** ``confidence_threshold`` and ``iou_threshold`` go into the config's
  ``model.test_cfg`` before the model is built (``rcnn.*`` for two-stage models), so the
  heads' own post-processing applies them and nothing is filtered twice.
- **Batches**: a torch ``DataLoader`` with ``num_workers_per_gpu`` processes decodes and
  transforms images (the config's test pipeline) while the model runs on the previous batch of
  ``batch_size_per_gpu`` images. Images are decoded with Pillow *without* EXIF rotation (the
  platform's coordinate frame; OpenCV would rotate) and handed over as BGR like mmcv loads them.
- **Ranks**: with several GPUs (or ``world_size`` > 1 on the CPU, gloo) candidates are sharded
  ``candidates[rank::world_size]`` and each rank predicts its share (:mod:`..openmmlab.
  distributed`). Every candidate is predicted exactly once. Predictions reach the executor
  through files, one per rank, read back in candidate order (:mod:`..openmmlab.rows`): nothing
  is gathered in memory, whatever the number of candidates.
- **Results**: boxes go to ``ctx.results`` (a :class:`DetectionResult`, which rounds them to
  integers and clips them to the image), instance masks to a :class:`SegmentationResult`, which
  writes them as compressed RLE. Masks travel between processes as RLE too.
- **Corrupt candidates** are logged and get an empty result; the run succeeds.
- **Memory format**: on the CPU the network's convolutions run channels-last (NHWC), which
  oneDNN computes 1.2x faster for most listed models; mmcv's compiled ops still get NCHW
  inputs (see :func:`use_channels_last`). GPUs keep PyTorch's default layout.
- **fp16** (``fp16=True``, or the optional ``fp16`` hyper-parameter; GPUs only, the CPU
  ignores it): backbone, neck and head convolutions run under float16 autocast, but every
  head hands float32 tensors to the post-processing, so box decoding and NMS (mmcv's NMS
  rejects half) stay in float32.
- **Mining + inference in one container** (``run_mining`` and ``run_infer``): ``__main__``
  runs mining, then inference, in one process and with the same merged hyper-parameters.
  Mining's forward passes already produce the boxes with these thresholds, so mining leaves
  its rows files (per-image predictions) in :data:`SHARED_PREDICTIONS` (module level, one
  process) and :func:`infer` reads them instead of running the model again when the model
  files, thresholds, classes and candidates are the same (:func:`share_key`); otherwise it
  predicts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ...contract.errors import ErrorCode, ExecutorError
from ...contract.images import open_image
from ...contract.masks import encode_rle
from ..openmmlab import distributed
from ..openmmlab.rows import RowFiles
from ..openmmlab.weights import CONFIG_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from ...contract.context import CandidateContext, InferenceContext

log = logging.getLogger(__name__)

DETECTION, INSTANCE_SEGMENTATION = 2, 4
# Pipeline steps that load annotations: candidates have none.
_ANNOTATION_STEPS = ("LoadAnnotations", "LoadPanopticAnnotations", "LoadTrackAnnotations")
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
class Prediction:
    """One candidate's predictions in the writers' terms (picklable: crosses processes).

    ``boxes``: ``(x, y, w, h, class_index, score)`` floats in original image pixels, class
    indices into the task's ``class_names``. ``masks`` (instance segmentation only):
    ``(rle, class_index, score)`` with ``rle`` a compressed RLE dict of the image size.
    ``error`` is set (and everything else empty) when the image could not be read.
    """

    width: int = 0
    height: int = 0
    boxes: list = field(default_factory=list)
    masks: list | None = None
    error: str | None = None

    def to_json(self) -> dict:
        """A JSON-serialisable form (events between processes carry JSON)."""
        return {
            "size": [self.width, self.height],
            "boxes": [
                [float(v) for v in box[:4]] + [int(box[4]), float(box[5])] for box in self.boxes
            ],
            "masks": None
            if self.masks is None
            else [[dict(rle), int(label), float(score)] for rle, label, score in self.masks],
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict) -> Prediction:
        """The :class:`Prediction` :meth:`to_json` described."""
        masks = data.get("masks")
        return cls(
            width=int(data["size"][0]),
            height=int(data["size"][1]),
            boxes=[tuple(box) for box in data.get("boxes") or []],
            masks=None if masks is None else [tuple(item) for item in masks],
            error=data.get("error"),
        )


@dataclass
class Detector:
    """A model rebuilt from a package, ready for :func:`predict_batches`."""

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


# --- data --------------------------------------------------------------------------------------


def test_pipeline(cfg: Any) -> Any:
    """The config's test pipeline, fed with decoded arrays and without annotation loading."""
    from mmengine.dataset import Compose

    from . import config

    steps = [
        step
        for step in config.test_pipeline(cfg)
        if str(step.get("type", "")).split(".")[-1] not in _ANNOTATION_STEPS
    ]
    if steps and "Load" in str(steps[0].get("type", "")):
        steps = steps[1:]
    # The scope prefix lets the step resolve even where mmdet is not the default scope.
    return Compose([{"type": "mmdet.LoadImageFromNDArray"}, *steps])


def read_bgr(path: Path) -> np.ndarray:
    """An image as mmcv loads it (HxWx3 uint8, BGR), but never EXIF-rotated.

    Raises:
        ExecutorError: IMAGE when the file cannot be decoded.
    """
    import cv2  # mmcv's own dependency

    # One C pass into BGR order: a reversed numpy view made contiguous cost six times more
    # (0.8 ms for a 640x480 image, a few percent of a small model's CPU inference).
    return cv2.cvtColor(np.asarray(open_image(path), dtype=np.uint8), cv2.COLOR_RGB2BGR)


ViewFn = Callable[[np.ndarray, int], Sequence[np.ndarray]]


class CandidateDataset:
    """``(index, path)`` items -> the test pipeline's packed inputs, in a DataLoader worker.

    ``views(image, index)`` turns one decoded image into the images to predict (default: the
    image itself; CALD mining adds augmented copies); without a ``pipeline`` only the size is
    returned. An unreadable image becomes ``{"index", "path", "error"}`` instead of raising, so
    one bad file never stops a batch.
    """

    def __init__(
        self, items: Sequence[tuple[int, Path]], pipeline: Any, views: ViewFn | None = None
    ):
        self.items = items  # not copied: a million candidates' items are made on demand
        self.pipeline = pipeline
        self.views = views

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict:
        index, path = self.items[position]
        try:
            image = read_bgr(path)
        except ExecutorError as error:
            return {"index": index, "path": str(path), "error": error.message}
        height, width = image.shape[:2]
        if self.pipeline is None:  # decoding was the point (random mining): nothing to predict
            return {"index": index, "path": str(path), "size": (width, height), "views": []}
        views = self.views(image, index) if self.views is not None else [image]
        packed = []
        for view in views:
            data = self.pipeline({"img": view, "img_id": index})
            packed.append((data["inputs"], data["data_samples"]))
        return {"index": index, "path": str(path), "size": (width, height), "views": packed}


def keep_list(batch: list) -> list:
    """DataLoader collate: keep the items as they are (the model's preprocessor stacks)."""
    return batch


def make_loader(dataset: CandidateDataset, batch_size: int, workers: int, device: str) -> Any:
    """A DataLoader that prepares the next batches while the model runs on this one.

    ``workers`` is what the task asks for; on the CPU it is capped to the cores the model
    leaves free (:func:`..openmmlab.distributed.loader_workers`).
    """
    from torch.utils.data import DataLoader

    workers = distributed.loader_workers(workers, str(device).startswith("cuda"))
    options = {}
    if workers:
        # Two batches per worker in flight (torch < 2 refuses the option without workers).
        options["prefetch_factor"] = 2
    return DataLoader(
        dataset,
        batch_size=max(1, int(batch_size)),
        shuffle=False,
        num_workers=workers,
        collate_fn=keep_list,
        # Page-locked host memory makes the host -> GPU copy asynchronous.
        pin_memory=str(device).startswith("cuda"),
        **options,
    )


# --- prediction ------------------------------------------------------------------------------


@dataclass
class BatchOutput:
    """What :func:`predict_batches` yields per candidate: the samples of each of its views."""

    index: int
    path: str
    size: tuple[int, int] | None  # (width, height); None for an unreadable image
    samples: list  # DetDataSample per view (pred_instances at original image scale)
    error: str | None = None
    head_outputs: list = field(default_factory=list)  # per view, when capture_head is set


def predict_batches(
    detector: Detector,
    items: Sequence[tuple[int, Path]],
    *,
    batch_size: int,
    workers: int,
    views: ViewFn | None = None,
    capture_head: Callable[[Any, int], Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[BatchOutput]:
    """Predict ``items`` batch by batch; yields one :class:`BatchOutput` per item, in order.

    ``capture_head(outputs, position)``, when given, receives the dense head's raw outputs of
    each forward pass (what ``bbox_head.forward`` returned) and the position of an image in that
    pass; what it returns is stored per view in ``head_outputs`` (ALDD mining reads its class
    maps there, from the same forward pass that made the predictions). Views of a batch are
    forwarded in chunks of at most ``batch_size`` images.
    """
    import torch

    pipeline = test_pipeline(detector.cfg)
    loader = make_loader(
        CandidateDataset(items, pipeline, views), batch_size, workers, detector.device
    )
    if str(detector.device).startswith("cuda"):
        # Pinned batches can be copied without blocking the host.
        detector.model.data_preprocessor._non_blocking = True
    captured: list = []
    handle = None
    if capture_head is not None:
        head = getattr(detector.model, "bbox_head", None)
        if head is None:
            raise ExecutorError(ErrorCode.CONFIG, f"{detector.model_type} has no dense head")
        handle = head.register_forward_hook(
            lambda _module, _inputs, output: captured.append(output)
        )
    done, total = 0, len(items)
    try:
        for batch in loader:
            flat = [(item, view) for item in batch if "error" not in item for view in item["views"]]
            samples: list = []
            heads: list = []
            for start in range(0, len(flat), max(1, int(batch_size))):
                chunk = flat[start : start + max(1, int(batch_size))]
                data = {
                    "inputs": [view[0] for _, view in chunk],
                    "data_samples": [view[1] for _, view in chunk],
                }
                captured.clear()
                with torch.no_grad():
                    samples.extend(detector.model.test_step(data))
                if capture_head is not None:
                    heads.extend(
                        capture_head(captured[-1], position) for position in range(len(chunk))
                    )
            position = 0
            for item in batch:
                if "error" in item:
                    log.warning("cannot read candidate %s: %s", item["path"], item["error"])
                    yield BatchOutput(item["index"], item["path"], None, [], error=item["error"])
                    continue
                count = len(item["views"])
                yield BatchOutput(
                    item["index"],
                    item["path"],
                    tuple(item["size"]),
                    samples[position : position + count],
                    head_outputs=heads[position : position + count] if heads else [],
                )
                position += count
            done += len(batch)
            if progress is not None:
                progress(done, total)
    finally:
        if handle is not None:
            handle.remove()


def to_prediction(detector: Detector, output: BatchOutput, view: int = 0) -> Prediction:
    """The writer-ready :class:`Prediction` of one view of a :class:`BatchOutput`."""
    if output.error is not None or output.size is None:
        return Prediction(error=output.error or "unreadable")
    width, height = output.size
    instances = output.samples[view].pred_instances
    bboxes = instances.bboxes.float().cpu().numpy()
    scores = instances.scores.float().cpu().numpy()
    labels = instances.labels.cpu().numpy().astype(np.int64)
    masks = None
    if (
        detector.with_masks
        and detector.object_type == INSTANCE_SEGMENTATION
        and "masks" in instances
    ):
        masks = instances.masks.cpu().numpy().astype(bool)
    # Vectorised: a model keeps up to a hundred or more instances per image, and a Python loop
    # over them cost 15% of yolox_tiny's CPU inference time.
    # Model label -> class index, -1 for none; the last entry catches labels the map lacks.
    lookup = np.array([-1 if index is None else index for index in detector.label_map] + [-1])
    outside = (labels < 0) | (labels >= len(detector.label_map))
    classes = lookup[np.where(outside, -1, labels)]
    keep = (classes >= 0) & np.isfinite(scores) & np.isfinite(bboxes).all(axis=1)
    kept = np.flatnonzero(keep)
    x1, y1, x2, y2 = (bboxes[kept, column].tolist() for column in range(4))
    class_indices = classes[kept].tolist()
    clipped = np.clip(scores[kept], 0.0, 1.0).tolist()
    prediction = Prediction(width=width, height=height, masks=[] if masks is not None else None)
    prediction.boxes = [
        (left, top, right - left, bottom - top, class_index, score)
        for left, top, right, bottom, class_index, score in zip(
            x1, y1, x2, y2, class_indices, clipped
        )
    ]
    if masks is not None:
        kept_masks: list = []
        for position, class_index, score in zip(kept.tolist(), class_indices, clipped):
            mask = masks[position]
            if mask.shape == (height, width) and mask.any():
                kept_masks.append((encode_rle(mask), class_index, score))
        prediction.masks = kept_masks
    return prediction


def add_to_results(results: Any, path: Path, prediction: Prediction, object_type: int) -> None:
    """Hand one candidate's prediction to the task's result writer."""
    if prediction.error is not None:
        return  # the writer lists every candidate; an unreadable one stays empty
    if object_type == INSTANCE_SEGMENTATION:
        results.add(path, prediction.width, prediction.height, prediction.masks or [])
    else:
        results.add(path, prediction.boxes, size=(prediction.width, prediction.height))


class ShardItems(Sequence):
    """This rank's ``(candidate index, path)`` items of ``candidates[rank::world]``, made when a
    loader asks for them (a list of a million tuples and paths would cost half a gigabyte)."""

    def __init__(self, candidates: Sequence[str], rank: int = 0, world: int = 1) -> None:
        self.candidates = candidates
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(range(self.rank, len(self.candidates), self.world))

    # Only the loader reads it, one position at a time: no slice overload.
    def __getitem__(self, position: int) -> tuple[int, Path]:  # type: ignore[override]
        if not 0 <= position < len(self):
            raise IndexError(position)
        index = self.rank + position * self.world
        return index, Path(self.candidates[index])


def shard_items(candidates: Sequence[str]) -> ShardItems:
    """This rank's share of the job's candidates (:func:`..openmmlab.distributed.shard`)."""
    return ShardItems(candidates, distributed.rank(), distributed.world_size())


def candidate_texts(candidates: Sequence[Any]) -> list[str]:
    """The candidates as strings, for a job's payload; the context's compact list shares its
    own strings instead of making a second million of them."""
    texts = getattr(candidates, "texts", None)
    return list(texts) if texts is not None else [str(path) for path in candidates]


# --- mining + inference sharing ----------------------------------------------------------------

# share_key -> mining's rows files (a prediction per candidate); filled by mining when inference
# follows in the same container, taken by inference (one process: __main__ runs mining, then
# infer).
SHARED_PREDICTIONS: dict[str, RowFiles] = {}


def take_shared(key: str) -> RowFiles | None:
    """Mining's rows for ``key``, if any; rows made for anything else are deleted."""
    rows = SHARED_PREDICTIONS.pop(key, None)
    for other in SHARED_PREDICTIONS.values():
        other.remove()
    SHARED_PREDICTIONS.clear()
    return rows


def share_key(
    package: Any,
    object_type: int,
    class_names: Sequence[str],
    candidates: Sequence[Path],
    score_thr: float,
    iou_thr: float | None,
) -> str:
    """What must be equal for mining's predictions to be inference's.

    The model files (path, size, modification time), the target, the classes, the candidate
    list and both thresholds; anything else (batch size, workers) does not change predictions.
    """
    digest = hashlib.sha1()
    for path in sorted(str(path) for path in getattr(package, "files", [])):
        stat = Path(path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(f"{object_type}\0{list(class_names)}\0{score_thr!r}\0{iou_thr!r}\n".encode())
    for candidate in candidates:
        digest.update(str(candidate).encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def thresholds(params: Any) -> tuple[float, float | None]:
    """``(confidence_threshold, iou_threshold)`` of a task (typed and range-checked by their
    declarations); ``None`` keeps the config's IoU (mining alone declares none)."""
    return params.confidence_threshold, params.get("iou_threshold")


def loader_settings(params: Any) -> tuple[int, int]:
    """``(batch_size_per_gpu, num_workers_per_gpu)``, typed and range-checked."""
    return params.batch_size_per_gpu, params.num_workers_per_gpu


# --- jobs (one process, or one per rank under torchrun) ---------------------------------------


def package_payload(package: Any) -> dict:
    """The JSON-serialisable part of a model package that a worker process needs."""
    info = getattr(package, "info", {}) or {}
    return {
        "files": [str(path) for path in getattr(package, "files", [])],
        "class_names": getattr(package, "class_names", None),
        "object_type": info.get("object_type"),
    }


def package_from_payload(payload: dict) -> Any:
    """A :class:`contract.models.ModelPackage` again, in a worker process."""
    from ...contract.models import ModelPackage

    info = {} if payload.get("object_type") is None else {"object_type": payload["object_type"]}
    return ModelPackage(
        info=info,
        files=[Path(path) for path in payload["files"]],
        class_names=payload.get("class_names"),
    )


def job_payload(ctx: CandidateContext, kind: str, *, fp16: bool | None = None) -> dict:
    """What :func:`infer_job` (and mining's job) need from the task context, as JSON."""
    score_thr, iou_thr = thresholds(ctx.params)
    batch_size, workers = loader_settings(ctx.params)
    return {
        "kind": kind,
        "package": package_payload(ctx.model),
        "object_type": int(ctx.object_type),
        "class_names": list(ctx.class_names),
        "candidates": candidate_texts(ctx.candidates()),
        "score_thr": score_thr,
        "iou_thr": iou_thr,
        "batch_size": batch_size,
        "workers": workers,
        "fp16": ctx.params.fp16 if fp16 is None else bool(fp16),
    }


def job_device(payload: dict) -> str:
    """This rank's device: its GPU when the job runs on GPUs, else the CPU.

    The launcher made this rank's GPU the current device (the task's first GPU in the executor
    process, ``cuda:<local rank>`` under torchrun, where only the task's GPUs are visible).
    """
    import torch

    if payload.get("cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def job_detector(payload: dict, *, score_thr: float | None = None) -> Detector:
    """The job's detector on this rank's device (thresholds from the payload by default)."""
    quiet_deprecations()
    return load_detector(
        package_from_payload(payload["package"]),
        payload["object_type"],
        payload["class_names"],
        job_device(payload),
        score_thr=payload["score_thr"] if score_thr is None else score_thr,
        iou_thr=payload["iou_thr"],
        fp16=payload["fp16"],
    )


def quiet_deprecations() -> None:
    """Hide torch deprecation notices raised inside mmdet / mmcv: they say nothing to a user
    and the YMIR UI shows only the last lines of the log."""
    import warnings

    for message in (r".*torch\.cuda\.amp\.", r".*torch\.meshgrid.*indexing", r".*torch\.jit\."):
        warnings.filterwarnings("ignore", message=message)


def progress_reporter(channel: Any, total: int, step: float = 0.01) -> Callable[[int, int], None]:
    """``(done, this rank's total)`` -> ``channel.progress`` at most every ``step``.

    Only rank 0 reports; shards differ by at most one image, so its fraction is everyone's.
    """
    state = {"last": -1.0, "logged": -1.0}

    def report(done: int, shard_total: int) -> None:
        fraction = done / max(1, shard_total)
        if fraction - state["last"] >= step or done >= shard_total:
            state["last"] = fraction
            channel.progress(fraction)
        if fraction - state["logged"] >= 0.1 or done >= shard_total:
            state["logged"] = fraction
            log.info("%d/%d images (%.0f%%)", done, shard_total, 100 * fraction)

    return report


def infer_job(payload: dict, channel: Any) -> None:
    """The inference job on one rank: its shard of candidates -> predictions -> its rows file.

    Runs under :func:`..openmmlab.distributed.launch`; each rank writes
    ``{"prediction": Prediction.to_json()}`` per candidate to its file in ``payload["rows"]``.
    """
    items = shard_items(payload["candidates"])
    detector = job_detector(payload)
    with RowFiles(payload["rows"]).writer(distributed.rank()) as rows:
        for output in predict_batches(
            detector,
            items,
            batch_size=payload["batch_size"],
            workers=payload["workers"],
            progress=progress_reporter(channel, len(items)),
        ):
            rows.write(output.index, {"prediction": to_prediction(detector, output).to_json()})


# --- the task ----------------------------------------------------------------------------------


def infer(
    ctx: InferenceContext, *, fp16: bool | None = None, world_size: int | None = None
) -> None:
    """Predict every candidate with the package's model and fill ``ctx.results``.

    ``fp16`` (default: the optional ``fp16`` hyper-parameter, else False) runs the network in
    half precision with float32 post-processing. ``world_size`` (CPU only; default
    ``$YMIR_CPU_PROCESSES`` or 1) runs that many gloo processes; with GPUs there is one
    process per GPU of the task.
    """
    candidates = ctx.candidates()
    score_thr, iou_thr = thresholds(ctx.params)
    key = share_key(ctx.model, ctx.object_type, ctx.class_names, candidates, score_thr, iou_thr)
    rows = take_shared(key)
    try:
        if rows is not None:
            log.info("inference reuses mining's predictions of these %d images", len(candidates))
        else:
            rows = RowFiles.create(ctx.work_dir, "predictions")
            payload = dict(job_payload(ctx, "infer", fp16=fp16), rows=str(rows.directory))
            distributed.run_task_job(infer_job, payload, ctx, {}, processes=world_size)
        unreadable = 0
        # One prediction at a time, in candidate order (every candidate exactly once).
        for index, row in rows.merged(len(candidates)):
            prediction = Prediction.from_json(row["prediction"])
            unreadable += prediction.error is not None
            add_to_results(ctx.results, candidates[index], prediction, ctx.object_type)
    finally:
        if rows is not None:
            rows.remove()
    log.info("inference: %d images predicted, %d unreadable", len(candidates), unreadable)


def _line(error: BaseException) -> str:
    return (" ".join(str(error).split()) or type(error).__name__)[:300]
