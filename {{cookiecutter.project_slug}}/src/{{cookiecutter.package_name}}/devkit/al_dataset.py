"""The labelled dataset of an active-learning experiment, and the platform tasks made from it.

The loop holds every annotation. The executor sees them only the way the platform shows them
after a user labelled images: a training task's ``in/`` exports the annotations of the
labelled images (the start set plus what was mined so far) and of the validation set, nothing
else; mining and inference tasks get images only. Everything else follows ``synth``: assets
named by the SHA-1 of their bytes in a shared cache behind ``in/assets``, absolute index paths,
``env.yaml`` and ``config.yaml`` as YMIR 2.5 writes them (protocol 1.1.0), model packages
extracted like ``mir``. Training annotations are exported as one COCO json (``coco:raw`` for
detection, ``seg-coco:raw`` for segmentation), a format every target reads.

Input: a folder of images and a COCO json (category ids of any kind, matched by name; masks as
polygons or RLE), e.g. what :mod:`.pool` writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from ..contract import masks
from ..contract.dataset import Annotation, DatasetItem
from ..contract.object_types import ObjectType
from . import synth

PROTOCOL = "1.1.0"
SEGMENTATION_TYPES = (ObjectType.SEMANTIC_SEGMENTATION, ObjectType.INSTANCE_SEGMENTATION)
# The split of the held-out validation set does not depend on the experiment's seeds: every
# seed is measured on the same images.
VALIDATION_SEED = 0


@dataclass
class LabelledImage:
    """One image of the dataset with its ground truth (COCO annotations, class-index ids)."""

    source: Path
    width: int
    height: int
    objects: list[dict] = field(default_factory=list)
    asset: str = ""  # '<sha1>.<ext>' once stored in the asset cache

    @property
    def asset_id(self) -> str:
        return self.asset.rsplit(".", 1)[0]


@dataclass
class LabelledDataset:
    images: list[LabelledImage]
    class_names: list[str]
    annotations_file: Path

    def fingerprint(self) -> str:
        """What identifies the dataset for a resumed experiment: its json and the classes."""
        digest = hashlib.sha1(self.annotations_file.read_bytes())
        digest.update(json.dumps(self.class_names).encode("utf-8"))
        return digest.hexdigest()

    def require_masks(self, object_type: int) -> None:
        """Refuse a dataset with box-only objects for a segmentation executor."""
        if object_type not in SEGMENTATION_TYPES:
            return
        for image in self.images:
            for obj in image.objects:
                if not obj.get("segmentation"):
                    raise ValueError(
                        f"{self.annotations_file}: annotation {obj.get('id')} of "
                        f"{image.source.name} has no segmentation; a segmentation executor "
                        f"(object_type {object_type}) needs a mask on every object"
                    )

    def counts(self, indices: Sequence[int]) -> list[int]:
        """Objects per class among ``indices``."""
        counts = [0] * len(self.class_names)
        for index in indices:
            for obj in self.images[index].objects:
                counts[obj["category_id"]] += 1
        return counts


@dataclass
class Split:
    """Image indices of the held-out validation set, the start set and the unlabelled pool."""

    val: list[int]
    start: list[int]
    pool: list[int]


# --- reading -----------------------------------------------------------------------------------


def load_dataset(
    images_dir: str | os.PathLike,
    annotations_file: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
) -> LabelledDataset:
    """Read a folder of images and its COCO json (default: the only ``*.json`` in the folder).

    ``class_names``: the classes the experiment trains, as a YMIR user picks them (default:
    every category of the json, in id order); each must be a category of the dataset, and
    objects of other categories are left out, as the platform's export does.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise ValueError(f"dataset folder {folder} does not exist")
    path = Path(annotations_file) if annotations_file else _only_json(folder)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"cannot read the COCO json {path}: {error}") from error
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path} is not a COCO json (no 'images' list)")
    categories = {}
    for category in coco.get("categories") or []:
        categories[category["id"]] = _normal_name(category["name"])
    if not categories:
        raise ValueError(f"{path} has no categories")
    present = [categories[key] for key in sorted(categories)]
    names = [_normal_name(name) for name in class_names] if class_names else present
    missing = [name for name in names if name not in present]
    if missing:
        raise ValueError(
            "the dataset's classes differ from the task's: {} not in {} (it has {})".format(
                ", ".join(missing), path, ", ".join(present)
            )
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    class_of = {key: names.index(name) for key, name in categories.items() if name in names}

    images: dict[Any, LabelledImage] = {}
    for entry in coco["images"]:
        source = folder / str(entry["file_name"])
        if not source.is_file():
            raise ValueError(f"{path}: image {entry['file_name']} is not in {folder}")
        images[entry["id"]] = LabelledImage(source, int(entry["width"]), int(entry["height"]))
    for annotation in coco.get("annotations") or []:
        if annotation.get("category_id") not in categories:
            raise ValueError(
                f"{path}: annotation {annotation.get('id')} has an unknown category "
                f"{annotation.get('category_id')!r}"
            )
        class_id = class_of.get(annotation["category_id"])
        if class_id is None:
            continue
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise ValueError(f"{path}: annotation {annotation.get('id')} names no listed image")
        image.objects.append(dict(annotation, category_id=class_id))
    if not images:
        raise ValueError(f"{path} lists no image")
    return LabelledDataset(list(images.values()), names, path)


def _only_json(folder: Path) -> Path:
    found = sorted(folder.glob("*.json"))
    if len(found) != 1:
        raise ValueError(
            f"{folder} has {len(found)} json files: name the COCO json with --annotations"
        )
    return found[0]


def _normal_name(name: Any) -> str:
    # the platform lower-cases and strips class names
    return str(name).strip().lower()


def split_dataset(
    dataset: LabelledDataset,
    val: int,
    start: int,
    pool: int | None,
    top_k: int,
    rounds: int,
    seed: int,
    start_positives: int | None = None,
) -> Split:
    """A random split: a validation set drawn the same for every seed, then start and pool.

    ``start_positives``: how many start images hold an object of the task's classes, the
    others holding none, like the public YMIR experiment's start set (1,000 images with the
    class, 3,000 without); ``None`` draws the start set at random, whatever it holds. The pool
    is drawn at random from the images left either way.

    Raises:
        ValueError: a set that would be empty, a pool smaller than ``top_k`` (or than
        ``top_k * rounds``), more images asked for than the dataset has, or more start
        images with (or without) objects than the dataset has to spare.
    """
    total = len(dataset.images)
    if start < 1:
        raise ValueError(
            "the start set is empty: the first training needs at least one labelled image (--start)"
        )
    if val < 1:
        raise ValueError("the validation set is empty: the rounds are measured on it (--val)")
    if top_k < 1 or rounds < 1:
        raise ValueError("top_k and rounds must be at least 1")
    available = total - val - start
    size = available if pool is None else pool
    if size > available:
        raise ValueError(
            f"the dataset has {total} images: {val} validation + {start} start leave "
            f"{max(0, available)} for the pool, not {size}"
        )
    if size < top_k:
        raise ValueError(
            f"the pool has {max(0, size)} images, fewer than top_k = {top_k}: mining would "
            "select every candidate (YMIR skips such a mining task)"
        )
    if size < top_k * rounds:
        raise ValueError(
            f"the pool has {size} images, fewer than top_k x rounds = {top_k} x {rounds}"
        )
    if start_positives is not None and not 0 <= start_positives <= start:
        raise ValueError(
            f"start_positives must be between 0 and the start set's {start} images, "
            f"got {start_positives}"
        )
    order = np.random.RandomState(VALIDATION_SEED).permutation(total).tolist()
    held_out, rest = order[:val], order[val:]
    rest = [rest[i] for i in np.random.RandomState(seed).permutation(len(rest))]
    if start_positives is None:
        first = rest[:start]
    else:
        first = _start_with_positives(dataset, rest, start, start_positives)
    chosen = set(first)
    pool_images = [index for index in rest if index not in chosen][:size]
    return Split(val=sorted(held_out), start=sorted(first), pool=sorted(pool_images))


def _start_with_positives(
    dataset: LabelledDataset, shuffled: list[int], start: int, positives: int
) -> list[int]:
    """The first ``positives`` images of ``shuffled`` with an object and the first
    ``start - positives`` without."""
    with_objects = [index for index in shuffled if dataset.images[index].objects]
    without = [index for index in shuffled if not dataset.images[index].objects]
    for wanted, found, what in (
        (positives, with_objects, "with"),
        (start - positives, without, "without"),
    ):
        if wanted > len(found):
            raise ValueError(
                f"the start set asks for {wanted} images {what} an object of the task's classes "
                f"({', '.join(dataset.class_names)}); outside the validation set the dataset "
                f"has {len(found)}"
            )
    return with_objects[:positives] + without[: start - positives]


# --- assets --------------------------------------------------------------------------------------


def store_assets(dataset: LabelledDataset, cache: Path, indices: Sequence[int]) -> None:
    """Copy the images into the asset cache as the platform stores them (``<h[-2:]>/<h>.<ext>``)."""
    for index in indices:
        image = dataset.images[index]
        if not image.asset:
            data = image.source.read_bytes()
            ext = synth.detected_extension(data)
            if ext == "unknown":
                raise ValueError(f"{image.source} is not a JPEG, PNG or BMP image")
            image.asset = f"{hashlib.sha1(data).hexdigest()}.{ext}"
        target = cache / image.asset_id[-2:] / image.asset
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(str(image.source), str(target))


def index_path(work: Path, image: LabelledImage) -> Path:
    """The image's path as the platform writes it in an index file (through ``in/assets``)."""
    return work / "in" / "assets" / image.asset_id[-2:] / image.asset


# --- platform tasks ----------------------------------------------------------------------------


def write_training_task(
    work: Path,
    dataset: LabelledDataset,
    labelled: Sequence[int],
    val: Sequence[int],
    object_type: int,
    img_man: Path,
    cache: Path,
    params: dict[str, Any],
    pretrained: Path | None = None,
) -> None:
    """``work/in`` of a training task on the ``labelled`` images, validated on ``val``."""
    in_dir = _fresh_task(work, cache)
    annotation_format = "seg-coco" if object_type in SEGMENTATION_TYPES else "coco"
    coco_file = in_dir / "annotations" / synth.COCO_JSON_NAME
    _write_coco(coco_file, dataset, [*labelled, *val], object_type)

    def index_text(indices: Sequence[int]) -> str:
        return "".join(f"{index_path(work, dataset.images[i])}\t{coco_file}\n" for i in indices)

    (in_dir / "train-index.tsv").write_text(index_text(labelled), encoding="utf-8")
    (in_dir / "val-index.tsv").write_text(index_text(val), encoding="utf-8")
    (in_dir / "test-index.tsv").write_text("", encoding="utf-8")
    (in_dir / "predictions").mkdir()
    model_paths: list[str] = []
    if pretrained is not None:
        model_paths = synth.install_model(pretrained, in_dir / "models", None, "stage")
    _write_env_and_config(
        work,
        "training",
        object_type,
        img_man,
        dataset.class_names,
        params,
        model_key="pretrained_model_params" if pretrained is not None else None,
        model_paths=model_paths,
        annotation_format=annotation_format,
    )


def write_candidate_task(
    work: Path,
    task: str,
    dataset: LabelledDataset,
    candidates: Sequence[int],
    object_type: int,
    img_man: Path,
    cache: Path,
    params: dict[str, Any],
    model_tar: Path,
) -> None:
    """``work/in`` of a mining or inference task over ``candidates`` with the packaged model."""
    in_dir = _fresh_task(work, cache)
    (in_dir / "candidate-index.tsv").write_text(
        "".join(f"{index_path(work, dataset.images[i])}\n" for i in candidates), encoding="utf-8"
    )
    model_paths = synth.install_model(model_tar, in_dir / "models", None, "stage")
    _write_env_and_config(
        work,
        task,
        object_type,
        img_man,
        dataset.class_names,
        params,
        model_key="model_params_path",
        model_paths=model_paths,
        annotation_format=None,
    )


def _fresh_task(work: Path, cache: Path) -> Path:
    """An empty task folder with ``in/assets`` linked to the shared cache; returns ``in/``."""
    if work.exists():
        synth.make_writable(work)
        shutil.rmtree(str(work))
    in_dir = work / "in"
    (in_dir / "annotations").mkdir(parents=True)
    (in_dir / "models").mkdir()
    (work / "out").mkdir()
    os.symlink(str(cache), str(in_dir / "assets"))
    (work / synth.MARKER_FILE).write_text(
        "created by the devkit's al-loop; safe to delete\n", encoding="utf-8"
    )
    return in_dir


def _write_env_and_config(
    work: Path,
    task: str,
    object_type: int,
    img_man: Path,
    class_names: list[str],
    params: dict[str, Any],
    model_key: str | None,
    model_paths: list[str],
    annotation_format: str | None,
) -> None:
    # the platform's img-man lives in the image; a copy keeps manifest_file inside the work dir
    shutil.copytree(str(img_man), str(work / "img-man"))
    task_id = synth.make_task_id(0, f"{task}@{work}")
    env = synth.make_env(work, task, PROTOCOL, task_id)
    (work / "in" / "env.yaml").write_text(
        yaml.safe_dump(env, default_flow_style=False), encoding="utf-8"
    )
    template = synth.load_template_file(img_man, task)
    config = synth.make_config(
        {**template, **params},
        "drop-empty" if task == "training" else "drop-falsy",  # what the web UI sends
        task,
        task_id,
        class_names,
        object_type,
        PROTOCOL,
        model_key,
        model_paths,
        annotation_format,
    )
    (work / "in" / "config.yaml").write_text(
        yaml.dump(config, allow_unicode=True), encoding="utf-8"
    )


def _write_coco(
    path: Path, dataset: LabelledDataset, indices: Sequence[int], object_type: int
) -> None:
    """The platform's COCO export of ``indices``: images sorted by asset id and numbered from 1,
    0-based category ids of the classes present, masks as a single polygon or an RLE string."""
    ordered = sorted(indices, key=lambda i: dataset.images[i].asset_id)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    present: set[int] = set()
    for image_id, index in enumerate(ordered, start=1):
        image = dataset.images[index]
        images.append(
            {
                "id": image_id,
                "file_name": image.asset,
                "width": image.width,
                "height": image.height,
                "date_captured": "2023-01-01 00:00:00",
                "license": 1,
                "coco_url": "",
                "flickr_url": "",
            }
        )
        for obj in image.objects:
            present.add(obj["category_id"])
            record = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category_id"],
                "iscrowd": 0,
                "bbox": [float(v) for v in obj["bbox"]],
                "confidence": -1.0,
            }
            if object_type in SEGMENTATION_TYPES:
                record["segmentation"] = _platform_segmentation(obj, image)
                record["area"] = int(object_mask(obj, image).sum())
            else:
                record["segmentation"] = []
                record["area"] = float(obj["bbox"][2]) * float(obj["bbox"][3])
            annotations.append(record)
    categories = [
        {"id": class_id, "name": dataset.class_names[class_id], "supercategory": "object"}
        for class_id in sorted(present)
    ]
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": categories,
        "licenses": [{"id": 1, "name": "", "url": ""}],
    }
    path.write_text(json.dumps(coco), encoding="utf-8")


def _platform_segmentation(obj: dict, image: LabelledImage) -> Any:
    segmentation = obj["segmentation"]
    if isinstance(segmentation, list) and len(segmentation) == 1:
        return segmentation  # one polygon: exported as it is
    return masks.encode_rle(object_mask(obj, image))  # several polygons or any RLE


# --- ground truth for scoring --------------------------------------------------------------------


def object_mask(obj: dict, image: LabelledImage) -> np.ndarray:
    """The object's boolean mask (its filled box when it has no segmentation)."""
    segmentation = obj.get("segmentation")
    if isinstance(segmentation, dict):
        return masks.decode_rle(segmentation)
    if segmentation:
        return masks.polygon_to_mask(segmentation, image.height, image.width)
    mask = np.zeros((image.height, image.width), dtype=bool)
    x, y, w, h = object_box(obj)
    mask[y : y + h, x : x + w] = True
    return mask


def object_box(obj: dict) -> tuple[int, int, int, int]:
    """The integer ``x, y, w, h`` of an object, edges rounded as the dataset reader does."""
    x, y, w, h = (float(v) for v in obj["bbox"])
    left, top = math.floor(x + 0.5), math.floor(y + 0.5)
    right, bottom = math.floor(x + w + 0.5), math.floor(y + h + 0.5)
    return left, top, max(1, right - left), max(1, bottom - top)


def ground_truth(
    dataset: LabelledDataset, indices: Sequence[int], object_type: int
) -> list[DatasetItem]:
    """``indices`` as evaluation items keyed by asset name (the infer result's keys)."""
    with_masks = object_type in SEGMENTATION_TYPES
    items = []
    for index in indices:
        image = dataset.images[index]
        annotations = [
            Annotation(
                obj["category_id"], object_box(obj), object_mask(obj, image) if with_masks else None
            )
            for obj in image.objects
        ]
        items.append(DatasetItem(Path(image.asset), annotations, image.width, image.height))
    return items
