"""YMIR seg-coco training data -> label-map PNGs and the mmseg dataset that reads them.

The platform exports one COCO json shared by the training and validation splits (masks as RLE
or polygons, 0-based category ids of the classes present, mapped by name); the contract's
reader already splits it by the index files and decodes every annotation into a boolean mask
(``ctx.train_items()`` / ``ctx.val_items()``). Here each image becomes one 8-bit label map under
``ctx.work_dir`` (``/in`` is read-only), and a json list of ``(image, label map)`` pairs that
:class:`YmirSegDataset` reads. Images are read in place from ``/in/assets``, never copied.

Background, explicitly (the ``background_class`` hyper-parameter):

* ``false`` (default): pixels no annotation covers are ``255`` = mmseg's ``ignore_index``; the
  model learns exactly ``class_names`` (label ``i`` = ``class_names[i]``) and predicts one of
  them for every pixel. Right when annotations cover the images (scene parsing). Images with
  no labelled pixel teach nothing and are left out.
* ``true``: unlabelled pixels are class ``0`` ("background") and ``class_names[i]`` is label
  ``i + 1``; the model learns ``len(class_names) + 1`` classes. Inference and metrics report
  only ``class_names``: background is never written to a result. Right when objects lie on an
  unlabelled background. With a single class name the background class is always used (one
  class alone cannot be told from anything).

Where masks of different classes overlap, the later annotation wins (the platform's semantic
masks do not overlap; instance-style exports may).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from ...contract.dataset import DatasetItem
from ...contract.errors import ErrorCode, ExecutorError
from ...contract.images import image_size

log = logging.getLogger(__name__)

# mmseg's default ignore label; label maps are 8-bit PNGs, so at most 255 learnt classes.
IGNORE_INDEX = 255
# The model-side name of the background class (never shown to the platform).
BACKGROUND_NAME = "__background__"
# Above this unlabelled share of the training pixels, ignoring them probably is a mistake.
UNLABELLED_WARNING = 0.5


@dataclass(frozen=True)
class LabelSet:
    """How the task's ``class_names`` map to the labels the model learns."""

    class_names: tuple
    background: bool

    @property
    def offset(self) -> int:
        """Model label of ``class_names[0]``."""
        return 1 if self.background else 0

    @property
    def model_classes(self) -> tuple:
        """The class list the model learns (background first when it is a class)."""
        return ((BACKGROUND_NAME,) if self.background else ()) + tuple(self.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.model_classes)

    @property
    def fill(self) -> int:
        """The label of pixels no annotation covers."""
        return 0 if self.background else IGNORE_INDEX

    def class_ids(self, label_map: np.ndarray) -> np.ndarray:
        """Model labels -> indices into ``class_names``; background becomes -1."""
        return label_map.astype(np.int64) - self.offset

    def to_dict(self) -> dict:
        return {"class_names": list(self.class_names), "background": self.background}

    @classmethod
    def from_dict(cls, data: dict) -> LabelSet:
        return cls(tuple(data["class_names"]), bool(data["background"]))


def label_set(class_names: Sequence[str], background_class: bool) -> LabelSet:
    """The labels for a task; one class name forces the background class (see module doc)."""
    background = bool(background_class) or len(class_names) == 1
    if background and not background_class:
        log.info("one class only: learning it against an explicit background class")
    labels = LabelSet(tuple(class_names), background)
    if labels.num_classes > IGNORE_INDEX:
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{labels.num_classes} classes do not fit 8-bit label maps (at most {IGNORE_INDEX})",
        )
    return labels


@dataclass
class SplitFiles:
    """One converted split: the list file the dataset reads and what went into it."""

    list_file: Path
    images: int
    skipped: int
    labelled_pixels: int
    total_pixels: int

    @property
    def unlabelled_share(self) -> float:
        return 1.0 - self.labelled_pixels / self.total_pixels if self.total_pixels else 0.0


def label_map(item: DatasetItem, labels: LabelSet) -> np.ndarray | None:
    """The HxW uint8 label map of one item, or None when its size cannot be known.

    The size comes from the masks (decoded at the image size the annotation file gives), checked
    against the stored image size when the reader measured it.
    """
    shape = None
    if item.height and item.width:
        shape = (int(item.height), int(item.width))
    for annotation in item.annotations:
        if annotation.mask is not None:
            mask_shape = tuple(np.shape(annotation.mask))
            if shape is not None and mask_shape != shape:
                log.warning(
                    "skipping %s: its mask is %sx%s, the image %sx%s",
                    item.image,
                    mask_shape[1],
                    mask_shape[0],
                    shape[1],
                    shape[0],
                )
                return None
            shape = mask_shape
    if shape is None:
        try:
            width, height = image_size(item.image)
        except ExecutorError as error:
            log.warning("skipping %s: %s", item.image, error.message)
            return None
        shape = (height, width)
    result = np.full(shape, labels.fill, dtype=np.uint8)
    for annotation in item.annotations:
        if annotation.mask is None:
            continue  # a box without a mask says nothing about pixels
        result[np.asarray(annotation.mask, dtype=bool)] = annotation.class_id + labels.offset
    return result


def write_split(
    items: Sequence[DatasetItem], folder: Path, labels: LabelSet, keep_unlabelled: bool
) -> SplitFiles:
    """Write one split's label maps into ``folder`` and its list file next to it.

    ``keep_unlabelled``: keep images without any labelled pixel (they carry no signal when the
    background is ignored, so training leaves them out; validation keeps every image).
    """
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    skipped = labelled = total = 0
    for index, item in enumerate(items):
        labels_map = label_map(item, labels)
        if labels_map is None:
            skipped += 1
            continue
        known = int(np.count_nonzero(labels_map != IGNORE_INDEX))
        if not labels.background and known == 0 and not keep_unlabelled:
            skipped += 1
            continue
        path = folder / f"{index:06d}.png"
        Image.fromarray(labels_map, mode="L").save(str(path))
        entries.append([str(item.image), str(path)])
        labelled += int(np.count_nonzero(labels_map != labels.fill))
        total += labels_map.size
    list_file = folder.with_suffix(".json")
    list_file.write_text(json.dumps(entries), encoding="utf-8")
    return SplitFiles(list_file, len(entries), skipped, labelled, total)


@dataclass
class PreparedData:
    """Both splits converted, ready for the config."""

    train: SplitFiles
    val: SplitFiles
    labels: LabelSet


def prepare(
    train_items: Sequence[DatasetItem],
    val_items: Sequence[DatasetItem],
    work_dir: Path,
    labels: LabelSet,
) -> PreparedData:
    """Convert both splits under ``work_dir/label-maps``.

    Raises:
        ExecutorError: DATASET when no training or no validation image is left.
    """
    root = Path(work_dir) / "label-maps"
    train = write_split(train_items, root / "train", labels, keep_unlabelled=False)
    val = write_split(val_items, root / "val", labels, keep_unlabelled=True)
    for name, split, items in (("training", train, train_items), ("validation", val, val_items)):
        if split.images == 0:
            raise ExecutorError(
                ErrorCode.DATASET,
                f"the {name} set has no usable image ({len(items)} listed, {split.skipped} "
                "without a labelled pixel or unreadable)",
            )
        if split.skipped:
            log.info("%s: %d of %d images left out", name, split.skipped, len(items))
    log.info(
        "label maps: %d training, %d validation images; %.0f%% of the training pixels unlabelled",
        train.images,
        val.images,
        100 * train.unlabelled_share,
    )
    if not labels.background and train.unlabelled_share > UNLABELLED_WARNING:
        log.warning(
            "%.0f%% of the training pixels carry no label and are ignored; the model will "
            "still give every pixel one of the classes. Set background_class: true if they "
            "are background",
            100 * train.unlabelled_share,
        )
    return PreparedData(train=train, val=val, labels=labels)


class YmirSegDataset(BaseSegDataset):
    """Images and label maps listed as ``[[image, label map], ...]`` in a json file.

    The images stay where the platform put them (hash names, mixed extensions, which mmseg's
    folder-scanning datasets cannot pair with their label maps).
    """

    def load_data_list(self) -> list:
        entries = json.loads(Path(self.ann_file).read_text(encoding="utf-8"))
        return [
            {
                "img_path": image,
                "seg_map_path": seg_map,
                "label_map": self.label_map,
                "reduce_zero_label": self.reduce_zero_label,
                "seg_fields": [],
            }
            for image, seg_map in entries
        ]


# force: importing this module again (tests, DDP workers) must not fail on the registry.
DATASETS.register_module(name="YmirSegDataset", module=YmirSegDataset, force=True)
