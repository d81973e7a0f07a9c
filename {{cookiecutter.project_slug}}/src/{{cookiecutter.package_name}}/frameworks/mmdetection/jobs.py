"""What an inference or mining job needs, on one process or one per rank under torchrun.

- **Ranks**: with several GPUs (or ``world_size`` > 1 on the CPU, gloo) candidates are sharded
  ``candidates[rank::world_size]`` (:class:`ShardItems`) and each rank predicts its share
  (:mod:`..openmmlab.distributed`). Every candidate is predicted exactly once.
- **Payload**: the task context's part a rank needs (model package, classes, candidates,
  thresholds, loader settings) as JSON (:func:`job_payload`), turned back into a detector on
  the rank's device by :func:`job_detector`.
- **Hyper-parameters** of both tasks (typed and checked by their declarations):
  :func:`thresholds`, :func:`loader_settings`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..openmmlab import distributed
from .detector import Detector, load_detector

if TYPE_CHECKING:
    from ...contract.context import CandidateContext

log = logging.getLogger(__name__)


class ShardItems(Sequence):
    """This rank's ``(candidate index, path)`` items of ``candidates[rank::world]``, made when a
    loader asks for them (a list of a million tuples and paths would cost half a gigabyte)."""

    def __init__(self, candidates: Sequence[str], rank: int = 0, world: int = 1) -> None:
        self.candidates = candidates
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(range(self.rank, len(self.candidates), self.world))

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


# --- hyper-parameters ------------------------------------------------------------------------


def thresholds(params: Any) -> tuple[float, float | None]:
    """``(confidence_threshold, iou_threshold)`` of a task (typed and range-checked by their
    declarations); ``None`` keeps the config's IoU (mining alone declares none)."""
    return params.confidence_threshold, params.get("iou_threshold")


def loader_settings(params: Any) -> tuple[int, int]:
    """``(batch_size_per_gpu, num_workers_per_gpu)``, typed and range-checked."""
    return params.batch_size_per_gpu, params.num_workers_per_gpu


# --- payload (one process, or one per rank under torchrun) ---------------------------------------


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
    """What :func:`.inference.infer_job` and mining's job need from the task context, as JSON."""
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
