"""Active-learning mining with an MMDetection model: one score per candidate, higher = label it.

``mining_algorithm`` (all scores are finite; the writer sorts them and puts unreadable images
last, below every scored one):

- ``random``: a pseudo-random score per image, reproducible (a hash of the image's file name,
  which YMIR derives from the image's content, and of the ``random_seed`` hyper-parameter when
  the template has one, else the task id), independent of how images are split across
  processes. No model is run; the
  images are still decoded so that unreadable ones rank last.
- ``entropy`` (default): the sum over detections of the binary entropy (bits) of each kept
  detection's confidence, ``-c log2 c - (1 - c) log2 (1 - c)``: many uncertain detections score
  high, an image with confident detections only (or none) scores low. Works with every model.
- ``cald`` (consistency-based active learning, Yu et al., CVPR-W 2022): the image is also
  predicted after four augmentations (horizontal flip, cutout of two patches, rotation by 5
  degrees, shrink to 0.8 and pad); each original detection, moved into the augmented frame, is
  matched to the augmented detection of highest IoU; its consistency is that IoU times
  ``1 - JS(c, c')`` (Jensen-Shannon divergence of the two Bernoulli confidences, in bits), 0
  when the classes differ. Per augmentation the image's inconsistency is the sum of
  ``c * (1 - consistency)`` over its detections (a detection lost by the augmentation counts
  ``c``): how much of its confidence does not survive the augmentation. The score is the mean
  over augmentations; an image without any original detection scores 0. Summed rather than
  averaged, because an average ranks first the background images whose one barely-kept box
  vanishes under any augmentation (measured with ``devkit al-loop``: a weak start model's
  CALD top-k then held almost no object). Works with every model (5 forward passes).
- ``aldd`` (Active Learning for Deep Detection, Aghdam et al., ICCV 2019): dense-head
  uncertainty from the class-probability maps of the same forward pass that predicts the boxes.
  Per class map (YOLOX: class x objectness), upsampled to the finest level and cropped to the
  image (padding excluded), the mutual information ``H(avg p) - avg H(p)`` over 3x3
  neighbourhoods is summed over classes, anchors and levels, max-pooled over 4x4 cells (about
  32 px) and averaged. Only for dense-head models: RTMDet (incl. RTMDet-Ins), YOLOX, RetinaNet;
  any other model (Faster / Mask R-CNN) is refused with error 300001.

Mining and inference in one container (``run_mining`` and ``run_infer``): mining predicts with
the inference thresholds anyway (entropy, CALD's original view and ALDD all produce the
boxes), so it keeps its rows files with those predictions in the run's ``ctx.handover``
(:mod:`...contract.handover`) and inference takes them instead of making a second pass
over the images (``random`` runs no model, so inference predicts on its own then). Scores and
predictions travel from the ranks through files (:mod:`..openmmlab.rows`), never all in memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...contract.errors import ErrorCode, ExecutorError
from ..openmmlab import distributed
from ..openmmlab.rows import RowFiles
from . import inference, jobs, predictor
from .detector import Detector, load_config, package_files

if TYPE_CHECKING:
    from ...contract.context import MiningContext

log = logging.getLogger(__name__)

# Model types whose dense head gives per-location class maps that ALDD understands.
ALDD_MODEL_TYPES = ("RTMDet", "YOLOX", "RetinaNet")

# CALD's augmentations, in the order their views follow the original one.
CALD_AUGMENTATIONS = ("flip", "cutout", "rotate", "resize")
CALD_ROTATION_DEGREES = 5.0
CALD_SHRINK = 0.8
CALD_CUTOUT_PATCHES = 2
CALD_CUTOUT_SIZE = 0.2  # patch side, as a fraction of the image side
_PAD_VALUE = (114, 114, 114)  # the grey the detectors' pipelines pad with

# ALDD: neighbourhood of the mutual information, and the cell size of the max-pooling, in
# cells of the finest level (stride 8 for the supported models: 3 cells ~ 24 px, 4 ~ 32 px).
ALDD_AVG_POOL = 3
ALDD_MAX_POOL = 4


def check_aldd_support(model_type: str) -> None:
    """Refuse ALDD for models without a supported dense head.

    Raises:
        ExecutorError: CONFIG naming the supported models and the alternatives.
    """
    if model_type not in ALDD_MODEL_TYPES:
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"mining_algorithm 'aldd' needs a dense-head detector (RTMDet, YOLOX or RetinaNet: "
            f"rtmdet_tiny, yolox_tiny, retinanet_r18, rtmdet_ins_tiny); this model is "
            f"{model_type}. Use 'entropy' or 'cald' with it.",
        )


# --- the task ----------------------------------------------------------------------------------


def mine(ctx: MiningContext, *, fp16: bool | None = None, world_size: int | None = None) -> None:
    """Score every candidate with ``mining_algorithm`` and fill ``ctx.results``.

    ``fp16`` and ``world_size`` as for :func:`.inference.infer`.
    """
    algorithm = ctx.params.mining_algorithm  # one of the declared choices
    candidates = ctx.candidates()
    if algorithm == "random":
        _mine_random(ctx, candidates)
        return
    if algorithm == "aldd":
        # Checked here, from the config alone, so the refusal comes before any process starts.
        config_file, _ = package_files(ctx.model)
        check_aldd_support(str(load_config(config_file).model.get("type", "")))

    payload = jobs.job_payload(ctx, "mining", fp16=fp16)
    payload["algorithm"] = algorithm
    # Predictions are kept for inference only when it follows in this task.
    payload["share"] = ctx.handover is not None
    rows = RowFiles.create(ctx.work_dir, "mining")
    payload["rows"] = str(rows.directory)
    shared = False
    try:
        distributed.run_task_job(mining_job, payload, ctx, {}, processes=world_size)
        unreadable = 0
        # One row at a time, in candidate order (every candidate exactly once).
        for index, row in rows.merged(len(candidates)):
            if row["score"] is None:
                unreadable += 1  # no score: the writer ranks it below every scored image
                continue
            ctx.results.add(candidates[index], float(row["score"]))
        if payload["share"] and ctx.handover is not None:
            key = inference.share_key(
                ctx.model,
                ctx.object_type,
                ctx.class_names,
                candidates,
                payload["score_thr"],
                payload["iou_thr"],
            )
            ctx.handover.keep(key, rows)
            shared = True
    finally:
        if not shared:
            rows.remove()
    log.info("mining (%s): %d images scored, %d unreadable", algorithm, len(candidates), unreadable)


def _mine_random(ctx: MiningContext, candidates: Sequence[Path]) -> None:
    """Random scores; images are decoded (in DataLoader workers) only to rank bad ones last."""
    from torch.utils.data import DataLoader

    dataset = predictor.CandidateDataset(
        jobs.ShardItems(jobs.candidate_texts(candidates)), pipeline=None
    )
    workers = jobs.loader_settings(ctx.params)[1] * max(1, len(ctx.gpu_ids))
    loader = DataLoader(dataset, batch_size=16, num_workers=workers, collate_fn=predictor.keep_list)
    # An optional ``random_seed`` hyper-parameter makes orders comparable across tasks.
    seed = str(ctx.params.get("random_seed", None) or ctx.env.task_id)
    done = 0
    for batch in loader:
        for item in batch:
            if "error" in item:
                log.warning("cannot read candidate %s: %s", item["path"], item["error"])
                continue
            ctx.results.add(candidates[item["index"]], random_score(seed, item["path"]))
        done += len(batch)
        ctx.progress(done / max(1, len(candidates)))


def random_score(seed: str, path: str) -> float:
    """A reproducible pseudo-random score in [0, 1) for one image (by its file name)."""
    name = os.path.basename(str(path))
    digest = hashlib.sha256(f"{seed}\0{name}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


# --- the job (every rank) ----------------------------------------------------------------------


def mining_job(payload: dict, channel: Any) -> None:
    """Score this rank's share of candidates into its rows file in ``payload["rows"]``.

    Rows are ``{"score": score or None (unreadable), "prediction": JSON or None}``; the
    prediction (of the original view, with the inference thresholds) is written only when
    inference follows and will reuse it.
    """
    algorithm = payload["algorithm"]
    items = jobs.shard_items(payload["candidates"])
    detector = jobs.job_detector(payload)
    if algorithm == "aldd":
        check_aldd_support(detector.model_type)
    views = cald_views if algorithm == "cald" else None
    capture = aldd_maps if algorithm == "aldd" else None
    with RowFiles(payload["rows"]).writer(distributed.rank()) as rows:
        for output in predictor.predict_batches(
            detector,
            items,
            batch_size=payload["batch_size"],
            workers=payload["workers"],
            views=views,
            capture_head=(lambda outputs, position: capture(detector, outputs, position))
            if capture
            else None,
            progress=jobs.progress_reporter(channel, len(items)),
        ):
            if output.error is not None:
                score = None
            elif algorithm == "entropy":
                confidences = output.samples[0].pred_instances.scores.float().cpu().numpy()
                score = entropy_score(confidences)
            elif algorithm == "cald":
                score = cald_score(output)
            else:
                score = aldd_score(output.head_outputs[0], output.samples[0].metainfo)
            if score is not None and not math.isfinite(score):
                score = 0.0  # a degenerate model output must not break the ranking
            shared = None
            if payload["share"]:
                shared = predictor.to_prediction(detector, output).to_json()
            rows.write(output.index, {"score": score, "prediction": shared})


# --- entropy -----------------------------------------------------------------------------------


def entropy_score(confidences: np.ndarray) -> float:
    """Sum of the binary entropies (bits) of the detections' confidences; 0 without any."""
    c = np.clip(np.asarray(confidences, dtype=np.float64), 1e-12, 1 - 1e-12)
    if c.size == 0:
        return 0.0
    return float(np.sum(-c * np.log2(c) - (1 - c) * np.log2(1 - c)))


# --- CALD --------------------------------------------------------------------------------------


def cald_views(image: np.ndarray, index: int) -> list[np.ndarray]:
    """The original image and its four CALD augmentations (deterministic per candidate)."""
    return [image] + [augment(image, name, index)[0] for name in CALD_AUGMENTATIONS]


def augment(image: np.ndarray, name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(augmented image, 2x3 affine matrix original -> augmented pixel coordinates)``.

    The cutout patches depend on the candidate index only, so a candidate is augmented the same
    way whichever rank gets it.
    """
    import cv2

    height, width = image.shape[:2]
    matrix = augmentation_matrix(name, width, height)
    if name == "flip":
        return np.ascontiguousarray(image[:, ::-1]), matrix
    if name == "cutout":
        out = image.copy()
        rng = np.random.RandomState(index % (2**31))
        side_h = max(1, round(height * CALD_CUTOUT_SIZE))
        side_w = max(1, round(width * CALD_CUTOUT_SIZE))
        for _ in range(CALD_CUTOUT_PATCHES):
            top = rng.randint(0, max(1, height - side_h + 1))
            left = rng.randint(0, max(1, width - side_w + 1))
            out[top : top + side_h, left : left + side_w] = _PAD_VALUE
        return out, matrix
    if name == "rotate":
        return cv2.warpAffine(image, matrix, (width, height), borderValue=_PAD_VALUE), matrix
    if name == "resize":
        new_w, new_h = _shrunk(width, height)
        small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        out = np.full_like(image, _PAD_VALUE)
        out[:new_h, :new_w] = small
        return out, matrix
    raise ValueError(f"unknown augmentation {name!r}")


def augmentation_matrix(name: str, width: int, height: int) -> np.ndarray:
    """The 2x3 affine map of an augmentation (identity for cutout, which moves nothing)."""
    import cv2

    if name == "flip":
        return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0]])
    if name == "rotate":
        return cv2.getRotationMatrix2D((width / 2.0, height / 2.0), CALD_ROTATION_DEGREES, 1.0)
    if name == "resize":
        new_w, new_h = _shrunk(width, height)
        return np.array([[new_w / width, 0.0, 0.0], [0.0, new_h / height, 0.0]])
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _shrunk(width: int, height: int) -> tuple[int, int]:
    return max(1, round(width * CALD_SHRINK)), max(1, round(height * CALD_SHRINK))


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """``x1, y1, x2, y2`` boxes mapped by an affine matrix: the boxes around the moved corners."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack(
        [
            np.stack([x1, y1], 1),
            np.stack([x2, y1], 1),
            np.stack([x1, y2], 1),
            np.stack([x2, y2], 1),
        ],
        1,
    )  # N x 4 x 2
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    out = np.concatenate([moved.min(1), moved.max(1)], 1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a) x len(b)) of ``x1, y1, x2, y2`` boxes."""
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (right - left).clip(0) * (bottom - top).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def bernoulli_js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits, in [0, 1]) of Bernoulli(p) and Bernoulli(q)."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    q = np.clip(q, 1e-12, 1 - 1e-12)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * np.log2(a / b) + (1 - a) * np.log2((1 - a) / (1 - b))

    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, 1.0)


def cald_score(output: Any) -> float:
    """The CALD inconsistency of one candidate from its five views (see the module docstring)."""
    original = output.samples[0].pred_instances
    boxes = original.bboxes.float().cpu().numpy().astype(np.float64)
    if len(boxes) == 0:
        return 0.0
    scores = original.scores.float().cpu().numpy().astype(np.float64)
    labels = original.labels.cpu().numpy()
    width, height = output.size
    total = 0.0
    for position, name in enumerate(CALD_AUGMENTATIONS, start=1):
        # The matrix only: recomputing it is cheap and keeps the views' pixels out of memory.
        matrix = augmentation_matrix(name, width, height)
        moved = transform_boxes(boxes, matrix, width, height)
        augmented = output.samples[position].pred_instances
        aug_boxes = augmented.bboxes.float().cpu().numpy().astype(np.float64)
        if len(aug_boxes) == 0:
            total += float(np.sum(scores))  # every detection lost
            continue
        aug_scores = augmented.scores.float().cpu().numpy().astype(np.float64)
        aug_labels = augmented.labels.cpu().numpy()
        ious = box_iou(moved, aug_boxes)  # original x augmented
        best = ious.argmax(1)
        best_iou = ious[np.arange(len(moved)), best]
        consistency = best_iou * (1 - bernoulli_js(scores, aug_scores[best]))
        consistency = np.where(labels == aug_labels[best], consistency, 0.0)
        # Summed, not averaged: a lone low-score detection that an augmentation loses is
        # background noise, not an object the model is unsure about.
        total += float(np.sum(scores * (1 - consistency)))
    return total / len(CALD_AUGMENTATIONS)


# --- ALDD --------------------------------------------------------------------------------------


def aldd_maps(detector: Detector, outputs: Any, position: int) -> list:
    """One image's per-level class-probability maps (K x H x W) from the dense head's outputs.

    RTMDet / RetinaNet: ``sigmoid(cls_score)`` (RetinaNet has a channel per anchor and class);
    YOLOX: ``sigmoid(cls) * sigmoid(objectness)``, the probability its post-processing uses.
    """
    cls_scores = outputs[0]
    maps = []
    for level, cls_score in enumerate(cls_scores):
        probability = cls_score[position].float().sigmoid()
        if detector.model_type == "YOLOX":
            probability = probability * outputs[2][level][position].float().sigmoid()
        maps.append(probability)
    return maps


def aldd_score(maps: Sequence[Any], metainfo: dict) -> float:
    """The ALDD uncertainty of one image from its class-probability maps (see the docstring)."""
    import torch
    import torch.nn.functional as F

    pad_h = (metainfo.get("batch_input_shape") or metainfo["pad_shape"])[0]
    img_h, img_w = metainfo["img_shape"][:2]
    finest = maps[0]
    stride = pad_h / finest.shape[-2]
    out_h = max(1, math.ceil(img_h / stride))
    out_w = max(1, math.ceil(img_w / stride))
    levels = []
    for probability in maps:
        level_stride = pad_h / probability.shape[-2]
        # Padding is not the image: crop it away so a batch neighbour's size changes nothing.
        crop_h = max(1, math.ceil(img_h / level_stride))
        crop_w = max(1, math.ceil(img_w / level_stride))
        cropped = probability[None, :, :crop_h, :crop_w]
        levels.append(
            F.interpolate(cropped, size=(out_h, out_w), mode="bilinear", align_corners=False)
        )
    p = torch.cat(levels, 1).clamp(1e-6, 1 - 1e-6)  # 1 x (levels * K) x h x w

    def entropy(x: Any) -> Any:
        return -(x * torch.log2(x) + (1 - x) * torch.log2(1 - x))

    def local_mean(x: Any) -> Any:
        return F.avg_pool2d(
            x, ALDD_AVG_POOL, stride=1, padding=ALDD_AVG_POOL // 2, count_include_pad=False
        )

    uncertainty = (entropy(local_mean(p)) - local_mean(entropy(p))).sum(1, keepdim=True)
    pooled = F.max_pool2d(uncertainty, ALDD_MAX_POOL, stride=ALDD_MAX_POOL, ceil_mode=True)
    return float(pooled.mean())
