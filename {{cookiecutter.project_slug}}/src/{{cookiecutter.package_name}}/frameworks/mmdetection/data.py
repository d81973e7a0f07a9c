"""YMIR training data -> COCO json files that mmdet's ``CocoDataset`` and ``CocoMetric`` read.

The contract's readers already turned whatever the platform exported (ark, voc, coco, seg-coco)
into :class:`~..contract.dataset.DatasetItem` objects with class ids that index
``class_names``. This module writes them as one COCO json per split under ``ctx.work_dir``
(``/in`` is read-only):

- ``categories``: one per class name, in ``class_names`` order, ``id`` = the class's index, so
  mmdet's label ``i`` (categories are looked up by name, in this order) is ``class_names[i]``;
- ``images``: ``file_name`` is the absolute image path as the index gives it (images are read
  in place from ``/in/assets``, never copied); images without objects are kept as negatives;
- ``annotations``: ``bbox`` ``[x, y, w, h]``, ``area``, ``iscrowd`` 0 and, for instance
  segmentation, ``segmentation`` as compressed RLE (mmdet's ``LoadAnnotations`` decodes it
  with ``poly2mask=True``, which the config surgery sets).

The files are written once, before any training process starts, and streamed so that a
100k-annotation set needs little memory beyond the items themselves.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Iterable, Sequence

from ...contract.atomic import write_text_atomic
from ...contract.dataset import DatasetItem
from ...contract.images import image_size
from ...contract.masks import encode_rle, mask_area
from ...contract.object_types import ObjectType

log = logging.getLogger(__name__)


def categories(class_names: Sequence[str]) -> list[dict]:
    """COCO categories whose ids are the class indices, in ``class_names`` order."""
    return [{"id": index, "name": str(name)} for index, name in enumerate(class_names)]


def write_coco(
    items: Iterable[DatasetItem],
    class_names: Sequence[str],
    path: str | os.PathLike,
    object_type: int,
) -> dict[str, int]:
    """Write ``items`` as a COCO json at ``path`` (atomically); returns counts.

    Returns ``{"images": n, "annotations": m, "negatives": k}``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    counts = {"images": 0, "annotations": 0, "negatives": 0}
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            _stream_document(stream, items, class_names, object_type, counts)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    log.info(
        "%s: %d images (%d without objects), %d objects",
        path.name,
        counts["images"],
        counts["negatives"],
        counts["annotations"],
    )
    return counts


def _stream_document(
    stream: IO[str],
    items: Iterable[DatasetItem],
    class_names: Sequence[str],
    object_type: int,
    counts: dict[str, int],
) -> None:
    with_masks = object_type == ObjectType.INSTANCE_SEGMENTATION
    images: list[str] = []
    stream.write('{"categories": ')
    stream.write(json.dumps(categories(class_names), ensure_ascii=True))
    stream.write(', "annotations": [')
    annotation_id = 0
    for image_id, item in enumerate(items, start=1):
        if item.width is not None and item.height is not None:
            width, height = int(item.width), int(item.height)
        else:
            width, height = image_size(item.image)
        images.append(
            json.dumps(
                {"id": image_id, "file_name": str(item.image), "width": width, "height": height},
                ensure_ascii=True,
            )
        )
        if not item.annotations:
            counts["negatives"] += 1
        for annotation in item.annotations:
            x, y, w, h = (int(value) for value in annotation.box)
            entry = {
                "id": annotation_id + 1,
                "image_id": image_id,
                "category_id": int(annotation.class_id),
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if with_masks and annotation.mask is not None:
                entry["segmentation"] = encode_rle(annotation.mask)
                entry["area"] = mask_area(annotation.mask)
            stream.write(("," if annotation_id else "") + json.dumps(entry, ensure_ascii=True))
            annotation_id += 1
    stream.write('], "images": [')
    stream.write(",".join(images))
    stream.write("]}\n")
    counts["images"] = len(images)
    counts["annotations"] = annotation_id


def write_splits(
    train_items: Sequence[DatasetItem],
    val_items: Sequence[DatasetItem],
    class_names: Sequence[str],
    folder: str | os.PathLike,
    object_type: int,
) -> tuple[Path, Path]:
    """``train.json`` and ``val.json`` in ``folder``; returns their paths."""
    folder = Path(folder)
    train_json, val_json = folder / "train.json", folder / "val.json"
    write_coco(train_items, class_names, train_json, object_type)
    write_coco(val_items, class_names, val_json, object_type)
    summary = {
        "classes": list(class_names),
        "train_images": len(train_items),
        "val_images": len(val_items),
    }
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=1) + "\n")
    return train_json, val_json
