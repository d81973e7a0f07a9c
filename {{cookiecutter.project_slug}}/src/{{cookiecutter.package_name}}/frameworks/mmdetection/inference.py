"""Batched MMDetection inference: a model package in, boxes or instance masks out.

What :func:`infer` does, and why:

- The package's model is rebuilt on each rank's device (:mod:`.detector`: thresholds in the
  config, channels-last on the CPU, optional fp16), the candidates are sharded over the ranks
  (:mod:`.jobs`) and predicted in DataLoader-fed batches (:mod:`.predictor`).
- **Results**: predictions reach the executor through files, one per rank, read back in
  candidate order (:mod:`..openmmlab.rows`): nothing is gathered in memory, whatever the number
  of candidates. Boxes go to ``ctx.results`` (a :class:`DetectionResult`, which rounds them to
  integers and clips them to the image), instance masks to a :class:`SegmentationResult`, which
  writes them as compressed RLE. Masks travel between processes as RLE too. An unreadable
  candidate is listed with an empty result; the run succeeds.
- **Mining + inference in one container** (``run_mining`` and ``run_infer``): ``__main__``
  runs mining, then inference, in one process and with the same merged hyper-parameters.
  Mining's forward passes already produce the boxes with these thresholds, so mining keeps
  its rows files (per-image predictions) in the run's ``ctx.handover``
  (:mod:`...contract.handover`) and :func:`infer` takes them instead of running the model
  again when the model files, thresholds, classes and candidates are the same
  (:func:`share_key`); otherwise it predicts.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..openmmlab import distributed
from ..openmmlab.rows import RowFiles
from .detector import INSTANCE_SEGMENTATION
from .jobs import job_detector, job_payload, progress_reporter, shard_items, thresholds
from .predictor import Prediction, predict_batches, to_prediction

if TYPE_CHECKING:
    from ...contract.context import InferenceContext

log = logging.getLogger(__name__)

# --- mining + inference sharing ----------------------------------------------------------------


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


# --- the task ----------------------------------------------------------------------------------


def add_to_results(results: Any, path: Path, prediction: Prediction, object_type: int) -> None:
    """Hand one candidate's prediction to the task's result writer."""
    if prediction.error is not None:
        return  # the writer lists every candidate; an unreadable one stays empty
    if object_type == INSTANCE_SEGMENTATION:
        results.add(path, prediction.width, prediction.height, prediction.masks or [])
    else:
        results.add(path, prediction.boxes, size=(prediction.width, prediction.height))


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
    rows = None
    if ctx.handover is not None:
        key = share_key(ctx.model, ctx.object_type, ctx.class_names, candidates, score_thr, iou_thr)
        rows = ctx.handover.take(key)
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
