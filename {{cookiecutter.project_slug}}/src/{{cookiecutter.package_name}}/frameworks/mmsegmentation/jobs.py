"""The prediction job behind inference and mining, on one process or one per GPU.

:func:`run` starts :func:`predict_job` through :func:`..openmmlab.distributed.launch`: in the
executor's own process on one GPU or the CPU, or as torchrun ranks (gloo on the CPU) with
several GPUs. Each rank takes its share of the candidates (``candidates[rank::world]``, every
image exactly once), predicts it in batches (:mod:`.predictor`) and rank 0 gathers the
entries and sends them to the executor process, where ``ctx.results`` stays the only writer of
``/out``. Masks travel as compressed RLE, scores as floats, so entries are small and
JSON-serialisable (the multi-process channel is a JSON-lines file).

One entry per candidate: ``{"index", "width", "height", "masks": [[rle, class], ...],
"score"}``, or ``{"index", "error"}`` for an unreadable image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ...contract.masks import encode_rle
from ..openmmlab import distributed

log = logging.getLogger(__name__)

# Entries per channel event: keeps each JSON line of the multi-process channel moderate.
_CHUNK = 64


def run(
    ctx: Any,
    *,
    masks: bool,
    algorithm: str | None,
    batch_size: int,
    num_workers: int,
    confidence_threshold: float,
) -> dict[int, dict]:
    """Predict every candidate of ``ctx``: ``{candidate index: entry}``.

    ``masks``: compute the class masks (inference); ``algorithm``: the mining uncertainty
    (``margin`` / ``entropy``) to score with, or None.
    """
    candidates = [str(path) for path in ctx.candidates()]
    payload = {
        "files": [str(path) for path in ctx.model.files],
        "info": _plain(ctx.model.info),
        "class_names": list(ctx.class_names),
        "candidates": candidates,
        "masks": bool(masks),
        "algorithm": algorithm,
        "batch_size": int(batch_size),
        "num_workers": int(num_workers),
        "confidence_threshold": float(confidence_threshold),
    }
    entries: dict[int, dict] = {}

    def collect(event: dict) -> None:
        for entry in event["entries"]:
            entries[int(entry["index"])] = entry

    distributed.run_task_job(predict_job, payload, ctx, {"entries": collect})
    return entries


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
    indices = distributed.shard(list(range(len(candidates))))
    num_classes = len(payload["class_names"])
    entries: list[dict] = []
    for item in predictor.predict(
        loaded,
        [Path(candidates[index]) for index in indices],
        payload["batch_size"],
        payload["num_workers"],
        # Rank 0's share stands for everyone's (ranks get equal shares).
        progress=channel.progress,
    ):
        if isinstance(item, tuple):
            local, reason = item
            log.warning("no prediction for %s: %s", candidates[indices[local]], reason)
            entries.append({"index": indices[local], "error": reason})
            continue
        height, width = item.original_size
        entry: dict[str, Any] = {"index": indices[item.index], "width": width, "height": height}
        if payload["algorithm"]:
            uncertainty = mining.pixel_uncertainty(item.logits, payload["algorithm"])
            entry["score"] = mining.region_score(uncertainty)
        if payload["masks"]:
            labels = predictor.label_map(loaded, item, payload["confidence_threshold"])
            entry["masks"] = [
                [encode_rle(mask), class_id]
                for mask, class_id, _ in predictor.class_masks(labels, num_classes)
            ]
        entries.append(entry)
    gathered = distributed.gather(entries)
    if gathered is None:
        return  # not rank 0: rank 0 sends everyone's entries
    everything = [entry for part in gathered for entry in part]
    for start in range(0, len(everything), _CHUNK):
        channel.send("entries", entries=everything[start : start + _CHUNK])


def add_masks(ctx: Any, candidates: Sequence[Path], entries: dict[int, dict]) -> int:
    """Add every entry's masks to ``ctx.results``; returns how many images had none."""
    missing = 0
    for index, path in enumerate(candidates):
        entry = entries.get(index)
        if entry is None or "error" in entry:
            missing += 1
            continue
        ctx.results.add(
            path,
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
