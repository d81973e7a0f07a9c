"""Candidates -> batches -> per-image predictions of a :class:`.detector.Detector`.

- **Batches**: a torch ``DataLoader`` with ``num_workers_per_gpu`` processes decodes and
  transforms images (the config's test pipeline) while the model runs on the previous batch of
  ``batch_size_per_gpu`` images. Images are decoded with Pillow *without* EXIF rotation (the
  platform's coordinate frame; OpenCV would rotate) and handed over as BGR like mmcv loads them.
- **Corrupt candidates** are logged and get an empty result; the run goes on.
- **Predictions** (:class:`Prediction`) are in the result writers' terms: boxes as
  ``(x, y, w, h, class, score)`` in original image pixels, classes of the task, instance masks
  as compressed RLE; they cross processes as JSON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ...contract.errors import ErrorCode, ExecutorError
from ...contract.images import open_image
from ...contract.masks import encode_rle
from ..openmmlab import distributed
from .detector import INSTANCE_SEGMENTATION, Detector

log = logging.getLogger(__name__)

# Pipeline steps that load annotations: candidates have none.
_ANNOTATION_STEPS = ("LoadAnnotations", "LoadPanopticAnnotations", "LoadTrackAnnotations")


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
