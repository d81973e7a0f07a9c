"""Scale: result writers, input readers and a whole executor run at up to a million candidates.

Framework-free (no torch, no model): it measures what the contract layer costs per candidate
and per box, the part of a mining or inference task that grows with the dataset. Three parts,
each case in a fresh process so that its peak RSS is its own:

1. **Result writers**, today's (``reference_results.py``, everything in memory) against the
   streamed ones (``contract/results.py``), side by side: synthetic candidates (``--sizes``)
   with ``--boxes`` boxes per image (detection) or ``--masks`` compressed-RLE masks per image
   (segmentation), ``add()`` for every candidate then ``write()``; and the mining result.
   Per case: seconds, microseconds per candidate and per box (or mask), peak RSS, and bytes
   per candidate and per box. Per box means the marginal cost: over the run with 0 boxes.
   Today's writers are skipped above ``--old-max`` candidates (at a million they need about
   30 GB and ten minutes).
2. **Input readers**: the candidate index (today's list of ``Path`` against the compact
   :class:`CandidateList`), a training index (``read_index``), and a COCO export with
   ``--inputs`` annotations read by ``read_split`` (ten per image).
3. **End to end**: the executor's own entrypoint (``python -m <package>`` as the platform
   starts it: env.yaml, typed context, mining then inference, validated writers, monitor)
   over a devkit work dir with ``--e2e`` distinct candidate paths (hard links to a few
   images), with a synthetic model in place of the task functions (no pixels decoded, a
   ``--e2e-boxes`` boxes per image). Reports the executor process's peak RSS.

Examples (from the repository root, the package importable)::

    PYTHONPATH=src python benchmarks/scale.py                       # 10k, 100k, 1M: long
    PYTHONPATH=src python benchmarks/scale.py --sizes 10000 --boxes 0,30 --inputs 100000 \\
        --e2e 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from {{ cookiecutter.package_name }}.contract import dataset
from {{ cookiecutter.package_name }}.contract.candidates import CandidateList
from {{ cookiecutter.package_name }}.contract.env import OutputPaths
from {{ cookiecutter.package_name }}.contract.masks import encode_rle
from {{ cookiecutter.package_name }}.contract.params import manifest_object_type
from {{ cookiecutter.package_name }}.contract.results import (
    DetectionResult,
    MiningResult,
    SegmentationResult,
)
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_results

PACKAGE = "{{ cookiecutter.package_name }}"
CLASS_NAMES = [f"class{index:02d}" for index in range(20)]
WIDTH, HEIGHT = 640, 480
POOL = 64  # distinct synthetic predictions, reused: generating them is not what is measured
PARTS = ("writers", "mining", "readers", "e2e")
# Hard links per file at most (ext4 allows 65,000): more names get more copies to link to.
LINKS_PER_FILE = 60_000
TARGETS = {
    "detection": 2,
    "semantic-segmentation": 3,
    "instance-segmentation": 4,
}


# -- synthetic predictions --------------------------------------------------------------------


def box_pool(per_image: int, classes: int = len(CLASS_NAMES)) -> list[list[tuple]]:
    """Model-like boxes: float corners and sizes, float32 scores (17-digit reprs)."""
    rng = np.random.RandomState(0)
    pool = []
    for _ in range(POOL):
        boxes = []
        for _ in range(per_image):
            x, y = rng.uniform(0, WIDTH - 20), rng.uniform(0, HEIGHT - 20)
            w, h = rng.uniform(4, 200), rng.uniform(4, 200)
            label = int(rng.randint(classes))
            score = float(np.float32(rng.uniform(0.05, 1.0)))
            boxes.append((float(x), float(y), float(w), float(h), label, score))
        pool.append(boxes)
    return pool


def mask_pool(
    per_image: int, object_type: int, height: int, width: int, classes: int = len(CLASS_NAMES)
) -> list[list[tuple]]:
    """Masks as the frameworks hand them over: compressed RLE, one class per mask (semantic)."""
    rng = np.random.RandomState(1)
    pool = []
    for _ in range(POOL // 4):
        items = []
        for number in range(per_image):
            mask = np.zeros((height, width), dtype=bool)
            top, left = rng.randint(height // 2), rng.randint(width // 2)
            bottom = top + rng.randint(1, max(2, height // 2))
            right = left + rng.randint(1, max(2, width // 2))
            mask[top:bottom, left:right] = True
            score = float(np.float32(rng.uniform(0.05, 1.0))) if object_type == 4 else None
            items.append((encode_rle(mask), number % classes, score))
        pool.append(items)
    return pool


def candidate_paths(count: int) -> list[str]:
    return [f"/in/assets/{index:040x}.jpg" for index in range(count)]


def outputs(root: Path) -> OutputPaths:
    return OutputPaths(
        root_dir=root,
        models_dir=root / "models",
        tensorboard_dir=root / "tensorboard",
        training_result_file=root / "models" / "result.yaml",
        mining_result_file=root / "result.tsv",
        infer_result_file=root / "infer-result.json",
        monitor_file=root / "monitor.txt",
        executor_log_file=None,
    )


# -- one measured case, in a child process ----------------------------------------------------


def memory_status(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The peak RSS of this process's own memory since it started.

    ``VmHWM`` where there is one: ``ru_maxrss`` also counts the parent's pages a child
    inherited when it was forked, before it exec'd (the benchmark's own lists would show up
    as its cases' memory).
    """
    peak = memory_status("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def rss_bytes() -> int:
    current = memory_status("VmRSS")
    return current if current is not None else peak_rss_bytes()


def clock_function(name: str):
    return time.process_time if name == "cpu" else time.perf_counter


def run_writer_case(case: dict) -> dict:
    """``add()`` every candidate, then ``write()``; the candidates are made inside the case,
    as the task's context makes them (a list of Path before, a CandidateList now)."""
    clock = clock_function(case["clock"])
    baseline = rss_bytes()
    old = case["impl"] == "old"
    paths = candidate_paths(case["candidates"])
    candidates = [Path(path) for path in paths] if old else CandidateList(paths)
    del paths
    if old:
        detection, segmentation, mining = (
            reference_results.DetectionResult,
            reference_results.SegmentationResult,
            reference_results.MiningResult,
        )
    else:
        detection, segmentation, mining = DetectionResult, SegmentationResult, MiningResult
    out = outputs(Path(case["out"]))
    writer_kind, per_image, object_type = case["writer"], case["per_image"], case["object_type"]
    if writer_kind == "mining":
        writer = mining(out, candidates)
        count = len(candidates)
        started = clock()
        for index, path in enumerate(candidates):
            writer.add(path, ((index * 7919) % count) / count)
    elif object_type == 2:
        writer = detection(out, candidates, CLASS_NAMES, False)
        pool = box_pool(per_image)
        started = clock()
        for index, path in enumerate(candidates):
            writer.add(path, pool[index % POOL], size=(WIDTH, HEIGHT))
    else:
        height, width = case["mask_size"]
        writer = segmentation(out, candidates, CLASS_NAMES, object_type)
        pool = mask_pool(per_image, object_type, height, width)
        started = clock()
        for index, path in enumerate(candidates):
            writer.add(path, width, height, pool[index % len(pool)])
    added = clock()
    writer.write()
    written = clock()
    result_file = writer.result_file
    return {
        "add_s": added - started,
        "write_s": written - added,
        "baseline": baseline,
        "peak": peak_rss_bytes(),
        "file_bytes": result_file.stat().st_size,
    }


def run_reader_case(case: dict) -> dict:
    clock = clock_function(case["clock"])
    baseline = rss_bytes()
    started = clock()
    if case["reader"] == "candidates":
        if case["impl"] == "old":
            items = [image for image, _ in dataset.read_index(case["file"])]  # today's
        else:
            items = dataset.read_candidates(case["file"])
    elif case["reader"] == "training-index":
        items = dataset.read_index(case["file"])
    else:
        items = dataset.read_split(case["file"], CLASS_NAMES, "coco", 2)
    elapsed = clock() - started
    return {
        "read_s": elapsed,
        "items": len(items),
        "annotations": sum(len(item.annotations) for item in items)
        if case["reader"] == "coco"
        else 0,
        "baseline": baseline,
        "peak": peak_rss_bytes(),
    }


def child(case_json: str) -> int:
    case = json.loads(case_json)
    result = run_writer_case(case) if case["kind"] == "writer" else run_reader_case(case)
    print(json.dumps(result))
    return 0


def measure(case: dict) -> dict:
    """Run ``case`` in a fresh interpreter (its own peak RSS); its JSON result."""
    completed = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_interleaved(cases: dict[str, dict], repeat: int) -> dict[str, dict]:
    """Each case ``repeat`` times, the variants taking turns; per case its fastest run.

    On a shared machine one run can take a third longer than the next with the same code;
    the fastest of a few is the least disturbed, and taking turns exposes every variant to
    the same stretch of noise. The highest peak RSS of the runs is kept.
    """
    best: dict[str, dict] = {}
    peaks: dict[str, int] = {}
    for _ in range(repeat):
        for name, case in cases.items():
            shutil.rmtree(case["out"], ignore_errors=True)
            measured = measure(case)
            shutil.rmtree(case["out"], ignore_errors=True)
            peaks[name] = max(peaks.get(name, 0), measured["peak"])
            if name not in best or total(measured) < total(best[name]):
                best[name] = measured
    return {name: {**measured, "peak": peaks[name]} for name, measured in best.items()}


# -- part 1: writers --------------------------------------------------------------------------


def writer_table(args: argparse.Namespace, object_type: int, scratch: Path) -> None:
    per_image_counts = args.boxes if object_type == 2 else args.masks
    unit = "box" if object_type == 2 else "mask"
    target = {2: "detection", 3: "semantic segmentation", 4: "instance segmentation"}
    print(
        f"Result writers: {target[object_type]}, clock {args.clock}, "
        f"fastest of {args.repeat} runs each"
    )
    header = (
        f"{'candidates':>10} {unit + 'es' if unit == 'box' else unit + 's':>6} {'impl':>4} "
        f"{'add s':>8} {'write s':>8} {'us/cand':>8} {'us/' + unit:>8} {'peak MB':>8} "
        f"{'B/cand':>8} {'B/' + unit:>8}"
    )
    print(header)
    results: dict = {}
    for count in args.sizes:
        for per_image in per_image_counts:
            cases = {}
            for impl in ("old", "new"):
                if impl == "old" and (
                    count > args.old_max or count * per_image > args.old_max_items
                ):
                    continue
                cases[impl] = {
                    "kind": "writer",
                    "writer": "infer",
                    "impl": impl,
                    "candidates": count,
                    "per_image": per_image,
                    "object_type": object_type,
                    "mask_size": list(args.mask_size),
                    "clock": args.clock,
                    "out": str(scratch / f"writer-{impl}"),
                }
            for impl, measured in measure_interleaved(cases, args.repeat).items():
                results[(count, per_image, impl)] = measured
            for impl in ("old", "new"):
                measured = results.get((count, per_image, impl))
                if measured is None:
                    print(
                        f"{count:>10,} {per_image:>6} {impl:>4}  skipped: above --old-max "
                        f"{args.old_max:,} candidates or --old-max-items {args.old_max_items:,} "
                        "(about 1 KB of memory per box)"
                    )
                    continue
                zero = results.get((count, 0, impl))
                print(writer_row(count, per_image, impl, measured, zero))
    print(f"old / new (time, time per {unit} over the run without any, peak RSS growth):")
    for count in args.sizes:
        for per_image in per_image_counts:
            old = results.get((count, per_image, "old"))
            new = results.get((count, per_image, "new"))
            if old and new:
                speedup = total(old) / max(total(new), 1e-9)
                smaller = growth(old) / max(growth(new), 1)
                marginal = ""
                old_zero, new_zero = results.get((count, 0, "old")), results.get((count, 0, "new"))
                if per_image and old_zero and new_zero:
                    added = (total(old) - total(old_zero)) / max(total(new) - total(new_zero), 1e-9)
                    marginal = f" {added:>8.1f}x per {unit}"
                print(
                    f"{count:>10,} {per_image:>6} {speedup:>8.1f}x time{marginal} "
                    f"{smaller:>8.1f}x memory"
                )
    print()


def total(measured: dict) -> float:
    return measured["add_s"] + measured["write_s"]


def growth(measured: dict) -> int:
    return max(0, measured["peak"] - measured["baseline"])


def writer_row(count: int, per_image: int, impl: str, measured: dict, zero: dict | None) -> str:
    items = count * per_image
    us_cand = total(measured) / count * 1e6
    b_cand = growth(measured) / count
    if per_image and zero is not None:
        # Marginal: what the boxes add over the same candidates without any.
        us_item = (total(measured) - total(zero)) / items * 1e6
        b_item = (growth(measured) - growth(zero)) / items
    elif per_image:
        us_item, b_item = total(measured) / items * 1e6, growth(measured) / items
    else:
        us_item = b_item = 0.0
    return (
        f"{count:>10,} {per_image:>6} {impl:>4} {measured['add_s']:>8.2f} "
        f"{measured['write_s']:>8.2f} {us_cand:>8.1f} {us_item:>8.2f} "
        f"{measured['peak'] / 1e6:>8.0f} {b_cand:>8.0f} {b_item:>8.1f}"
    )


def mining_table(args: argparse.Namespace, scratch: Path) -> None:
    print(f"Mining result (result.tsv), clock {args.clock}, fastest of {args.repeat} runs each")
    print(
        f"{'candidates':>10} {'impl':>4} {'add s':>8} {'write s':>8} {'us/cand':>8} "
        f"{'peak MB':>8} {'B/cand':>8}"
    )
    for count in args.sizes:
        cases = {
            impl: {
                "kind": "writer",
                "writer": "mining",
                "impl": impl,
                "candidates": count,
                "per_image": 0,
                "object_type": 0,
                "clock": args.clock,
                "out": str(scratch / f"mining-{impl}"),
            }
            for impl in ("old", "new")
            if impl == "new" or count <= args.old_max
        }
        best = measure_interleaved(cases, args.repeat)
        for impl in ("old", "new"):
            measured = best.get(impl)
            if measured is None:
                print(f"{count:>10,} {impl:>4}  skipped: above --old-max {args.old_max:,}")
                continue
            print(
                f"{count:>10,} {impl:>4} {measured['add_s']:>8.2f} {measured['write_s']:>8.2f} "
                f"{total(measured) / count * 1e6:>8.1f} {measured['peak'] / 1e6:>8.0f} "
                f"{growth(measured) / count:>8.0f}"
            )
    print()


# -- part 2: readers --------------------------------------------------------------------------


def hard_linked_images(folder: Path, count: int, extension: str = ".jpg") -> list[Path]:
    """``count`` distinct image paths: hard links to a few small images."""
    folder.mkdir(parents=True, exist_ok=True)
    originals = []
    for number in range(4):
        original = folder / f"original-{number}{extension}"
        Image.new("RGB", (WIDTH, HEIGHT), (40 * number, 90, 150)).save(original)
        originals.append(original)
    sources = link_sources(originals, folder, count)
    paths = []
    for index in range(count):
        path = folder / f"{index:040x}{extension}"
        if not path.exists():
            os.link(sources[index % len(sources)], path)
        paths.append(path)
    return paths


def link_sources(originals: list[Path], folder: Path, count: int) -> list[Path]:
    """``originals`` and enough copies of them for ``count`` hard links in all."""
    sources = list(originals)
    folder.mkdir(parents=True, exist_ok=True)
    while len(sources) * LINKS_PER_FILE < count:
        original = originals[len(sources) % len(originals)]
        copy = folder / f"copy-{len(sources)}{original.suffix}"
        shutil.copyfile(original, copy)
        sources.append(copy)
    return sources


def reader_table(args: argparse.Namespace, scratch: Path) -> None:
    lines = args.inputs
    print(f"Input readers, {lines:,} lines / annotations, clock {args.clock}")
    print(
        f"{'reader':>16} {'impl':>4} {'items':>10} {'read s':>8} {'us/item':>8} "
        f"{'peak MB':>8} {'B/item':>8}"
    )
    folder = scratch / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    paths = candidate_paths(lines)
    candidate_index = folder / "candidate-index.tsv"
    candidate_index.write_text("".join(path + "\n" for path in paths), encoding="utf-8")
    training_index = folder / "train-index.tsv"
    training_index.write_text(
        "".join(f"{path}\t/in/annotations/{path[-44:-4]}.txt\n" for path in paths),
        encoding="utf-8",
    )
    del paths
    coco_index = write_coco_export(folder, lines)
    cases = [
        ("candidates", "old", candidate_index),
        ("candidates", "new", candidate_index),
        ("training-index", "new", training_index),
        ("coco", "new", coco_index),
    ]
    for reader, impl, path in cases:
        measured = measure(
            {
                "kind": "reader",
                "reader": reader,
                "impl": impl,
                "file": str(path),
                "clock": args.clock,
            }
        )
        items = measured["annotations"] or measured["items"]
        print(
            f"{reader:>16} {impl:>4} {items:>10,} {measured['read_s']:>8.2f} "
            f"{measured['read_s'] / max(items, 1) * 1e6:>8.2f} {measured['peak'] / 1e6:>8.0f} "
            f"{growth(measured) / max(items, 1):>8.0f}"
        )
    print()


def write_coco_export(folder: Path, annotations: int, per_image: int = 10) -> Path:
    """A YMIR COCO export (one JSON for every line) of ``annotations`` boxes; its index."""
    count = max(1, annotations // per_image)
    images = hard_linked_images(folder / "assets", count)
    coco_file = folder / "coco.json"
    rng = np.random.RandomState(2)
    with open(coco_file, "w", encoding="utf-8") as stream:
        stream.write('{"images": [')
        stream.write(
            ", ".join(
                json.dumps(
                    {"id": index + 1, "file_name": path.name, "width": WIDTH, "height": HEIGHT}
                )
                for index, path in enumerate(images)
            )
        )
        stream.write('], "categories": ')
        categories = [{"id": index, "name": name} for index, name in enumerate(CLASS_NAMES)]
        stream.write(json.dumps(categories))
        stream.write(', "annotations": [')
        for number in range(annotations):
            x, y = rng.randint(0, WIDTH - 40), rng.randint(0, HEIGHT - 40)
            annotation = {
                "id": number + 1,
                "image_id": number // per_image % count + 1,
                "category_id": number % len(CLASS_NAMES),
                "bbox": [int(x), int(y), 30, 30],
                "area": 900,
                "iscrowd": 0,
            }
            stream.write((", " if number else "") + json.dumps(annotation))
        stream.write("]}\n")
    index = folder / "coco-index.tsv"
    index.write_text("".join(f"{path}\t{coco_file}\n" for path in images), encoding="utf-8")
    return index


# -- part 3: the executor, end to end ---------------------------------------------------------


def declared_tasks() -> list[str]:
    """The tasks of part 3 the executor declares: mining and/or infer."""
    from {{ cookiecutter.package_name }}.devkit.chain import supported_tasks

    declared = supported_tasks(default_img_man())
    return [task for task in ("mining", "infer") if task in declared]


def make_work_dir(work: Path, count: int, object_type: int, tasks: list[str]) -> None:
    """A devkit work dir for ``tasks`` whose index lists ``count`` hard-linked images."""
    from {{ cookiecutter.package_name }}.devkit.synth import synthesize

    synthesized = synthesize(work, "+".join(tasks), object_type, num_candidates=4)
    cache = synthesized.assets_cache
    extension = synthesized.candidates[0].suffix
    sources = link_sources(list(synthesized.candidates), work / "link-sources", count)
    with open(synthesized.candidate_index, "w", encoding="utf-8") as stream:
        for start in range(0, count, 65536):
            lines = []
            for index in range(start, min(count, start + 65536)):
                name = f"{index:040x}{extension}"
                target = cache / name
                if not target.exists():
                    os.link(sources[index % len(sources)], target)
                lines.append(f"{synthesized.assets_dir / name}\n")
            stream.write("".join(lines))


def synthetic_tasks(object_type: int, per_image: int, mask_size: tuple[int, int]):
    """A model that costs nothing: the same predictions for every candidate."""
    pools: dict = {}

    def predictions(ctx) -> list:
        if not pools:
            classes = len(ctx.class_names)
            if object_type == 2:
                pools["pool"] = box_pool(per_image, classes)
            else:
                pools["pool"] = mask_pool(per_image, object_type, *mask_size, classes)
        return pools["pool"]

    def mine(ctx) -> None:
        candidates = ctx.candidates()
        count = len(candidates)
        for index, path in enumerate(candidates):
            ctx.results.add(path, ((index * 7919) % count) / count)
            if index % 65536 == 0:
                ctx.progress(index / count)

    def infer(ctx) -> None:
        pool = predictions(ctx)
        candidates = ctx.candidates()
        count = len(candidates)
        for index, path in enumerate(candidates):
            if object_type == 2:
                ctx.results.add(path, pool[index % len(pool)], size=(WIDTH, HEIGHT))
            else:
                ctx.results.add(path, mask_size[1], mask_size[0], pool[index % len(pool)])
            if index % 65536 == 0:
                ctx.progress(index / count)

    return {"mining": mine, "infer": infer}


def executor_child(
    object_type: int, per_image: int, mask_size: tuple[int, int], peak_file: Path
) -> int:
    """The executor's entrypoint with the synthetic model as its task functions; its peak RSS
    goes to ``peak_file``."""
    import importlib

    entry = importlib.import_module(f"{PACKAGE}.__main__")
    tasks = synthetic_tasks(object_type, per_image, mask_size)
    entry.task_function = lambda task: tasks[task]
    try:
        return entry.main()
    finally:
        peak_file.write_text(str(peak_rss_bytes()), encoding="ascii")


def end_to_end(args: argparse.Namespace, object_type: int, scratch: Path) -> None:
    tasks = declared_tasks()
    if not tasks:
        print("End to end: skipped, the executor declares neither mining nor inference")
        return
    count = args.e2e
    work = scratch / "e2e"
    started = time.perf_counter()
    make_work_dir(work, count, object_type, tasks)
    prepared = time.perf_counter() - started
    env = dict(os.environ)
    env["YMIR_ENV_FILE"] = str(work / "in" / "env.yaml")
    command = [
        sys.executable,
        __file__,
        "--executor-child",
        "--object-type",
        str(object_type),
        "--e2e-boxes",
        str(args.e2e_boxes),
        "--mask-size",
        "x".join(str(value) for value in reversed(args.mask_size)),
        "--peak-file",
        str(work / "peak-rss"),
    ]
    started = time.perf_counter()
    with open(work / "executor.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    process.returncode = code  # reaped by wait4: Popen must not wait for it again
    out = work / "out"
    infer_file, mining_file = out / "infer-result.json", out / "result.tsv"
    unit = "boxes" if object_type == 2 else "masks"
    print(f"End to end: {' + '.join(tasks)} through the executor, synthetic model")
    print(f"candidates              {count:,}")
    print(f"{unit} per image         {args.e2e_boxes}")
    print(f"work dir prepared in    {prepared:.1f} s")
    print(f"executor exit status    {code}")
    print(f"executor wall time      {elapsed:.1f} s")
    peak_file = work / "peak-rss"
    # The child's own high-water mark; ru_maxrss would include this process's pages.
    peak = int(peak_file.read_text()) if peak_file.is_file() else usage.ru_maxrss * 1024
    print(f"executor peak RSS       {peak / 1e6:.0f} MB")
    print(f"peak RSS per candidate  {peak / count:.0f} B")
    if "infer" in tasks:
        infer_size = infer_file.stat().st_size if infer_file.is_file() else 0
        print(f"infer-result.json       {infer_size / 1e6:.1f} MB")
    if "mining" in tasks:
        mining_lines = count_lines(mining_file) if mining_file.is_file() else 0
        print(f"result.tsv lines        {mining_lines:,}")
    if code != 0:
        print((work / "executor.log").read_text(encoding="utf-8", errors="replace")[-3000:])
        raise SystemExit("the executor failed")


def count_lines(path: Path) -> int:
    lines = 0
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            lines += block.count(b"\n")
    return lines


# -- command line -----------------------------------------------------------------------------


def integers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def mask_size(text: str) -> tuple[int, int]:
    width, height = (int(part) for part in text.lower().split("x"))
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=integers, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--boxes", type=integers, default=[0, 30, 100], help="per image")
    parser.add_argument("--masks", type=integers, default=[0, 3, 10], help="per image")
    parser.add_argument("--mask-size", type=mask_size, default=(240, 320), help="WxH, 320x240")
    parser.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default=None,
        help="of the writers (end to end: this executor's)",
    )
    parser.add_argument("--old-max", type=int, default=100_000)
    parser.add_argument("--old-max-items", type=int, default=3_000_000)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="0: skip the readers")
    parser.add_argument("--e2e", type=int, default=1_000_000, help="0: skip the executor run")
    parser.add_argument("--e2e-boxes", type=int, default=30)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each writer case; the fastest counts"
    )
    parser.add_argument(
        "--parts", type=lambda text: text.split(","), default=list(PARTS), help=",".join(PARTS)
    )
    parser.add_argument("--scratch", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--executor-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--object-type", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peak-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        return child(args.case)
    if args.executor_child:
        return executor_child(args.object_type, args.e2e_boxes, args.mask_size, args.peak_file)

    executor_type = manifest_object_type(default_img_man())
    object_type = TARGETS[args.target] if args.target else executor_type
    scratch = Path(tempfile.mkdtemp(prefix="scale-", dir=args.scratch))
    try:
        if "writers" in args.parts:
            writer_table(args, object_type, scratch)
        if "mining" in args.parts:
            mining_table(args, scratch)
        if args.inputs and "readers" in args.parts:
            reader_table(args, scratch)
        if args.e2e and "e2e" in args.parts:
            end_to_end(args, executor_type, scratch)  # the executor's own target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
