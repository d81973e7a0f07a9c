"""Dataset conversion: YMIR index + annotations -> the COCO json that training reads.

A synthetic YMIR export of ``--annotations`` objects (default 100,000, ``--per-image`` per
image) is written once per format (ark, voc, coco; seg-coco with polygon masks for instance
segmentation), then converted the way training does it: ``contract.dataset.read_split`` (the
index, every annotation file, every image header) and ``data.write_coco``. It prints, per
format, the seconds, annotations per second and the peak Python memory of the conversion
(``tracemalloc``, measured in a second pass because tracing slows Python down).

To say whether conversion can ever be the bottleneck it also trains the default model for
real (a bare mmengine runner on the executor's own config, ``--train-images`` images at the
template's ``img_size``) and compares per image: conversion seconds per image / training
seconds per image and epoch. The goal is below 1%. Example (CPU)::

    PYTHONPATH=src python benchmarks/mmdetection_data.py --annotations 100000
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from {{ cookiecutter.package_name }}.contract.dataset import read_split
from {{ cookiecutter.package_name }}.contract.params import load_template, manifest_object_type
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man
from {{ cookiecutter.package_name }}.frameworks.mmdetection import data
from {{ cookiecutter.package_name }}.frameworks.openmmlab import weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mmdetection_training

CLASS_NAMES = ["rect", "ellipse", "triangle", "person", "car"]
WIDTH, HEIGHT = 640, 480


def write_export(folder: Path, fmt: str, images: int, per_image: int, object_type: int) -> Path:
    """A YMIR-like export: image files, annotation files and the index; returns the index."""
    rng = np.random.RandomState(0)
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base.png"
    Image.new("RGB", (WIDTH, HEIGHT), (90, 120, 150)).save(base)
    lines, coco_images, coco_annotations = [], [], []
    coco_file = folder / "coco.json"
    for index in range(images):
        image = folder / "assets" / f"{index % 256:02x}" / f"image-{index:07d}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(base, image)  # the headers are what conversion reads: one file, many names
        except OSError:
            image.write_bytes(base.read_bytes())
        x = rng.randint(0, WIDTH - 60, per_image)
        y = rng.randint(0, HEIGHT - 60, per_image)
        w = rng.randint(8, 60, per_image)
        h = rng.randint(8, 60, per_image)
        classes = rng.randint(0, len(CLASS_NAMES), per_image)
        boxes = list(zip(classes.tolist(), x.tolist(), y.tolist(), w.tolist(), h.tolist()))
        if fmt == "ark":
            annotation = folder / "annotations" / f"image-{index:07d}.txt"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_text(
                "".join(
                    f"{c}, {bx}, {by}, {bx + bw - 1}, {by + bh - 1}, -1.0, 0.0\n"
                    for c, bx, by, bw, bh in boxes
                ),
                encoding="utf-8",
            )
        elif fmt == "voc":
            annotation = folder / "annotations" / f"image-{index:07d}.xml"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_text(voc_xml(image, boxes), encoding="utf-8")
        else:
            annotation = coco_file
            coco_images.append(
                {"id": index + 1, "file_name": image.name, "width": WIDTH, "height": HEIGHT}
            )
            for c, bx, by, bw, bh in boxes:
                entry = {
                    "id": len(coco_annotations) + 1,
                    "image_id": index + 1,
                    "category_id": c,
                    "bbox": [bx, by, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
                if object_type == 4:
                    entry["segmentation"] = [[bx, by, bx + bw, by, bx + bw, by + bh, bx, by + bh]]
                coco_annotations.append(entry)
        lines.append(f"{image}\t{annotation}\n")
    if fmt in ("coco", "seg-coco"):
        categories = [{"id": i, "name": name} for i, name in enumerate(CLASS_NAMES)]
        document = {
            "images": coco_images,
            "annotations": coco_annotations,
            "categories": categories,
        }
        coco_file.write_text(json.dumps(document), encoding="utf-8")
    index_file = folder / "index.tsv"
    index_file.write_text("".join(lines), encoding="utf-8")
    return index_file


def voc_xml(image: Path, boxes: list) -> str:
    parts = [
        f"<annotation><filename>{image.name}</filename><size><width>{WIDTH}</width>"
        f"<height>{HEIGHT}</height><depth>3</depth></size><segmented>0</segmented>"
    ]
    for c, bx, by, bw, bh in boxes:
        parts.append(
            f"<object><name>{CLASS_NAMES[c]}</name><truncated>unknown</truncated>"
            f"<bndbox><xmin>{bx}</xmin><ymin>{by}</ymin><xmax>{bx + bw - 1}</xmax>"
            f"<ymax>{by + bh - 1}</ymax></bndbox><difficult>0</difficult></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def convert(index_file: Path, fmt: str, object_type: int, output: Path) -> dict:
    """What training does with a split: read it, write it as COCO."""
    items = read_split(index_file, CLASS_NAMES, fmt, object_type)
    return data.write_coco(items, CLASS_NAMES, output, object_type)


def main(argv=None) -> int:
    img_man = default_img_man()
    object_type = manifest_object_type(img_man)
    template = load_template(img_man, "training") or {}
    arguments = mmdetection_training.parser(__doc__.split("\n\n")[0])
    arguments.set_defaults(
        img_size=int(template.get("img_size", 640)),
        batch_size=min(8, int(template.get("batch_size_per_gpu", 8))),
        epochs=2,
        train_images=16,
    )
    arguments.add_argument("--annotations", type=int, default=100_000)
    arguments.add_argument("--per-image", type=int, default=10)
    arguments.add_argument("--formats", default="", help="default: ark,voc,coco (seg-coco)")
    args = arguments.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault(weights.WEIGHTS_DIR_VARIABLE, tempfile.mkdtemp(prefix="no-weights-"))
    formats = [part.strip() for part in args.formats.split(",") if part.strip()]
    formats = formats or (["ark", "voc", "coco"] if object_type == 2 else ["seg-coco"])
    images = max(1, args.annotations // args.per_image)
    print(
        f"{images} images x {args.per_image} annotations = {images * args.per_image} "
        f"annotations, object_type {object_type}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="ymir-bench-") as temporary:
        root = Path(temporary)
        for fmt in formats:
            index_file = write_export(root / fmt, fmt, images, args.per_image, object_type)
            started = time.perf_counter()
            counts = convert(index_file, fmt, object_type, root / f"{fmt}-out.json")
            seconds = time.perf_counter() - started
            tracemalloc.start()
            convert(index_file, fmt, object_type, root / f"{fmt}-traced.json")
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            results[fmt] = (seconds, counts, peak)
            print(
                f"{fmt:>9}: {counts['annotations']} annotations in {seconds:.2f} s = "
                f"{counts['annotations'] / seconds:,.0f} annotations/s, "
                f"{1000 * seconds / counts['images']:.3f} ms/image, peak "
                f"{peak / 2**20:.1f} MiB (tracemalloc)",
                flush=True,
            )
        # One real training run of the default model: seconds per image and epoch.
        work = root / "training"
        env_file = mmdetection_training.training_work(work / "task", object_type, args)
        _, config_file = mmdetection_training.run_executor(env_file)
        _, epochs = mmdetection_training.run_bare(
            config_file, work / "bare", f"bare-{time.time_ns()}"
        )
    # The first epoch pays for warm-up; later ones are the steady state.
    epoch = statistics.median(epochs[1:] or epochs)
    per_image_training = epoch / args.train_images
    print(
        f"training {args.model} at img_size {args.img_size}, batch {args.batch_size}: "
        f"{epoch:.2f} s per epoch of {args.train_images} images = "
        f"{per_image_training:.3f} s/image"
    )
    for fmt, (seconds, counts, _) in results.items():
        per_image = seconds / counts["images"]
        print(
            f"{fmt:>9}: conversion / one-epoch training time = "
            f"{100 * per_image / per_image_training:.3f}% (per image, {args.per_image} "
            "annotations each)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
