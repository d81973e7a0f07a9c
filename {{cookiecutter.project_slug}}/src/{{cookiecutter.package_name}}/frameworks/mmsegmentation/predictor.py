"""A trained stage -> batched per-image class scores; shared by inference and mining.

The model is rebuilt from the stage's own files (``config.py``, ``model.pth``), never from the
model list: whatever the training run changed (classes, background, image size,
``cfg_options``) comes back with it. Images are decoded and resized in DataLoader workers
(overlapping with the forward pass), batched by equal size (:func:`same_size_batches`: no
padding, so a prediction does not depend on the other images of its batch), normalised on the
device and run through ``encode_decode`` once per batch. mmseg's own ``test_step`` asserts
equal sizes in a batch instead of grouping them, which is why the batches are assembled here.

Trust: ``config.py`` is Python that mmengine executes when it reads it; like the weights it is
a file of the model package the platform extracted for this task (see
:mod:`..openmmlab.checkpoint` for why those are trusted), never anything from a dataset.

Failures: a missing or unreadable file of the stage -> MODEL (300004); a stage that is not a
semantic segmentation model (a detection package, a config without the executor's labels) ->
OBJECT_TYPE (300005). An unreadable candidate image is logged and yields no scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules
from torch.utils.data import DataLoader, Dataset

from ...contract import images
from ...contract.errors import ErrorCode, ExecutorError
from ...contract.object_types import ObjectType
from ..openmmlab import checkpoint as checkpoints
from ..openmmlab import distributed
from ..openmmlab.weights import CONFIG_FILE, WEIGHTS_FILE
from .config import inference_model_config
from .data import LabelSet

log = logging.getLogger(__name__)

# Transforms of the dumped test pipeline that this module does itself.
_SKIPPED_TRANSFORMS = {"LoadImageFromFile", "LoadAnnotations", "PackSegInputs"}


@dataclass
class LoadedModel:
    """A stage ready to predict: the model (eval mode, on its device) and what its labels mean."""

    model: Any
    config: Config
    labels: LabelSet
    # model label -> index into the task's class_names, -1 = not reported (background)
    to_task_class: np.ndarray
    device: torch.device

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes


def load(
    files: Sequence[Path], class_names: Sequence[str], device: str, info: dict | None = None
) -> LoadedModel:
    """Build the model of a stage from its files.

    ``class_names`` are the task's (the platform passes the model's own); the model's labels are
    mapped to them by name, and model classes the task does not list are not reported.
    """
    weights = _find(files, WEIGHTS_FILE)
    config_path = _find(files, CONFIG_FILE)
    object_type = (info or {}).get("object_type")
    if object_type not in (None, "") and str(object_type) != str(ObjectType.SEMANTIC_SEGMENTATION):
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"the model is for object_type {object_type}; this executor does semantic "
            f"segmentation (object_type {ObjectType.SEMANTIC_SEGMENTATION})",
        )
    try:
        cfg = Config.fromfile(str(config_path))
    except Exception as error:
        raise ExecutorError(
            ErrorCode.MODEL, f"cannot read the model's {CONFIG_FILE}: {_one_line(error)}"
        ) from error
    ymir = cfg.get("ymir")
    model_type = str(cfg.get("model", {}).get("type", ""))
    if not isinstance(ymir, dict) or "labels" not in ymir or "Encoder" not in model_type:
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"the model's {CONFIG_FILE} is not a semantic segmentation model of this executor "
            f"(model type {model_type or 'unknown'!r})",
        )
    labels = LabelSet.from_dict(ymir["labels"])
    checkpoint = checkpoints.load_checkpoint(weights)
    meta_type = checkpoint["meta"].get("object_type")
    if meta_type not in (None, "") and str(meta_type) != str(ObjectType.SEMANTIC_SEGMENTATION):
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"{WEIGHTS_FILE} holds a model for object_type {meta_type}, not semantic segmentation",
        )

    register_all_modules(init_default_scope=True)
    model = MODELS.build(inference_model_config(cfg))
    state = _strip_prefix(checkpoint["state_dict"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ExecutorError(
            ErrorCode.MODEL,
            f"{WEIGHTS_FILE} does not fit the model of {CONFIG_FILE}: {_one_line(error)}",
        ) from error
    torch_device = torch.device(device)
    model.to(torch_device).eval()
    return LoadedModel(
        model=model,
        config=cfg,
        labels=labels,
        to_task_class=_class_mapping(labels, class_names),
        device=torch_device,
    )


def _find(files: Sequence[Path], name: str) -> Path:
    for path in files:
        if Path(path).name == name:
            return Path(path)
    listed = ", ".join(Path(path).name for path in files) or "no files"
    raise ExecutorError(ErrorCode.MODEL, f"the model has no {name} ({listed})")


def _strip_prefix(state: dict) -> dict:
    # DDP-saved weights carry a "module." prefix on every key.
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def _class_mapping(labels: LabelSet, class_names: Sequence[str]) -> np.ndarray:
    lookup = {str(name).strip().lower(): index for index, name in enumerate(class_names)}
    mapping = np.full(labels.num_classes, -1, dtype=np.int64)
    unknown = []
    for label, name in enumerate(labels.model_classes):
        if labels.background and label == 0:
            continue
        index = lookup.get(str(name).strip().lower())
        if index is None:
            unknown.append(name)
        else:
            mapping[label] = index
    if unknown:
        log.warning("model classes not in this task's class_names are not reported: %s", unknown)
    if not (mapping >= 0).any():
        raise ExecutorError(
            ErrorCode.MODEL,
            f"none of the model's classes {list(labels.class_names)} is in class_names "
            f"{list(class_names)}",
        )
    return mapping


class _Images(Dataset):
    """Candidate images decoded (no EXIF rotation, BGR like mmcv) and resized for the model."""

    def __init__(self, paths: Sequence[Path], transforms: Compose) -> None:
        self.paths = paths  # not copied: a million candidates' paths are made on demand
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        path = self.paths[index]
        try:
            rgb = np.asarray(images.open_image(path))
        except ExecutorError as error:
            return index, None, None, error.message
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        height, width = bgr.shape[:2]
        results = self.transforms(
            {"img": bgr, "img_shape": (height, width), "ori_shape": (height, width)}
        )
        image = np.ascontiguousarray(results["img"].transpose(2, 0, 1))
        return index, torch.from_numpy(image), (height, width), None


def _collate(batch: list) -> tuple:
    """Pad the batch's images (bottom / right) into one uint8 tensor."""
    ok = [item for item in batch if item[1] is not None]
    failed = [(item[0], item[3]) for item in batch if item[1] is None]
    if not ok:
        return [], None, [], [], failed
    height = max(item[1].shape[1] for item in ok)
    width = max(item[1].shape[2] for item in ok)
    tensor = torch.zeros((len(ok), 3, height, width), dtype=torch.uint8)
    for row, item in enumerate(ok):
        tensor[row, :, : item[1].shape[1], : item[1].shape[2]] = item[1]
    sizes = [tuple(item[1].shape[1:]) for item in ok]
    return [item[0] for item in ok], tensor, sizes, [item[2] for item in ok], failed


def _transforms(cfg: Config) -> Compose:
    pipeline = cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline") or []
    kept = [dict(step) for step in pipeline if step.get("type") not in _SKIPPED_TRANSFORMS]
    return Compose(kept)


@dataclass
class Prediction:
    """The model's raw class scores for one image, before any resizing back."""

    index: int
    logits: torch.Tensor  # C x h x w at the model's input resolution (padding removed)
    original_size: tuple  # (height, width) of the stored image


def same_size_batches(paths: Sequence[Path], batch_size: int) -> list[list[int]]:
    """Batches of indices whose images have the same stored size (read from the headers).

    Equal stored sizes resize to equal model inputs, so a batch needs no padding and each
    image's prediction is the one it gets alone (as in validation): padding would change
    what models with global context (SegFormer's attention, PSPNet's pooling) see. Typical
    YMIR datasets have a few image sizes, so batches stay full; unreadable headers get
    batches of their own (the image then fails to load and is reported).
    """
    groups: dict[Any, list[int]] = {}
    for index, path in enumerate(paths):
        try:
            key: Any = images.image_size(path)
        except (ExecutorError, OSError):
            key = ("unreadable", index)
        groups.setdefault(key, []).append(index)
    return [
        group[start : start + batch_size]
        for group in groups.values()
        for start in range(0, len(group), batch_size)
    ]


def predict(
    loaded: LoadedModel,
    paths: Sequence[Path],
    batch_size: int,
    num_workers: int,
    progress: Any = None,
) -> Iterator[Prediction | tuple]:
    """Yield a :class:`Prediction` per readable image, ``(index, reason)`` per unreadable one.

    ``progress(fraction)`` is called after every batch. On the CPU ``num_workers`` is capped
    to the cores the model leaves free (:func:`..openmmlab.distributed.loader_workers`).
    """
    dataset = _Images(paths, _transforms(loaded.config))
    num_workers = distributed.loader_workers(num_workers, loaded.device.type == "cuda")
    options: dict[str, Any] = {}
    if num_workers > 0:
        # Workers decode and resize the next batches while the model runs (torch < 2 refuses
        # the option without workers).
        options = {"prefetch_factor": 2, "persistent_workers": False}
    loader = DataLoader(
        dataset,
        batch_sampler=same_size_batches(paths, max(1, batch_size)),
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=loaded.device.type == "cuda",
        **options,
    )
    preprocessor = loaded.model.data_preprocessor
    mean = preprocessor.mean.to(loaded.device) if preprocessor._enable_normalize else None
    std = preprocessor.std.to(loaded.device) if preprocessor._enable_normalize else None
    swap = bool(getattr(preprocessor, "channel_conversion", False))
    done = 0
    with torch.no_grad():
        for indices, tensor, sizes, originals, failed in loader:
            for index, reason in failed:
                yield index, reason
            if indices:
                inputs = tensor.to(loaded.device, non_blocking=True).float()
                if swap:
                    inputs = inputs[:, [2, 1, 0], ...]
                if mean is not None:
                    inputs = (inputs - mean) / std
                # Batches hold equal sizes (same_size_batches); should a header have lied,
                # pad after normalising with 0, as training does.
                for row, (height, width) in enumerate(sizes):
                    inputs[row, :, height:, :] = 0
                    inputs[row, :, :, width:] = 0
                shape = tuple(inputs.shape[2:])
                metas = [{"img_shape": shape, "pad_shape": shape} for _ in indices]
                logits = loaded.model.encode_decode(inputs, metas)
                for row, index in enumerate(indices):
                    height, width = sizes[row]
                    yield Prediction(index, logits[row, :, :height, :width], originals[row])
            done += len(indices) + len(failed)
            if progress is not None:
                progress(done / max(1, len(paths)))


def label_map(loaded: LoadedModel, prediction: Prediction, min_score: float = 0.0) -> np.ndarray:
    """The HxW (stored image size) task class index per pixel, -1 = nothing reported.

    Scores are resized back bilinearly before the arg-max, as mmseg does; pixels whose top
    softmax probability is below ``min_score`` get no class.
    """
    align = bool(getattr(loaded.model.decode_head, "align_corners", False))
    logits = torch.nn.functional.interpolate(
        prediction.logits[None],
        size=prediction.original_size,
        mode="bilinear",
        align_corners=align,
    )[0]
    if logits.shape[0] == 1:
        # One output channel: a sigmoid-thresholded binary head (label 1 where >= 0.5).
        labels = (logits[0].sigmoid() >= 0.5).long()
        scores = None
    else:
        probabilities = logits.softmax(dim=0)
        scores, labels = probabilities.max(dim=0)
    mapping = torch.as_tensor(loaded.to_task_class, device=labels.device)
    task_classes = mapping[labels]
    if min_score > 0 and scores is not None:
        task_classes[scores < min_score] = -1
    return task_classes.cpu().numpy()


def class_masks(label_map_array: np.ndarray, num_task_classes: int) -> list[tuple]:
    """``(bool mask, class index, None)`` for every task class present in a label map."""
    present = np.unique(label_map_array)
    return [
        (label_map_array == value, int(value), None)
        for value in present
        if 0 <= value < num_task_classes
    ]


def _one_line(error: BaseException) -> str:
    return (" ".join(str(error).split()) or type(error).__name__)[:300]
