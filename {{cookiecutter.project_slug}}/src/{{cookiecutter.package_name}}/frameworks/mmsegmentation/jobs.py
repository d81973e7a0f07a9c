"""The prediction job behind inference and mining, on one process or one per GPU.

:func:`run` starts :func:`predict_job` through :func:`..openmmlab.distributed.launch`: in the
executor's own process on one GPU or the CPU, or as torchrun ranks (gloo on the CPU) with
several GPUs. Each rank takes its share of the candidates (``candidates[rank::world]``, every
image exactly once), predicts it in batches (:mod:`.predictor`) and writes one entry per
candidate to a rows file of its own (:mod:`..openmmlab.rows`); the executor process reads them
back in candidate order, one at a time, and ``ctx.results`` stays the only writer of ``/out``.
Masks travel as compressed RLE, scores as floats; nothing is gathered in memory.

One entry per candidate: ``{"index", "width", "height", "masks": [[rle, class], ...],
"score"}``, or ``{"index", "error"}`` for an unreadable image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ...contract.masks import encode_rle
from ...contract.results import SegmentationResult
from ..openmmlab import distributed
from ..openmmlab.rows import RowFiles

if TYPE_CHECKING:
    from ...contract.context import CandidateContext, InferenceContext

log = logging.getLogger(__name__)


def run(
    ctx: CandidateContext,
    *,
    masks: bool,
    algorithm: str | None,
    batch_size: int,
    num_workers: int,
    confidence_threshold: float,
) -> RowFiles:
    """Predict every candidate of ``ctx``: the rows files of an entry per candidate.

    ``masks``: compute the class masks (inference); ``algorithm``: the mining uncertainty
    (``margin`` / ``entropy``) to score with, or None. Read them with
    ``rows.merged(len(candidates))``; ``rows.remove()`` when done.
    """
    candidates = ctx.candidates()
    texts = getattr(candidates, "texts", None)
    rows = RowFiles.create(ctx.work_dir, "segmentation")
    payload = {
        "files": [str(path) for path in ctx.model.files],
        "info": _plain(ctx.model.info),
        "class_names": list(ctx.class_names),
        "candidates": list(texts) if texts is not None else [str(path) for path in candidates],
        "masks": bool(masks),
        "algorithm": algorithm,
        "batch_size": int(batch_size),
        "num_workers": int(num_workers),
        "confidence_threshold": float(confidence_threshold),
        "rows": str(rows.directory),
    }
    try:
        distributed.run_task_job(predict_job, payload, ctx, {})
    except BaseException:
        rows.remove()
        raise
    return rows


def predict_job(payload: dict, channel: distributed.Channel) -> None:
    """One rank's work (module level: torchrun workers import it by name)."""
    import torch

    from . import mining, predictor

    device = f"cuda:{torch.cuda.current_device()}" if payload["cuda"] else "cpu"
    loaded = predictor.load(
        [Path(path) for path in payload["files"]],
        payload["class_names"],
        device,
        payload["info"],
    )
    candidates = payload["candidates"]
    indices = range(distributed.rank(), len(candidates), distributed.world_size())
    num_classes = len(payload["class_names"])
    rows = RowFiles(payload["rows"]).writer(distributed.rank())
    with rows:
        for item in predictor.predict(
            loaded,
            _Paths(candidates, indices),
            payload["batch_size"],
            payload["num_workers"],
            # Rank 0's share stands for everyone's (ranks get equal shares).
            progress=channel.progress,
        ):
            if isinstance(item, tuple):
                local, reason = item
                log.warning("no prediction for %s: %s", candidates[indices[local]], reason)
                rows.write(indices[local], {"index": indices[local], "error": reason})
                continue
            height, width = item.original_size
            index = indices[item.index]
            entry: dict[str, Any] = {"index": index, "width": width, "height": height}
            if payload["algorithm"]:
                uncertainty = mining.pixel_uncertainty(item.logits, payload["algorithm"])
                entry["score"] = mining.region_score(uncertainty)
            if payload["masks"]:
                labels = predictor.label_map(loaded, item, payload["confidence_threshold"])
                entry["masks"] = [
                    [encode_rle(mask), class_id]
                    for mask, class_id, _ in predictor.class_masks(labels, num_classes)
                ]
            rows.write(index, entry)


class _Paths(Sequence):
    """The paths of some candidates, made when the loader asks for them."""

    def __init__(self, candidates: Sequence[str], indices: Sequence[int]) -> None:
        self.candidates, self.indices = candidates, indices

    def __len__(self) -> int:
        return len(self.indices)

    # Only the loader reads it, one position at a time: no slice overload.
    def __getitem__(self, position: int) -> Path:  # type: ignore[override]
        return Path(self.candidates[self.indices[position]])


def add_masks(ctx: InferenceContext, candidates: Sequence[Path], rows: RowFiles) -> int:
    """Add every entry's masks to ``ctx.results``, one candidate at a time; returns how many
    images had none."""
    results = ctx.results
    if not isinstance(results, SegmentationResult):  # a semantic segmentation executor's writer
        raise TypeError(f"masks go to a SegmentationResult, not a {type(results).__name__}")
    missing = 0
    for index, entry in rows.merged(len(candidates)):
        if "error" in entry:
            missing += 1
            continue
        results.add(
            candidates[index],
            entry["width"],
            entry["height"],
            [(rle, class_id, None) for rle, class_id in entry.get("masks", [])],
        )
    return missing


def _plain(value: Any) -> Any:
    """``value`` reduced to JSON types (ymir-info.yaml may hold dates or other YAML types)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
