"""Inference throughput: the executor's batched path against two references, side by side.

For every model (default: those of this executor's target) the same untrained model package,
the same images and the same batch size go through three paths, interleaved round after
round so that a noisy machine slows all of them alike:

- **executor**: what ``infer`` runs, ``predictor.predict_batches`` (a DataLoader with
  ``--workers`` processes decoding and transforming the next batches while the model runs)
  plus the conversion into result-writer form (boxes; masks as compressed RLE);
- **per-image**: a loop of ``mmdet.apis.inference_detector`` over the image files, one image
  per forward pass, as the public YMIR MMDetection executor infers (with the same conversion
  into result-writer form), on the model as ``init_detector`` leaves it: on the CPU the
  executor's model computes channels-last (``detector.use_channels_last``), this one in
  PyTorch's default layout;
- **bare forward**: the limit, the model's ``predict`` alone on batches that were decoded,
  transformed, normalised and moved to the device beforehand.

It prints images per second for each path and the ratios executor / per-image and executor /
bare forward. Nothing is asserted: this is a measurement, not a test. Example (CPU, small)::

    PYTHONPATH=src python benchmarks/mmdetection_inference.py --images 24 --img-size 320

On a GPU add ``--device cuda`` (the default when one is visible) and keep the 640 px default.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from {{ cookiecutter.package_name }}.contract.models import load_model_package, unpack_model
from {{ cookiecutter.package_name }}.contract.params import manifest_object_type
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man
from {{ cookiecutter.package_name }}.frameworks.mmdetection import models, package, predictor
from {{ cookiecutter.package_name }}.frameworks.mmdetection.detector import load_detector
from {{ cookiecutter.package_name }}.frameworks.openmmlab import distributed

CLASS_NAMES = ["rect", "ellipse", "triangle"]


def synthetic_images(folder: Path, count: int, width: int, height: int, seed: int = 0) -> list:
    """``count`` JPEG files of random shapes on a noisy background (what a camera gives)."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = rng.randint(60, 200, (height, width, 3)).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 8)):
            x0, y0 = rng.randint(0, width - 40), rng.randint(0, height - 40)
            x1 = x0 + rng.randint(20, max(21, width // 3))
            y1 = y0 + rng.randint(20, max(21, height // 3))
            colour = tuple(int(value) for value in rng.randint(0, 255, 3))
            shape = draw.ellipse if rng.rand() < 0.5 else draw.rectangle
            shape([x0, y0, x1, y1], fill=colour)
        path = folder / f"image-{index:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


CLOCK = {"name": "wall"}


def clock() -> float:
    """Seconds: wall time, or (``--clock cpu``) CPU time of this process and its reaped
    children (the DataLoader workers), which other load on a shared machine hardly changes."""
    if CLOCK["name"] == "wall":
        return time.perf_counter()
    import resource  # Unix only, like the images

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def executor_path(detector, items, batch_size: int, workers: int) -> float:
    """Seconds for the executor's batched path over ``items`` (predictions in writer form)."""
    started = clock()
    count = 0
    for output in predictor.predict_batches(
        detector, items, batch_size=batch_size, workers=workers
    ):
        predictor.to_prediction(detector, output)
        count += 1
    synchronize(detector.device)
    assert count == len(items)
    return clock() - started


def per_image_path(detector, paths, pipeline) -> float:
    """Seconds for a per-image ``inference_detector`` loop (the public executor's way)."""
    from mmdet.apis import inference_detector

    started = clock()
    for index, path in enumerate(paths):
        sample = inference_detector(detector.model, str(path), test_pipeline=pipeline)
        # The same conversion into result-writer form as the executor's path.
        height, width = sample.metainfo["ori_shape"][:2]
        output = predictor.BatchOutput(index, str(path), (width, height), [sample])
        predictor.to_prediction(detector, output)
    synchronize(detector.device)
    return clock() - started


def bare_batches(detector, items, batch_size: int) -> list:
    """Decoded, transformed, normalised batches already on the device."""
    import torch

    pipeline = predictor.test_pipeline(detector.cfg)
    dataset = predictor.CandidateDataset(items, pipeline)
    batches = []
    for start in range(0, len(items), batch_size):
        views = [
            dataset[position]["views"][0]
            for position in range(start, min(start + batch_size, len(items)))
        ]
        data = {"inputs": [view[0] for view in views], "data_samples": [view[1] for view in views]}
        with torch.no_grad():
            batches.append(detector.model.data_preprocessor(data, False))
    synchronize(detector.device)
    return batches


def bare_path(detector, batches) -> float:
    """Seconds for ``model.predict`` alone over prepared batches (the limit)."""
    import torch

    started = clock()
    with torch.no_grad():
        for data in batches:
            detector.model(data["inputs"], data["data_samples"], mode="predict")
    synchronize(detector.device)
    return clock() - started


def per_image_pipeline(detector):
    """The config's test pipeline reading files, as ``inference_detector`` uses it."""
    from mmengine.dataset import Compose

    from {{ cookiecutter.package_name }}.frameworks.mmdetection import config

    steps = [step for step in config.test_pipeline(detector.cfg)]
    return Compose(steps)


def measure(args, spec, object_type: int, work: Path, paths: list) -> dict:
    tar = package.untrained_package(
        work / f"{spec.name}.tar",
        spec.name,
        spec.object_type,
        CLASS_NAMES,
        img_size=args.img_size,
        noise=0.02,
    )
    files = unpack_model(tar, None, work / f"{spec.name}-models")
    installed = load_model_package(work / f"{spec.name}-models", files)

    def load(**layout):
        return load_detector(
            installed,
            spec.object_type,
            CLASS_NAMES,
            args.device,
            score_thr=args.confidence_threshold,
            fp16=args.fp16,
            **layout,
        )

    detector = load()
    # The public executor's model: the default memory layout, and the model.cfg that
    # inference_detector reads (init_detector sets it).
    stock = load(channels_last=False)
    stock.model.cfg = stock.cfg
    items = list(enumerate(paths))
    pipeline = per_image_pipeline(stock)
    batches = bare_batches(detector, items, args.batch_size)
    # Warm-up: kernels, allocator, lazy initialisations.
    executor_path(detector, items[: args.batch_size], args.batch_size, 0)
    per_image_path(stock, paths[:2], pipeline)
    bare_path(detector, batches[:1])
    timings = {"executor": [], "per-image": [], "bare": []}
    for _ in range(args.rounds):
        timings["executor"].append(executor_path(detector, items, args.batch_size, args.workers))
        timings["per-image"].append(per_image_path(stock, paths, pipeline))
        timings["bare"].append(bare_path(detector, batches))
    speed = {name: len(paths) / statistics.median(values) for name, values in timings.items()}
    del batches
    return speed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default="", help="comma-separated names (default: this target's)"
    )
    parser.add_argument("--images", type=int, default=64, help="number of images")
    parser.add_argument("--image-width", type=int, default=800)
    parser.add_argument("--image-height", type=int, default=600)
    parser.add_argument("--img-size", type=int, default=640, help="the models' input size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (executor)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--confidence-threshold", type=float, default=0.05)
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="half precision on a GPU (every path; the CPU ignores it)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if visible)")
    parser.add_argument(
        "--json", type=Path, help="also write the rates to this file (make gpu-check reads it)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: CPU seconds instead of wall time (a shared CPU machine; blind to overlap)",
    )
    return parser


def _model_specs(models_option: str, object_type: int) -> list:
    """The models ``--models`` names ("all": every offered one; default: this target's)."""
    names = [name.strip() for name in models_option.split(",") if name.strip()]
    if names == ["all"]:
        return list(models.MODELS.values())
    if names:
        return [models.get_model(name) for name in names]
    return models.models_for(object_type)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    CLOCK["name"] = args.clock
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    import torch

    args.device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda":
        args.device = "cuda:0"
    object_type = manifest_object_type(default_img_man())
    specs = _model_specs(args.models, object_type)
    if args.device.startswith("cuda"):
        hardware = torch.cuda.get_device_name(torch.device(args.device))
    else:
        hardware = (
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        )
    workers = distributed.loader_workers(args.workers, args.device.startswith("cuda"))
    print(
        f"device {args.device} ({hardware}); torch {torch.__version__}; {args.images} images "
        f"{args.image_width}x{args.image_height}, img_size {args.img_size}, batch "
        f"{args.batch_size}, {args.workers} workers asked for ({workers} run), fp16 {args.fp16}, "
        f"{args.clock} clock, "
        f"median of {args.rounds} interleaved rounds"
    )
    header = (
        f"{'model':<17}{'executor':>10}{'per-image':>11}{'bare':>9}"
        f"{'exec/per-image':>16}{'exec/bare':>11}"
    )
    print(header + "\n" + f"{'':<17}{'img/s':>10}{'img/s':>11}{'img/s':>9}")
    rates = []
    with tempfile.TemporaryDirectory(prefix="ymir-bench-") as temporary:
        work = Path(temporary)
        paths = synthetic_images(work / "images", args.images, args.image_width, args.image_height)
        for spec in specs:
            speed = measure(args, spec, object_type, work, paths)
            rates.append({"model": spec.name, **speed})
            print(
                f"{spec.name:<17}{speed['executor']:>10.2f}{speed['per-image']:>11.2f}"
                f"{speed['bare']:>9.2f}{speed['executor'] / speed['per-image']:>15.2f}x"
                f"{100 * speed['executor'] / speed['bare']:>10.0f}%",
                flush=True,
            )
    if args.json:
        summary = {
            "device": args.device,
            "hardware": hardware,
            "torch": torch.__version__,
            "fp16": args.fp16,
            "images": args.images,
            "img_size": args.img_size,
            "batch_size": args.batch_size,
            "rates": rates,  # images per second of each path
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
