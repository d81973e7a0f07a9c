"""A synthetic labelled pool for active-learning experiments, shaped like the public one.

The public YMIR mining experiment (COCO, one class at a time) starts from images with and
without the class and mines a large pool in which the class is rare among many images of other
things. This pool has the same ingredients, small enough for a CPU:

- ``common``: warm-coloured rectangles, in about ``common_fraction`` of the images;
- ``rare``: blue ellipses, in only ``rare_fraction`` of the images;
- distractors, never annotated: blue triangles (the rare class's colour) and violet ellipses
  (its shape), in about ``distractor_fraction`` of the images, so that a model that learnt
  "blue" or "round" from a handful of rare examples fires on them;
- lookalikes, never annotated, only with ``lookalike_fraction`` above 0: the rare class's
  blue ellipses without the white centre dot that the rare objects then carry, in about
  ``lookalike_fraction`` of the images;
- ``rare_contrast`` below 1 blends the rare objects (their dot too) and the lookalikes into
  the background under them. At full contrast a detector trained from scratch finds the rare
  class from 5 examples (AP@0.5 above 0.9 at 64 px), so labelling more of it cannot show; a
  faint one is still learnt from 20 (AP@0.5 near 0.2) and keeps gaining from more, as real
  classes do;
- every image has a cluttered background (noise and faint blobs); images without any
  annotated object are the negatives.

A model trained on a random start set has seen few rare objects; a mining algorithm that finds
the images it is unsure about (rare objects, distractors) teaches it more per labelled image
than random picks. :func:`write_pool` writes the images and one COCO json (boxes and masks,
so every target can use it) that ``devkit al-loop --dataset`` reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..contract.masks import encode_rle

CLASS_NAMES = ("common", "rare")
COMMON, RARE = 0, 1
ANNOTATIONS_FILE = "annotations.json"


@dataclass(frozen=True)
class PoolRecipe:
    """What the pool holds; the fractions are per image, independently drawn."""

    images: int = 600
    image_size: int = 96
    rare_fraction: float = 0.08
    common_fraction: float = 0.45
    distractor_fraction: float = 0.5
    lookalike_fraction: float = 0.0
    rare_contrast: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if self.images < 1:
            raise ValueError(f"a pool needs at least one image, got {self.images}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")
        fractions = ("rare_fraction", "common_fraction", "distractor_fraction")
        for name in (*fractions, "lookalike_fraction", "rare_contrast"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


def write_pool(folder: str | os.PathLike, recipe: PoolRecipe = PoolRecipe()) -> Path:
    """Write ``recipe.images`` PNG images and their COCO json (``file_name`` relative to
    ``folder``) into ``folder``; return the json.

    Categories are ``common`` (id 0) and ``rare`` (id 1); every annotation has its box, area
    and mask (compressed RLE). The same recipe always gives the same files.
    """
    recipe.check()
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(recipe.seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for number in range(recipe.images):
        image, objects = draw_image(rng, recipe)
        name = f"pool-{number:06d}.png"
        image.save(root / name)
        image_id = number + 1
        images.append(
            {"id": image_id, "file_name": name, "width": image.width, "height": image.height}
        )
        for class_id, mask in objects:
            ys, xs = np.nonzero(mask)
            box = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": class_id,
                    "bbox": box,
                    "area": int(mask.sum()),
                    "segmentation": encode_rle(mask),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": index, "name": name} for index, name in enumerate(CLASS_NAMES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    path = root / ANNOTATIONS_FILE
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def draw_image(
    rng: np.random.RandomState, recipe: PoolRecipe
) -> tuple[Image.Image, list[tuple[int, np.ndarray]]]:
    """One image and its annotated objects ``(class_id, bool mask)``; distractors are drawn
    but not returned."""
    size = recipe.image_size
    image = _background(rng, size)
    # Objects are placed in free cells of a 2 x 2 grid, so they never overlap (the masks stay
    # disjoint, which keeps semantic labels unambiguous).
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    rng.shuffle(cells)
    planned = []
    if rng.rand() < recipe.rare_fraction:
        planned.append("rare")
    if rng.rand() < recipe.common_fraction:
        planned += ["common"] * (1 + int(rng.rand() < 0.3))
    if rng.rand() < recipe.distractor_fraction:
        planned += [
            ("blue-triangle", "violet-ellipse")[rng.randint(2)] for _ in range(1 + rng.randint(2))
        ]
    # drawn only when asked for, so that a recipe without lookalikes keeps its images
    if recipe.lookalike_fraction and rng.rand() < recipe.lookalike_fraction:
        planned.insert(0, "lookalike")
    marked = bool(recipe.lookalike_fraction)
    objects = []
    for kind, (row, column) in zip(planned, cells):
        contrast = recipe.rare_contrast if kind in ("rare", "lookalike") else 1.0
        mask = _draw_object(image, rng, kind, row, column, marked, contrast)
        if kind in ("common", "rare") and mask.any():
            objects.append((COMMON if kind == "common" else RARE, mask))
    return image, objects


def _background(rng: np.random.RandomState, size: int) -> Image.Image:
    base = rng.randint(120, 200, size=3)
    noise = rng.randint(-25, 26, size=(size, size, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 6)):  # faint blobs: texture that is no object
        x, y = rng.randint(0, size, 2)
        radius = rng.randint(size // 16 + 1, size // 5 + 2)
        shade = tuple(int(v) for v in np.clip(base + rng.randint(-40, 41, 3), 0, 255))
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=shade)
    return image.filter(ImageFilter.GaussianBlur(1))


def _draw_object(
    image: Image.Image,
    rng: np.random.RandomState,
    kind: str,
    row: int,
    column: int,
    marked: bool = False,
    contrast: float = 1.0,
) -> np.ndarray:
    """Draw one object inside its grid cell; return its mask. ``marked``: a rare object gets
    the white centre dot that tells it from a lookalike; ``contrast`` below 1 blends the
    object's colour with the mean colour of the background under it, and the dot with that."""
    size = image.width
    cell = size // 2
    width = int(rng.randint(int(cell * 0.45), int(cell * 0.95) + 1))
    height = int(rng.randint(int(cell * 0.45), int(cell * 0.95) + 1))
    left = column * cell + int(rng.randint(0, cell - width + 1))
    top = row * cell + int(rng.randint(0, cell - height + 1))
    box = [left, top, left + width - 1, top + height - 1]
    colour: tuple[int, ...]
    if kind == "common":  # warm: red to orange
        colour = (int(rng.randint(190, 240)), int(rng.randint(40, 140)), int(rng.randint(20, 70)))
    elif kind == "violet-ellipse":
        colour = (int(rng.randint(120, 170)), int(rng.randint(40, 80)), int(rng.randint(170, 230)))
    else:  # rare, lookalikes and blue triangles: the same blues
        colour = (int(rng.randint(20, 70)), int(rng.randint(60, 120)), int(rng.randint(180, 240)))
    if contrast < 1.0:
        under = np.asarray(image.crop((left, top, left + width, top + height))).reshape(-1, 3)
        colour = _blend(colour, under.mean(axis=0), contrast)
    draw = ImageDraw.Draw(image)
    mask_image = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask_image)
    if kind == "common":
        shapes = (draw.rectangle, mask_draw.rectangle)
        for shape, fill in zip(shapes, (colour, 255)):
            shape(box, fill=fill)
    elif kind == "blue-triangle":
        points = [
            (left + width // 2, top),
            (left, top + height - 1),
            (left + width - 1, top + height - 1),
        ]
        draw.polygon(points, fill=colour)
        mask_draw.polygon(points, fill=255)
    else:
        draw.ellipse(box, fill=colour)
        mask_draw.ellipse(box, fill=255)
        if kind == "rare" and marked:
            radius = max(1, min(width, height) // 6)
            x, y = left + width // 2, top + height // 2
            shade = int(rng.randint(225, 256))
            dot = _blend((shade,) * 3, colour, contrast)  # faint on the faint body
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=dot)
    return np.asarray(mask_image) > 0


def _blend(colour: Sequence[float], under: Sequence[float], contrast: float) -> tuple[int, ...]:
    """``contrast`` of ``colour`` over ``under`` (1: ``colour`` itself)."""
    return tuple(round(float(contrast * c + (1 - contrast) * u)) for c, u in zip(colour, under))
