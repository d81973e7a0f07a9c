"""The streamed result writers write today's documents, and outputs at scale pass the verifier.

``benchmarks/reference_results.py`` keeps the writers as they were before they streamed (all
boxes in memory, one ``json.dumps`` at the end); the streamed writers must produce the same
bytes for the same calls, for every target and protocol, except the empty detection entry,
which now carries both list keys (see ``test_empty_entries_read_as_empty_lists_everywhere``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from {{ cookiecutter.package_name }}.contract import results
from {{ cookiecutter.package_name }}.contract.candidates import CandidateList
from {{ cookiecutter.package_name }}.contract.dataset import read_candidates, read_index
from {{ cookiecutter.package_name }}.contract.env import OutputPaths
from {{ cookiecutter.package_name }}.contract.errors import ExecutorError
from {{ cookiecutter.package_name }}.contract.masks import encode_rle
from {{ cookiecutter.package_name }}.contract.results import (
    DetectionResult,
    MiningResult,
    SegmentationResult,
)
from {{ cookiecutter.package_name }}.devkit.verify import verify_infer, verify_mining

CLASS_NAMES = ["dog", "cat", "person"]
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_reference():
    spec = importlib.util.spec_from_file_location(
        "reference_results", BENCHMARKS / "reference_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_reference()


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


def candidate_images(root: Path, count: int, rng: np.random.RandomState) -> list[Path]:
    """``count`` candidates; every fourth one has no file (its size is unknown)."""
    paths = []
    for index in range(count):
        path = root / "in" / "assets" / f"{index:040x}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if index % 4 != 3:
            Image.new("RGB", (int(rng.randint(8, 64)), int(rng.randint(8, 48)))).save(path)
        paths.append(path)
    return paths


def twin_calls(streamed, old, method: str, *args, **kwargs) -> None:
    """The same call on both writers: both accept it, or both refuse it."""
    outcomes = []
    for writer in (streamed, old):
        try:
            getattr(writer, method)(*args, **kwargs)
            outcomes.append(None)
        except ValueError as error:
            outcomes.append(type(error))
    assert outcomes[0] == outcomes[1], (args, outcomes)


def random_box(rng: np.random.RandomState) -> tuple:
    x, y = rng.uniform(-10, 50, size=2)
    w, h = (
        rng.choice([rng.uniform(0, 1), rng.uniform(0, 40), rng.uniform(0, 40), 0.0])
        for _ in range(2)
    )
    label = [0, 2, np.int64(1), "Cat", " person", 1.0][rng.randint(6)]
    score = [float(rng.rand()), np.float32(rng.rand()), 1, 0.0][rng.randint(4)]
    return (float(x), float(y), float(w), float(h), label, score)


def empty_entries_as_streamed(document: dict, legacy: bool) -> dict:
    if legacy:
        return document
    detection = {
        key: (entry if entry["boxes"] else {"boxes": [], "annotations": []})
        for key, entry in document["detection"].items()
    }
    return {"detection": detection}


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("batch_boxes", [None, 40], ids=["one-batch", "many-batches"])
def test_detection_writes_todays_document(tmp_path, monkeypatch, legacy, batch_boxes):
    if batch_boxes:  # boxes formatted a few images at a time, as at scale
        monkeypatch.setattr(results, "_BATCH_BOXES", batch_boxes)
    rng = np.random.RandomState(7)
    candidates = candidate_images(tmp_path, 40, rng)
    streamed = DetectionResult(outputs(tmp_path / "new"), candidates, CLASS_NAMES, legacy)
    old = reference.DetectionResult(outputs(tmp_path / "old"), candidates, CLASS_NAMES, legacy)
    # Out of candidate order, some candidates twice, some never; both the per-box path (class
    # names, odd types) and the array path (plain numbers, in lists or arrays) are taken.
    for index in rng.permutation(len(candidates) + 10) % len(candidates):
        count = [0, 1, 3, 8, 30][rng.randint(5)]
        boxes = [random_box(rng) for _ in range(count)]
        if count == 30:
            boxes = np.array([(*box[:4], rng.randint(3), rng.rand()) for box in boxes])
            # Scores the batch encoder leaves to repr() (an exponent, -0.0) and round ones.
            special = rng.rand(count) < 0.1
            boxes[special, 5] = rng.choice([3e-5, -0.0, 0.0, 1.0, 0.5], special.sum())
        size = None if rng.rand() < 0.5 else (int(rng.randint(20, 80)), int(rng.randint(20, 80)))
        path = candidates[index] if rng.rand() < 0.5 else str(candidates[index])
        twin_calls(streamed, old, "add", path, boxes, size=size)
        if rng.rand() < 0.1:  # a refused call adds nothing to either
            bad = boxes if isinstance(boxes, np.ndarray) else list(boxes)
            twin_calls(streamed, old, "add", path, [*bad, (1, 1, 2, 2, "zebra", 0.5)])
    streamed.write()
    old.write()
    text = streamed.result_file.read_text(encoding="utf-8")
    expected = empty_entries_as_streamed(json.loads(old.result_file.read_text()), legacy)
    # Byte for byte what json.dumps writes for today's document.
    assert text == json.dumps(expected, allow_nan=False, ensure_ascii=True) + "\n"
    key = "annotations" if legacy else "boxes"
    assert sum(len(entry[key]) for entry in expected["detection"].values()) > 100


def test_detection_large_images_and_a_copy_without_the_kernel(tmp_path, monkeypatch):
    """Coordinates beyond the table of decimal texts, and systems without copy_file_range."""

    def refuse(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(results, "_BATCH_BOXES", 20)
    rng = np.random.RandomState(11)
    candidates = [tmp_path / "in" / f"{index}.tif" for index in range(6)]  # no files: no size
    streamed = DetectionResult(outputs(tmp_path / "new"), candidates, CLASS_NAMES, False)
    old = reference.DetectionResult(outputs(tmp_path / "old"), candidates, CLASS_NAMES, False)
    for index in [0, 1, 3, 1, 5]:
        boxes = rng.uniform(0, 40_000, size=(12, 6))
        boxes[:, 4], boxes[:, 5] = rng.randint(3, size=12), rng.rand(12)
        size = (40_000, 30_000) if index == 3 else None
        twin_calls(streamed, old, "add", candidates[index], boxes, size=size)
    streamed.write()
    old.write()
    expected = empty_entries_as_streamed(json.loads(old.result_file.read_text()), False)
    assert streamed.result_file.read_text() == json.dumps(expected, ensure_ascii=True) + "\n"
    assert max(box["box"]["x"] for box in expected["detection"]["1.tif"]["boxes"]) >= 1 << 14


def random_mask(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    if rng.rand() < 0.85:
        top, left = rng.randint(height), rng.randint(width)
        mask[top : top + rng.randint(1, height), left : left + rng.randint(1, width)] = True
        mask ^= rng.rand(height, width) < 0.05
    return mask


def mask_spec(rng: np.random.RandomState, mask: np.ndarray):
    """The mask as a boolean array, a compressed RLE, or an RLE with (non-canonical) runs."""
    form = rng.randint(3)
    if form == 0:
        return mask
    if form == 1:
        return encode_rle(mask)
    flat = mask.T.reshape(-1).astype(np.int64)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    if flat[0]:
        runs = [0, *runs]
    if len(runs) > 2:
        runs = [*runs[:2], 0, 0, *runs[2:]]  # empty runs a decoder must merge away
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


@pytest.mark.parametrize("object_type", [3, 4])
def test_segmentation_writes_todays_document(tmp_path, object_type):
    rng = np.random.RandomState(object_type)
    candidates = candidate_images(tmp_path, 16, rng)
    streamed = SegmentationResult(outputs(tmp_path / "new"), candidates, CLASS_NAMES, object_type)
    old = reference.SegmentationResult(
        outputs(tmp_path / "old"), candidates, CLASS_NAMES, object_type
    )
    sizes = {}
    for index in rng.permutation(len(candidates) + 6) % len(candidates):
        height, width = sizes.setdefault(index, (int(rng.randint(5, 30)), int(rng.randint(5, 30))))
        items = []
        for _ in range(rng.randint(0, 5)):
            mask = random_mask(rng, height, width)
            # Classes repeat within a call and across calls: semantic masks of a class merge.
            items.append((mask_spec(rng, mask), int(rng.randint(2)), float(rng.rand())))
        twin_calls(streamed, old, "add", candidates[index], width, height, items)
    twin_calls(streamed, old, "add", candidates[0], 3, 3, [])  # another size: refused
    streamed.write()
    old.write()
    expected = old.result_file.read_text(encoding="utf-8")
    assert streamed.result_file.read_text(encoding="utf-8") == expected
    assert len(json.loads(expected)["annotations"]) > 10


def test_mining_writes_todays_lines(tmp_path):
    rng = np.random.RandomState(3)
    candidates = [str(path) for path in candidate_images(tmp_path, 60, rng)]
    candidates.append(str(tmp_path / "in" / "single image é.jpg"))
    streamed = MiningResult(outputs(tmp_path / "new"), candidates)
    old = reference.MiningResult(outputs(tmp_path / "old"), candidates)
    for index in rng.randint(0, len(candidates), size=80):
        score = [round(float(rng.rand()), 1), np.float32(rng.rand()), -3, float(rng.rand())]
        path = candidates[index]
        if rng.rand() < 0.2:  # a resolved path: found by its unique file name
            path = "/elsewhere/" + os.path.basename(path)
        twin_calls(streamed, old, "add", path, score[rng.randint(4)])
    twin_calls(streamed, old, "add", candidates[0], np.nan)
    streamed.write()
    old.write()
    assert streamed.result_file.read_bytes() == old.result_file.read_bytes()


# What each platform version's detection reader makes of an entry
# (docs/protocol.md#infer-result-detection): 1.1 reads only "annotations"; 2.0 to 2.5 take
# "boxes" or else "annotations", written in 2.3 as ``entry.get("boxes") or
# entry.get("annotations")``, and log "invalid annotations" for anything that is not a list.
PLATFORM_READERS = {
    "1.1": lambda entry: entry.get("annotations"),
    "2.0-2.5": lambda entry: entry.get("boxes") or entry.get("annotations"),
}


@pytest.mark.parametrize("legacy", [False, True])
def test_empty_entries_read_as_empty_lists_everywhere(tmp_path, legacy):
    candidates = candidate_images(tmp_path, 2, np.random.RandomState(0))
    writer = DetectionResult(outputs(tmp_path / "out"), candidates, CLASS_NAMES, legacy)
    writer.add(candidates[0], [(1, 1, 4, 4, 0, 0.5)])
    writer.write()
    detection = json.loads(writer.result_file.read_text())["detection"]
    versions = ["1.1"] if legacy else ["2.0-2.5"]
    for version in versions:
        read = PLATFORM_READERS[version]
        assert read(detection[candidates[1].name]) == [], version
        assert len(read(detection[candidates[0].name])) == 1, version
    assert verify_infer(writer.result_file.parent, candidates, CLASS_NAMES, 2, legacy) == []


def test_spool_stays_out_of_sight_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    candidates = candidate_images(tmp_path, 3, np.random.RandomState(1))
    out = outputs(tmp_path / "out")
    writer = DetectionResult(out, candidates, CLASS_NAMES, False)
    writer.add(candidates[0], [(1, 1, 4, 4, 0, 0.5)])
    assert list(out.root_dir.iterdir()) == []  # the spool has no name in /out
    writer.write()
    first = out.infer_result_file.read_bytes()
    writer.add(candidates[1], [(1, 1, 4, 4, 1, 0.5)])

    def broken_copy(self, stream, offset, length):
        stream.write(b"part of a record")
        raise OSError("disk full")

    monkeypatch.setattr(results._Spool, "copy", broken_copy)
    with pytest.raises(OSError):
        writer.write()
    assert out.infer_result_file.read_bytes() == first
    assert [path.name for path in out.root_dir.iterdir()] == ["infer-result.json"]


def test_the_compact_candidate_list_reads_the_index_like_read_index(tmp_path):
    index = tmp_path / "candidate-index.tsv"
    lines = ["/in/assets//a.jpg", "", "/in/assets/b.jpg/\r", "  ", "/in/./c d é.jpg\tignored", "x"]
    index.write_bytes("\n".join(lines).encode("utf-8"))
    candidates = read_candidates(index)
    assert isinstance(candidates, CandidateList)
    assert list(candidates) == [image for image, _ in read_index(index)]
    # As text too: the mining result writes these strings.
    assert candidates.texts == [str(image) for image, _ in read_index(index)]
    assert candidates == [image for image, _ in read_index(index)]
    assert candidates[1] == Path("/in/assets/b.jpg") and len(candidates) == 4
    assert candidates.find(Path("/elsewhere/c d é.jpg")) == 2  # by file name
    assert candidates.find("/in/assets/zzz.jpg") is None
    index.write_text("/in/a.jpg\t/b\t/c\n", encoding="utf-8")
    with pytest.raises(ExecutorError, match="expected '<image>'"):
        read_candidates(index)


def test_mining_tells_candidates_that_share_a_file_name_by_path(tmp_path):
    candidates = ["/in/one/a.jpg", "/in/two/a.jpg", "/in/two/b.jpg"]
    writer = MiningResult(outputs(tmp_path / "out"), candidates)
    writer.add("/in/two/a.jpg", 0.9)
    writer.add("/elsewhere/b.jpg", 0.5)  # a unique file name: found by it
    with pytest.raises(ValueError, match="not one of the candidate images"):
        writer.add("/elsewhere/a.jpg", 0.1)  # two candidates are called a.jpg
    writer.write()
    assert writer.result_file.read_text().splitlines() == [
        "/in/two/a.jpg\t0.9",
        "/in/two/b.jpg\t0.5",
        "/in/one/a.jpg\t-0.5",
    ]
    with pytest.raises(ValueError, match="listed twice"):
        MiningResult(outputs(tmp_path / "out"), [*candidates, "/in/one/a.jpg"])


@pytest.mark.slow
def test_the_verifier_passes_outputs_of_100k_candidates(tmp_path):
    count = 100_000
    candidates = [f"/in/assets/{index:040x}.jpg" for index in range(count)]
    out = outputs(tmp_path / "out")
    detection = DetectionResult(out, candidates, CLASS_NAMES, legacy=False)
    mining = MiningResult(out, candidates)
    boxes = [(10.0, 20.0, 30.0, 40.0, index % 3, 0.5) for index in range(3)]
    for index, path in enumerate(candidates):
        if index % 2:
            detection.add(path, boxes, size=(640, 480))
        mining.add(path, (index * 7919 % count) / count)
    detection.write()
    mining.write()
    assert verify_infer(out.root_dir, candidates, CLASS_NAMES, 2, False) == []
    assert verify_mining(out.root_dir, candidates) == []
    assert len(json.loads(out.infer_result_file.read_text())["detection"]) == count
